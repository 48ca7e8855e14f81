"""The staff lookup page (behind a login): internal documents too, a switch between ColBERT-Att and plain MaxSim,
and per passage which query words matched which passage words, with their attention weights."""

from __future__ import annotations

import gradio as gr

from assistant import Assistant, Mode
from grounding import GroundingJudge
from retriever.scoring import ScoringMode
from webapp.conversation_log import ConversationLog
from webapp.grounding_flag import grounding_note
from webapp.rendering import answer_markdown, explanation_html

EXPLAINED_PASSAGES = 5
STAFF_STYLE = """
.passage mark.match { border-radius: 3px; padding: 0 2px; }
.passage table.matches td, .passage table.matches th { padding: 2px 8px; font-size: 0.85em; }
"""


def staff_page(assistant: Assistant, log: ConversationLog, judge: GroundingJudge | None = None) -> gr.Blocks:
    encoder = assistant.index.encoder

    def lookup(question: str, scoring: str, request: gr.Request):
        answer = assistant.answer(question, mode=Mode.STAFF, scoring=scoring)
        log.record_turn(answer, "staff_ui", getattr(request, "session_hash", None))
        if answer.abstain_reason == "invalid_message":
            return answer_markdown(answer), ""
        query = encoder.encode_query(answer.standalone_question)
        query_tokens = encoder.token_strings(query.token_ids)
        hits = assistant.index.search(query, top_k=EXPLAINED_PASSAGES, mode=ScoringMode(scoring), explain=True)
        explanations = "".join(explanation_html(hit, assistant.index, encoder, query_tokens) for hit in hits)
        note = grounding_note(judge, answer) if judge is not None else None
        return answer_markdown(answer, note), f"<div id='explanations'>{explanations}</div>"

    with gr.Blocks(title="Maison Corvane — Staff lookup") as page:
        gr.Markdown(
            "## Staff lookup\nPublic **and internal** documents. Hover a highlighted word to see which query "
            "tokens matched it; open *token matches* for the weights."
        )
        with gr.Row():
            question = gr.Textbox(label="Question", elem_id="staff-question", scale=5)
            scoring = gr.Radio(
                [ScoringMode.COLBERT_ATT.value, ScoringMode.MAXSIM.value],
                value=ScoringMode.COLBERT_ATT.value,
                label="Scoring",
                elem_id="staff-scoring",
            )
        ask = gr.Button("Look up", variant="primary", elem_id="staff-ask")
        answer = gr.Markdown(elem_id="staff-answer")
        explanations = gr.HTML(elem_id="staff-explanations")
        ask.click(lookup, [question, scoring], [answer, explanations], api_name="lookup")
        question.submit(lookup, [question, scoring], [answer, explanations])
    return page
