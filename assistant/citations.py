"""Citations in generated answers: find them, map them to sources, drop invented ones, check quoted numbers."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import Stemmer
from bm25s.stopwords import STOPWORDS_EN
from pydantic import BaseModel

logger = logging.getLogger(__name__)

# "[1]", "[1, 3]", "[1][2]"; also "[Source 2]", which small models like to write.
CITATION = re.compile(r"\[(?:sources?\s*)?(\d+(?:\s*,\s*\d+)*)\]", re.IGNORECASE)
# Numbers as clients read them: 30, 1,200, 4.5, -18, 20%, €450; a leading minus only when it is a sign.
NUMBER = re.compile(r"(?<![\w.])[-−]?\d+(?:[.,]\d+)*")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[])")
WORD = re.compile(r"[a-zà-ÿ0-9]+")
STOPWORDS = frozenset(STOPWORDS_EN)
_stemmer = Stemmer.Stemmer("english")
# A sentence the model left uncited is attributed to the source holding this share of its content words.
MIN_ATTRIBUTION_OVERLAP = 0.6


class NumberMismatch(BaseModel):
    sentence: str
    number: str
    cited_sources: list[int]


class CitationCheck(BaseModel):
    text: str  # the answer with invented citations removed
    cited: list[int]  # valid source numbers in order of first use
    removed: list[int]  # numbers cited that match no source
    attributed: list[int]  # citations we added to sentences the model left uncited
    number_mismatches: list[NumberMismatch]


def _normalise_number(raw: str) -> str:
    value = raw.replace("−", "-").replace(",", "")
    # "4.50" and "4.5" are the same price; "30.0" and "30" the same count.
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


def numbers_in(text: str) -> set[str]:
    return {_normalise_number(match) for match in NUMBER.findall(CITATION.sub(" ", text))}


LIST_MARKER = re.compile(r"^\W*\d+[.)]?$")


def _split_sentences(text: str) -> list[str]:
    """Sentences of one line; "1." starting a numbered step is not a sentence of its own."""
    sentences: list[str] = []
    for piece in SENTENCE_END.split(text.strip()):
        if sentences and LIST_MARKER.match(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece}"
        elif piece:
            sentences.append(piece)
    return sentences


def content_words(text: str) -> set[str]:
    words = [word for word in WORD.findall(CITATION.sub(" ", text).lower()) if word not in STOPWORDS]
    return set(_stemmer.stemWords(words))


def attribute(sentence: str, sources: Mapping[int, str]) -> int | None:
    """The source holding most of an uncited sentence's content words, if it holds enough of them."""
    words = content_words(sentence)
    if len(words) < 3:
        return None
    overlaps = {number: len(words & content_words(text)) / len(words) for number, text in sources.items()}
    best = max(overlaps, key=lambda number: (overlaps[number], -number))
    return best if overlaps[best] >= MIN_ATTRIBUTION_OVERLAP else None


def check_citations(answer: str, sources: Mapping[int, str]) -> CitationCheck:
    """`sources` maps each prompt number to the passage text the model was shown under that number."""
    removed: list[int] = []
    cited: list[int] = []

    def keep_valid(match: re.Match[str]) -> str:
        numbers = [int(part) for part in re.split(r"\s*,\s*", match.group(1))]
        valid = [number for number in numbers if number in sources]
        for number in numbers:
            if number not in sources:
                removed.append(number)
            elif number not in cited:
                cited.append(number)
        return "".join(f"[{number}]" for number in valid)

    text = CITATION.sub(keep_valid, answer)
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text)  # "care ." left where a citation was removed
    if removed:
        logger.warning("Removed citations to sources that do not exist: %s (sources were 1..%d)", removed, len(sources))

    # Small models often answer from a source without citing it: attribute such sentences by word overlap.
    attributed: list[int] = []
    lines = []
    for line in text.split("\n"):
        sentences = []
        for sentence in _split_sentences(line):
            if not CITATION.search(sentence):
                number = attribute(sentence, sources)
                if number is not None:
                    attributed.append(number)
                    sentence = re.sub(r"([.!?]?)\s*$", rf" [{number}]\1", sentence.rstrip(), count=1)
            sentences.append(sentence)
        lines.append(" ".join(sentences) if sentences else line)
    if attributed:
        text = "\n".join(lines)
    in_order = [int(n) for group in CITATION.findall(text) for n in re.split(r"\s*,\s*", group)]
    cited = list(dict.fromkeys(in_order))

    mismatches = []
    for sentence in (s for line in text.split("\n") for s in _split_sentences(line)):
        sentence_sources = [int(n) for group in CITATION.findall(sentence) for n in re.split(r"\s*,\s*", group)]
        # A sentence without a citation is checked against every source the model saw.
        checked = sentence_sources or list(sources)
        available = set().union(*(numbers_in(sources[n]) for n in checked)) if checked else set()
        for number in sorted(numbers_in(sentence)):
            if number not in available:
                mismatches.append(NumberMismatch(sentence=sentence, number=number, cited_sources=sentence_sources))
    return CitationCheck(
        text=text.strip(), cited=cited, removed=removed, attributed=attributed, number_mismatches=mismatches
    )
