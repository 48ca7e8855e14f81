"""Answer grounding: does each sentence of an assistant answer follow from the passages it cites? A calibrated
judge over ColBERT-Att token alignment, exact checks of figures and names, negation and word overlap."""

from grounding.calibration import Calibration, load_calibration
from grounding.claims import Sentence, SentenceKind, abstention_correct, is_abstention, split_sentences
from grounding.judge import ClaimVerdict, GroundingJudge, GroundingReport, SkippedSentence

__all__ = [
    "Calibration",
    "ClaimVerdict",
    "GroundingJudge",
    "GroundingReport",
    "Sentence",
    "SentenceKind",
    "SkippedSentence",
    "abstention_correct",
    "is_abstention",
    "load_calibration",
    "split_sentences",
]
