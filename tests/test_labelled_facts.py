"""The labelled facts of the knowledge-base questions are grounded in their gold chunks: a wrong or invented label
would make every correctness number built on it wrong."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from colbert_att_assistant.evals.answer_scoring import find_wording, normalise, score_answer
from colbert_att_assistant.evals.labelled_questions import LabelledQuestion, load_questions

EVAL_DIR = Path(__file__).resolve().parent.parent / "knowledge_base" / "eval"
CORPUS_FILE = EVAL_DIR / "corpus.jsonl"
NUMBER = re.compile(r"\d+(?:\.\d+)?")


@pytest.fixture(scope="module")
def raw_chunks() -> dict[str, str]:
    """chunk id -> chunk text."""
    with CORPUS_FILE.open(encoding="utf-8") as handle:
        return {record["_id"]: record["text"] for record in map(json.loads, handle)}


@pytest.fixture(scope="module")
def chunk_texts(raw_chunks: dict[str, str]) -> dict[str, str]:
    """chunk id -> normalised chunk text."""
    return {chunk: normalise(text) for chunk, text in raw_chunks.items()}


@pytest.fixture(scope="module")
def qrels() -> dict[str, set[str]]:
    """question id -> gold chunk ids."""
    relevant: dict[str, set[str]] = {}
    with (EVAL_DIR / "qrels" / "test.tsv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            relevant.setdefault(row["query-id"], set()).add(row["corpus-id"])
    return relevant


def answerable() -> list[LabelledQuestion]:
    return [q for q in load_questions() if q.answerable]


def test_every_answerable_question_has_one_to_three_facts_and_unanswerable_none() -> None:
    questions = load_questions()
    assert len([q for q in questions if q.answerable]) == 150
    for question in questions:
        if question.answerable:
            assert 1 <= len(question.facts) <= 3, question.id
            assert all(fact and all(wording.strip() for wording in fact) for fact in question.facts), question.id
        else:
            assert question.facts == [], question.id


def test_multi_part_questions_have_a_fact_per_part() -> None:
    assert all(len(q.facts) >= 2 for q in answerable() if q.type == "multi_part")


@pytest.mark.parametrize("question", answerable(), ids=lambda q: q.id)
def test_facts_are_grounded_in_the_gold_chunks(
    question: LabelledQuestion, chunk_texts: dict[str, str], qrels: dict[str, set[str]]
) -> None:
    gold = [chunk_texts[chunk] for chunk in sorted(qrels[question.id])]
    gold_numbers = {number for text in gold for number in NUMBER.findall(text)}
    asked = normalise(question.text)
    for fact in question.facts:
        # The first wording is the document's own; others may paraphrase it, but never with another number.
        assert any(find_wording(fact[:1], text, normalised=True) for text in gold), (question.id, fact[0])
        for wording in fact:
            assert set(NUMBER.findall(normalise(wording))) <= gold_numbers, (question.id, wording)
            # A wording found in the question would credit an answer that only repeats it.
            assert find_wording([wording], asked, normalised=True) is None, (question.id, wording)


@pytest.mark.parametrize("question", answerable(), ids=lambda q: q.id)
def test_an_answer_quoting_the_gold_chunks_and_citing_them_is_correct(
    question: LabelledQuestion, raw_chunks: dict[str, str], qrels: dict[str, set[str]]
) -> None:
    gold_documents = {chunk.split("#", 1)[0] for chunk in qrels[question.id]}
    score = score_answer(
        question,
        answer_text=" [1] ".join(raw_chunks[chunk] for chunk in sorted(qrels[question.id])),
        abstained=False,
        cited_documents=gold_documents,
        shown_documents=gold_documents,
        gold_documents=gold_documents,
    )
    assert score.outcome == "correct", (question.id, score.missing_facts)
