"""The quoted answer style (`retrieval.answer_style=quoted`: the two best evidence lines are the answer, no LLM) on
the labelled questions, at every evidence threshold of a grid.

    python benchmarks/quoted_answers.py [--split calibration|held_out] [--threshold 0.5] [--no-record]

Each question is asked as a client would (a follow-up after its previous turn, in one session) with
`min_evidence_to_quote=0`, so every question past the retrieval and evidence gates is quoted; a threshold t then
turns each quote whose evidence score is below t into the handoff. Scored by
`colbert_att_assistant.evals.answer_scoring` like
`answer_diagnosis.py`. On the calibration half the threshold is chosen as the one with the most right answers minus
twice the quotes given to unanswerable questions (an invented answer costs more than a handoff); the held-out half
is reported at the threshold given with --threshold (the setting's default).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.answer_diagnosis import diagnose
from benchmarks.assistant_eval import ask, document_of, load_qrels, percentiles
from colbert_att_assistant.assistant.chat import Assistant
from colbert_att_assistant.assistant.settings import AssistantSettings
from colbert_att_assistant.evals.answer_scoring import score_answer
from colbert_att_assistant.evals.labelled_questions import load_questions
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.knowledge_base.ingest import index_brand_documents
from colbert_att_assistant.retriever.progress import run_progress

console = Console(stderr=True)
GRID = (0.0, 0.40, 0.45, 0.50, 0.55, 0.60)
INVENTION_COST = 2


def outcome_at(question, row: dict, evidence_score: float | None, threshold: float) -> str:
    """The row's outcome had quotes below `threshold` been the handoff instead."""
    if row["abstained"] or evidence_score is None or evidence_score >= threshold:
        return row["outcome"]
    return score_answer(
        question, answer_text="", abstained=True, cited_documents=[], shown_documents=row["shown_docs"],
        gold_documents=row["gold_docs"],
    ).outcome  # fmt: skip


def breakdown(questions, rows: list[dict], scores: list[float | None], threshold: float) -> list[str]:
    """At `threshold`: answerable questions answered correctly by kind (the issue's groups), and leaks."""
    groups = {
        "customer, first turn": lambda q: q.answerable and q.audience == "public" and not q.previous_turn,
        "customer, follow-up (second turn)": lambda q: q.answerable and bool(q.previous_turn),
        "staff, internal questions": lambda q: q.answerable and q.audience == "internal",
    }
    lines = [
        "",
        f"At {threshold:.2f}, by kind of question:",
        "",
        "| kind | correct | wrong | declined |",
        "|---|---|---|---|",
    ]
    for name, member in groups.items():
        outcomes = Counter(
            outcome_at(q, r, s, threshold) for q, r, s in zip(questions, rows, scores, strict=True) if member(q)
        )
        total = sum(outcomes.values())
        wrong = outcomes["wrong_fact"] + outcomes["wrong_citation"]
        declined = outcomes["declined_with_evidence"] + outcomes["declined_no_evidence"]
        lines.append(f"| {name} | {outcomes['correct']} / {total} | {wrong} | {declined} |")
    leaks = sum(bool(r["leaked_documents"]) or r["internal_shown_to_customer"] for r in rows)
    lines.append(f"\n- customer turns shown or citing an internal document: {leaks}")
    return lines


def main(
    split: Annotated[str, typer.Option(help="calibration (choose on it) or held_out (report on it)")] = "calibration",
    threshold: Annotated[float, typer.Option(help="the threshold reported on held_out")] = 0.50,
    record: Annotated[bool, typer.Option(help="append the result to benchmarks/RESULTS.md")] = True,
) -> None:
    logging.basicConfig(level=logging.WARNING)
    header = run_header()
    settings = AssistantSettings.load(retrieval={"answer_style": "quoted", "min_evidence_to_quote": 0.0})
    index, _ = index_brand_documents(settings)
    assistant = Assistant.from_settings(settings, index=index)
    questions = load_questions(split)
    qrels = load_qrels()
    load_start = os.getloadavg()
    started = time.perf_counter()
    rows, scores = [], []
    with run_progress(console) as progress:
        task = progress.add_task(f"Quoting ({split})", total=len(questions))
        for question in questions:
            answer, streamed = ask(assistant, question)
            rows.append(diagnose(question, answer, streamed, qrels.get(question.id, set())))
            scores.append(answer.evidence_score)
            progress.advance(task)
    elapsed = time.perf_counter() - started
    answerable = sum(q.answerable for q in questions)
    unanswerable = len(questions) - answerable
    table = {}
    for t in sorted({*GRID, threshold}):
        outcomes = Counter(outcome_at(q, r, s, t) for q, r, s in zip(questions, rows, scores, strict=True))
        table[t] = outcomes
    best = max(GRID, key=lambda t: (table[t]["correct"] - INVENTION_COST * table[t]["invented"], t))
    latency = percentiles([r["first_token_ms"] for r in rows if r["first_token_ms"] is not None])
    lines = [
        f"- {split} half: {len(questions)} questions ({answerable} answerable, {unanswerable} unanswerable); "
        f"no LLM call; {elapsed:.0f} s in all; load average at start {'/'.join(f'{x:.2f}' for x in load_start)}",
        f"- time to the whole answer (retrieval + evidence + quote) p50 / p95: {latency['p50']} / {latency['p95']} ms",
        "",
        "| min_evidence_to_quote | answerable correct | answerable wrong | answerable declined | unanswerable "
        "invented | unanswerable abstained |",
        "|---|---|---|---|---|---|",
    ]
    for t, outcomes in table.items():
        wrong = outcomes["wrong_fact"] + outcomes["wrong_citation"]
        declined = outcomes["declined_with_evidence"] + outcomes["declined_no_evidence"]
        mark = " (chosen: most right minus 2 x invented)" if split == "calibration" and t == best else ""
        mark += " (the setting's default)" if t == threshold else ""
        lines.append(
            f"| {t:.2f}{mark} | {outcomes['correct']} / {answerable} | {wrong} | {declined} | "
            f"{outcomes['invented']} / {unanswerable} | {outcomes['abstained_correctly']} |"
        )
    lines += breakdown(questions, rows, scores, threshold)
    print("\n".join(lines))
    if record:
        result = {
            **header,
            "split": split,
            "thresholds": {str(t): dict(c) for t, c in table.items()},
            "chosen": best if split == "calibration" else threshold,
            "rows": rows,
            "gold_documents": {q.id: sorted({document_of(c) for c in qrels.get(q.id, set())}) for q in questions},
        }
        record_run(f"quoted-answers-{split}", f"quoted answers (no LLM), {split} half", result, lines)


if __name__ == "__main__":
    typer.run(main)
