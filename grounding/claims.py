"""Splitting an answer into sentences (claims), each with the citation numbers written after it, and setting aside
greetings, abstentions and lead-ins, which state nothing to ground."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, Field


class SentenceKind(StrEnum):
    CLAIM = "claim"
    GREETING = "greeting"  # "Thank you for contacting us.", "I hope this helps!"
    ABSTENTION = "abstention"  # "I'm sorry, I could not find that in our guides."
    LEAD_IN = "lead_in"  # "To wind your watch:" introduces the steps that follow and states nothing itself


class Sentence(BaseModel):
    text: str = Field(description="The sentence without its citation markers.")
    citations: list[int] = Field(default_factory=list, description="Citation numbers written after it, in order.")
    kind: SentenceKind = SentenceKind.CLAIM


# "[1]", "[1][3]", "[1, 2]" (markdown links are rewritten to their text before citations are read).
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_CITATION_RUN = r"(?:\s*\[\d+(?:\s*,\s*\d+)*\])*"
# A sentence ends at . ! or ? (closing quotes or brackets allowed) before the next capitalised sentence; citations
# written after the full stop stay with the sentence they close.
_BOUNDARY = re.compile(rf"(?<=[.!?])([\"”')]*{_CITATION_RUN})\s+(?=[\"“'(]?[A-Z0-9€$£])")
_MARKDOWN_LINK = re.compile(r"\[([^\]\[]+)\]\s*\(\s*[^)\s]+\s*\)")
_URL = re.compile(r"<?https?://\S+>?")
_EMPHASIS = re.compile(r"(\*\*|__|`)")
# Bullets, numbered steps, headings and "Step 2 |" / "Step 2:" labels: list positions, not stated numbers.
_LIST_MARKER = re.compile(r"^\s*(?:[-*•+]|\d{1,2}[.)]|[a-z][.)]|#{1,6}|step\s+\d{1,2}\s*[|:.)-])\s+", re.IGNORECASE)
# A full stop after these does not end a sentence.
_ABBREVIATIONS = frozenset(
    ("e.g.", "i.e.", "approx.", "vs.", "mr.", "mrs.", "ms.", "dr.", "st.", "no.", "nos.", "fig.", "cf.")
)

_GREETING = re.compile(
    r"^(?:(?:hello|hi|hey|dear|good (?:morning|afternoon|evening)|greetings)\b[^.!?]{0,40}[.!?,]?$"
    r"|(?:thank you|thanks|many thanks)\b(?: (?:so|very) much)?(?: for [^.!?]{0,60})?[.!?]*$"
    r"|(?:i )?hope (?:this|that) helps\b|(?:please )?(?:do )?let (?:me|us) know if\b|feel free to\b"
    r"|is there anything else\b|(?:i'?m|i am|we'?re|we are) (?:happy|glad|here) to help\b|you'?re welcome\b"
    r"|have a (?:great|nice|lovely|wonderful) (?:day|evening|weekend)\b|(?:kind|best|warm) regards\b)",
    re.IGNORECASE,
)
_ABSTENTION = re.compile(
    r"(?:\bi (?:do not|don'?t) (?:have|know)\b|\bi (?:can ?not|can'?t|could not|couldn'?t|was unable to|am unable to"
    r"|'?m unable to|am not able to|'?m not able to) (?:find|answer|confirm|locate|provide|help with)\b"
    r"|\b(?:no|not enough) (?:information|details?) (?:about|on|in)\b"
    r"|\bthe (?:provided|available|retrieved) (?:documents?|passages?|sources?|information|guides?) "
    r"(?:do(?:es)? not|don'?t) (?:say|mention|cover|contain|include)\b"
    r"|\bi'?m (?:sorry|afraid),? (?:but )?i (?:do not|don'?t|can ?not|can'?t|could not|couldn'?t)\b)",
    re.IGNORECASE,
)


def clean_markdown(text: str) -> str:
    """Links keep their text, bare URLs and emphasis marks go: neither is a claim, and URLs are full of numbers."""
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = _URL.sub("", text)
    return _EMPHASIS.sub("", text)


def classify(sentence: str) -> SentenceKind:
    stripped = sentence.strip()
    if _ABSTENTION.search(stripped):
        return SentenceKind.ABSTENTION
    if _GREETING.match(stripped):
        return SentenceKind.GREETING
    if stripped.endswith(":") and len(stripped.split()) <= 12:
        return SentenceKind.LEAD_IN
    return SentenceKind.CLAIM


def _split_line(line: str) -> list[str]:
    parts = _BOUNDARY.split(line)
    # re.split with one group: text, closing run, text, closing run, ..., text
    pieces = [parts[i] + (parts[i + 1] if i + 1 < len(parts) else "") for i in range(0, len(parts), 2)]
    merged: list[str] = []
    for piece in pieces:
        if merged and merged[-1].split()[-1].lstrip("([\"'").lower() in _ABBREVIATIONS:
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return merged


def split_sentences(answer: str) -> list[Sentence]:
    """Sentences of `answer` in order, with their citations; list items and lines are sentences of their own."""
    sentences: list[Sentence] = []
    for raw_line in clean_markdown(answer).splitlines():
        line = _LIST_MARKER.sub("", raw_line).strip()
        if not line:
            continue
        for piece in _split_line(line):
            citations = [int(n) for group in _CITATION.findall(piece) for n in group.split(",")]
            text = re.sub(r"\s+([.,;:!?])", r"\1", _CITATION.sub("", piece)).strip()
            if not re.search(r"\w", text):
                # A line holding only citations ("[2]") belongs to the sentence before it.
                if sentences and citations:
                    sentences[-1].citations.extend(citations)
                continue
            sentences.append(Sentence(text=text, citations=list(dict.fromkeys(citations)), kind=classify(text)))
    return sentences


def is_abstention(answer: str) -> bool:
    """An answer that declines: its first sentence after any greeting says it cannot answer (a referral to Client
    Care may follow; a partial answer that starts with facts is no abstention)."""
    for sentence in split_sentences(answer):
        if sentence.kind is not SentenceKind.GREETING:
            return sentence.kind is SentenceKind.ABSTENTION
    return False


def abstention_correct(abstained: bool, answerable: bool | None) -> bool | None:
    """Whether declining (or answering) was right: abstain exactly when the question is not answerable from the
    knowledge base. None when answerability is unknown."""
    if not isinstance(abstained, bool):
        raise ValueError(f"abstained must be a bool, got {type(abstained).__name__}.")
    if answerable is None:
        return None
    if not isinstance(answerable, bool):
        raise ValueError(f"answerable must be a bool or None, got {type(answerable).__name__}.")
    return abstained != answerable
