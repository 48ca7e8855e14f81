"""Scoring an answer against a labelled question: fact matching and the outcome of each kind of answer."""

from __future__ import annotations

from typing import get_args

import pytest

from colbert_att_assistant.evals.answer_scoring import (
    OUTCOMES,
    Outcome,
    find_wording,
    missing_facts,
    normalise,
    score_answer,
)
from colbert_att_assistant.evals.labelled_questions import LabelledQuestion, load_questions


@pytest.fixture(scope="module")
def questions() -> dict[str, LabelledQuestion]:
    return {q.id: q for q in load_questions()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two or three times a year", "2-3 times a year"),
        ("shrinks 1–3 % at first", "shrinks 1-3% at first"),
        ("between 8 and 10 per cent", "between 8-10%"),
        ("€1,200 or € 1\u202f200, not 12 200", "€1200 or € 1200, not 12 200"),
        ("A 4-second step, 20mm lugs", "a 4 second step, 20 mm lugs"),
        ("**Never** hang   it", "never hang it"),
        ("It\u2019s −18 °C", "it's -18 c"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    ("fact", "answer", "found"),
    [
        (["7"], "That is a US 7.", "7"),
        (["7"], "That is a US 7.5.", None),
        (["7"], "That is a US 17.", None),
        (["12"], "Twelve cards, one per slot.", "12"),
        (["2-3"], "two to three times a year", "2-3"),
        (["2-3"], "2 or 3 times", "2-3"),
        (["75,000"], "from €75000 a year", "75,000"),
        (["stretch"], "the weight stretches the leather", "stretch"),
        (["crepe", "no brass"], "No brass bristles on nubuck.", "no brass"),
        (["rhodium"], "It is plated.", None),
        (["GW-4"], "Use gw‑4 for repair delays.", "GW-4"),
        (["2%"], "More than 2 percent of returns", "2%"),
        (["2%"], "More than 12 % of returns", None),
    ],
)
def test_find_wording(fact: list[str], answer: str, found: str | None) -> None:
    assert find_wording(fact, answer) == found


def test_citation_markers_are_not_read_as_facts() -> None:
    assert missing_facts([["2"]], "Yes, see the table [2].") == [["2"]]
    assert missing_facts([["2"]], "Up to 2 keys [1, 2].") == []


def test_missing_facts_names_each_missing_part(questions: dict[str, LabelledQuestion]) -> None:
    question = questions["care-047"]  # service interval, price, and whether +5 s/day is normal
    answer = "A full service is due every 5 to 7 years [1]. A gain of 5 seconds a day is normal [3]."
    assert missing_facts(question.facts, answer) == [["480"]]


def _score(question: LabelledQuestion, text: str = "", *, abstained: bool = False, cited=(), shown=(), gold=()):
    return score_answer(
        question,
        answer_text=text,
        abstained=abstained,
        cited_documents=cited,
        shown_documents=shown,
        gold_documents=gold,
        internal_documents={"internal-discount-authority", "internal-data-handling"},
    )


def test_answerable_outcomes(questions: dict[str, LabelledQuestion]) -> None:
    question = questions["care-001"]  # long Miro wallet: 12 cards
    gold = {"care-belts-small-leather-goods"}
    right = "The long Miro wallet is designed for 12 cards, one per slot [1]."
    wrong = "The compact Miro wallet holds 6 cards [1]."

    correct = _score(question, right, cited=gold, shown=gold | {"care-calfskin"}, gold=gold)
    assert (correct.outcome, correct.gold_shown, correct.gold_cited, correct.correct) == ("correct", True, True, True)

    wrong_fact = _score(question, wrong, cited=gold, shown=gold, gold=gold)
    assert (wrong_fact.outcome, wrong_fact.missing_facts, wrong_fact.correct) == ("wrong_fact", [["12"]], False)

    wrong_citation = _score(question, right, cited={"care-calfskin"}, shown=gold | {"care-calfskin"}, gold=gold)
    assert (wrong_citation.outcome, wrong_citation.gold_cited) == ("wrong_citation", False)
    assert _score(question, "12 cards, one per slot.", cited=(), shown=gold, gold=gold).outcome == "wrong_citation"

    declined = _score(question, "I don't know.", abstained=True, shown=gold, gold=gold)
    assert (declined.outcome, declined.missing_facts) == ("declined_with_evidence", [])
    unseen = _score(question, "I don't know.", abstained=True, shown={"care-calfskin"}, gold=gold)
    assert (unseen.outcome, unseen.gold_shown) == ("declined_no_evidence", False)


def test_unanswerable_outcomes(questions: dict[str, LabelledQuestion]) -> None:
    question = questions["faq-059"]  # vegan leather: the knowledge base does not say
    assert question.facts == []
    abstained = _score(question, "I don't know.", abstained=True, shown={"faq-ordering"})
    assert (abstained.outcome, abstained.gold_shown, abstained.correct) == ("abstained_correctly", None, True)
    invented = _score(question, "Yes, our Verde line is in apple leather [1].", cited={"faq-ordering"})
    assert (invented.outcome, invented.correct) == ("invented", False)


def test_a_customer_answer_citing_an_internal_document_is_a_leak(questions: dict[str, LabelledQuestion]) -> None:
    customer = questions["faq-013"]  # public question, asked in customer mode: Klarna, 3 instalments
    gold = {"faq-payment"}
    leaked = _score(
        customer,
        "Klarna lets you pay in 3 instalments [1]; staff get 30% off [2].",
        cited=gold | {"internal-discount-authority"},
        shown=gold | {"internal-discount-authority"},
        gold=gold,
    )
    assert (leaked.outcome, leaked.leaked_documents, leaked.missing_facts) == (
        "leak",
        ["internal-discount-authority"],
        [],
    )
    # Staff mode may cite internal documents: an internal question answered from one is simply correct.
    staff = questions["int-002"]  # employee discount 30%, gifts to immediate family
    internal = {"internal-discount-authority"}
    answer = "Staff get 30% off, for personal use or a gift to immediate family [1]."
    assert _score(staff, answer, cited=internal, shown=internal, gold=internal).outcome == "correct"


def test_outcomes_list_matches_the_outcome_type() -> None:
    assert get_args(Outcome) == OUTCOMES
