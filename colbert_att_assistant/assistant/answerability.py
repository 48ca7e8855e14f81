"""How much the best passages stand out from the rest of a ranking: a question the documents answer usually has a
few passages that match it far better than the others, while a question they do not cover ("a velvet bag" beside
the suede guide) matches many passages about equally, and none well.

The spread of the top retrieval scores (their standard deviation over their mean, a scale-free form of the
"normalised query commitment" query-performance predictor) reads that without another model. It adjusts the
evidence score before the quote gate: on the labelled calibration half it separated answerable from unanswerable
questions better than the evidence score alone (ROC AUC 0.81 against 0.65), and, with the gold documents left out
of the ranking, as well or better on the knowledge base and on WixQA; its scale is the same on collections of 170
to 5,000 documents (benchmarks/answerability_signals.py, benchmarks/RESULTS.md, 2026-12-04).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Scores read: the top ten of the ranking.
SPREAD_DEPTH = 10
# A typical spread of an answerable question's ranking (median 0.065–0.07 on the knowledge base and WixQA): the
# adjustment is zero there, so that the evidence gate keeps its scale.
REFERENCE_SPREAD = 0.05


def score_spread(scores: Sequence[float]) -> float | None:
    """Standard deviation over mean of the best `SPREAD_DEPTH` scores of a ranking (best first); None when fewer than
    three scores can be read (a collection of one or two passages) or their mean is not positive."""
    top = np.asarray(list(scores)[:SPREAD_DEPTH], dtype=np.float64)
    if top.size < 3 or not np.all(np.isfinite(top)) or top.mean() <= 0:
        return None
    return float(top.std() / top.mean())


def spread_adjusted(evidence_score: float, spread: float | None, weight: float) -> float:
    """The evidence score raised or lowered by `weight` x ln(spread / REFERENCE_SPREAD); unchanged without a spread
    or at weight 0."""
    if spread is None or weight == 0:
        return evidence_score
    return evidence_score + weight * math.log(max(spread, 1e-6) / REFERENCE_SPREAD)
