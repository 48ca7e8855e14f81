"""The customer widget: a Gradio chat with streamed answers, linked citations, thumbs up/down, a new-conversation
button and a visible note that this is an AI assistant and how to reach a person. Customer mode only."""

from __future__ import annotations

import html
from collections.abc import Iterator

import gradio as gr

from assistant import Assistant, Mode
from grounding import GroundingJudge
from webapp.conversation_log import ConversationLog
from webapp.grounding_flag import grounding_note
from webapp.rate_limit import RateLimiter, rate_limited_message
from webapp.rendering import answer_markdown

NOTICE = (
    "**You are chatting with an AI assistant.** It answers from Maison Corvane's care guides and FAQs and shows "
    "its sources; it can be wrong. To reach a person: live chat with an advisor 9:00–21:00 CET Monday to "
    "Saturday, phone +33 1 84 60 19 11, or care@corvane.example."
)
EXAMPLES = [
    "How do I care for my calfskin wallet after it gets wet?",
    "How long do I have to return an item bought on sale?",
    "How should I store my pearls?",
]


def _session_id(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _client(request: gr.Request | None) -> str:
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or _session_id(request) or "unknown"


def customer_page(
    assistant: Assistant, log: ConversationLog, limiter: RateLimiter, judge: GroundingJudge | None = None
) -> gr.Blocks:
    def respond(message: str, history: list, request: gr.Request) -> Iterator[str]:
        wait = limiter.retry_after(_client(request))
        if wait is not None:
            yield rate_limited_message(wait)
            return
        session_id = _session_id(request)
        stream = assistant.stream(message, session_id=session_id, mode=Mode.CUSTOMER)
        shown = ""
        for delta in stream:
            shown += delta
            yield html.escape(shown, quote=False)
        log.record_turn(stream.answer, "customer_ui", session_id)
        note = grounding_note(judge, stream.answer) if judge is not None else None
        yield answer_markdown(stream.answer, note)

    def on_like(data: gr.LikeData, request: gr.Request) -> None:
        value = data.value if isinstance(data.value, str) else str(data.value)
        log.record_feedback(_session_id(request), bool(data.liked), value)

    def on_clear(request: gr.Request) -> None:
        session_id = _session_id(request)
        if session_id:
            assistant.reset(session_id)

    with gr.Blocks(title="Maison Corvane — Client Care") as page:
        gr.Markdown("## Maison Corvane Client Care")
        gr.Markdown(NOTICE, elem_id="ai-notice")
        chatbot = gr.Chatbot(
            label="Client Care assistant",
            height=460,
            elem_id="customer-chat",
            feedback_options=("Like", "Dislike"),
            sanitize_html=True,
            buttons=["copy"],
        )
        gr.ChatInterface(
            respond,
            chatbot=chatbot,
            textbox=gr.Textbox(placeholder="Ask about care, delivery, returns…", elem_id="customer-input", scale=7),
            examples=EXAMPLES,
            run_examples_on_click=True,
            cache_examples=False,
            flagging_mode="never",
            concurrency_limit=4,
            api_name="chat",
        )
        chatbot.like(on_like, None, None)
        chatbot.clear(on_clear, None, None)
        gr.Markdown("Use the 🗑 button at the top right of the chat to start a new conversation.")
    return page
