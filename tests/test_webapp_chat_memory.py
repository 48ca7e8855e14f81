"""The customer widget over real HTTP (Gradio's own client, as the page's buttons call it): undo, retry and clear
change the server's memory, and 👍 / 👎 is stored with the turn it is about."""

from __future__ import annotations

import httpx
import pytest
from gradio_client import Client

from assistant import Mode

PEARLS = "How should I store my pearls?"
FOLLOW_UP = "And my silk tie?"


class Widget:
    """The customer page's events, called the way its buttons call them (one browser tab = one Gradio session)."""

    def __init__(self, base: str):
        self.base = base
        self.client = Client(f"{base}/chat/", verbose=False)
        config = httpx.get(f"{base}/chat/config", timeout=30).json()
        elem_ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
        self._events: dict[tuple[str, str], int] = {}
        self._then: dict[int, int] = {}
        for dependency in config["dependencies"]:
            for target, event in dependency["targets"]:
                if target in elem_ids:
                    self._events[(elem_ids[target], event)] = dependency["id"]
            if dependency.get("trigger_after") is not None:
                self._then[dependency["trigger_after"]] = dependency["id"]
        self.chat: list[dict] = []

    def _fn(self, elem_id: str, event: str) -> int:
        return self._events[(elem_id, event)]

    def ask(self, message: str) -> str:
        submit = self._fn("customer-input", "submit")
        _, self.chat = self.client.predict(message, self.chat, fn_index=submit)
        self.chat = self.client.submit(self.chat, fn_index=self._then[submit]).result()
        return self.last_answer()

    def retry(self) -> str:
        retry = self._fn("customer-chat", "retry")
        self.chat = self.client.predict(self.chat, fn_index=retry)
        self.chat = self.client.submit(self.chat, fn_index=self._then[retry]).result()
        return self.last_answer()

    def undo(self) -> str:
        self.chat, restored = self.client.predict(self.chat, fn_index=self._fn("customer-chat", "undo"))
        return restored

    def clear(self) -> None:
        self.client.predict(fn_index=self._fn("customer-chat", "clear"))
        self.chat = []

    def like(self, message_index: int, liked: bool) -> None:
        # Gradio's client cannot send event data; the page itself posts this.
        reply = httpx.post(
            f"{self.base}/chat/gradio_api/run/predict",
            json={
                "fn_index": self._fn("customer-chat", "like"),
                "data": [self.chat, None],
                "event_data": {"index": message_index, "value": self.chat[message_index]["content"], "liked": liked},
                "session_hash": self.client.session_hash,
            },
            timeout=60,
        )
        assert reply.status_code == 200, reply.text

    def last_answer(self) -> str:
        content = self.chat[-1]["content"]
        return " ".join(part.get("text", "") for part in content) if isinstance(content, list) else str(content)


@pytest.fixture
def widget(app_server):
    base, _ = app_server
    return Widget(base)


def widget_session(app) -> str:
    """The server session of the latest widget turn (the page never sees it: it is kept in server-side state)."""
    turns = [t for t in app.state.conversation_log.rows("turns") if t["channel"] == "customer_ui"]
    return turns[-1]["session_id"]


def test_undo_retry_and_clear_change_the_servers_memory(app_server, widget):
    _, app = app_server
    services = app.state.services
    assert widget.ask(PEARLS)
    session_id = widget_session(app)
    owner = services.sessions.audience_of(session_id)
    assert owner is not None and owner.audience is Mode.CUSTOMER
    widget.ask(FOLLOW_UP)
    assert widget_session(app) == session_id
    assert [t.question for t in services.memory.turns(session_id)] == [PEARLS, FOLLOW_UP]

    # Undo: the follow-up leaves the window and the memory, and comes back into the text box.
    assert widget.undo() == FOLLOW_UP
    assert [t.question for t in services.memory.turns(session_id)] == [PEARLS]
    assert len(widget.chat) == 2

    # Retry: the first answer is replaced, in the window and in memory (one turn, a new one).
    first_turn = services.memory.turns(session_id)[0].id
    assert widget.retry()
    turns = services.memory.turns(session_id)
    assert [t.question for t in turns] == [PEARLS] and turns[0].id != first_turn
    assert len(widget.chat) == 2

    # Clear: the conversation is forgotten on the server, and the next question starts a new session.
    widget.clear()
    assert services.memory.turns(session_id) == []
    assert services.sessions.audience_of(session_id) is None
    widget.ask(PEARLS)
    assert widget_session(app) != session_id


def test_feedback_is_stored_with_its_turn(app_server, widget):
    _, app = app_server
    widget.ask(PEARLS)
    widget.ask(FOLLOW_UP)
    log = app.state.conversation_log
    session_id = widget_session(app)
    first, second = [t for t in log.rows("turns") if t["session_id"] == session_id][-2:]
    widget.like(1, liked=True)  # the first answer
    widget.like(3, liked=False)  # the second
    feedback = log.rows("feedback")[-2:]
    assert [(f["turn_id"], f["helpful"], f["session_id"]) for f in feedback] == [
        (first["id"], 1, session_id),
        (second["id"], 0, session_id),
    ]
