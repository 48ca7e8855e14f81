"""The customer widget: a Gradio chat with streamed answers, linked citations, thumbs up/down, undo / retry / clear
and a visible note that this is an AI assistant and how to reach a person. Customer mode only.

The conversation lives on the server: each browser tab gets a customer session from the registry, kept in Gradio
state (server side, never sent by the browser), and undo / retry / clear change the server's memory too. Each
shown exchange remembers the memory mark it started from and the log turn it produced, so 👍 / 👎 is stored
with its turn and undo rolls memory back exactly.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import gradio as gr

from assistant import Mode
from webapp.generation import Failed, Finished, Queued, QueueFull
from webapp.input_checks import UNREADABLE_MESSAGE, unreadable_text
from webapp.rate_limit import rate_limited_message
from webapp.rendering import answer_markdown
from webapp.services import AppServices
from webapp.sessions import SessionOwner
from webapp.turn_events import Delta, SyncEvents, answer_work

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

Chat = list[dict[str, Any]]


def new_state() -> dict[str, Any]:
    """Per tab: the server session and, per shown exchange, {"mark": memory turn id before it, "turn_id": log id}."""
    return {"session_id": None, "exchanges": []}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # Gradio may hand content back as [{"type": "text", "text": ...}]
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


def _user_positions(chat: Chat) -> list[int]:
    return [i for i, message in enumerate(chat) if message.get("role") == "user"]


def queue_note(position: int, wait_s: float) -> str:
    ahead = "You are next" if position == 1 else f"You are number {position} in line"
    return f"*{ahead}; many clients are asking right now. About {max(1, round(wait_s))} seconds…*"


def customer_page(services: AppServices) -> gr.Blocks:
    assistant, log = services.assistant, services.log
    owner = SessionOwner.customer()

    def session_of(state: dict[str, Any]) -> str:
        resolved = services.sessions.resolve(state.get("session_id"), owner)
        state["session_id"] = resolved.id
        return resolved.id

    def take_message(message: str, chat: Chat | None) -> tuple[str, Chat, str]:
        chat = list(chat or [])
        if message and message.strip():
            chat.append({"role": "user", "content": message})
        return "", chat, message or ""

    def respond(message: str, chat: Chat | None, state: dict[str, Any], request: gr.Request) -> Iterator[Any]:
        chat = list(chat or [])
        state = dict(state or new_state())
        state["exchanges"] = list(state.get("exchanges", []))
        if not message or not message.strip():
            yield chat, state
            return

        def show(text: str) -> tuple[Chat, dict[str, Any]]:
            return [*chat, {"role": "assistant", "content": text}], state

        wait = services.limiter.retry_after(services.client(request))
        if wait is not None or unreadable_text(message):
            state["exchanges"].append({"mark": None, "turn_id": None})
            yield show(rate_limited_message(wait) if wait is not None else UNREADABLE_MESSAGE)
            return
        session_id = session_of(state)
        exchange: dict[str, Any] = {"mark": services.memory.last_turn_id(session_id), "turn_id": None}
        state["exchanges"].append(exchange)
        events = SyncEvents()
        try:
            ticket = services.generation.submit(
                answer_work(assistant, message, session_id, Mode.CUSTOMER, events.emit), events.emit
            )
        except QueueFull as full:
            yield show(full.message)
            return
        shown = ""
        try:
            for event in events.until_final(ticket):
                if isinstance(event, Queued):
                    yield show(queue_note(event.position, event.estimated_wait_s))
                elif isinstance(event, Delta):
                    shown += event.text
                    yield show(html.escape(shown, quote=False))
                elif isinstance(event, Failed):
                    yield show(event.message)
                elif isinstance(event, Finished):
                    exchange["turn_id"] = log.record_turn(event.result, "customer_ui", session_id)
                    yield show(answer_markdown(event.result, services.note(event.result)))
        finally:
            # The tab went away or Gradio cancelled the event: stop generating for nobody.
            ticket.cancel("disconnected")

    def forget_last_exchange(chat: Chat | None, state: dict[str, Any]) -> tuple[Chat, dict[str, Any], str]:
        """Drop the last question and its answer from the window and from the server's memory."""
        chat = list(chat or [])
        state = dict(state or new_state())
        exchanges = list(state.get("exchanges", []))
        positions = _user_positions(chat)
        if not positions:
            return chat, state, ""
        question = _text(chat[positions[-1]].get("content"))
        del chat[positions[-1] :]
        if len(exchanges) >= len(positions):
            exchange = exchanges.pop(len(positions) - 1)
            del exchanges[len(positions) - 1 :]
            if exchange.get("mark") is not None and state.get("session_id"):
                services.memory.forget_after(state["session_id"], exchange["mark"])
        state["exchanges"] = exchanges
        return chat, state, question

    def on_undo(chat: Chat | None, state: dict[str, Any]) -> tuple[Chat, dict[str, Any], str]:
        return forget_last_exchange(chat, state)

    def on_retry(chat: Chat | None, state: dict[str, Any]) -> tuple[Chat, dict[str, Any], str]:
        chat, state, question = forget_last_exchange(chat, state)
        if question:
            chat.append({"role": "user", "content": question})
        return chat, state, question

    def on_clear(state: dict[str, Any]) -> dict[str, Any]:
        session_id = (state or {}).get("session_id")
        if session_id:
            services.sessions.end(session_id, owner)
        return new_state()

    def on_like(data: gr.LikeData, chat: Chat | None, state: dict[str, Any]) -> None:
        chat = list(chat or [])
        index = data.index[0] if isinstance(data.index, tuple | list) else data.index
        exchange_number = sum(1 for i in _user_positions(chat) if i <= int(index)) - 1
        exchanges = (state or {}).get("exchanges", [])
        turn_id = exchanges[exchange_number]["turn_id"] if 0 <= exchange_number < len(exchanges) else None
        value = data.value if isinstance(data.value, str) else _text(data.value)
        log.record_feedback((state or {}).get("session_id"), bool(data.liked), value, turn_id=turn_id)

    def on_example(data: gr.SelectData, chat: Chat | None) -> tuple[Chat, str]:
        value = data.value.get("text", "") if isinstance(data.value, dict) else str(data.value)
        return [*(chat or []), {"role": "user", "content": value}], value

    with gr.Blocks(title="Maison Corvane — Client Care") as page:
        gr.Markdown("## Maison Corvane Client Care")
        gr.Markdown(NOTICE, elem_id="ai-notice")
        state = gr.State(new_state())
        pending = gr.State("")
        chatbot = gr.Chatbot(
            label="Client Care assistant",
            height=460,
            elem_id="customer-chat",
            feedback_options=("Like", "Dislike"),
            sanitize_html=True,
            buttons=["copy"],
            examples=[{"text": example} for example in EXAMPLES],
        )
        textbox = gr.Textbox(
            placeholder="Ask about care, delivery, returns…",
            elem_id="customer-input",
            show_label=False,
            submit_btn=True,
        )
        # Generation is limited by the app's own line (webapp/generation.py), which tells clients their place.
        answer = {"fn": respond, "inputs": [pending, chatbot, state], "outputs": [chatbot, state]}
        answer_options = {"concurrency_limit": None, "api_visibility": "undocumented"}
        textbox.submit(take_message, [textbox, chatbot], [textbox, chatbot, pending], queue=False).then(
            **answer, **answer_options
        )
        chatbot.example_select(on_example, [chatbot], [chatbot, pending], queue=False).then(**answer, **answer_options)
        chatbot.retry(on_retry, [chatbot, state], [chatbot, state, pending], queue=False).then(
            **answer, **answer_options
        )
        chatbot.undo(on_undo, [chatbot, state], [chatbot, state, textbox], queue=False)
        chatbot.clear(on_clear, [state], [state], queue=False)
        chatbot.like(on_like, [chatbot, state], None, queue=False)
        gr.Markdown("Use the 🗑 button at the top right of the chat to start a new conversation.")
    return page
