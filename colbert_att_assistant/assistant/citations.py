"""Citation markers and quoted numbers in drafted answers: find them, and attribute an uncited sentence to the
source it comes from. The sentence-by-sentence check that uses them is `answer_check.py`."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel

from colbert_att_assistant.grounding.lexical import content_stems

# "[1]", "[1, 3]", "[1][2]"; also "[Source 2]", which small models like to write.
CITATION = re.compile(r"\[(?:sources?\s*)?(\d+(?:\s*,\s*\d+)*)\]", re.IGNORECASE)
# Numbers as clients read them: 30, 1,200, 4.5, -18, 20%, €450; a leading minus only when it is a sign.
NUMBER = re.compile(r"(?<![\w.])[-−]?\d+(?:[.,]\d+)*")
# A sentence the model left uncited is attributed to the source holding this share of its content words.
MIN_ATTRIBUTION_OVERLAP = 0.6


class NumberMismatch(BaseModel):
    sentence: str
    number: str
    cited_sources: list[int]


def _normalise_number(raw: str) -> str:
    value = raw.replace("−", "-").replace(",", "")
    # "4.50" and "4.5" are the same price; "30.0" and "30" the same count.
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


def numbers_in(text: str) -> set[str]:
    return {_normalise_number(match) for match in NUMBER.findall(CITATION.sub(" ", text))}


def attribute(sentence: str, sources: Mapping[int, str]) -> int | None:
    """The source holding most of an uncited sentence's content words, if it holds enough of them."""
    words = content_stems(CITATION.sub(" ", sentence))
    if len(words) < 3:
        return None
    overlaps = {number: len(words & content_stems(text)) / len(words) for number, text in sources.items()}
    best = max(overlaps, key=lambda number: (overlaps[number], -number))
    return best if overlaps[best] >= MIN_ATTRIBUTION_OVERLAP else None
