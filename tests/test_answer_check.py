"""Every drafted sentence is checked before a client reads it (the real grounding judge and encoder)."""

from __future__ import annotations

import pytest

from colbert_att_assistant.assistant.answer_check import DraftChecker
from colbert_att_assistant.grounding import GroundingJudge

SOURCES = {
    1: "Delivery > Costs\n\nStandard delivery is free. Express delivery in 1–2 business days costs €25.",
    2: "Cashmere care > Moths\n\nFreeze the jumper at -18 °C for 72 hours, then hand wash it in cool water.",
}


@pytest.fixture(scope="module")
def judge(encoder) -> GroundingJudge:
    return GroundingJudge.load_default(encoder=encoder)


def shown(judge: GroundingJudge, *deltas: str) -> tuple[str, DraftChecker]:
    checker = DraftChecker(SOURCES, judge)
    return "".join(checker.stream(iter(deltas))), checker


def test_a_supported_sentence_is_shown_as_it_streams(judge):
    text, checker = shown(judge, "Express delivery ", "costs €25 [1]. ", "Freeze the jumper for 72 hours [2].")
    assert text == "Express delivery costs €25 [1]. Freeze the jumper for 72 hours [2]."
    assert checker.result.cited == [1, 2]


def test_an_invented_number_is_never_shown(judge):
    text, checker = shown(judge, "Express delivery costs €40 [1]. ", "Standard delivery is free [1].")
    assert "40" not in text
    assert text == "Standard delivery is free [1]."
    assert [m.number for m in checker.result.number_mismatches] == ["40"]


def test_a_number_from_another_source_is_not_shown(judge):
    text, _ = shown(judge, "Express delivery takes 72 hours [1].")
    assert text == ""


def test_an_invented_citation_is_removed_and_the_sentence_attributed(judge):
    text, checker = shown(judge, "Standard delivery is free of charge [7].")
    assert "[7]" not in text and text.endswith("[1].")
    assert checker.result.removed_citations == [7]


def test_a_declining_sentence_is_held_back(judge):
    text, checker = shown(judge, "I don't know based on the sources.")
    assert text == "" and checker.result.declined


def test_a_claim_its_source_does_not_support_is_dropped(judge):
    text, checker = shown(judge, "Cashmere can be washed in a machine at 40 degrees [2].")
    assert text == ""
    assert checker.result.sentences[0].reason in ("not supported", "numbers not in its sources: ['40']")


def test_numbered_steps_stay_whole(judge):
    text, _ = shown(judge, "1. Freeze the jumper at -18 °C for 72 hours [2].\n2. Hand wash it in cool water [2].")
    assert text.splitlines() == [
        "1. Freeze the jumper at -18 °C for 72 hours [2].",
        "2. Hand wash it in cool water [2].",
    ]


def test_a_bare_citation_or_label_is_no_answer(judge):
    text, checker = shown(judge, "Sources: [1] [2]\n", "[1].")
    assert text == ""
    assert [s.reason for s in checker.result.sentences] == ["no claim", "no claim"]
    assert checker.result.cited == []
