"""Conversation sessions issued by the server and bound to who opened them.

A session id is a random token the server hands out; each is bound to its audience (customer, or staff and the
staff login that opened it) and kept in SQLite beside the conversation memory, so a restart keeps conversations.
A request naming an id that is unknown, expired, malformed or bound to someone else starts a new session instead:
the reply carries the new id, and nothing tells an outsider whether the id it tried exists.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
import time

from pydantic import BaseModel

from colbert_att_assistant.assistant import Audience
from colbert_att_assistant.assistant.memory import SQLiteMemory

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    audience TEXT NOT NULL,         -- customer, staff
    staff_user TEXT,                -- the staff login that opened a staff session
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_last_used ON sessions (last_used);
"""


class SessionOwner(BaseModel, frozen=True):
    audience: Audience
    staff_user: str | None = None

    @classmethod
    def customer(cls) -> SessionOwner:
        return cls(audience=Audience.CUSTOMER)

    @classmethod
    def staff(cls, username: str) -> SessionOwner:
        return cls(audience=Audience.STAFF, staff_user=username)


class ResolvedSession(BaseModel, frozen=True):
    id: str
    new: bool


class SessionRegistry:
    def __init__(self, memory: SQLiteMemory, idle_s: float, clock=time.time):
        self.memory = memory
        self.idle_s = idle_s
        self.clock = clock
        self._connection = sqlite3.connect(memory.path, check_same_thread=False, timeout=10)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.executescript(SCHEMA)
        self._lock = threading.Lock()

    def start(self, owner: SessionOwner) -> str:
        session_id = secrets.token_urlsafe(24)
        now = self.clock()
        with self._lock, self._connection:
            self._connection.execute(
                "INSERT INTO sessions (id, audience, staff_user, created, last_used) VALUES (?, ?, ?, ?, ?)",
                (session_id, owner.audience.value, owner.staff_user, now, now),
            )
        return session_id

    def owns(self, session_id: str | None, owner: SessionOwner) -> bool:
        """True when `session_id` is a live session of `owner` (and marks it used)."""
        if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
            return False
        now = self.clock()
        with self._lock, self._connection:
            row = self._connection.execute(
                "SELECT audience, staff_user, last_used FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None or row[0] != owner.audience.value or row[1] != owner.staff_user:
                return False
            if now - row[2] > self.idle_s:
                return False
            self._connection.execute("UPDATE sessions SET last_used = ? WHERE id = ?", (now, session_id))
        return True

    def resolve(self, claimed: str | None, owner: SessionOwner) -> ResolvedSession:
        """The claimed session when it is the caller's, otherwise a new one."""
        if claimed is not None and self.owns(claimed, owner):
            return ResolvedSession(id=claimed, new=False)
        self.forget_idle()
        return ResolvedSession(id=self.start(owner), new=True)

    def end(self, session_id: str, owner: SessionOwner) -> bool:
        """Forget a session of `owner` and its memory; False when it is not theirs."""
        if not self.owns(session_id, owner):
            return False
        self.memory.clear(session_id)
        with self._lock, self._connection:
            self._connection.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return True

    def forget_idle(self) -> int:
        """Delete sessions (and their memory) unused for longer than `idle_s`."""
        cutoff = self.clock() - self.idle_s
        with self._lock, self._connection:
            stale = [
                row[0] for row in self._connection.execute("SELECT id FROM sessions WHERE last_used < ?", (cutoff,))
            ]
            self._connection.executemany("DELETE FROM sessions WHERE id = ?", [(s,) for s in stale])
        for session_id in stale:
            self.memory.clear(session_id)
        return len(stale)

    def audience_of(self, session_id: str) -> SessionOwner | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT audience, staff_user FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        return None if row is None else SessionOwner(audience=Audience(row[0]), staff_user=row[1])
