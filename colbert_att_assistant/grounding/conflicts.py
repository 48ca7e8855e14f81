"""Contradictions, as distinct from missing support: a claim is contradicted when the passage sentence that matches
the rest of it states a different figure, names a different product, or has the opposite polarity. "Runs for 52
hours" against "the CV-28 runs for 42 hours" is contradicted; "costs €52" against a passage that prices nothing is
merely unsupported."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from colbert_att_assistant.grounding.lexical import (
    Name,
    PassageClause,
    content_stems,
    fold,
    negation_conflict,
    proper_names,
)
from colbert_att_assistant.grounding.numbers import NUMBER_WORDS, Quantity, extract_quantities, same_quantity

# A passage sentence "matches" a claim when it shares at least this many of the claim's content words (the figure
# or name under test left out) and at least this share of them. Below that, a different figure in the sentence is
# more likely about something else than a contradiction.
MIN_SHARED_WORDS = 2
MIN_SHARED_SHARE = 0.5
# Names need a closer match: capitalised UI labels ("Click Add Elements") are everywhere in help pages.
MIN_SHARED_SHARE_NAMES = 2 / 3
# Spelled-out figures ("forty-two") are the figure itself, not words to match the sentence by.
_NUMBER_STEMS = frozenset(content_stems(" ".join(NUMBER_WORDS)))


@dataclass(frozen=True)
class PassageSentence:
    text: str
    stems: frozenset[str]
    quantities: tuple[Quantity, ...]
    names: tuple[Name, ...]  # product-like (multiword) names only


def sentence_evidence(sentences: Sequence[str]) -> tuple[PassageSentence, ...]:
    result = []
    for text in sentences:
        stems = frozenset(content_stems(text) - _NUMBER_STEMS)
        if stems:
            names = tuple(n for n in proper_names(text) if n.multiword)
            result.append(PassageSentence(text.strip(), stems, tuple(extract_quantities(text, lone_one=True)), names))
    return tuple(result)


def matching_sentences(
    stems: set[str], sentences: Sequence[PassageSentence], min_share: float = MIN_SHARED_SHARE
) -> list[PassageSentence]:
    """The sentences sharing the most of `stems` (ties kept), or none when even the best shares too little."""
    if not stems:
        return []
    best, chosen = 0, []
    for sentence in sentences:
        shared = len(stems & sentence.stems)
        if shared > best:
            best, chosen = shared, [sentence]
        elif shared == best and shared:
            chosen.append(sentence)
    if best < MIN_SHARED_WORDS or best / len(stems) < min_share:
        return []
    return chosen


def _comparable(claim: Quantity, passage: Quantity) -> bool:
    """Two figures that answer the same kind of question: two durations, two prices in one currency, two
    percentages, two bare counts."""
    if claim.hours is not None or passage.hours is not None:
        return claim.hours is not None and passage.hours is not None
    return claim.unit == passage.unit


_DURATION_NAMES = {1 / 3600: "seconds", 1 / 60: "minutes", 1: "hours", 24: "days", 168: "weeks", 720: "months",
                   8760: "years"}  # fmt: skip


def describe(quantity: Quantity) -> str:
    """A figure with the unit it was read with: "42 days" for "forty-two days", "520 EUR" for "€520"."""
    if quantity.hours is not None:
        per_unit = quantity.hours / quantity.value if quantity.value else None
        name = next((n for h, n in _DURATION_NAMES.items() if per_unit and abs(per_unit - h) < 1e-9), "hours")
        return f"{quantity.text} {name}"
    if quantity.unit in (None, "time"):
        return quantity.text
    return f"{quantity.text} {quantity.unit.removeprefix('length:')}"


def _shorten(text: str, limit: int = 90) -> str:
    text = " ".join(text.replace("**", "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def number_conflicts(
    claim_stems: set[str],
    claim_quantities: Sequence[Quantity],
    missing: Sequence[Quantity],
    sentences: Sequence[PassageSentence],
) -> list[str]:
    """For each figure of the claim that the passage lacks: the different figure of the same kind that the matching
    passage sentence states instead, if any."""
    if not missing:
        return []
    matched = matching_sentences(claim_stems - _NUMBER_STEMS, sentences)
    conflicts = []
    for quantity in missing:
        for sentence in matched:
            # A figure the claim also states ("8 to 12 weeks" against "8 to 10 weeks") is not the one it changed.
            others = [
                p
                for p in sentence.quantities
                if _comparable(quantity, p) and not any(same_quantity(c, p) for c in claim_quantities)
            ]
            if others:
                nearest = min(others, key=lambda p: abs(p.value - quantity.value))
                conflicts.append(
                    f"number {describe(quantity)!r} conflicts with {describe(nearest)!r} in “{_shorten(sentence.text)}”"
                )
                break
    return conflicts


def _model_number(name: Name) -> bool:
    """A line name followed by a model number or code: "Corvane 1911", "Corvane CV-28"."""
    parts = name.text.split()
    return len(parts) > 1 and any(c.isdigit() for c in parts[-1])


def name_conflicts(
    claim_text: str, claim_stems: set[str], missing: Sequence[Name], sentences: Sequence[PassageSentence]
) -> list[str]:
    """For each product-like name of the claim that the passage lacks: the other product name that the matching
    passage sentence gives instead, or another model number of the same line anywhere in the passage."""
    missing = [name for name in missing if name.multiword]
    if not missing:
        return []
    claim_folded = fold(claim_text)
    name_stems = set().union(*(content_stems(name.text) for name in missing))
    matched = matching_sentences((claim_stems - name_stems) - _NUMBER_STEMS, sentences, MIN_SHARED_SHARE_NAMES)
    conflicts = []
    for name in missing:
        found = next(
            ((n, sentence) for sentence in matched for n in sentence.names if fold(n.text) not in claim_folded), None
        )
        if found is None and _model_number(name):
            # "Corvane 2866" where the passage says "Corvane 1911". Any two names sharing a first word would be too
            # loose: "Wix Stores" does not contradict "Wix Bookings", nor "Create Segment" "Create New".
            family = fold(name.text).split()[0]
            found = next(
                (
                    (n, sentence)
                    for sentence in sentences
                    for n in sentence.names
                    if _model_number(n) and fold(n.text).split()[0] == family and fold(n.text) not in claim_folded
                ),
                None,
            )
        if found is not None:
            other, sentence = found
            conflicts.append(f"name {name.text!r} conflicts with {other.text!r} in “{_shorten(sentence.text)}”")
    return conflicts


def polarity_conflict(claim_text: str, negative: bool, clauses: Sequence[PassageClause]) -> list[str]:
    clause = negation_conflict(claim_text, list(clauses))
    if clause is None:
        return []
    side = "negated" if negative else "affirmed"
    return [f"the claim is {side} where the matching passage text is not: “{_shorten(clause.text)}”"]
