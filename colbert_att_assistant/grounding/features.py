"""Support features of a claim against passage text; the failed exact checks that make a claim unsupported whatever
its other evidence (a figure, a named product or a negation that the passage does not back); and the conflicts that
make it contradicted (the matching passage sentence states another figure, product or polarity)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from colbert_att_assistant.grounding.alignment import ClaimTokens, TokenWeighting, align
from colbert_att_assistant.grounding.conflicts import (
    PassageSentence,
    name_conflicts,
    number_conflicts,
    polarity_conflict,
    sentence_evidence,
)
from colbert_att_assistant.grounding.lexical import (
    Name,
    PassageClause,
    bigram_recall,
    content_stems,
    fold,
    is_negative,
    lexical_recall,
    name_in,
    passage_clauses,
    passage_sentences,
    proper_names,
    stem_bigrams,
    table_sentences,
)
from colbert_att_assistant.grounding.numbers import Quantity, extract_quantities, missing_quantities

# Order of the calibration's coefficients.
FEATURE_NAMES: tuple[str, ...] = (
    "align_mean",  # exp(A)-weighted mean over claim tokens of the best cosine match in the passage
    "align_strong",  # exp(A)-weighted share of claim tokens with a strong match
    "lexical_recall",  # share of the claim's stemmed content words found in the passage
    "bigram_recall",  # share of the claim's consecutive content-word pairs found consecutive in a passage sentence
    "numbers_missing",  # share of the claim's numbers/prices/durations the passage does not state
    "names_missing",  # share of the claim's capitalised names the passage does not contain
    "negation_mismatch",  # 1 when the passage clause matching a claim clause has the opposite polarity
)


@dataclass(frozen=True)
class ClaimEvidence:
    text: str
    tokens: ClaimTokens
    stems: frozenset[str]
    bigrams: frozenset[tuple[str, str]]
    quantities: tuple[Quantity, ...]
    names: tuple[Name, ...]
    negative: bool


@dataclass(frozen=True)
class PassageEvidence:
    """One passage, or several read as one (the union of a claim's citations)."""

    vectors: np.ndarray
    stems: frozenset[str]
    bigrams: frozenset[tuple[str, str]]  # within sentences only
    quantities: tuple[Quantity, ...]
    folded: str
    clauses: tuple[PassageClause, ...]
    sentences: tuple[PassageSentence, ...] = ()


@dataclass
class PairFeatures:
    values: np.ndarray  # in FEATURE_NAMES order
    failed_checks: list[str] = field(default_factory=list)  # figures/names it lacks, a flipped negation
    conflicts: list[str] = field(default_factory=list)  # what in the passage contradicts it


def claim_evidence(text: str, tokens: ClaimTokens) -> ClaimEvidence:
    return ClaimEvidence(
        text=text,
        tokens=tokens,
        stems=frozenset(content_stems(text)),
        bigrams=frozenset(stem_bigrams(text)),
        quantities=tuple(extract_quantities(text)),
        names=tuple(proper_names(text)),
        negative=is_negative(text),
    )


def passage_evidence(text: str, vectors: np.ndarray) -> PassageEvidence:
    # Table rows also read as "row label, column header, cell" sentences (no WixQA article has a markdown table, so
    # the calibration is unaffected; the knowledge base prices most services in tables).
    sentences = [sentence for sentence, _ in passage_sentences(text)] + table_sentences(text)
    return PassageEvidence(
        vectors=vectors,
        stems=frozenset(content_stems(text)),
        bigrams=frozenset(pair for sentence in sentences for pair in stem_bigrams(sentence)),
        quantities=tuple(extract_quantities(text, lone_one=True)),
        folded=fold(text),
        clauses=tuple(passage_clauses(text)),
        sentences=sentence_evidence(sentences),
    )


def union(passages: Sequence[PassageEvidence]) -> PassageEvidence:
    if len(passages) == 1:
        return passages[0]
    return PassageEvidence(
        vectors=np.concatenate([p.vectors for p in passages]),
        stems=frozenset().union(*(p.stems for p in passages)),
        bigrams=frozenset().union(*(p.bigrams for p in passages)),
        quantities=tuple(q for p in passages for q in p.quantities),
        folded="\n".join(p.folded for p in passages),
        clauses=tuple(c for p in passages for c in p.clauses),
        sentences=tuple(s for p in passages for s in p.sentences),
    )


@dataclass
class ExactChecks:
    """The features that do not depend on the encoder (word and word-pair recall, numbers, names, negation)."""

    values: np.ndarray  # FEATURE_NAMES[2:]
    failed_checks: list[str]
    conflicts: list[str] = field(default_factory=list)


def exact_checks(claim: ClaimEvidence, passage: PassageEvidence) -> ExactChecks:
    missing_numbers = missing_quantities(list(claim.quantities), list(passage.quantities))
    missing_names = [name for name in claim.names if not name_in(name, passage.folded)]
    polarity = polarity_conflict(claim.text, claim.negative, passage.clauses)
    flipped = bool(polarity)
    values = np.array(
        [
            lexical_recall(set(claim.stems), set(passage.stems)),
            bigram_recall(set(claim.bigrams), set(passage.bigrams)),
            len(missing_numbers) / len(claim.quantities) if claim.quantities else 0.0,
            len(missing_names) / len(claim.names) if claim.names else 0.0,
            float(flipped),
        ]
    )
    failed_checks = [f"number {q.text!r} is not in the passage" for q in missing_numbers]
    # A lone capitalised word ("Settings") is often a UI label paraphrased away; product-like names are not.
    failed_checks += [f"name {n.text!r} is not in the passage" for n in missing_names if n.multiword]
    # A missing figure or name is a contradiction only when the sentence that matches the rest of the claim states
    # another one; a flipped negation always is (it is found against the matching clause).
    conflicts = number_conflicts(set(claim.stems), claim.quantities, missing_numbers, passage.sentences)
    conflicts += name_conflicts(claim.text, set(claim.stems), missing_names, passage.sentences)
    conflicts += polarity
    failed_checks += polarity
    return ExactChecks(values, failed_checks, conflicts)


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
    return PairFeatures(values, list(checks.failed_checks), list(checks.conflicts))
