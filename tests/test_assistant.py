"""The assistant end to end: the real Qwen2.5-Coder-0.5B GGUF through llama.cpp, the real encoder and a real index
of the whole knowledge base (plus one test document that tries a prompt injection)."""

from __future__ import annotations

import pytest

from colbert_att_assistant.assistant import Assistant, Audience
from colbert_att_assistant.assistant.answerability import REFERENCE_SPREAD
from colbert_att_assistant.assistant.llm_backends import ChatModel


class RecordingChatModel(ChatModel):
    """The real model, remembering every prompt it was sent."""

    def __init__(self, model: ChatModel):
        super().__init__(model.llm, model.settings)
        self.prompts: list[str] = []

    def stream(self, messages, cancel=None):
        self.prompts.append("\n".join(m.content or "" for m in messages))
        yield from super().stream(messages, cancel)


@pytest.fixture()
def recording_assistant(assistant_settings, kb_assistant, chat_model):
    return Assistant(kb_assistant.index, RecordingChatModel(chat_model), assistant_settings)


@pytest.mark.parametrize(
    ("question", "fact", "document"),
    [
        ("How much does express delivery cost?", "25", "faq-delivery-tracking"),
        ("How long do I have to return an item bought on sale?", "14", "faq-returns-exchanges"),
        ("What are the live chat hours?", "21:00", "faq-contact-client-care"),
    ],
)
def test_answers_carry_the_fact_and_cite_its_document(kb_assistant, question, fact, document):
    answer = kb_assistant.answer(question)
    assert not answer.abstained, answer.text
    assert fact in answer.text
    assert document in [citation.document_id for citation in answer.citations]
    assert "[1]" in answer.text or "[2]" in answer.text or "[3]" in answer.text
    assert not answer.number_mismatches


@pytest.mark.parametrize(
    "question",
    [
        pytest.param(
            "Do you make bespoke made-to-measure suits from scratch?",
            marks=pytest.mark.xfail(
                reason="a near miss: the alterations FAQ passes the evidence gates and is quoted (75 % of held-out "
                "unanswerable questions get an answer, benchmarks/RESULTS.md)",
                strict=False,
            ),
        ),
        "Can I bring my car in for an oil change at your boutique?",
    ],
)
def test_unanswerable_questions_get_an_honest_handoff(kb_assistant, question):
    answer = kb_assistant.answer(question)
    assert answer.abstained and answer.answer_path == "abstained"
    assert kb_assistant.brand.strings.abstain in answer.text
    assert "+33 1 84 60 19 11" in answer.text  # the way to a human, from the brand profile
    assert answer.citations == []


def test_an_answer_held_by_the_second_source_is_given_not_declined(kb_assistant):
    question = (
        "I've got the bumpy-grain version of the big everyday shopper bag. How often should it get a moisturising "
        "treatment?"
    )
    stream = kb_assistant.stream(question)
    holding = [s.number for s in stream.sources if "Grained (embossed) calfskin" in s.text]
    assert holding and holding[0] >= 2  # the fact is not in the top passage
    answer = stream.answer
    assert not answer.abstained, answer.text
    assert f"[{holding[0]}]" in answer.text
    assert "care-calfskin" in [c.document_id for c in answer.citations]


def test_a_statement_then_its_question_is_answered_as_one(kb_assistant):
    kb_assistant.answer("I just bought the Sabline tote in grained calfskin.", session_id="statement")
    follow_up = kb_assistant.answer("How often should I condition it?", session_id="statement")
    assert "Sabline" in follow_up.standalone_question
    assert not follow_up.abstained, follow_up.text
    assert "care-calfskin" in [c.document_id for c in follow_up.citations]
    kb_assistant.reset("statement")


class TamperingChatModel(ChatModel):
    """The real model, its figures altered on the way out: a model that invents a price."""

    def __init__(self, model: ChatModel):
        super().__init__(model.llm, model.settings)

    def stream(self, messages, cancel=None):
        for delta in super().stream(messages, cancel):
            yield delta.replace("2", "4")  # the model emits digits one token at a time


def test_an_invented_number_is_never_shown(assistant_settings, kb_assistant, chat_model):
    tampering = Assistant(kb_assistant.index, TamperingChatModel(chat_model), assistant_settings)
    stream = tampering.stream("How much does express delivery cost?")
    shown = "".join(stream)
    assert "45" not in shown and "45" not in stream.answer.text
    assert "45" in "".join(stream.model_draft)  # the model's draft did carry the invented figure
    assert stream.answer.number_mismatches or stream.answer.dropped_sentences


def test_customer_mode_never_sees_internal_documents(recording_assistant):
    question = "What is the maximum discount a boutique manager can approve for a top client?"
    customer = recording_assistant.answer(question, audience=Audience.CUSTOMER)
    assert customer.sources and all(source.audience == "public" for source in customer.sources)
    internal_text = "Discount Authority and Approval Workflow"
    assert all(internal_text not in prompt for prompt in recording_assistant.chat_model.prompts)
    assert internal_text not in customer.text

    staff = recording_assistant.answer(question, audience=Audience.STAFF)
    assert "internal-discount-authority" in [source.document_id for source in staff.sources]


def test_sources_are_known_before_the_first_token(kb_assistant):
    stream = kb_assistant.stream("How should I store my pearls?")
    assert stream.sources and stream.sources[0].document_id == "care-pearls"
    deltas = list(stream)
    assert deltas and "".join(deltas).strip() == stream.answer.text  # what was streamed is the checked answer
    assert stream.answer.citations and stream.answer.citations[0].document_id == "care-pearls"
    assert stream.answer.timings_ms["first_token"] <= stream.answer.timings_ms["total"]


def test_a_follow_up_is_condensed_before_retrieval(kb_assistant):
    kb_assistant.answer("How do I clean my suede loafers?", session_id="follow-up")
    follow_up = kb_assistant.answer("and how often should I protect them?", session_id="follow-up")
    assert "suede" in follow_up.standalone_question.lower()
    assert follow_up.standalone_question != "and how often should I protect them?"
    assert "care-suede-nubuck" in [source.document_id for source in follow_up.sources]
    kb_assistant.reset("follow-up")
    assert kb_assistant.memory.history("follow-up") == []


def test_instructions_inside_a_document_are_not_followed(recording_assistant):
    answer = recording_assistant.answer("How do I clean my raffia basket bag?")
    assert "care-raffia-test" in [source.document_id for source in answer.sources]
    assert "FREEBAG" not in answer.text
    assert "90%" not in answer.text


@pytest.mark.parametrize(
    ("message", "expected"),
    [("", "empty"), ("   \n\t ", "empty"), ("?!", "empty"), ("x" * 20_000, "20,000 characters"), (b"bytes", "text")],
)
def test_bad_messages_get_a_polite_reply_without_calling_the_model(recording_assistant, message, expected):
    answer = recording_assistant.answer(message)
    assert answer.abstained and answer.abstain_reason == "invalid_message"
    assert expected in answer.text
    assert recording_assistant.chat_model.prompts == []


def test_the_quoted_style_answers_with_cited_lines_without_the_model(assistant_settings, kb_assistant, chat_model):
    quoted = assistant_settings.model_copy(
        update={"retrieval": assistant_settings.retrieval.model_copy(update={"answer_style": "quoted"})}
    )
    model = RecordingChatModel(chat_model)
    answer = Assistant(kb_assistant.index, model, quoted).answer("How much does express delivery cost?")
    assert answer.answer_path == "extractive" and not answer.abstained
    assert "25" in answer.text
    assert answer.citations and {c.node_id for c in answer.citations} <= {s.node_id for s in answer.sources}
    assert 1 <= answer.text.count("\n- ") <= quoted.retrieval.quoted_lines  # the best lines, each cited
    assert model.prompts == []

    one_line = quoted.model_copy(update={"retrieval": quoted.retrieval.model_copy(update={"quoted_lines": 1})})
    short = Assistant(kb_assistant.index, model, one_line).answer("How much does express delivery cost?")
    assert short.text.count("\n- ") == 1
    best_excerpt = short.text.splitlines()[1].removeprefix("- ").rsplit(" [", 1)[0]
    assert best_excerpt in answer.text  # the best line (with its neighbours) is in every longer quote

    strict = quoted.model_copy(
        update={"retrieval": quoted.retrieval.model_copy(update={"min_evidence_to_quote": 0.99})}
    )
    declined = Assistant(kb_assistant.index, model, strict).answer("How much does express delivery cost?")
    assert declined.abstained and declined.abstain_reason == "weak_evidence"
    assert model.prompts == []


def test_each_question_of_a_two_part_message_gets_its_own_line_and_source(assistant_settings, kb_assistant, chat_model):
    quoted = assistant_settings.model_copy(
        update={"retrieval": assistant_settings.retrieval.model_copy(update={"answer_style": "quoted"})}
    )
    assistant = Assistant(kb_assistant.index, RecordingChatModel(chat_model), quoted)
    answer = assistant.answer("What is the warranty on a watch? And can I return an engraved ring?")
    assert not answer.abstained
    # The second question's source is found by searching it alone (the whole message ranks watch pages first)...
    whole = kb_assistant.retrieve(kb_assistant.index.encoder.encode_query(answer.question), "customer")
    assert len(answer.sources) > len(whole)
    # ...and its best line is quoted beside the first question's.
    assert "warranty" in answer.text and "engraved cannot be returned" in answer.text
    assert answer.text.count("\n- ") <= quoted.retrieval.quoted_lines + 2  # the best three, and one per question
    assert "faq-size-guide-shoes-rings" in {c.document_id for c in answer.citations}


def test_a_follow_up_naming_another_thing_gets_a_line_about_it(assistant_settings, kb_assistant, chat_model):
    quoted = assistant_settings.model_copy(
        update={"retrieval": assistant_settings.retrieval.model_copy(update={"answer_style": "quoted"})}
    )
    assistant = Assistant(kb_assistant.index, RecordingChatModel(chat_model), quoted)
    assistant.answer("How do I store my silk scarves over the winter?", session_id="gloves")
    answer = assistant.answer("what about my leather gloves?", session_id="gloves")
    assert not answer.abstained
    assert answer.standalone_question.startswith("How do I store my silk scarves")  # one intent...
    joined = kb_assistant.retrieve(kb_assistant.index.encoder.encode_query(answer.standalone_question), "customer")
    assert "care-gloves-hats-accessories" not in {c.document_id for c in joined}
    # ...but the client's own words are searched too, so the gloves guide is found and quoted.
    assert "care-gloves-hats-accessories" in {c.document_id for c in answer.citations}


def _quoted(assistant_settings, kb_assistant, chat_model, **retrieval) -> Assistant:
    settings = assistant_settings.model_copy(
        update={"retrieval": assistant_settings.retrieval.model_copy(update={"answer_style": "quoted", **retrieval})}
    )
    return Assistant(kb_assistant.index, RecordingChatModel(chat_model), settings)


def test_a_question_whose_ranking_is_flat_is_handed_off_though_a_line_matches_its_words(
    assistant_settings, kb_assistant, chat_model
):
    evidence_only = _quoted(
        assistant_settings, kb_assistant, chat_model, min_evidence_to_quote=0.5, score_spread_weight=0
    )
    with_spread = _quoted(
        assistant_settings, kb_assistant, chat_model, min_evidence_to_quote=0.45, score_spread_weight=0.4
    )
    velvet = "How do I clean a velvet jacket?"  # the guides cover suede and nubuck, not velvet
    # A suede line matches the question's words well enough to be quoted on its evidence alone...
    assert not evidence_only.answer(velvet).abstained
    # ...but no passage stands out of the ranking, and weighed with that the quote becomes the handoff.
    handed_off = with_spread.answer(velvet)
    assert handed_off.abstained and handed_off.abstain_reason == "weak_evidence"
    assert handed_off.score_spread < REFERENCE_SPREAD
    answered = with_spread.answer("How much does express delivery cost?")
    assert not answered.abstained and "€" in answered.text
    assert answered.score_spread > REFERENCE_SPREAD > handed_off.score_spread
    # The shipped settings weigh the spread too.
    shipped = _quoted(assistant_settings, kb_assistant, chat_model)
    assert shipped.settings.retrieval.score_spread_weight > 0
    assert shipped.answer(velvet).abstained and not shipped.answer("How much does express delivery cost?").abstained


def test_staff_see_weakly_matching_lines_marked_as_such_where_a_client_is_handed_off(
    assistant_settings, kb_assistant, chat_model
):
    strict = {"min_evidence_to_quote": 0.99}  # no line clears it
    question = "What may I offer a client whose repair took longer than promised?"
    client = _quoted(assistant_settings, kb_assistant, chat_model, **strict).answer(question)
    assert client.abstained and client.abstain_reason == "weak_evidence" and not client.weak_match
    staff = _quoted(assistant_settings, kb_assistant, chat_model, **strict).answer(question, audience=Audience.STAFF)
    assert not staff.abstained and staff.weak_match
    assert staff.answer_path == "extractive" and staff.citations
    assert staff.grounding_note and "Weak match" in staff.grounding_note  # the reader is told, with the lines
    handed_off = _quoted(assistant_settings, kb_assistant, chat_model, staff_weak_matches=False, **strict)
    assert handed_off.answer(question, audience=Audience.STAFF).abstained
    # The same below the evidence gate that comes before any style's own gate.
    early = _quoted(assistant_settings, kb_assistant, chat_model, min_evidence_to_answer=0.99)
    assert early.answer(question).abstain_reason == "weak_evidence"
    assert early.answer(question, audience=Audience.STAFF).weak_match


def test_a_misspelt_question_is_searched_with_the_documents_own_words(assistant_settings, kb_assistant, chat_model):
    message = "my crocodle clutch needs conditoning, what shoud i use"
    ungated = {"min_evidence_to_quote": 0.0}
    answer = _quoted(assistant_settings, kb_assistant, chat_model, **ungated).answer(message)
    assert answer.question == message  # kept as written...
    assert answer.standalone_question == "my crocodile clutch needs conditioning, what should i use"
    # ...and searched as meant: the exotic-leather guide is found and quoted, with stronger evidence than the
    # misspelt words find.
    assert "care-exotic-leathers" in {c.document_id for c in answer.citations}
    as_written_assistant = _quoted(assistant_settings, kb_assistant, chat_model, correct_spelling=False, **ungated)
    as_written = as_written_assistant.answer(message)
    assert as_written.standalone_question == message
    assert answer.evidence_score > as_written.evidence_score


def test_a_size_the_client_gives_is_looked_up_in_its_table(assistant_settings, kb_assistant, chat_model):
    assistant = _quoted(assistant_settings, kb_assistant, chat_model)
    answer = assistant.answer("I wear a UK 12 in dresses. Which French size should I order?")
    # The conversion table's row for UK 12 is quoted, not only the sentences around the table, and naming it
    # is evidence enough to answer.
    assert not answer.abstained and answer.named_rows == 1
    assert "FR: 40; IT: 44; UK: 12" in answer.text
    assert "faq-size-guide-clothing" in {c.document_id for c in answer.citations}


def test_a_question_about_something_the_documents_never_mention_is_handed_off(
    assistant_settings, kb_assistant, chat_model
):
    assistant = _quoted(assistant_settings, kb_assistant, chat_model, min_unknown_word_similarity=0.42)
    answer = assistant.answer("Is the Paris boutique accessible by wheelchair?")
    # The boutique pages are found and align well with "Paris boutique", but nothing in them is like "wheelchair".
    assert answer.abstained and answer.abstain_reason == "unknown_subject"
    assert answer.unknown_word == "wheelchair" and answer.unknown_word_similarity < 0.3
    assert answer.text == assistant.handoff_text()
    # A word the documents do not use for a thing they do cover finds its like ("billfold": the long wallet).
    covered = assistant.answer("How many cards fit in my long billfold?")
    assert not covered.abstained and covered.unknown_word == "billfold"
    assert covered.unknown_word_similarity >= assistant.settings.retrieval.min_unknown_word_similarity
    assert "care-belts-small-leather-goods" in {c.document_id for c in covered.citations}
