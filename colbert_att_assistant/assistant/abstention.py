"""When to say "I don't know": calibrated thresholds on the retrieval evidence (the normalised top score, and the
share of the question the best evidence unit covers), and recognising a draft sentence in which the model declines
(such a sentence is never shown)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

CALIBRATION_FILE = Path(__file__).with_name("abstention_calibration.json")

# Ways a small model says the sources do not answer; the prompt asks for a bare NO ANSWER, models paraphrase.
_MODEL_ABSTAINS = re.compile(
    r"\b(no answer\b|i (?:do not|don't|dont) know"
    r"|(?:sources?|guides?|information)[^.]{0,40}\b(?:do(?:es)? not|don't|doesn't)"
    r" (?:contain|mention|say|cover|provide|include)|not (?:mentioned|covered|specified) in|no information"
    r"|(?:can ?not|can't|unable to) (?:find|answer))",
    re.IGNORECASE,
)


def model_abstained(answer: str) -> bool:
    return bool(_MODEL_ABSTAINS.search(answer))


class AbstentionCalibration(BaseModel):
    """The retrieval-evidence threshold and how it was chosen (saved as assistant/abstention_calibration.json)."""

    min_score_to_answer: float = Field(ge=0.0, le=1.0)
    min_evidence_to_answer: float = Field(default=0.0, ge=0.0, le=1.0)
    min_evidence_for_extract: float = Field(default=1.0, ge=0.0, le=1.0)
    scoring: str
    fitted_on: str
    min_answer_rate: float
    n_answerable: int
    n_unanswerable: int
    answer_rate_fit: float
    abstain_rate_fit: float

    @classmethod
    def load(cls, path: Path = CALIBRATION_FILE) -> AbstentionCalibration | None:
        return cls.model_validate_json(path.read_text()) if path.is_file() else None

    def save(self, path: Path = CALIBRATION_FILE) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")


def choose_threshold(
    answerable_scores: Sequence[float], unanswerable_scores: Sequence[float], min_answer_rate: float = 0.95
) -> float:
    """The highest threshold that still lets `min_answer_rate` of the answerable questions through.

    Retrieval scores separate answerable from unanswerable questions only partly (an unanswerable question about
    velvet still finds the suede guide), so the gate is a safety net that must not block real questions; the
    questions that slip past it meet the model's own abstention."""
    answerable = np.sort(np.asarray(answerable_scores, dtype=np.float64))
    if len(answerable) == 0 or len(unanswerable_scores) == 0:
        raise ValueError("Calibration needs both answerable and unanswerable questions.")
    if not 0.0 < min_answer_rate <= 1.0:
        raise ValueError(f"min_answer_rate must be in (0, 1], got {min_answer_rate}.")
    # Scores at or above the threshold are answered: allow at most this many answerable questions below it.
    allowed_below = int(np.floor((1.0 - min_answer_rate) * len(answerable) + 1e-9))
    return float(answerable[allowed_below])
