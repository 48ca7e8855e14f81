"""Which evidence line answers the question, judged by the LLM: one short yes/no prompt per line, read as the
log-odds of "Yes" against "No" for the model's next token. No text is generated, so nothing the model says can
reach the client; it only orders and gates the lines that are quoted.

The token alignment (`evidence.py`) finds the lines that share the question's words; it cannot tell the line that
answers ("Express delivery costs €25") from one that only names the same things ("Express delivery is offered in
the EU"). A model that reads the question and the line together can, when it is large enough: on the calibration
half the 1.5B's best log-odds over 8 or 10 judged lines separated answerable from unanswerable questions at AUC
0.77 or 0.69 (the alignment's evidence score: 0.59), while the 0.5B's ordering was worse than the alignment's
(benchmarks/RESULTS.md).

Lines are ordered by the sum of the two signals, each standardised over the question's candidate lines, so that
the judge breaks the alignment's near-ties without throwing away what the alignment knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from colbert_att_assistant.assistant.evidence import EvidenceUnit
from colbert_att_assistant.assistant.llm_backends import ChatModel

# The question comes before the line, so that llama.cpp keeps the evaluated system prompt and question between the
# lines of one question and only the line and the closing words are new for each.
JUDGE_SYSTEM_PROMPT = (
    "You check whether a line from a shop's help pages answers a customer's question. Reply Yes or No."
)
YES_WORDS = ("Yes", "yes")
NO_WORDS = ("No", "no")


def judge_messages(question: str, unit: EvidenceUnit) -> list[ChatMessage]:
    return [
        ChatMessage(role=MessageRole.SYSTEM, content=JUDGE_SYSTEM_PROMPT),
        ChatMessage(
            role=MessageRole.USER,
            content=f"Question: {question}\nLine ({unit.heading}): {unit.text}\n\nDoes this line answer the question?",
        ),
    ]


@dataclass(frozen=True)
class JudgedLine:
    unit: EvidenceUnit
    log_odds: float  # the judge's log P(Yes) - log P(No)
    rank_score: float  # standardised log-odds + standardised alignment score; higher is better


def _standardised(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / (values.std() + 1e-6)


def rank_lines(units: Sequence[EvidenceUnit], log_odds: Sequence[float]) -> list[JudgedLine]:
    """The lines, best first, by standardised judge log-odds plus standardised alignment score."""
    if len(units) != len(log_odds):
        raise ValueError(f"{len(units)} lines but {len(log_odds)} judgements")
    if not units:
        return []
    odds = np.asarray(log_odds, dtype=np.float64)
    alignment = np.asarray([unit.score for unit in units], dtype=np.float64)
    combined = _standardised(odds) + _standardised(alignment)
    judged = [JudgedLine(unit, float(o), float(c)) for unit, o, c in zip(units, odds, combined, strict=True)]
    return sorted(judged, key=lambda line: (-line.rank_score, line.unit.source_number, line.unit.position))


class LineJudge:
    """Judges candidate lines with a chat model that gives next-token log-probabilities (`ChatModel`)."""

    def __init__(self, chat_model: ChatModel):
        self.chat_model = chat_model

    def log_odds(self, question: str, unit: EvidenceUnit) -> float:
        logprobs = self.chat_model.next_token_logprobs(judge_messages(question, unit), (*YES_WORDS, *NO_WORDS))
        yes = np.logaddexp.reduce([logprobs[word] for word in YES_WORDS])
        no = np.logaddexp.reduce([logprobs[word] for word in NO_WORDS])
        return float(yes - no)

    def rank(self, question: str, units: Sequence[EvidenceUnit]) -> list[JudgedLine]:
        """`units` judged one by one and ordered best first (`rank_lines`)."""
        return rank_lines(units, [self.log_odds(question, unit) for unit in units])
