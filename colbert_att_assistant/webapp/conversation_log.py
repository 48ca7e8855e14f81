"""Conversations and feedback in SQLite, with the retrieved chunk ids and scores of every answer, so that a bad
answer can be traced back to retrieval."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

from colbert_att_assistant.assistant import AssistantAnswer

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    channel TEXT NOT NULL,          -- customer_ui, staff_ui, api
    session_id TEXT,
    mode TEXT NOT NULL,
    question TEXT NOT NULL,
    standalone_question TEXT NOT NULL,
    answer TEXT NOT NULL,
    abstained INTEGER NOT NULL,
    abstain_reason TEXT,
    retrieved TEXT NOT NULL,        -- JSON [{node_id, document_id, score}]
    cited TEXT NOT NULL,            -- JSON [node_id]
    number_mismatches TEXT NOT NULL,
    timings_ms TEXT NOT NULL,
    answer_path TEXT,               -- generated, extractive, abstained, acknowledged, invalid
    grounding_note TEXT             -- the warning shown under a weakly supported answer
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    turn_id INTEGER REFERENCES turns(id),
    session_id TEXT,
    helpful INTEGER NOT NULL,
    answer TEXT,
    comment TEXT                    -- what the client wrote with a 👎
);
CREATE TABLE IF NOT EXISTS security_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    kind TEXT NOT NULL,             -- login_lockout, ...
    client TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""
TABLES = ("turns", "feedback", "security_events")
# Columns added after the first logs were written: a log from before gets them on opening.
ADDED_COLUMNS = {"turns": ("answer_path TEXT", "grounding_note TEXT"), "feedback": ("comment TEXT",)}


class ConversationLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, check_same_thread=False, timeout=10)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.executescript(SCHEMA)
        for table, columns in ADDED_COLUMNS.items():
            present = {row[1] for row in self._connection.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column.split()[0] not in present:
                    self._connection.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        self._lock = threading.Lock()

    def record_turn(
        self, answer: AssistantAnswer, channel: str, session_id: str | None, grounding_note: str | None = None
    ) -> int:
        row = (
            time.time(),
            channel,
            session_id,
            answer.audience.value,  # stored in the `mode` column, the name the HTTP API uses
            answer.question,
            answer.standalone_question,
            answer.text,
            int(answer.abstained),
            answer.abstain_reason,
            json.dumps(
                [{"node_id": s.node_id, "document_id": s.document_id, "score": s.score} for s in answer.sources]
            ),
            json.dumps([c.node_id for c in answer.citations]),
            json.dumps([m.model_dump() for m in answer.number_mismatches]),
            json.dumps(answer.timings_ms),
            answer.answer_path,
            grounding_note,
        )
        with self._lock, self._connection:
            cursor = self._connection.execute(
                "INSERT INTO turns (created, channel, session_id, mode, question, standalone_question, answer, "
                "abstained, abstain_reason, retrieved, cited, number_mismatches, timings_ms, answer_path, "
                "grounding_note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid)

    def turn_session(self, turn_id: int) -> str | None:
        """The session a logged turn belongs to (None when there is no such turn)."""
        with self._lock:
            row = self._connection.execute("SELECT session_id FROM turns WHERE id = ?", (turn_id,)).fetchone()
        return None if row is None else row[0]

    def record_feedback(
        self,
        session_id: str | None,
        helpful: bool,
        answer: str,
        turn_id: int | None = None,
        comment: str | None = None,
    ) -> None:
        if turn_id is None and session_id is not None:
            # The widget knows the answer it showed; find the turn that produced it.
            found = self._connection.execute(
                "SELECT id FROM turns WHERE session_id = ? AND ? LIKE answer || '%' ORDER BY id DESC LIMIT 1",
                (session_id, answer),
            ).fetchone()
            turn_id = found[0] if found else None
        with self._lock, self._connection:
            self._connection.execute(
                "INSERT INTO feedback (created, turn_id, session_id, helpful, answer, comment) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), turn_id, session_id, int(helpful), answer, comment or None),
            )

    def record_security_event(self, kind: str, client: str, detail: str) -> None:
        logger.warning("Security event %s from %s: %s", kind, client, detail)
        with self._lock, self._connection:
            self._connection.execute(
                "INSERT INTO security_events (created, kind, client, detail) VALUES (?, ?, ?, ?)",
                (time.time(), kind, client, detail),
            )

    def rows(self, table: str) -> list[dict]:
        if table not in TABLES:
            raise ValueError(f"Unknown table {table!r}.")
        cursor = self._connection.execute(f"SELECT * FROM {table} ORDER BY id")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
