"""The LLM as a judge of evidence lines: next-token log-probabilities from the real bundled model, the ranking that
mixes them with the alignment, and the judged answer style on the real knowledge-base index."""

from __future__ import annotations

import math

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from colbert_att_assistant.assistant import Assistant
from colbert_att_assistant.assistant.errors import LLMBackendError
from colbert_att_assistant.assistant.evidence import EvidenceUnit, evidence_for
from colbert_att_assistant.assistant.line_judge import LineJudge, rank_lines
from colbert_att_assistant.assistant.llm_backends import ChatModel
from colbert_att_assistant.assistant.settings import LLMSettings

QUESTION = "How much does express delivery cost?"


def unit(text: str, score: float, source: int = 1, position: int = 0, heading: str = "Delivery > Costs"):
    return EvidenceUnit(source_number=source, position=position, heading=heading, text=text, score=score)


def judged_settings(assistant_settings, **retrieval):
    update = {"answer_style": "judged", **retrieval}
    return assistant_settings.model_copy(update={"retrieval": assistant_settings.retrieval.model_copy(update=update)})


def test_ranking_adds_the_judge_to_the_alignment():
    lines = [unit("a", 0.9, position=0), unit("b", 0.8, position=1), unit("c", 0.1, position=2)]
    # The judge prefers b strongly; b is nearly as well aligned as a, so b comes first; c stays last.
    ranked = rank_lines(lines, [-2.0, 3.0, 0.0])
    assert [line.unit.text for line in ranked] == ["b", "a", "c"]
    assert ranked[0].log_odds == 3.0
    # Judged equal, the alignment decides.
    assert [line.unit.text for line in rank_lines(lines, [1.0, 1.0, 1.0])] == ["a", "b", "c"]
    assert rank_lines([], []) == []
    with pytest.raises(ValueError, match="3 lines but 2 judgements"):
        rank_lines(lines, [1.0, 2.0])


def test_next_token_logprobs_are_log_probabilities_and_do_not_depend_on_the_previous_prompt(chat_model):
    def messages(question: str) -> list[ChatMessage]:
        return [
            ChatMessage(role=MessageRole.SYSTEM, content="Reply Yes or No."),
            ChatMessage(role=MessageRole.USER, content=question),
        ]

    words = ("Yes", "No")
    first = chat_model.next_token_logprobs(messages("Are cats animals?"), words)
    assert set(first) == set(words)
    assert all(value <= 0.0 for value in first.values())
    assert sum(math.exp(value) for value in first.values()) <= 1.0 + 1e-6
    # The 0.5B leans to "No" for both, but much less so for the true statement.
    other = chat_model.next_token_logprobs(messages("Are cats vegetables?"), words)
    assert first["Yes"] - first["No"] > other["Yes"] - other["No"] + 0.3
    # The first again, after a prompt sharing only the system prefix: the reused KV cache gives the same numbers
    # (up to the rounding of a differently batched evaluation).
    again = chat_model.next_token_logprobs(messages("Are cats animals?"), words)
    assert again == pytest.approx(first, abs=0.05)
    assert chat_model.next_token_logprobs(messages("Are cats animals?"), ()) == {}


def test_a_backend_without_log_probabilities_says_which_ones_have_them():
    ollama = ChatModel.from_settings(LLMSettings(backend="ollama", base_url="http://127.0.0.1:9", model="qwen"))
    with pytest.raises(LLMBackendError, match="use llama_cpp, llama_server or openai_like"):
        ollama.next_token_logprobs([ChatMessage(role=MessageRole.USER, content="Hi")], ("Yes",))


def test_the_judge_prefers_the_line_that_answers(chat_model):
    judge = LineJudge(chat_model)
    answering = judge.log_odds(QUESTION, unit("Express delivery costs €25 and arrives in 1-2 business days.", 0.6))
    unrelated = judge.log_odds(QUESTION, unit("Hand wash silk in cold water.", 0.2, heading="Silk care > Washing"))
    assert answering > unrelated


def test_the_judged_style_quotes_the_judged_lines(assistant_settings, kb_assistant, chat_model):
    settings = judged_settings(assistant_settings, min_judge_log_odds=-30.0)
    answer = Assistant(kb_assistant.index, chat_model, settings).answer(QUESTION)
    assert answer.answer_path == "extractive" and not answer.abstained
    assert "25" in answer.text
    assert answer.judge_log_odds is not None and "judge" in answer.timings_ms
    assert 1 <= answer.text.count("\n- ") <= settings.retrieval.quoted_lines
    assert answer.citations and {c.node_id for c in answer.citations} <= {s.node_id for s in answer.sources}


def test_the_judged_style_abstains_when_no_line_is_judged_to_answer(assistant_settings, kb_assistant, chat_model):
    settings = judged_settings(assistant_settings, min_judge_log_odds=30.0)
    answer = Assistant(kb_assistant.index, chat_model, settings).answer(QUESTION)
    assert answer.abstained and answer.abstain_reason == "no_line_answers"
    assert answer.judge_log_odds is not None and answer.judge_log_odds < 30.0
    assert answer.text == kb_assistant.handoff_text()


def test_the_judged_style_over_http_keeps_the_chat_api(
    assistant_settings, kb_assistant, chat_model, start_app, tmp_path
):
    import httpx

    judged = Assistant(kb_assistant.index, chat_model, judged_settings(assistant_settings, min_judge_log_odds=-30.0))
    base, _, server, thread = start_app(judged, tmp_path)
    try:
        reply = httpx.post(f"{base}/api/chat", json={"message": QUESTION, "mode": "customer"}, timeout=120)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert not body["abstained"] and "25" in body["answer"]
        assert body["citations"] and body["session_id"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_judging_stops_when_the_client_has_gone(assistant_settings, kb_assistant, chat_model):
    from colbert_att_assistant.assistant.llm_backends import Cancellation, GenerationCancelled, cancellation_scope

    judged = Assistant(kb_assistant.index, chat_model, judged_settings(assistant_settings, min_judge_log_odds=-30.0))
    gone = Cancellation()
    gone.cancel("disconnected")
    with cancellation_scope(gone), pytest.raises(GenerationCancelled):
        judged.answer(QUESTION, session_id="gone")
    assert judged.memory.history("gone") == []  # nothing recorded for a turn nobody received


def test_lead_ins_are_not_judged_but_the_lines_after_them_are(kb_assistant):
    index = kb_assistant.index
    question = "My silver bracelet has darkened over months in a drawer, how do I clean it?"
    query = index.encoder.encode_query(question)
    sources = kb_assistant.retrieve(query, "customer")
    everything = kb_assistant.evidence(query, sources)
    assert any(unit.text.endswith(":") for unit in everything.units)  # the alignment itself ranks the lead-in high
    ranked = evidence_for(index, query, [(s.number, s.node_id, s.text) for s in sources], 4, ranked_only=True).units
    assert any(unit.text.endswith(":") for unit in ranked)  # among the four best-aligned lines, too
    candidates = kb_assistant.candidate_lines(query, sources, 4)
    assert len(candidates) == 4 and not any(unit.text.rstrip().endswith(":") for unit in candidates)
    scores = [unit.score for unit in candidates]
    assert scores == sorted(scores, reverse=True)


def test_the_judged_style_adds_a_line_for_each_question_of_a_message(assistant_settings, kb_assistant, chat_model):
    settings = judged_settings(assistant_settings, min_judge_log_odds=-30.0)
    answer = Assistant(kb_assistant.index, chat_model, settings).answer(
        "What is the warranty on a watch? And can I return an engraved ring?"
    )
    assert not answer.abstained and answer.answer_path == "extractive"
    cited = {c.document_id for c in answer.citations}
    assert "faq-size-guide-shoes-rings" in cited  # the second question's source, found by searching it alone
    assert len(cited) >= 2
