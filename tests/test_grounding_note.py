"""The grounding note a generated answer carries, with the real bundled encoder and hand-built answers citing real
sections of the mechanical-watch care guide: a faithful answer gets no note; one changed figure, or a sentence whose
own citation does not back it, gets a note naming it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from colbert_att_assistant.assistant.chat import AssistantAnswer, Citation
from colbert_att_assistant.assistant.grounding_note import (
    CONTRADICTED_PREFIX,
    NO_CLAIM_NOTE,
    NOTE_PREFIX,
    grounding_note,
    judge_turn,
)
from colbert_att_assistant.assistant.settings import Audience
from colbert_att_assistant.grounding import GroundingJudge

CARE = Path(__file__).resolve().parent.parent / "knowledge_base" / "documents" / "care"
QUESTION = "How long does my Corvane 1911 keep running off the wrist, and how do I wind it by hand?"
FAITHFUL = (
    "When fully wound, the CV-28 runs for 42 hours off the wrist [1]. "
    "To wind it by hand, turn the crown clockwise about 30 to 40 times [2]. "
    "You cannot overwind it [2]."
)


def citation(number: int, document: str, header: str, score: float) -> Citation:
    """A citation of one section of a care guide, its text headed by title and section as the chunks have it."""
    path = CARE / f"{document}.md"
    text = path.read_text(encoding="utf-8")
    title = re.search(r"^title: (.+)$", text, re.M).group(1)
    body = re.search(rf"^#+ {re.escape(header)}\n(.*?)(?=^#|\Z)", text, re.S | re.M).group(1).strip()
    return Citation(
        number=number,
        node_id=f"{document}#{header.lower().replace(' ', '-')}",
        document_id=document,
        title=title,
        section=header,
        source_path=str(path.relative_to(CARE.parent.parent.parent)),
        audience="public",
        score=score,
        text=f"{title} > {header}\n\n{body}",
    )


@pytest.fixture(scope="module")
def judge(encoder) -> GroundingJudge:
    return GroundingJudge.load_default(encoder=encoder)


@pytest.fixture(scope="module")
def sources() -> list[Citation]:
    return [
        citation(1, "care-mechanical-watches", "Power reserve", 0.71),
        citation(2, "care-mechanical-watches", "Winding by hand", 0.66),
        citation(3, "care-mechanical-watches", "Automatic winding", 0.52),  # shown, not cited
    ]


def answer(text: str, sources: list[Citation]) -> AssistantAnswer:
    return AssistantAnswer(
        text=text,
        abstained=False,
        citations=sources[:2],
        sources=sources,
        question=QUESTION,
        standalone_question=QUESTION,
        audience=Audience.CUSTOMER,
        top_score=sources[0].score,
    )


def test_a_faithful_cited_answer_gets_no_note(judge, sources):
    assert grounding_note(judge, answer(FAITHFUL, sources)) is None


def test_a_changed_figure_gets_a_note_naming_that_sentence(judge, sources):
    edited = FAITHFUL.replace("42 hours", "52 hours")
    note = grounding_note(judge, answer(edited, sources))
    assert note is not None and note.startswith(CONTRADICTED_PREFIX)  # the source says 42: a contradiction
    assert "runs for 52 hours off the wrist" in note
    assert "crown" not in note  # the faithful sentences are not named
    assert "more sentence" not in note


def test_each_sentence_is_checked_against_its_own_citation(judge, sources):
    # The power-reserve sentence now cites the winding section [2]; the power-reserve section [1] is still shown
    # (and cited by nothing else), so checking against every source would let it pass.
    miscited = FAITHFUL.replace("off the wrist [1].", "off the wrist [2].")
    turn = answer(miscited, sources)
    anywhere = judge.judge(turn.text, {c.number: c.text for c in turn.citations}, [s.text for s in sources])
    assert anywhere.claims[0].supported  # what the old note relied on
    report = judge_turn(judge, turn)
    assert not report.claims[0].supported and report.claims[0].cited_numbers == [2]
    note = grounding_note(judge, turn)
    assert note is not None and note.startswith(NOTE_PREFIX) and "42 hours" in note
    assert "crown" not in note


def test_an_uncited_sentence_may_rest_on_any_shown_source(judge, sources):
    uncited = FAITHFUL.replace(" [1].", ".")  # the power-reserve sentence cites nothing; [1] was shown
    assert grounding_note(judge, answer(uncited, sources)) is None


def test_an_answer_with_nothing_checkable_gets_a_note(judge, sources):
    empty = "Our care guides cover the power reserve and hand winding of the Corvane 1911 [1][2]."
    assert grounding_note(judge, answer(empty, sources)) == NO_CLAIM_NOTE
    # Restating the question is no answer either.
    restated = "Your Corvane 1911 keeps running off the wrist [1]."
    assert judge_turn(judge, answer(restated, sources)).no_claims
    assert grounding_note(judge, answer(restated, sources)) == NO_CLAIM_NOTE


def test_an_abstention_gets_no_note(judge, sources):
    declined = AssistantAnswer(
        text="I don't know based on our care guides.",
        abstained=True,
        abstain_reason="model_declined",
        sources=sources,
        question="Can I iron my velvet jacket?",
        standalone_question="Can I iron my velvet jacket?",
        audience=Audience.CUSTOMER,
    )
    assert grounding_note(judge, declined) is None
