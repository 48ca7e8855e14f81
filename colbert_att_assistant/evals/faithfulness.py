"""LlamaIndex's `FaithfulnessEvaluator` beside the offline judge, for comparison only.

When an LLM backend is configured, each answer can also be given to the evaluator, with the passages it cites as
contexts; it asks the LLM whether the answer is supported (YES/NO). The offline judge never needs it. This module
wraps one evaluation (errors recorded, not raised: a slow or failing LLM must not lose a long report run) and
computes how often the two verdicts agree.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field

# Citation markers as the assistant writes them ("[1]", "[1, 2]", "[Source 2]"): the evaluator is asked about the
# statement, and a bare "[1]" only invites the LLM to look for a source numbered 1.
_CITATION = re.compile(r"\s*\[(?:sources?\s*)?\d+(?:\s*,\s*\d+)*\]", re.IGNORECASE)
FEEDBACK_CHARS = 300  # the LLM's raw reply is kept up to this length


class FaithfulnessVerdict(BaseModel):
    passing: bool | None = Field(description="The evaluator's verdict; None when it could not be run.")
    feedback: str = Field(default="", description="The LLM's reply, cut to FEEDBACK_CHARS.")
    seconds: float = Field(default=0.0, description="Wall time of the evaluation.")
    error: str | None = None


class AgreementStats(BaseModel):
    """How an offline verdict and an LLM verdict on the same answers agree."""

    n: int = Field(description="Answers with both verdicts.")
    skipped: int = Field(default=0, description="Answers missing one of the verdicts (an LLM error, no claim).")
    agreement: float | None = Field(description="Share of the n answers where both verdicts agree.")
    cohen_kappa: float | None = Field(description="Agreement beyond chance; None when it is undefined.")
    judge_supported_rate: float | None = None
    llm_supported_rate: float | None = None
    # Confusion table: rows are the judge's verdict, columns the LLM's.
    both_supported: int = 0
    judge_only: int = Field(default=0, description="Judge supported, LLM said NO.")
    llm_only: int = Field(default=0, description="Judge not supported, LLM said YES.")
    neither: int = 0


def strip_citations(text: str) -> str:
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", _CITATION.sub("", text)).strip()


def agreement_stats(pairs: Iterable[tuple[bool | None, bool | None]]) -> AgreementStats:
    """Agreement of (judge verdict, LLM verdict) pairs; a pair with a None on either side is counted as skipped."""
    both_supported = judge_only = llm_only = neither = skipped = 0
    for judge, llm in pairs:
        if judge is None or llm is None:
            skipped += 1
        elif judge and llm:
            both_supported += 1
        elif judge:
            judge_only += 1
        elif llm:
            llm_only += 1
        else:
            neither += 1
    n = both_supported + judge_only + llm_only + neither
    if n == 0:
        return AgreementStats(n=0, skipped=skipped, agreement=None, cohen_kappa=None)
    observed = (both_supported + neither) / n
    judge_yes = (both_supported + judge_only) / n
    llm_yes = (both_supported + llm_only) / n
    expected = judge_yes * llm_yes + (1 - judge_yes) * (1 - llm_yes)
    kappa = None if expected >= 1 else (observed - expected) / (1 - expected)
    return AgreementStats(
        n=n,
        skipped=skipped,
        agreement=round(observed, 4),
        cohen_kappa=None if kappa is None else round(kappa, 4),
        judge_supported_rate=round(judge_yes, 4),
        llm_supported_rate=round(llm_yes, 4),
        both_supported=both_supported,
        judge_only=judge_only,
        llm_only=llm_only,
        neither=neither,
    )


class FaithfulnessCheck:
    """`FaithfulnessEvaluator` over one LlamaIndex LLM (the assistant's own, so no other backend is needed)."""

    def __init__(self, llm: object):
        from llama_index.core.evaluation import FaithfulnessEvaluator  # only this optional comparison needs it

        self.evaluator = FaithfulnessEvaluator(llm=llm)

    def evaluate(self, answer: str, contexts: Sequence[str]) -> FaithfulnessVerdict:
        """The evaluator's verdict on `answer` (citation markers removed) against `contexts`."""
        contexts = [c for c in contexts if c.strip()]
        response = strip_citations(answer)
        if not contexts or not response:
            return FaithfulnessVerdict(passing=None, error="no cited passage" if not contexts else "empty answer")
        started = time.perf_counter()
        try:
            result = self.evaluator.evaluate(response=response, contexts=contexts)
        except Exception as exc:  # any backend failure is recorded for this answer, not fatal
            return FaithfulnessVerdict(
                passing=None, seconds=round(time.perf_counter() - started, 2), error=f"{type(exc).__name__}: {exc}"
            )
        return FaithfulnessVerdict(
            passing=bool(result.passing),
            feedback=(result.feedback or "").strip()[:FEEDBACK_CHARS],
            seconds=round(time.perf_counter() - started, 2),
        )
