"""Answer grounding: does each sentence of an assistant answer follow from the passages it cites? A calibrated
judge over ColBERT-Att token alignment, exact checks of figures and names, negation and word overlap."""

from colbert_att_assistant.grounding.calibration import Calibration, load_calibration
from colbert_att_assistant.grounding.claims import (
    Sentence,
    SentenceKind,
    abstention_correct,
    is_abstention,
    restates_question,
    split_sentences,
    states_no_claim,
)
from colbert_att_assistant.grounding.judge import (
    ClaimVerdict,
    EvidenceScope,
    GroundingJudge,
    GroundingReport,
    SkippedSentence,
    Verdict,
)

__all__ = [
    "Calibration",
    "ClaimVerdict",
    "EvidenceScope",
    "GroundingJudge",
    "GroundingReport",
    "Sentence",
    "SentenceKind",
    "SkippedSentence",
    "Verdict",
    "abstention_correct",
    "is_abstention",
    "load_calibration",
    "restates_question",
    "split_sentences",
    "states_no_claim",
]
