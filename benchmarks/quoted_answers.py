"""The quoted answer style (`retrieval.answer_style=quoted`: the best evidence lines are the answer, no LLM) on
the labelled questions, at every gate of a grid.

    python benchmarks/quoted_answers.py [--split calibration|held_out] [--threshold 0.5] [--spread-weight 0.2]
                                        [--lines 2 --lines 3] [--min-unknown-word-similarity 0.42]

Each question is asked as a client would (a follow-up after its previous turn, in one session) with
`min_evidence_to_quote=0` and `min_unknown_word_similarity=0`, so every question past the retrieval and evidence
gates is quoted; a gate (t, w) then turns each quote whose evidence score adjusted by w x ln(spread / 0.05) (the
ranking's score spread, `assistant/answerability.py`) is below t into the handoff, and so does the unknown-word
gate (a word the documents never use, `assistant/unknown_words.py`, at --min-unknown-word-similarity or the
setting). Scored by `colbert_att_assistant.evals.answer_scoring` like `answer_diagnosis.py`. On the calibration half
the gate is chosen as the one with the most right answers minus twice the quotes given to unanswerable questions (an
invented answer costs more than a handoff), averaged with its neighbours on the grid (`chosen_gate`), jointly with
the number of lines quoted (`quoted_lines`, one pass per value of --lines); the held-out half is reported at the
gate given with --threshold / --spread-weight and the first --lines value (by default the settings'). Staff
questions below a gate count as quoted (weak matches, `staff_weak_matches`) when the setting says so.
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
from colbert_att_assistant.assistant.answerability import spread_adjusted
from colbert_att_assistant.assistant.chat import Assistant, AssistantAnswer
from colbert_att_assistant.assistant.settings import AssistantSettings, Audience
from colbert_att_assistant.evals.answer_scoring import score_answer
from colbert_att_assistant.evals.labelled_questions import load_questions
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.knowledge_base.ingest import index_brand_documents
from colbert_att_assistant.retriever.progress import run_progress

console = Console(stderr=True)
GRID = (0.0, 0.40, 0.425, 0.45, 0.475, 0.50, 0.525, 0.55, 0.575, 0.60, 0.65)
# Weights of the ranking's score spread in the gate (0: the evidence score alone). The top retrieval score and the
# weakest unknown word were measured in this place before (benchmarks/RESULTS.md, 2026-12-03 and 2026-12-04).
SPREAD_WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
INVENTION_COST = 2
# (evidence score, weakest unknown word's similarity, table rows named by a value, score spread) of one answer
Scores = tuple[float | None, float | None, int, float | None]


def outcome_if(question, row: dict, passes: bool, staff_weak_matches: bool = False) -> str:
    """The row's outcome, or had its answer been the handoff instead when it does not pass a gate (staff questions
    are quoted as weak matches instead, with `staff_weak_matches`)."""
    if row["abstained"] or passes or (staff_weak_matches and question.asked_by is Audience.STAFF):
        return row["outcome"]
    return score_answer(
        question, answer_text="", abstained=True, cited_documents=[], shown_documents=row["shown_docs"],
        gold_documents=row["gold_docs"],
    ).outcome  # fmt: skip


def outcome_at(
    question,
    row: dict,
    scores: Scores,
    threshold: float,
    spread_weight: float = 0.0,
    min_unknown: float = 0.0,
    staff_weak_matches: bool = False,
) -> str:
    """The row's outcome had quotes whose spread-adjusted evidence is below `threshold` (or with an unknown word below
    `min_unknown`) been the handoff instead."""
    evidence_score, unknown, named_rows, spread = scores
    unknown = 1.0 if unknown is None else unknown
    if evidence_score is None:
        return outcome_if(question, row, True)
    confidence = spread_adjusted(evidence_score, spread, spread_weight)
    # A message that names a table row by a value passes the evidence gate, as in the assistant.
    passes = (confidence >= threshold or named_rows > 0) and unknown >= min_unknown
    return outcome_if(question, row, passes, staff_weak_matches)


def gate_value(outcomes: Counter) -> int:
    """Right answers minus INVENTION_COST x the quotes given to unanswerable questions."""
    return outcomes["correct"] - INVENTION_COST * outcomes["invented"]


def chosen_gate(table: dict[tuple[int, float, float], Counter]) -> tuple[int, float, float]:
    """The (lines, threshold, spread weight) whose value, averaged with its neighbours on the grid (the next
    threshold and weight either side), is highest: a gate in a broad good region rather than a lone peak, which a
    few questions more or less would move. Ties go to the better value of its own, then to the stricter threshold
    (fewer invented answers for as many right ones), then to the smaller weight (the least change to the evidence)."""
    thresholds = sorted({t for _, t, _ in table})
    weights = sorted({w for _, _, w in table})

    def smoothed(key: tuple[int, float, float]) -> float:
        count, t, w = key
        i, j = thresholds.index(t), weights.index(w)
        near = [
            table[count, thresholds[a], weights[b]]
            for a in range(max(i - 1, 0), min(i + 2, len(thresholds)))
            for b in range(max(j - 1, 0), min(j + 2, len(weights)))
            if (count, thresholds[a], weights[b]) in table
        ]
        return sum(gate_value(outcomes) for outcomes in near) / len(near)

    return max(table, key=lambda key: (smoothed(key), gate_value(table[key]), key[1], -key[2]))


def breakdown(
    questions,
    rows: list[dict],
    scores: list[Scores],
    threshold: float,
    spread_weight: float,
    min_unknown: float,
    staff_weak_matches: bool,
) -> list[str]:
    """At the reported gate: answerable questions answered correctly by kind (the issue's groups), and leaks."""
    outcomes = [
        outcome_at(q, r, s, threshold, spread_weight, min_unknown, staff_weak_matches)
        for q, r, s in zip(questions, rows, scores, strict=True)
    ]
    title = (
        f"At min_evidence_to_quote {threshold:.3f}, score_spread_weight {spread_weight:.2f}, "
        f"min_unknown_word_similarity {min_unknown:.2f}, by kind of question:"
    )
    return breakdown_by_kind(questions, rows, outcomes, title)


def breakdown_by_kind(questions, rows: list[dict], outcomes: list[str], title: str) -> list[str]:
    """Answerable questions answered correctly by kind (the issue's groups), and leaks."""
    groups = {
        "customer, first turn": lambda q: q.answerable and q.audience == "public" and not q.previous_turn,
        "customer, follow-up (second turn)": lambda q: q.answerable and bool(q.previous_turn),
        "staff, internal questions": lambda q: q.answerable and q.audience == "internal",
    }
    lines = [
        "",
        title,
        "",
        "| kind | correct | wrong | declined |",
        "|---|---|---|---|",
    ]
    for name, member in groups.items():
        counts = Counter(outcome for q, outcome in zip(questions, outcomes, strict=True) if member(q))
        total = sum(counts.values())
        wrong = counts["wrong_fact"] + counts["wrong_citation"]
        declined = counts["declined_with_evidence"] + counts["declined_no_evidence"]
        lines.append(f"| {name} | {counts['correct']} / {total} | {wrong} | {declined} |")
    leaks = sum(bool(r["leaked_documents"]) or r["internal_shown_to_customer"] for r in rows)
    lines.append(f"\n- customer turns shown or citing an internal document: {leaks}")
    return lines


def quote_questions(assistant: Assistant, questions, lines: int, qrels) -> tuple[list[dict], list[Scores]]:
    """Every question asked as a client would, every answer past the retrieval gates quoted with `lines` lines."""
    retrieval = assistant.settings.retrieval.model_copy(update={"quoted_lines": lines})
    assistant.settings = assistant.settings.model_copy(update={"retrieval": retrieval})
    rows, answers = ask_all(assistant, questions, qrels, f"Quoting, {lines} lines")
    scores = [
        (answer.evidence_score, answer.unknown_word_similarity, answer.named_rows, answer.score_spread)
        for answer in answers
    ]
    return rows, scores


def ask_all(assistant: Assistant, questions, qrels, description: str) -> tuple[list[dict], list[AssistantAnswer]]:
    """Every question asked as a client would, with a progress bar: its diagnosis row and its answer."""
    rows, answers = [], []
    with run_progress(console) as progress:
        task = progress.add_task(description, total=len(questions))
        for question in questions:
            answer, streamed = ask(assistant, question)
            rows.append(diagnose(question, answer, streamed, qrels.get(question.id, set())))
            answers.append(answer)
            progress.advance(task)
    return rows, answers


def main(
    split: Annotated[str, typer.Option(help="calibration (choose on it) or held_out (report on it)")] = "calibration",
    threshold: Annotated[
        float | None, typer.Option(help="min_evidence_to_quote reported (default: the setting)")
    ] = None,
    spread_weight: Annotated[
        float | None, typer.Option(help="score_spread_weight reported beside it (default: the setting)")
    ] = None,
    min_unknown_word_similarity: Annotated[
        float | None, typer.Option(help="the unknown-word gate, at every gate of the grid (default: the setting)")
    ] = None,
    lines: Annotated[
        list[int] | None, typer.Option(help="quoted_lines values (default: the setting); the first is reported")
    ] = None,
    record: Annotated[bool, typer.Option(help="append the result to benchmarks/RESULTS.md")] = True,
) -> None:
    logging.basicConfig(level=logging.WARNING)
    defaults = AssistantSettings.load().retrieval
    lines = lines or [defaults.quoted_lines]
    threshold = defaults.min_evidence_to_quote if threshold is None else threshold
    spread_weight = defaults.score_spread_weight if spread_weight is None else spread_weight
    staff_weak = defaults.staff_weak_matches
    min_unknown = (
        defaults.min_unknown_word_similarity if min_unknown_word_similarity is None else min_unknown_word_similarity
    )
    header = run_header()
    questions = load_questions(split)
    qrels = load_qrels()
    load_start = os.getloadavg()
    started = time.perf_counter()
    # One index and one assistant for every pass: only the number of lines quoted changes between them.
    settings = AssistantSettings.load(
        retrieval={
            "answer_style": "quoted",
            "min_evidence_to_quote": 0.0,
            "score_spread_weight": 0.0,
            "min_unknown_word_similarity": 0.0,
        }
    )
    index, _ = index_brand_documents(settings)
    assistant = Assistant.from_settings(settings, index=index)
    runs = {count: quote_questions(assistant, questions, count, qrels) for count in lines}
    elapsed = time.perf_counter() - started
    answerable = sum(q.answerable for q in questions)
    unanswerable = len(questions) - answerable
    table = {}
    for count, (rows, scores) in runs.items():
        for t in sorted({*GRID, threshold}):
            for weight in sorted({*SPREAD_WEIGHT_GRID, spread_weight}):
                table[count, t, weight] = Counter(
                    outcome_at(q, r, s, t, weight, min_unknown, staff_weak)
                    for q, r, s in zip(questions, rows, scores, strict=True)
                )
    best = chosen_gate(table)
    rows, scores = runs[lines[0]]
    latency = percentiles([r["first_token_ms"] for r in rows if r["first_token_ms"] is not None])
    report = [
        f"- {split} half: {len(questions)} questions ({answerable} answerable, {unanswerable} unanswerable); "
        f"no LLM call; {elapsed:.0f} s in all ({len(lines)} passes); load average at start "
        f"{'/'.join(f'{x:.2f}' for x in load_start)}",
        f"- time to the whole answer (retrieval + evidence + quote) p50 / p95, {lines[0]} lines: "
        f"{latency['p50']} / {latency['p95']} ms",
        "",
        "| quoted_lines | min_evidence_to_quote | score_spread_weight | answerable correct | "
        "answerable wrong | answerable declined | unanswerable invented | unanswerable abstained |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (count, t, weight), outcomes in table.items():
        # Every line count without the spread; the spread's grid for the reported line count.
        if weight and count != lines[0] and (count, t, weight) != best:
            continue
        wrong = outcomes["wrong_fact"] + outcomes["wrong_citation"]
        declined = outcomes["declined_with_evidence"] + outcomes["declined_no_evidence"]
        mark = (
            " (chosen: most right minus 2 x invented)" if split == "calibration" and (count, t, weight) == best else ""
        )
        mark += " (reported)" if (count, t, weight) == (lines[0], threshold, spread_weight) else ""
        report.append(
            f"| {count} | {t:.3f} | {weight:.2f}{mark} | {outcomes['correct']} / {answerable} | {wrong} | {declined} | "
            f"{outcomes['invented']} / {unanswerable} | {outcomes['abstained_correctly']} |"
        )
    report += breakdown(questions, rows, scores, threshold, spread_weight, min_unknown, staff_weak)
    print("\n".join(report))
    if record:
        result = {
            **header,
            "split": split,
            "outcomes": {f"{count} lines, {t}, {top}": dict(c) for (count, t, top), c in table.items()},
            "chosen": list(best) if split == "calibration" else [lines[0], threshold, spread_weight],
            "min_unknown_word_similarity": min_unknown,
            "score_spread": [s[3] for s in scores],
            "rows": rows,
            "gold_documents": {q.id: sorted({document_of(c) for c in qrels.get(q.id, set())}) for q in questions},
        }
        record_run(f"quoted-answers-{split}", f"quoted answers (no LLM), {split} half", result, report)


if __name__ == "__main__":
    typer.run(main)
