"""Splitting an answer into sentences (claims), each with the citation numbers written after it; setting aside
greetings, abstentions and lead-ins, which state nothing to ground; and finding the sentences that are on topic but
state nothing a passage could confirm ("Our care guide covers leather care.", a restated question)."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, Field

from colbert_att_assistant.grounding.lexical import IMPERATIVES, content_stems, fold, is_negative, proper_names
from colbert_att_assistant.grounding.numbers import extract_quantities


class SentenceKind(StrEnum):
    CLAIM = "claim"
    GREETING = "greeting"  # "Thank you for contacting us.", "I hope this helps!"
    ABSTENTION = "abstention"  # "I'm sorry, I could not find that in our guides."
    LEAD_IN = "lead_in"  # "To wind your watch:" introduces the steps that follow and states nothing itself
    # "Our care guide covers leather care.", "For more details, see our FAQ.", a question, a restated question: on
    # topic, and made of the passage's words, but with nothing a passage could confirm or refute. Unlike the kinds
    # above it is not harmless: such a sentence is no answer, so it is never "supported".
    NO_CLAIM = "no_claim"


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


_META_NOUN = (
    r"(?:guides?|sources?|passages?|documents?|documentation|articles?|pages?|sections?|faqs?|context|handbook"
    r"|manuals?|knowledge base|help cent(?:er|re)|resources?)"
)
_META_SUBJECT = rf"\b(?:our|the|this|these|that|those|your|its)\s+(?:[\w'’-]+\s+){{0,3}}?{_META_NOUN}"
_INFO_NOUN = (
    r"(?:(?:some|more|further|detailed|useful|helpful|additional|general|specific|step-by-step|the|a few|full)\s+)*"
    r"(?:information|info|details?|guidance|tips?|advice|instructions?|steps?|answers?|recommendations?|overview"
    r"|explanation|guide)\b"
)
# What a source is about, not what it says: "covers leather care", "explains how to clean it". "Explains that ..."
# or "says to ..." reports a claim, and a colon introduces one.
_TOPIC_STATEMENT = re.compile(
    rf"{_META_SUBJECT}\s+(?:also\s+|only\s+)?(?:covers?|covered|discuss(?:es|ed)?|explains?|explained|describes?"
    r"|described|mentions?|mentioned|talks? about|deals? with|address(?:es)?|(?:is|are) about|refers? to|goes? over"
    r"|outlines?|touches on|focus(?:es)? on|(?:provides?|offers?|has|have|contains?|includes?|gives?|lists?)\s+"
    rf"{_INFO_NOUN})\b(?!\s+(?:that|whether)\b)(?![^:]*:)",
    re.IGNORECASE,
)
_NO_CLAIM_PATTERNS = (
    _TOPIC_STATEMENT,
    # Referrals: "For more details, see our FAQ.", "You can find more information in our care guide."
    re.compile(r"^(?:for (?:more|further|additional|detailed|full|any other) (?:information|details|help|guidance|tips"
               r"|questions)\b)", re.IGNORECASE),
    # (whole sentence: "Visit the Billing History page to view invoices" is an instruction that says something)
    re.compile(rf"^(?:please\s+)?(?:see|refer to|consult|check(?: out)?|read|visit|have a look at|take a look at)\s+"
               rf"(?:our|the|this|that|these)\s+(?:(?!of\b)[\w'’&-]+\s+){{0,4}}?{_META_NOUN}"
               r"(?:\s+(?:on|about|for|regarding|of)\s+[^,.;:]*)?(?:,?\s+(?:for (?:more|further) \w+|here|instead))?"
               r"\W*$", re.IGNORECASE),
    re.compile(rf"^(?:you can|you'll|you will|you may|you might)\s+(?:also\s+)?find\s+{_INFO_NOUN}", re.IGNORECASE),
    re.compile(rf"^there (?:is|are)\s+{_INFO_NOUN}", re.IGNORECASE),
    # Announcements: "Here is some information about leather care.", "Let me explain."
    re.compile(rf"^here(?:'s|’s| is| are)\s+(?:what|how|{_INFO_NOUN}|(?:an? |the )?(?:summary|overview))",
               re.IGNORECASE),
    re.compile(r"^(?:let me (?:explain|help|walk you|tell you|show you|check|see|look)|i can (?:help|assist)"
               r"(?: you)? with)\b", re.IGNORECASE),
)  # fmt: skip


def states_no_claim(sentence: str) -> bool:
    """A question, or a sentence about the sources or the conversation rather than about the subject (one that gives a
    figure states something checkable, whatever its form)."""
    stripped = sentence.strip()
    # "Click Forgot Email?" names a button; "such as 'What name should we engrave?'" quotes a label.
    if stripped.rstrip(" .").endswith("?") and fold(stripped.split()[0]) not in IMPERATIVES:
        return True
    if not any(pattern.search(stripped) for pattern in _NO_CLAIM_PATTERNS):
        return False
    # Digits inside a product name ("Corvane 1911") are no figure.
    for name in proper_names(stripped):
        if name.multiword:
            stripped = stripped.replace(name.text, " ")
    return not extract_quantities(stripped)


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
    if states_no_claim(stripped):
        return SentenceKind.NO_CLAIM
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


# A yes/no question starts with an auxiliary; an answer may restate it ("Can I iron silk?" - "You can iron silk").
_POLAR_QUESTION = re.compile(
    r"^\W*(?:(?:and|also|so|but|then|ok|okay)\W+)*(?:can|could|should|shall|is|isn'?t|are|aren'?t|was|were|do|does"
    r"|don'?t|doesn'?t|did|will|would|may|might|must|has|have|had|am)\b",
    re.IGNORECASE,
)
# Sentences and clauses: "How long does it last, and can I swap it myself?" asks two things.
_QUESTION_PART = re.compile(r"(?<=[?.!])\s+|\n+|\s+-\s+|[,;]\s*(?:(?:and|but|also|so)\s+)*")
_POLAR_ANSWER = re.compile(r"^\W*(?:yes|no|yeah|nope|correct|indeed|not)\b", re.IGNORECASE)


def restates_question(sentence: str, question: str) -> bool:
    """Whether `sentence` only repeats the question's words. Every content word (and figure) of it comes from one
    part of the question, and that part is not a yes/no or either/or question, where repeating the words is the
    answer ("Can I iron silk?" - "You can iron silk."). A sentence that adds a negation adds information."""
    stems = content_stems(sentence)
    if not stems or _POLAR_ANSWER.match(sentence) or is_negative(sentence) != is_negative(question):
        return False
    figures = {q.value for q in extract_quantities(sentence)}
    if figures - {q.value for q in extract_quantities(question, lone_one=True)}:
        return False
    parts = [p for p in _QUESTION_PART.split(question) if p.strip()]
    holding = [p for p in parts if stems <= content_stems(p)]
    if not holding:
        if not stems <= content_stems(question):
            return False
        holding = parts
    return not any(_POLAR_QUESTION.match(p) or re.search(r"\bor\b", p, re.IGNORECASE) for p in holding)
