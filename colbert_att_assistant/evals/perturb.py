"""Minimal edits that turn a supported claim into an unsupported one (a changed figure, a swapped name, a flipped
negation), for measuring whether the judge notices them."""

from __future__ import annotations

import re

from colbert_att_assistant.grounding.lexical import is_negative, proper_names

_DIGITS = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)*")
_AUXILIARY = re.compile(
    r"\b(is|are|was|were|will|should|must|may|could|would|does|do|did|has|have|can)\b(?! not\b)", re.IGNORECASE
)
_NEGATIONS = (
    (re.compile(r"\bcannot\b", re.I), "can"),
    (re.compile(r"\bcan't\b", re.I), "can"),
    (re.compile(r"\bwon't\b", re.I), "will"),
    (re.compile(r"\b(\w+)n't\b", re.I), r"\1"),
    (re.compile(r"\b(\w+) not\b", re.I), r"\1"),
    (re.compile(r"\bnever\b", re.I), "always"),
    (re.compile(r"\bno\s+", re.I), ""),
    (re.compile(r"\bwithout\b", re.I), "with"),
)


def change_number(claim: str) -> str | None:
    """The first number written in digits, made different (or None if there is none)."""
    match = _DIGITS.search(claim)
    if match is None:
        return None
    value = float(match.group(0).replace(",", ""))
    changed = value + 1 if value < 10 else round(value * 1.5)
    text = str(int(changed)) if float(changed).is_integer() else f"{changed:g}"
    return claim[: match.start()] + text + claim[match.end() :]


def toggle_negation(claim: str) -> str:
    """Remove the first negation, or add one after the first auxiliary verb (or "Do not" before an imperative)."""
    if is_negative(claim):
        for pattern, replacement in _NEGATIONS:
            edited, count = pattern.subn(replacement, claim, count=1)
            if count:
                return edited
    match = _AUXILIARY.search(claim)
    if match is not None:
        word = match.group(1)
        negated = "cannot" if word.lower() == "can" else f"{word} not"
        return claim[: match.start()] + negated + claim[match.end() :]
    return "Do not " + claim[:1].lower() + claim[1:]


def swap_name(claim: str, replacement: str) -> str | None:
    """The claim's first product-like name replaced by `replacement` (None without one, or if they are equal)."""
    names = [n for n in proper_names(claim) if n.multiword] or proper_names(claim)
    if not names or names[0].text.lower() == replacement.lower():
        return None
    position = claim.find(names[0].text)
    if position < 0:
        return None
    return claim[:position] + replacement + claim[position + len(names[0].text) :]
