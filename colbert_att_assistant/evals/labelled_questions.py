"""The knowledge base's labelled questions, split once into a calibration half and a held-out half.

The split is by a hash of the question id, so it never changes when questions are added; calibration reads only
the "calibration" half and every reported rate is on the "held_out" half.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from colbert_att_assistant.assistant.settings import Audience
from colbert_att_assistant.paths import KNOWLEDGE_BASE_DIR

QUESTIONS_FILE = KNOWLEDGE_BASE_DIR / "eval" / "queries.jsonl"
Split = Literal["calibration", "held_out", "all"]


class LabelledQuestion(BaseModel):
    id: str
    text: str
    type: str
    answerable: bool
    audience: Literal["public", "internal"]
    previous_turn: str | None = None
    note: str = ""
    # What a correct answer must say: each fact is a list of acceptable wordings, one of which must occur in the
    # answer (matching rules in evals.answer_scoring). Empty for unanswerable questions.
    facts: list[list[str]] = []

    @property
    def asked_by(self) -> Audience:
        """Staff ask the questions that only internal documents answer; customers ask the others."""
        return Audience.STAFF if self.audience == "internal" else Audience.CUSTOMER

    @property
    def split(self) -> Literal["calibration", "held_out"]:
        return "calibration" if hashlib.sha256(self.id.encode()).digest()[0] % 2 == 0 else "held_out"


def load_questions(split: Split = "all", path: Path = QUESTIONS_FILE) -> list[LabelledQuestion]:
    questions = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                questions.append(LabelledQuestion(id=record["_id"], text=record["text"], **record["metadata"]))
    return [q for q in questions if split == "all" or q.split == split]
