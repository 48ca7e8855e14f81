"""The judged answer style (`retrieval.answer_style=judged`: the LLM judges the best-aligned lines one by one, the
quote is taken from its ranking, and it abstains when no line is judged to answer) on the labelled questions.

    python benchmarks/judged_answers.py [--split calibration|held_out] [--model qwen2.5-coder-1.5b-instruct]
                                        [--candidates 4] [--threshold -0.2]

Each question is asked as a client would (a follow-up after its previous turn, in one session) with
`min_judge_log_odds` at its floor, so every question past the retrieval and evidence gates is quoted and its best
log-odds recorded; a gate t then turns each quote whose best log-odds is below t into the handoff (the lines quoted
do not depend on t, so this equals a run at t). Scored by `colbert_att_assistant.evals.answer_scoring` like
`quoted_answers.py`. On the calibration half t is chosen as the one with the most right answers minus twice the
quotes given to unanswerable questions; the held-out half is reported at --threshold (by default the setting).
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.assistant_eval import document_of, load_qrels, percentiles
from benchmarks.quoted_answers import ask_all, breakdown_by_kind, gate_value, outcome_if
from colbert_att_assistant.assistant.chat import Assistant
from colbert_att_assistant.assistant.llm_backends import ChatModel
from colbert_att_assistant.assistant.settings import AssistantSettings
from colbert_att_assistant.evals.labelled_questions import load_questions
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.knowledge_base.ingest import index_brand_documents

GRID = tuple(round(-1.0 + 0.1 * step, 1) for step in range(16))  # -1.0 … 0.5
LOG_ODDS_FLOOR = -30.0


def main(
    split: Annotated[str, typer.Option(help="calibration (choose on it) or held_out (report on it)")] = "calibration",
    model: Annotated[str, typer.Option(help="the bundled model that judges")] = "qwen2.5-coder-1.5b-instruct",
    candidates: Annotated[int | None, typer.Option(help="lines judged per question (default: the setting)")] = None,
    threshold: Annotated[float | None, typer.Option(help="min_judge_log_odds reported (default: the setting)")] = None,
    record: Annotated[bool, typer.Option(help="append the result to benchmarks/RESULTS.md")] = True,
) -> None:
    logging.basicConfig(level=logging.WARNING)
    defaults = AssistantSettings.load().retrieval
    candidates = candidates or defaults.judged_candidates
    threshold = defaults.min_judge_log_odds if threshold is None else threshold
    header = run_header()
    questions = load_questions(split)
    qrels = load_qrels()
    settings = AssistantSettings.load(
        llm={"bundled_model": model},
        retrieval={"answer_style": "judged", "judged_candidates": candidates, "min_judge_log_odds": LOG_ODDS_FLOOR},
    )
    index, _ = index_brand_documents(settings)
    chat_model = ChatModel.from_settings(settings.llm)
    assistant = Assistant(index, chat_model, settings, brand=settings.brand())
    load_start = os.getloadavg()
    started = time.perf_counter()
    rows, answers = ask_all(assistant, questions, qrels, f"Judging, {model}, {candidates} lines")
    log_odds = [answer.judge_log_odds for answer in answers]
    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()

    def outcomes_at(t: float) -> list[str]:
        return [
            outcome_if(q, r, odds is None or odds >= t, defaults.staff_weak_matches)
            for q, r, odds in zip(questions, rows, log_odds, strict=True)
        ]

    table = {t: Counter(outcomes_at(t)) for t in sorted({*GRID, threshold})}
    # Ties go to the stricter gate: fewer invented answers for as many right ones.
    best = max(table, key=lambda t: (gate_value(table[t]), t))
    answerable = sum(q.answerable for q in questions)
    unanswerable = len(questions) - answerable
    judged = [r for r, odds in zip(rows, log_odds, strict=True) if odds is not None]
    latency = percentiles([r["first_token_ms"] for r in judged if r["first_token_ms"] is not None])
    report = [
        f"- {split} half: {len(questions)} questions ({answerable} answerable, {unanswerable} unanswerable); judge "
        f"{model} (llama_cpp, {chat_model.settings.threads or os.cpu_count()} threads), {candidates} lines judged "
        f"per question, {defaults.quoted_lines} quoted; {elapsed:.0f} s in all; load average at start "
        f"{'/'.join(f'{x:.2f}' for x in load_start)}, at end {'/'.join(f'{x:.2f}' for x in load_end)}",
        f"- time to the whole answer (retrieval + evidence + judging + quote) p50 / p95, over the "
        f"{len(judged)} questions judged: {latency['p50']} / {latency['p95']} ms",
        "",
        "| min_judge_log_odds | answerable correct | answerable wrong | answerable declined | "
        "unanswerable invented | unanswerable abstained |",
        "|---|---|---|---|---|---|",
    ]
    for t, outcomes in table.items():
        wrong = outcomes["wrong_fact"] + outcomes["wrong_citation"]
        declined = outcomes["declined_with_evidence"] + outcomes["declined_no_evidence"]
        mark = " (chosen: most right minus 2 x invented)" if split == "calibration" and t == best else ""
        mark += " (reported)" if t == threshold else ""
        report.append(
            f"| {t:.1f}{mark} | {outcomes['correct']} / {answerable} | {wrong} | {declined} | "
            f"{outcomes['invented']} / {unanswerable} | {outcomes['abstained_correctly']} |"
        )
    report += breakdown_by_kind(
        questions, rows, outcomes_at(threshold), f"At min_judge_log_odds {threshold:.1f}, by kind of question:"
    )
    print("\n".join(report))
    if record:
        result = {
            **header,
            "split": split,
            "model": model,
            "candidates": candidates,
            "outcomes": {str(t): dict(c) for t, c in table.items()},
            "chosen": best if split == "calibration" else threshold,
            "judge_log_odds": log_odds,
            "rows": rows,
            "gold_documents": {q.id: sorted({document_of(c) for c in qrels.get(q.id, set())}) for q in questions},
        }
        record_run(f"judged-answers-{split}", f"judged answers ({model} as line judge), {split} half", result, report)
    chat_model.close()


if __name__ == "__main__":
    typer.run(main)
