"""Support features of a claim against passage text, and the contradictions that make a claim unsupported
whatever its other evidence (a figure, a named product or a negation that the passage does not back)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from grounding.alignment import ClaimTokens, TokenWeighting, align
from grounding.lexical import (
    Name,
    PassageClause,
    content_stems,
    fold,
    is_negative,
    lexical_recall,
    name_in,
    negation_mismatch,
    passage_clauses,
    proper_names,
)
from grounding.numbers import Quantity, extract_quantities, missing_quantities

# Order of the calibration's coefficients.
FEATURE_NAMES: tuple[str, ...] = (
    "align_mean",  # exp(A)-weighted mean over claim tokens of the best cosine match in the passage
    "align_strong",  # exp(A)-weighted share of claim tokens with a strong match
    "lexical_recall",  # share of the claim's stemmed content words found in the passage
    "numbers_missing",  # share of the claim's numbers/prices/durations the passage does not state
    "names_missing",  # share of the claim's capitalised names the passage does not contain
    "negation_mismatch",  # 1 when the passage clause matching a claim clause has the opposite polarity
)


@dataclass(frozen=True)
class ClaimEvidence:
    text: str
    tokens: ClaimTokens
    stems: frozenset[str]
    quantities: tuple[Quantity, ...]
    names: tuple[Name, ...]
    negative: bool


@dataclass(frozen=True)
class PassageEvidence:
    """One passage, or several read as one (the union of a claim's citations)."""

    vectors: np.ndarray
    stems: frozenset[str]
    quantities: tuple[Quantity, ...]
    folded: str
    clauses: tuple[PassageClause, ...]


@dataclass
class PairFeatures:
    values: np.ndarray  # in FEATURE_NAMES order
    contradictions: list[str] = field(default_factory=list)  # why the claim cannot be supported, if anything


def claim_evidence(text: str, tokens: ClaimTokens) -> ClaimEvidence:
    return ClaimEvidence(
        text=text,
        tokens=tokens,
        stems=frozenset(content_stems(text)),
        quantities=tuple(extract_quantities(text)),
        names=tuple(proper_names(text)),
        negative=is_negative(text),
    )


def passage_evidence(text: str, vectors: np.ndarray) -> PassageEvidence:
    return PassageEvidence(
        vectors=vectors,
        stems=frozenset(content_stems(text)),
        quantities=tuple(extract_quantities(text, lone_one=True)),
        folded=fold(text),
        clauses=tuple(passage_clauses(text)),
    )


def union(passages: Sequence[PassageEvidence]) -> PassageEvidence:
    if len(passages) == 1:
        return passages[0]
    return PassageEvidence(
        vectors=np.concatenate([p.vectors for p in passages]),
        stems=frozenset().union(*(p.stems for p in passages)),
        quantities=tuple(q for p in passages for q in p.quantities),
        folded="\n".join(p.folded for p in passages),
        clauses=tuple(c for p in passages for c in p.clauses),
    )


@dataclass
class ExactChecks:
    """The features that do not depend on the encoder (lexical recall, numbers, names, negation)."""

    values: np.ndarray  # FEATURE_NAMES[2:]
    contradictions: list[str]


def exact_checks(claim: ClaimEvidence, passage: PassageEvidence) -> ExactChecks:
    missing_numbers = missing_quantities(list(claim.quantities), list(passage.quantities))
    missing_names = [name for name in claim.names if not name_in(name, passage.folded)]
    flipped = negation_mismatch(claim.text, list(passage.clauses))
    values = np.array(
        [
            lexical_recall(set(claim.stems), set(passage.stems)),
            len(missing_numbers) / len(claim.quantities) if claim.quantities else 0.0,
            len(missing_names) / len(claim.names) if claim.names else 0.0,
            float(flipped),
        ]
    )
    contradictions = [f"number {q.text!r} is not in the passage" for q in missing_numbers]
    # A lone capitalised word ("Settings") is often a UI label paraphrased away; product-like names are not.
    contradictions += [f"name {n.text!r} is not in the passage" for n in missing_names if n.multiword]
    if flipped:
        side = "negated" if claim.negative else "affirmed"
        contradictions.append(f"the claim is {side} where the matching passage text is not")
    return ExactChecks(values, contradictions)


def pair_features(
    claim: ClaimEvidence,
    passage: PassageEvidence,
    weighting: TokenWeighting,
    strong_threshold: float,
    checks: ExactChecks | None = None,
) -> PairFeatures:
    """All features of the pair; `checks` may be passed in when already computed for this pair."""
    alignment = align(claim.tokens, passage.vectors, weighting, strong_threshold)
    checks = checks or exact_checks(claim, passage)
    values = np.concatenate([[alignment.mean_similarity, alignment.strong_fraction], checks.values])
    return PairFeatures(values, list(checks.contradictions))
