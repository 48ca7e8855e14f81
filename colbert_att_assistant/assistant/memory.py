"""Per-session conversation memory with a token budget (oldest turns are forgotten first).

Two stores with one interface: `SessionMemory` lives in this process (the library default) and `SQLiteMemory`
keeps the turns on disk, so that the chat app's conversations survive a restart. Both offer, beyond what the
assistant itself calls (`history`, `add_turn`, `clear`), what a chat window's undo / retry need: every stored turn
has an increasing id, `last_turn_id` marks where a turn began and `forget_after` rolls the session back to a mark.

A turn the assistant declined to answer keeps its question but not its "I don't know": a small model shown earlier
refusals in its history imitates them.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llama_index.core.base.llms.types import ChatMessage, MessageRole

NO_ANSWER_MARKER = "(no answer was given)"
# More turns than any token budget could hold: older ones are deleted on the next add.
MAX_TURNS_PER_SESSION = 20


@dataclass(frozen=True)
class MemoryTurn:
    id: int
    question: str
    answer: str
    abstained: bool

    @property
    def shown_answer(self) -> str:
        return NO_ANSWER_MARKER if self.abstained else self.answer


class ConversationMemory(Protocol):
    """What the assistant calls; the chat app also uses `last_turn_id` / `forget_after` for undo and retry."""

    def history(self, session_id: str | None) -> list[ChatMessage]: ...

    def add_turn(self, session_id: str | None, question: str, answer: str, abstained: bool = False) -> None: ...

    def clear(self, session_id: str) -> None: ...


def budgeted_history(
    turns: list[MemoryTurn], token_limit: int, count_tokens: Callable[[str], int]
) -> list[ChatMessage]:
    """The most recent whole turns that fit in the token budget, oldest first, as chat messages."""
    kept: list[MemoryTurn] = []
    used = 0
    for turn in reversed(turns):
        cost = count_tokens(turn.question) + count_tokens(turn.shown_answer)
        if used + cost > token_limit:
            break
        kept.insert(0, turn)
        used += cost
    return [
        message
        for turn in kept
        for message in (
            ChatMessage(role=MessageRole.USER, content=turn.question),
            ChatMessage(role=MessageRole.ASSISTANT, content=turn.shown_answer),
        )
    ]


class SessionMemory:
    """Memory in this process; the least recently used sessions are forgotten beyond `max_sessions`."""

    def __init__(self, token_limit: int, count_tokens: Callable[[str], int], max_sessions: int = 1000):
        self.token_limit = token_limit
        self.count_tokens = count_tokens
        self.max_sessions = max_sessions
        self._turns: OrderedDict[str, list[MemoryTurn]] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def turns(self, session_id: str) -> list[MemoryTurn]:
        with self._lock:
            return list(self._turns.get(session_id, []))

    def history(self, session_id: str | None) -> list[ChatMessage]:
        if session_id is None:
            return []
        return budgeted_history(self.turns(session_id), self.token_limit, self.count_tokens)

    def add_turn(self, session_id: str | None, question: str, answer: str, abstained: bool = False) -> None:
        if session_id is None:
            return
        with self._lock:
            turns = self._turns.setdefault(session_id, [])
            turns.append(MemoryTurn(next(self._ids), question, answer, abstained))
            del turns[:-MAX_TURNS_PER_SESSION]
            self._turns.move_to_end(session_id)
            while len(self._turns) > self.max_sessions:
                self._turns.popitem(last=False)

    def last_turn_id(self, session_id: str) -> int:
        """The id of the session's latest turn (0 when it has none): a mark for `forget_after`."""
        with self._lock:
            turns = self._turns.get(session_id)
            return turns[-1].id if turns else 0

    def forget_after(self, session_id: str, turn_id: int) -> int:
        """Forget the session's turns newer than `turn_id`; returns how many were forgotten."""
        with self._lock:
            turns = self._turns.get(session_id, [])
            kept = [turn for turn in turns if turn.id <= turn_id]
            if session_id in self._turns:
                self._turns[session_id] = kept
            return len(turns) - len(kept)

    def undo_last_turn(self, session_id: str) -> bool:
        with self._lock:
            turns = self._turns.get(session_id)
            if not turns:
                return False
            turns.pop()
            return True

    def clear(self, session_id: str) -> None:
        with self._lock:
            self._turns.pop(session_id, None)


SCHEMA = """
CREATE TABLE IF NOT EXISTS memory_turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    created REAL NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    abstained INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS memory_turns_session ON memory_turns (session_id, id);
"""


def _storable(text: str) -> str:
    # SQLite stores UTF-8: a lone surrogate cannot be written, so it becomes U+FFFD rather than an error.
    return text.encode("utf-8", "replace").decode("utf-8")


class SQLiteMemory:
    """Memory in a SQLite file (write-ahead log, one connection shared under a lock): survives restarts."""

    def __init__(self, path: Path, token_limit: int, count_tokens: Callable[[str], int]):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.token_limit = token_limit
        self.count_tokens = count_tokens
        self._connection = sqlite3.connect(path, check_same_thread=False, timeout=10)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.executescript(SCHEMA)
        self._lock = threading.Lock()

    def turns(self, session_id: str) -> list[MemoryTurn]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT id, question, answer, abstained FROM memory_turns WHERE session_id = ? ORDER BY id",
                (session_id,),
            ).fetchall()
        return [MemoryTurn(row[0], row[1], row[2], bool(row[3])) for row in rows]

    def history(self, session_id: str | None) -> list[ChatMessage]:
        if session_id is None:
            return []
        return budgeted_history(self.turns(session_id), self.token_limit, self.count_tokens)

    def add_turn(self, session_id: str | None, question: str, answer: str, abstained: bool = False) -> None:
        if session_id is None:
            return
        with self._lock, self._connection:
            self._connection.execute(
                "INSERT INTO memory_turns (session_id, created, question, answer, abstained) VALUES (?, ?, ?, ?, ?)",
                (session_id, time.time(), _storable(question), _storable(answer), int(abstained)),
            )
            self._connection.execute(
                "DELETE FROM memory_turns WHERE session_id = ? AND id NOT IN "
                "(SELECT id FROM memory_turns WHERE session_id = ? ORDER BY id DESC LIMIT ?)",
                (session_id, session_id, MAX_TURNS_PER_SESSION),
            )

    def last_turn_id(self, session_id: str) -> int:
        with self._lock:
            row = self._connection.execute(
                "SELECT MAX(id) FROM memory_turns WHERE session_id = ?", (session_id,)
            ).fetchone()
        return int(row[0] or 0)

    def forget_after(self, session_id: str, turn_id: int) -> int:
        with self._lock, self._connection:
            cursor = self._connection.execute(
                "DELETE FROM memory_turns WHERE session_id = ? AND id > ?", (session_id, turn_id)
            )
            return cursor.rowcount

    def undo_last_turn(self, session_id: str) -> bool:
        with self._lock, self._connection:
            cursor = self._connection.execute(
                "DELETE FROM memory_turns WHERE id = (SELECT MAX(id) FROM memory_turns WHERE session_id = ?)",
                (session_id,),
            )
            return cursor.rowcount > 0

    def clear(self, session_id: str) -> None:
        with self._lock, self._connection:
            self._connection.execute("DELETE FROM memory_turns WHERE session_id = ?", (session_id,))

    def close(self) -> None:
        with self._lock:
            self._connection.close()
