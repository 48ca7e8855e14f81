"""Per-session conversation memory with a token budget (oldest turns are forgotten first)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from llama_index.core.base.llms.types import ChatMessage, MessageRole


class SessionMemory:
    def __init__(self, token_limit: int, count_tokens: Callable[[str], int], max_sessions: int = 1000):
        self.token_limit = token_limit
        self.count_tokens = count_tokens
        self.max_sessions = max_sessions
        self._turns: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def history(self, session_id: str | None) -> list[ChatMessage]:
        """The most recent whole turns that fit in the token budget, oldest first."""
        if session_id is None:
            return []
        with self._lock:
            turns = list(self._turns.get(session_id, []))
        kept: list[tuple[str, str]] = []
        used = 0
        for question, answer in reversed(turns):
            cost = self.count_tokens(question) + self.count_tokens(answer)
            if used + cost > self.token_limit:
                break
            kept.insert(0, (question, answer))
            used += cost
        return [
            message
            for question, answer in kept
            for message in (
                ChatMessage(role=MessageRole.USER, content=question),
                ChatMessage(role=MessageRole.ASSISTANT, content=answer),
            )
        ]

    def add_turn(self, session_id: str | None, question: str, answer: str) -> None:
        if session_id is None:
            return
        with self._lock:
            turns = self._turns.setdefault(session_id, [])
            turns.append((question, answer))
            del turns[:-20]  # more than the budget could ever hold
            self._turns.move_to_end(session_id)
            while len(self._turns) > self.max_sessions:
                self._turns.popitem(last=False)

    def clear(self, session_id: str) -> None:
        with self._lock:
            self._turns.pop(session_id, None)
