"""Speed and abstention of the whole assistant (condense, retrieve, gate, generate, check citations) on the
labelled knowledge-base questions, one question at a time as a client would ask them.

    python benchmarks/assistant_eval.py [--split held_out] [--limit N] [--no-record]

The assistant is built from the settings (default: the bundled Qwen2.5-Coder-0.5B through llama.cpp and the
knowledge-base index at indexes/knowledge_base, built or updated first). One warm-up question is asked and not
counted. A follow-up question is asked after its previous turn, in the same session (the previous turn is not
timed). Reported on the held-out half by default; nothing is tuned here. Writes
benchmarks/results/<stamp>-assistant-eval-<split>.json (every question, with the answer) and appends a dated
section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import resource
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from colbert_att_assistant.assistant.chat import Assistant, AssistantAnswer
from colbert_att_assistant.assistant.settings import AssistantSettings
from colbert_att_assistant.evals.labelled_questions import LabelledQuestion, load_questions
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.knowledge_base.ingest import index_brand_documents
from colbert_att_assistant.retriever.progress import run_progress

QRELS_FILE = Path(__file__).resolve().parent.parent / "knowledge_base" / "eval" / "qrels" / "test.tsv"
TYPES = ["paraphrase", "typo", "multi_part", "follow_up", "internal", "unanswerable"]
WARM_UP_QUESTION = "How should I store a silk scarf?"
# The service's aims: latency over questions the model answered, rates over the labelled questions.
AIM_FIRST_TOKEN_MS = 1000.0
AIM_TOTAL_MS = 4000.0
AIM_ABSTAIN_RATE = 0.90
AIM_ANSWER_RATE = 0.90

console = Console(stderr=True)


def load_qrels(path: Path = QRELS_FILE) -> dict[str, set[str]]:
    """query id -> relevant chunk ids (`<document_id>#<hash>`)."""
    relevant: dict[str, set[str]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if int(row["score"]) > 0:
                relevant.setdefault(row["query-id"], set()).add(row["corpus-id"])
    return relevant


def document_of(chunk_id: str) -> str:
    return chunk_id.split("#", 1)[0]


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None}
    return {
        "n": len(values),
        "p50": round(float(np.percentile(values, 50)), 1),
        "p95": round(float(np.percentile(values, 95)), 1),
    }


def rate(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def ask(assistant: Assistant, question: LabelledQuestion) -> tuple[AssistantAnswer, str]:
    """The answer to one labelled question and the model's raw text (before an abstention replaced it)."""
    session_id = f"assistant-eval-{question.id}"
    assistant.reset(session_id)
    if question.previous_turn:
        assistant.answer(question.previous_turn, session_id=session_id, audience=question.asked_by)
    stream = assistant.stream(question.text, session_id=session_id, audience=question.asked_by)
    raw = "".join(stream)
    answer = stream.answer
    assistant.reset(session_id)
    return answer, raw


def row_for(question: LabelledQuestion, answer: AssistantAnswer, raw: str, relevant: set[str]) -> dict:
    relevant_documents = sorted({document_of(c) for c in relevant})
    cited_documents = list(dict.fromkeys(c.document_id for c in answer.citations))
    shown_documents = list(dict.fromkeys(s.document_id for s in answer.sources))
    timings = answer.timings_ms
    return {
        "id": question.id,
        "type": question.type,
        "answerable": question.answerable,
        "mode": question.asked_by.value,
        "question": question.text,
        "previous_turn": question.previous_turn,
        "standalone_question": answer.standalone_question,
        "note": question.note,
        "abstained": answer.abstained,
        "reason": answer.abstain_reason,
        "top_score": None if answer.top_score is None else round(answer.top_score, 4),
        "relevant_docs": relevant_documents,
        "shown_docs": shown_documents,
        "cited_docs": cited_documents,
        "cited_chunks": [c.node_id for c in answer.citations],
        "relevant_doc_shown": bool(set(shown_documents) & set(relevant_documents)) if relevant_documents else None,
        "cited_doc_correct": bool(set(cited_documents) & set(relevant_documents))
        if relevant_documents and cited_documents
        else None,
        "removed_citations": answer.removed_citations,
        "attributed_citations": answer.attributed_citations,
        "number_mismatches": [m.model_dump() for m in answer.number_mismatches],
        "condense_ms": round(timings["condense"], 1) if "condense" in timings else None,
        "retrieval_ms": round(timings["retrieval"], 1) if "retrieval" in timings else None,
        "first_token_ms": round(timings["first_token"], 1) if "first_token" in timings else None,
        "total_ms": round(timings["total"], 1) if "total" in timings else None,
        "answer": answer.text,
        "model_text": raw if answer.abstain_reason in ("model_declined", "unsupported_answer") else None,
    }


def summarise(rows: list[dict]) -> dict:
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    answered = [r for r in rows if not r["abstained"]]
    with_qrels = [r for r in answerable if r["relevant_docs"]]
    cited_answerable = [r for r in with_qrels if r["cited_docs"]]
    timed = [r for r in rows if r["reason"] != "invalid_message" and r["total_ms"] is not None]
    by_type = {}
    for kind in [*TYPES, *sorted({r["type"] for r in rows} - set(TYPES))]:
        group = [r for r in rows if r["type"] == kind]
        if not group:
            continue
        group_answerable = [r for r in group if r["answerable"]]
        group_cited = [r for r in group_answerable if r["relevant_docs"] and r["cited_docs"]]
        group_answered = [r for r in group if r["total_ms"] is not None and not r["abstained"]]
        by_type[kind] = {
            "n": len(group),
            "answer_rate": rate(sum(not r["abstained"] for r in group_answerable), len(group_answerable)),
            "abstain_rate": rate(
                sum(r["abstained"] for r in group if not r["answerable"]), len(group) - len(group_answerable)
            ),
            "cited_doc_accuracy": rate(sum(r["cited_doc_correct"] for r in group_cited), len(group_cited)),
            "first_token_p50_ms": percentiles([r["first_token_ms"] for r in group_answered])["p50"],
            "total_p50_ms": percentiles([r["total_ms"] for r in group_answered])["p50"],
        }
    return {
        "n_questions": len(rows),
        "n_answerable": len(answerable),
        "n_unanswerable": len(unanswerable),
        "answer_rate_answerable": rate(sum(not r["abstained"] for r in answerable), len(answerable)),
        "abstain_rate_unanswerable": rate(sum(r["abstained"] for r in unanswerable), len(unanswerable)),
        "answers_with_citation": rate(sum(bool(r["cited_docs"]) for r in answered), len(answered)),
        "cited_doc_accuracy": rate(sum(r["cited_doc_correct"] for r in cited_answerable), len(cited_answerable)),
        "n_cited_doc_accuracy": len(cited_answerable),
        "relevant_doc_shown": rate(sum(bool(r["relevant_doc_shown"]) for r in with_qrels), len(with_qrels)),
        "number_mismatch_rate": rate(sum(bool(r["number_mismatches"]) for r in answered), len(answered)),
        "abstain_reasons": dict(Counter(r["reason"] for r in rows if r["abstained"]).most_common()),
        "abstain_reasons_answerable": dict(Counter(r["reason"] for r in answerable if r["abstained"]).most_common()),
        "abstain_reasons_unanswerable": dict(Counter(r["reason"] or "answered" for r in unanswerable).most_common()),
        "latency_ms": {
            group: {
                "first_token": percentiles([r["first_token_ms"] for r in members]),
                "total": percentiles([r["total_ms"] for r in members]),
            }
            for group, members in (
                ("all", timed),
                ("answered", [r for r in timed if not r["abstained"]]),
                ("abstained", [r for r in timed if r["abstained"]]),
            )
        },
        "condense_p50_ms": percentiles([r["condense_ms"] for r in timed if r["previous_turn"]])["p50"],
        "retrieval_ms": percentiles([r["retrieval_ms"] for r in timed]),
        "by_type": by_type,
    }


def aims(summary: dict) -> list[dict]:
    answered = summary["latency_ms"]["answered"]

    def at_most(value: float | None, limit: float) -> bool | None:
        return None if value is None else value <= limit

    def at_least(value: float | None, limit: float) -> bool | None:
        return None if value is None else value >= limit

    return [
        {
            "aim": f"first token ≤ {AIM_FIRST_TOKEN_MS / 1000:g} s (answered questions)",
            "measured": f"p50 {ms(answered['first_token']['p50'])} ms, p95 {ms(answered['first_token']['p95'])} ms",
            "met_p50": at_most(answered["first_token"]["p50"], AIM_FIRST_TOKEN_MS),
            "met_p95": at_most(answered["first_token"]["p95"], AIM_FIRST_TOKEN_MS),
        },
        {
            "aim": f"full answer ≤ {AIM_TOTAL_MS / 1000:g} s (answered questions)",
            "measured": f"p50 {ms(answered['total']['p50'])} ms, p95 {ms(answered['total']['p95'])} ms",
            "met_p50": at_most(answered["total"]["p50"], AIM_TOTAL_MS),
            "met_p95": at_most(answered["total"]["p95"], AIM_TOTAL_MS),
        },
        {
            "aim": f"abstain on ≥ {AIM_ABSTAIN_RATE:.0%} of unanswerable questions",
            "measured": percent(summary["abstain_rate_unanswerable"]),
            "met": at_least(summary["abstain_rate_unanswerable"], AIM_ABSTAIN_RATE),
        },
        {
            "aim": f"answer ≥ {AIM_ANSWER_RATE:.0%} of answerable questions",
            "measured": percent(summary["answer_rate_answerable"]),
            "met": at_least(summary["answer_rate_answerable"], AIM_ANSWER_RATE),
        },
    ]


def _yes_no(value: bool | None) -> str:
    return "–" if value is None else ("yes" if value else "**no**")


def markdown_body(result: dict) -> list[str]:
    summary = result["summary"]
    latency = summary["latency_ms"]
    load_start, load_end = result["load_average_start"], result["load_average_end"]
    body = [
        f"- {result['split']} split: {summary['n_questions']} questions ({summary['n_answerable']} answerable, "
        f"{summary['n_unanswerable']} unanswerable); LLM {result['llm']}, llama.cpp threads "
        f"{result['settings']['llm']['threads'] or os.cpu_count()}; top_k {result['settings']['retrieval']['top_k']}, "
        f"scoring {result['settings']['retrieval']['scoring']}, abstention gate {result['min_score_to_answer']}",
        f"- load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, "
        f"at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f} ({os.cpu_count()} cores); "
        f"wall time {result['wall_seconds'] / 60:.1f} min, CPU/wall {result['cpu_per_wall']} (≈ threads when the "
        f"machine is idle); peak RSS {result['peak_rss_mib']} MiB",
        f"- answered {percent(summary['answer_rate_answerable'])} of answerable, abstained on "
        f"{percent(summary['abstain_rate_unanswerable'])} of unanswerable; "
        f"{percent(summary['answers_with_citation'])} of answers cite ≥ 1 source; cited document correct on "
        f"{percent(summary['cited_doc_accuracy'])} of {summary['n_cited_doc_accuracy']} cited answerable answers "
        f"(a relevant document was among the sources shown for {percent(summary['relevant_doc_shown'])} of "
        f"answerable questions); number mismatch in {percent(summary['number_mismatch_rate'])} of answers",
        "- abstain reasons: answerable "
        + (", ".join(f"{k} {v}" for k, v in summary["abstain_reasons_answerable"].items()) or "none")
        + "; unanswerable "
        + ", ".join(f"{k} {v}" for k, v in summary["abstain_reasons_unanswerable"].items()),
        f"- latency ms (first token / total), p50 and p95: answered {ms(latency['answered']['first_token']['p50'])}"
        f"/{ms(latency['answered']['total']['p50'])} and {ms(latency['answered']['first_token']['p95'])}"
        f"/{ms(latency['answered']['total']['p95'])} (n={latency['answered']['total']['n']}); abstained "
        f"{ms(latency['abstained']['first_token']['p50'])}/{ms(latency['abstained']['total']['p50'])} and "
        f"{ms(latency['abstained']['first_token']['p95'])}/{ms(latency['abstained']['total']['p95'])} "
        f"(n={latency['abstained']['total']['n']}); retrieval p50 {ms(summary['retrieval_ms']['p50'])}, "
        f"condense p50 (follow-ups) {ms(summary['condense_p50_ms'])}",
        "",
        "| aim | measured | met |",
        "|---|---|---|",
    ]
    for aim in result["aims"]:
        met = (
            f"p50 {_yes_no(aim['met_p50'])}, p95 {_yes_no(aim['met_p95'])}" if "met_p50" in aim else _yes_no(aim["met"])
        )
        body.append(f"| {aim['aim']} | {aim['measured']} | {met} |")
    body += [
        "",
        "| type | n | answered (answerable) | abstained (unanswerable) | cited doc correct | first token p50 ms "
        "| total p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, group in summary["by_type"].items():
        body.append(
            f"| {kind} | {group['n']} | {percent(group['answer_rate'])} | {percent(group['abstain_rate'])} | "
            f"{percent(group['cited_doc_accuracy'])} | {ms(group['first_token_p50_ms'])} | "
            f"{ms(group['total_p50_ms'])} |"
        )
    body += [
        "",
        "<details><summary>every question</summary>",
        "",
        "| id | type | mode | outcome | cited docs | doc ok | first token ms | total ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        outcome = f"abstained: {row['reason']}" if row["abstained"] else "answered"
        expected = "" if row["answerable"] else " (unanswerable)"
        body.append(
            f"| {row['id']} | {row['type']} | {row['mode']} | {outcome}{expected} | "
            f"{', '.join(row['cited_docs']) or '–'} | {_yes_no(row['cited_doc_correct'])} | "
            f"{ms(row['first_token_ms'])} | {ms(row['total_ms'])} |"
        )
    body += ["", "</details>"]
    return body


def main(
    split: Annotated[str, typer.Option(help="held_out (reported), calibration or all.")] = "held_out",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N questions of the split.")] = None,
    record: Annotated[bool, typer.Option(help="Write the results JSON and a RESULTS.md section.")] = True,
) -> None:
    if split not in ("held_out", "calibration", "all"):
        raise typer.BadParameter(f"split must be held_out, calibration or all, not {split!r}.")
    logging.basicConfig(level=logging.WARNING)
    header = run_header()
    load_start = os.getloadavg()
    settings = AssistantSettings.load()
    console.print(f"Load average {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}", soft_wrap=True)
    console.print(f"Building the assistant (index {settings.retrieval.index_dir}, LLM {settings.llm.bundled_model})")
    index, _ = index_brand_documents(settings, show_progress=True)
    assistant = Assistant.from_settings(settings, index=index)
    questions = load_questions(split)[:limit] if limit else load_questions(split)
    qrels = load_qrels()

    assistant.reset("assistant-eval-warm-up")
    assistant.answer(WARM_UP_QUESTION, session_id="assistant-eval-warm-up")
    assistant.reset("assistant-eval-warm-up")

    rows = []
    started, cpu_started = time.perf_counter(), time.process_time()
    with run_progress(console) as progress:
        task = progress.add_task("Asking", total=len(questions))
        for question in questions:
            progress.update(task, description=f"Asking {question.id}")
            wall_before, cpu_before = time.perf_counter(), time.process_time()
            answer, raw = ask(assistant, question)
            row = row_for(question, answer, raw, qrels.get(question.id, set()))
            # CPU seconds this process got per wall second (previous turn included): ~threads on an idle machine.
            row["cpu_per_wall"] = round(
                (time.process_time() - cpu_before) / max(time.perf_counter() - wall_before, 1e-9), 2
            )
            rows.append(row)
            outcome = f"abstained ({row['reason']})" if row["abstained"] else f"answered, cites {row['cited_docs']}"
            kind = (
                question.type
                if question.answerable or question.type == "unanswerable"
                else f"{question.type}, unanswerable"
            )
            progress.console.print(
                f"{question.id} [{kind}] {outcome}; first token {ms(row['first_token_ms'])} ms, "
                f"total {ms(row['total_ms'])} ms, CPU/wall {row['cpu_per_wall']}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            progress.advance(task)
    wall_seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    load_end = os.getloadavg()

    summary = summarise(rows)
    result = {
        **header,
        "split": split,
        "limit": limit,
        "llm": assistant.chat_model.name,
        "settings": settings.model_dump(mode="json"),
        "min_score_to_answer": assistant.min_score_to_answer,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "wall_seconds": round(wall_seconds, 1),
        "cpu_per_wall": round(cpu_seconds / wall_seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "summary": summary,
    }
    result["aims"] = aims(summary)
    result["rows"] = rows
    body = markdown_body(result)
    if record:
        path = record_run(
            f"assistant-eval-{split.replace('_', '-')}",
            f"assistant: speed and abstention, {split} questions ({len(rows)})",
            result,
            body,
        )
        console.print(f"Wrote {path} and a section of benchmarks/RESULTS.md")
    print("\n".join(body[: body.index("<details><summary>every question</summary>")]))
    print(json.dumps({k: v for k, v in summary.items() if k != "by_type"}, indent=2))


if __name__ == "__main__":
    typer.run(main)
