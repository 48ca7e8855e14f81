"""The staff lookup page (behind a login): internal documents too, a switch between ColBERT-Att and plain MaxSim,
and per source of the answer its original text with the matched words highlighted, why it was found, and the token
matches with their attention weights relative to the passage's mean (worked out by the assistant in staff mode,
`colbert_att_assistant/assistant/explanations.py`; rendered by colbert_att_assistant/webapp/staff_explain.py)."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from colbert_att_assistant.assistant import Audience
from colbert_att_assistant.retriever.scoring import ScoringMode
from colbert_att_assistant.webapp.generation import Failed, Finished, Queued, QueueFull
from colbert_att_assistant.webapp.input_checks import UNREADABLE_MESSAGE, unreadable_text
from colbert_att_assistant.webapp.rendering import answer_markdown
from colbert_att_assistant.webapp.services import AppServices
from colbert_att_assistant.webapp.staff_explain import explanation_html
from colbert_att_assistant.webapp.turn_events import SyncEvents, answer_work

STAFF_STYLE = """
.passage { margin: 0 0 1.2rem; }
.passage h4 { margin: .2rem 0; }
.passage .meta { font-weight: 400; opacity: .75; font-size: .85em; }
.passage .why { margin: .2rem 0 .4rem; font-size: .9em; }
.passage .passage-text { white-space: pre-wrap; line-height: 1.55; }
.passage .indexed-heading { font-style: italic; opacity: .85; }
.passage mark.match { border-radius: 3px; padding: 0 1px; color: #1d1b19; background: rgba(214, 140, 30, .18); }
.passage mark.match[data-level='1'] { background: rgba(214, 140, 30, .32); }
.passage mark.match[data-level='2'] { background: rgba(214, 140, 30, .48); }
.passage mark.match[data-level='3'] { background: rgba(214, 140, 30, .64); }
.passage mark.match[data-level='4'] { background: rgba(214, 140, 30, .82); }
.passage table.matches td, .passage table.matches th { padding: 2px 8px; font-size: 0.85em; }
"""


def staff_page(services: AppServices) -> gr.Blocks:
    assistant, log = services.assistant, services.log

    def lookup(question: str, scoring: str) -> Iterator[tuple[str, str]]:
        if unreadable_text(question):
            yield UNREADABLE_MESSAGE, ""
            return
        # One-off lookups without memory, through the same line as the customers' answers.
        events = SyncEvents()
        try:
            ticket = services.generation.submit(
                answer_work(assistant, question, None, Audience.STAFF, events.emit, scoring=scoring), events.emit
            )
        except QueueFull as full:
            yield full.message, ""
            return
        answer = None
        try:
            for event in events.until_final(ticket):
                if isinstance(event, Queued):
                    yield f"*Number {event.position} in line, about {round(event.estimated_wait_s)} s…*", ""
                elif isinstance(event, Failed):
                    yield event.message, ""
                elif isinstance(event, Finished):
                    answer = event.result
        finally:
            ticket.cancel("disconnected")
        if answer is None:
            return
        note = answer.grounding_note
        log.record_turn(answer, "staff_ui", None, grounding_note=note)
        if answer.abstain_reason == "invalid_message":
            yield answer_markdown(answer), ""
            return
        explanations = "".join(
            explanation_html(source, source.explanation) for source in answer.sources if source.explanation
        )
        yield answer_markdown(answer, note), f"<div id='explanations'>{explanations}</div>"

    with gr.Blocks(title=f"{assistant.brand.name} — Staff lookup") as page:
        gr.Markdown(
            "## Staff lookup\nPublic **and internal** documents. Highlighted words matched the question (darker: "
            "counted more); hover one to see which query words chose it; open *token matches* for the weights. "
            "[Knowledge gaps](/insights/)"
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
        ask.click(lookup, [question, scoring], [answer, explanations], api_name="lookup", concurrency_limit=None)
        question.submit(lookup, [question, scoring], [answer, explanations], concurrency_limit=None)
    return page
