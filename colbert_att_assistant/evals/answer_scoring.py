"""Scoring one assistant answer against a labelled question, from the labelled facts and the gold documents.

A question's `facts` are the things a correct answer must say, each a list of acceptable wordings. A wording
matches when it occurs in the answer after both are normalised the same way: case, whitespace, unicode dashes,
quotes, thousands separators, "°", "per cent", the number words one to twenty, and ranges ("2 to 3", "2 or 3",
"2–3" all read "2-3"). Numbers match as numbers ("7" is not found in "7.5" or "17"); a wording ending in a
letter matches from a word start, so "stretch" also finds "stretches". Citation markers ("[2]") are removed
from the answer first, so a source number is never read as a fact.

Outcomes, in the order they are decided:

- leak: a customer-mode answer cites an internal document (whatever else it says);
- unanswerable questions: abstained_correctly, or invented when the assistant answered;
- answerable questions that the assistant declined: declined_with_evidence when a gold document was among the
  passages it was shown, else declined_no_evidence;
- answered: wrong_fact when a labelled fact is missing, wrong_citation when every fact is there but no gold
  document is cited, else correct.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Sequence
from typing import Literal, get_args

from pydantic import BaseModel, Field

from colbert_att_assistant.assistant.citations import CITATION
from colbert_att_assistant.assistant.settings import Audience
from colbert_att_assistant.evals.labelled_questions import LabelledQuestion

Outcome = Literal[
    "correct",
    "wrong_fact",
    "wrong_citation",
    "declined_with_evidence",
    "declined_no_evidence",
    "abstained_correctly",
    "invented",
    "leak",
]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

_DASHES = re.compile(r"[\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d]")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'})
# "1,200", "1 200" (narrow or non-breaking space) and "1'200" are one number; read before NFKC turns the
# special spaces into plain ones, which are left alone ("12 20" is two numbers).
_THOUSANDS = re.compile(r"(?<=\d)[,\u00a0\u202f\u2009'](?=\d{3}(?!\d))")
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "  # noqa: SIM905
        "seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b")
_PERCENT = re.compile(r"\s*(?:%|\bper\s?cent\b|\bpercent\b)")
# "4-second", "20mm", "2-year": a number followed by a unit reads "4 second", "20 mm", "2 year".
_NUMBER_UNIT = re.compile(r"(\d)-?(?=[a-z])")
# "2 to 3", "2 - 3", "2–3", "between 2 and 3", "2 or 3" all read "2-3".
_RANGE = re.compile(r"(\d)\s*(?:-|to|and|or)\s*(?=\d)")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Text as facts are matched in it (see the module doc)."""
    text = _THOUSANDS.sub("", text)
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _DASHES.sub("-", text).lower()
    text = text.replace("*", "").replace("`", "").replace("°", " ")
    text = _NUMBER_WORD.sub(lambda match: _NUMBER_WORDS[match.group(1)], text)
    text = _PERCENT.sub("%", text)
    text = _NUMBER_UNIT.sub(r"\1 ", text)
    text = _RANGE.sub(r"\1-", text)
    return _SPACE.sub(" ", text).strip()


def _pattern(wording: str) -> re.Pattern[str]:
    normal = normalise(wording)
    if not normal:
        raise ValueError(f"A fact wording must not be empty: {wording!r}.")
    # A number is not part of a longer number or a decimal; a word starts at a word boundary.
    start = r"(?<![\d.])" if normal[0].isdigit() else (r"\b" if normal[0].isalnum() else "")
    end = r"(?!\.?\d)" if normal[-1].isdigit() else ""
    return re.compile(start + re.escape(normal) + end)


def find_wording(fact: Sequence[str], text: str, *, normalised: bool = False) -> str | None:
    """The first of a fact's wordings found in `text` (already `normalise`d when `normalised`), or None."""
    haystack = text if normalised else normalise(text)
    return next((wording for wording in fact if _pattern(wording).search(haystack)), None)


def missing_facts(facts: Sequence[Sequence[str]], answer_text: str) -> list[list[str]]:
    """The facts none of whose wordings occur in the answer (citation markers removed first)."""
    haystack = normalise(CITATION.sub(" ", answer_text))
    return [list(fact) for fact in facts if find_wording(fact, haystack, normalised=True) is None]


class AnswerScore(BaseModel):
    """How one answer fares against its labelled question."""

    question_id: str
    outcome: Outcome
    answerable: bool
    abstained: bool
    gold_shown: bool | None = Field(description="A gold document was among the passages shown; None: no gold.")
    gold_cited: bool | None = Field(description="The answer cites a gold document; None: no gold.")
    missing_facts: list[list[str]] = Field(default_factory=list, description="Facts absent from an answer.")
    leaked_documents: list[str] = Field(default_factory=list, description="Internal documents cited to a client.")

    @property
    def correct(self) -> bool:
        return self.outcome in ("correct", "abstained_correctly")


def score_answer(
    question: LabelledQuestion,
    *,
    answer_text: str,
    abstained: bool,
    cited_documents: Collection[str],
    shown_documents: Collection[str],
    gold_documents: Collection[str],
    internal_documents: Collection[str] = (),
) -> AnswerScore:
    """The outcome of one answer (see the module doc for the order in which outcomes are decided).

    `internal_documents` are the ids of staff-only documents; citing one in a customer-mode answer is a leak.
    """
    gold = set(gold_documents)
    gold_shown = bool(gold & set(shown_documents)) if gold else None
    gold_cited = bool(gold & set(cited_documents)) if gold else None
    leaked = (
        sorted(set(cited_documents) & set(internal_documents))
        if question.asked_by == Audience.CUSTOMER and not abstained
        else []
    )
    # Facts are checked on every answer to an answerable question, a leaking one included, for the report.
    missing = missing_facts(question.facts, answer_text) if question.answerable and not abstained else []
    outcome: Outcome
    if leaked:
        outcome = "leak"
    elif not question.answerable:
        outcome = "abstained_correctly" if abstained else "invented"
    elif abstained:
        outcome = "declined_with_evidence" if gold_shown else "declined_no_evidence"
    elif missing:
        outcome = "wrong_fact"
    elif not gold_cited:
        outcome = "wrong_citation"
    else:
        outcome = "correct"
    return AnswerScore(
        question_id=question.id,
        outcome=outcome,
        answerable=question.answerable,
        abstained=abstained,
        gold_shown=gold_shown,
        gold_cited=gold_cited,
        missing_facts=missing,
        leaked_documents=leaked,
    )
