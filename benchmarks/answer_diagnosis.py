"""Where every labelled question ends up: was a gold passage shown, did the assistant answer with the labelled
facts and cite a gold document, decline although the evidence was there, invent an answer to an unanswerable
question, or cite a staff-only document to a client.

    python benchmarks/answer_diagnosis.py [--split calibration|held_out|all] [--limit N] [--types follow_up,internal]
                                          [--checkpoint runs/diagnosis.jsonl] [--no-record]

The assistant is built from the settings, exactly as the chat app builds it, and asked each question one at a
time as a client would (a follow-up after its previous turn, in the same session; the previous turn is not
timed). Each answer is scored by `evals.answer_scoring` from the question's labelled facts and its gold
documents (knowledge_base/eval/qrels). Choose on the calibration half (the default here) and report on the
held-out half. With --checkpoint, every scored question is appended to a JSONL file as soon as it is answered, and
a rerun with the same file skips the questions already there, so an interrupted run resumes. Writes
benchmarks/results/<stamp>-answer-diagnosis-<split>.json (every question, with its answer) and appends a dated
section to benchmarks/RESULTS.md, unless --no-record.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.assistant_eval import (
    TYPES,
    WARM_UP_QUESTION,
    ask,
    document_of,
    load_qrels,
    ms,
    percent,
    percentiles,
    rate,
)
from colbert_att_assistant.assistant.chat import Assistant, AssistantAnswer
from colbert_att_assistant.assistant.settings import AssistantSettings, Audience
from colbert_att_assistant.evals.answer_scoring import OUTCOMES, score_answer
from colbert_att_assistant.evals.labelled_questions import LabelledQuestion, load_questions
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.knowledge_base.ingest import index_brand_documents
from colbert_att_assistant.retriever.progress import run_progress

SPLITS = ("calibration", "held_out", "all")
ANSWER_CHARS = 160  # of each answer in the per-question table
# The aims of the service: rates over the labelled questions, latency over the questions it answered.
AIMS = {
    "gold_shown": (">=", 0.95),
    "answerable_correct": (">=", 0.85),
    "answerable_wrong": ("<=", 0.05),
    "declined_with_evidence": ("<=", 0.05),
    "unanswerable_invented": ("<=", 0.10),
    "follow_up_correct": (">=", 0.80),
    "staff_internal_correct": (">=", 0.85),
    "internal_leaks": ("<=", 0),
}
AIM_FIRST_TOKEN_MS = 1000.0
AIM_TOTAL_MS = 4000.0

console = Console(stderr=True)


def diagnose(question: LabelledQuestion, answer: AssistantAnswer, streamed: str, relevant: set[str]) -> dict:
    """One question's row: what the assistant was shown, said and cited, and the outcome of its answer."""
    gold = sorted({document_of(chunk) for chunk in relevant})
    cited = list(dict.fromkeys(c.document_id for c in answer.citations))
    shown = list(dict.fromkeys(s.document_id for s in answer.sources))
    internal = {c.document_id for c in [*answer.citations, *answer.sources] if c.audience == "internal"}
    score = score_answer(
        question,
        answer_text=answer.text,
        abstained=answer.abstained,
        cited_documents=cited,
        shown_documents=shown,
        gold_documents=gold,
        internal_documents=internal,
    )
    timings = answer.timings_ms
    return {
        "id": question.id,
        "type": question.type,
        "answerable": question.answerable,
        "mode": question.asked_by.value,
        "question": question.text,
        "previous_turn": question.previous_turn,
        "note": question.note,
        "facts": question.facts,
        "outcome": score.outcome,
        "abstained": answer.abstained,
        "abstain_reason": answer.abstain_reason,
        # Engines that say how an answer was made ("generated", "extractive", ...) are counted by path.
        "answer_path": getattr(answer, "answer_path", None),
        "gold_docs": gold,
        "shown_docs": shown,
        "cited_docs": cited,
        "gold_shown": score.gold_shown,
        "gold_cited": score.gold_cited,
        "missing_facts": score.missing_facts,
        "leaked_documents": score.leaked_documents,
        # The customer retriever filters staff-only documents out; one shown to the model is a filter failure.
        "internal_shown_to_customer": question.asked_by == Audience.CUSTOMER and bool(internal & set(shown)),
        "first_token_ms": round(timings["first_token"], 1) if "first_token" in timings else None,
        "total_ms": round(timings["total"], 1) if "total" in timings else None,
        "answer": answer.text,
        # What the model streamed, when the engine showed something else (an abstention, an extract).
        "streamed_text": streamed if streamed.strip() != answer.text.strip() else None,
    }


def _share(hits: int, total: int) -> dict:
    return {"hits": hits, "n": total, "rate": rate(hits, total)}


def summarise(rows: list[dict]) -> dict:
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    with_gold = [r for r in answerable if r["gold_docs"]]
    follow_ups = [r for r in answerable if r["type"] == "follow_up"]
    internal = [r for r in answerable if r["type"] == "internal"]
    customer = [r for r in rows if r["mode"] == Audience.CUSTOMER.value]

    def count(group: list[dict], *outcomes: str) -> int:
        return sum(r["outcome"] in outcomes for r in group)

    timed = [r for r in rows if r["total_ms"] is not None]
    answered = [r for r in timed if not r["abstained"]]
    paths = Counter(r["answer_path"] for r in rows if not r["abstained"] and r.get("answer_path"))
    kinds = [*TYPES, *sorted({r["type"] for r in rows} - set(TYPES))]
    return {
        "n_questions": len(rows),
        "n_answerable": len(answerable),
        "n_unanswerable": len(unanswerable),
        "outcomes": {outcome: count(rows, outcome) for outcome in OUTCOMES},
        "gold_shown": _share(sum(bool(r["gold_shown"]) for r in with_gold), len(with_gold)),
        "answerable_correct": _share(count(answerable, "correct"), len(answerable)),
        "answerable_wrong": _share(count(answerable, "wrong_fact", "wrong_citation"), len(answerable)),
        "answerable_wrong_fact": _share(count(answerable, "wrong_fact"), len(answerable)),
        "answerable_wrong_citation": _share(count(answerable, "wrong_citation"), len(answerable)),
        "declined_with_evidence": _share(count(answerable, "declined_with_evidence"), len(answerable)),
        "declined_no_evidence": _share(count(answerable, "declined_no_evidence"), len(answerable)),
        "unanswerable_invented": _share(count(unanswerable, "invented"), len(unanswerable)),
        "unanswerable_abstained": _share(count(unanswerable, "abstained_correctly"), len(unanswerable)),
        "follow_up_correct": _share(count(follow_ups, "correct"), len(follow_ups)),
        "staff_internal_correct": _share(count(internal, "correct"), len(internal)),
        "internal_leaks": _share(count(customer, "leak"), len(customer)),
        "internal_shown_to_customer": sum(bool(r["internal_shown_to_customer"]) for r in customer),
        "answer_paths": dict(paths.most_common()),
        "abstain_reasons": dict(Counter(r["abstain_reason"] for r in rows if r["abstained"]).most_common()),
        "latency_ms": {
            group: {
                "first_token": percentiles([r["first_token_ms"] for r in members if r["first_token_ms"] is not None]),
                "total": percentiles([r["total_ms"] for r in members]),
            }
            for group, members in (("answered", answered), ("all", timed))
        },
        "by_type": {
            kind: {"n": len(group), **{outcome: count(group, outcome) for outcome in OUTCOMES}}
            for kind in kinds
            if (group := [r for r in rows if r["type"] == kind])
        },
    }


def _met(value: float | None, comparison: str, limit: float) -> bool | None:
    if value is None:
        return None
    return value >= limit if comparison == ">=" else value <= limit


def aims(summary: dict) -> dict[str, bool | None]:
    met = {key: _met(summary[key]["rate"], *aim) for key, aim in AIMS.items()}
    answered = summary["latency_ms"]["answered"]
    met["first_token_p50"] = _met(answered["first_token"]["p50"], "<=", AIM_FIRST_TOKEN_MS)
    met["total_p50"] = _met(answered["total"]["p50"], "<=", AIM_TOTAL_MS)
    return met


def _yes_no(value: bool | None) -> str:
    return "–" if value is None else ("yes" if value else "**no**")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _short(text: str, limit: int = ANSWER_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


ISSUE_ROWS = [
    ("gold_shown", "gold document among the passages shown (answerable)", "≥ 95%"),
    ("answerable_correct", "answerable answered correctly (facts + a gold document cited)", "≥ 85%"),
    ("answerable_wrong", "answerable answered wrongly (wrong fact or wrong citation)", "≤ 5%"),
    ("answerable_wrong_fact", "… a labelled fact missing", ""),
    ("answerable_wrong_citation", "… facts right, no gold document cited", ""),
    ("declined_with_evidence", "answerable declined although a gold document was shown", "≤ 5%"),
    ("declined_no_evidence", "answerable declined, no gold document shown", ""),
    ("unanswerable_invented", "unanswerable questions given an invented answer", "≤ 10%"),
    ("follow_up_correct", "follow-up, second turn answered correctly", "≥ 80%"),
    ("staff_internal_correct", "staff mode, internal questions answered correctly", "≥ 85%"),
    ("internal_leaks", "customer answers citing an internal document", "0"),
]


def markdown_body(result: dict) -> list[str]:
    summary, met = result["summary"], result["aims"]
    load_start, load_end = result["load_average_start"], result["load_average_end"]
    latency = summary["latency_ms"]
    body = [
        f"- {result['split']} split{' (types ' + ', '.join(result['types']) + ')' if result['types'] else ''}: "
        f"{summary['n_questions']} questions ({summary['n_answerable']} answerable, {summary['n_unanswerable']} "
        f"unanswerable); LLM {result['llm']}; {result['resumed']} questions taken from the checkpoint",
        f"- load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, at end "
        f"{load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f} ({os.cpu_count()} cores); wall time "
        f"{result['wall_seconds'] / 60:.1f} min for the questions asked in this run; "
        f"peak RSS {result['peak_rss_mib']} MiB",
        "- answer paths (answered questions): "
        + (", ".join(f"{path} {n}" for path, n in summary["answer_paths"].items()) or "not reported by the engine")
        + "; abstain reasons: "
        + (", ".join(f"{reason} {n}" for reason, n in summary["abstain_reasons"].items()) or "none"),
        "",
        "| measured | count | rate | aim | met |",
        "|---|---|---|---|---|",
    ]
    for key, label, aim in ISSUE_ROWS:
        share = summary[key]
        body.append(
            f"| {label} | {share['hits']} / {share['n']} | {percent(share['rate'])} | {aim} | "
            f"{_yes_no(met.get(key)) if aim else ''} |"
        )
    for group, label in (("answered", "answered questions"), ("all", "all questions")):
        first, total = latency[group]["first_token"], latency[group]["total"]
        aimed = group == "answered"
        body.append(
            f"| first token p50 / p95 ms, {label} | n={first['n']} | {ms(first['p50'])} / {ms(first['p95'])} | "
            f"{'p50 ≤ 1,000' if aimed else ''} | {_yes_no(met['first_token_p50']) if aimed else ''} |"
        )
        body.append(
            f"| whole answer p50 / p95 ms, {label} | n={total['n']} | {ms(total['p50'])} / {ms(total['p95'])} | "
            f"{'p50 ≤ 4,000' if aimed else ''} | {_yes_no(met['total_p50']) if aimed else ''} |"
        )
    if summary["internal_shown_to_customer"]:
        body.append(f"\n**{summary['internal_shown_to_customer']} customer questions were shown an internal passage.**")
    body += ["", "| type | n | " + " | ".join(OUTCOMES) + " |", "|---|---|" + "---|" * len(OUTCOMES)]
    for kind, group in summary["by_type"].items():
        body.append(f"| {kind} | {group['n']} | " + " | ".join(str(group[o] or "") for o in OUTCOMES) + " |")
    body += [
        "",
        "<details><summary>every question</summary>",
        "",
        "| id | type | outcome | shown docs | cited docs | missing facts | answer |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        outcome = row["outcome"] + (f" ({row['abstain_reason']})" if row["abstained"] else "")
        if row.get("answer_path") and not row["abstained"]:
            outcome += f" ({row['answer_path']})"
        missing = "; ".join(" / ".join(fact) for fact in row["missing_facts"])
        body.append(
            f"| {row['id']} | {row['type']} | {outcome} | {', '.join(row['shown_docs']) or '–'} | "
            f"{', '.join(row['cited_docs']) or '–'} | {_cell(missing) or '–'} | {_cell(_short(row['answer']))} |"
        )
    body += ["", "</details>"]
    return body


def read_checkpoint(path: Path | None) -> dict[str, dict]:
    """question id -> row, from the rows a previous run appended (a torn last line is ignored)."""
    if path is None or not path.exists():
        return {}
    rows: dict[str, dict] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                console.print(f"Checkpoint {path}: line {number} is not JSON (an interrupted write?), ignored.")
                continue
            rows[row["id"]] = row
    return rows


def select(questions: list[LabelledQuestion], types: list[str] | None, limit: int | None) -> list[LabelledQuestion]:
    wanted = {kind.strip() for value in types or [] for kind in value.split(",") if kind.strip()}
    unknown = wanted - set(TYPES)
    if unknown:
        raise typer.BadParameter(f"unknown question types {sorted(unknown)}; known: {', '.join(TYPES)}.")
    chosen = [q for q in questions if not wanted or q.type in wanted]
    return chosen[:limit] if limit else chosen


def main(
    split: Annotated[str, typer.Option(help="calibration (choose on it), held_out (report on it) or all.")] = (
        "calibration"
    ),
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N questions (after --types).")] = None,
    types: Annotated[
        list[str] | None, typer.Option(help="Only these question types (repeat or comma-separate).")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="JSONL of scored questions: appended as they finish, skipped on a rerun.")
    ] = None,
    record: Annotated[bool, typer.Option(help="Write the results JSON and a RESULTS.md section.")] = True,
) -> None:
    if split not in SPLITS:
        raise typer.BadParameter(f"split must be one of {', '.join(SPLITS)}, not {split!r}.")
    logging.basicConfig(level=logging.WARNING)
    header = run_header()
    questions = select(load_questions(split), types, limit)
    done = read_checkpoint(checkpoint)
    stale = {row.get("commit") for row in done.values()} - {header["commit"]}
    if stale:
        console.print(f"Checkpoint rows from other commits ({', '.join(sorted(map(str, stale)))}) are reused as is.")
    todo = [q for q in questions if q.id not in done]
    resumed = len(questions) - len(todo)
    qrels = load_qrels()
    load_start = os.getloadavg()
    console.print(
        f"{len(questions)} {split} questions, {resumed} from the checkpoint; load average "
        f"{load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}",
        soft_wrap=True,
    )

    settings = AssistantSettings.load()
    llm = next((row["llm"] for row in done.values() if row.get("llm")), settings.llm.bundled_model)
    started, cpu_started = time.perf_counter(), time.process_time()
    if todo:
        console.print("Building the assistant (index, LLM)")
        index, _ = index_brand_documents(settings, show_progress=True)
        assistant = Assistant.from_settings(settings, index=index)
        llm = assistant.chat_model.name
        assistant.reset("answer-diagnosis-warm-up")
        assistant.answer(WARM_UP_QUESTION, session_id="answer-diagnosis-warm-up")
        assistant.reset("answer-diagnosis-warm-up")
        started, cpu_started = time.perf_counter(), time.process_time()
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            # A run killed mid-write leaves a torn last line; the next row must not be glued to it.
            if checkpoint.exists() and checkpoint.stat().st_size and not checkpoint.read_bytes().endswith(b"\n"):
                with checkpoint.open("a", encoding="utf-8") as handle:
                    handle.write("\n")
        with run_progress(console) as progress:
            task = progress.add_task("Asking", total=len(todo))
            for question in todo:
                progress.update(task, description=f"Asking {question.id}")
                answer, streamed = ask(assistant, question)
                row = diagnose(question, answer, streamed, qrels.get(question.id, set()))
                row.update(commit=header["commit"], llm=llm)
                done[question.id] = row
                if checkpoint is not None:
                    with checkpoint.open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                missing = "; ".join(" / ".join(fact) for fact in row["missing_facts"])
                progress.console.print(
                    f"{question.id} [{question.type}] {row['outcome']}"
                    + (f" ({row['abstain_reason']})" if row["abstained"] else "")
                    + (f", missing {missing}" if missing else "")
                    + f"; first token {ms(row['first_token_ms'])} ms, total {ms(row['total_ms'])} ms",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
                progress.advance(task)
    wall_seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    load_end = os.getloadavg()

    rows = [done[q.id] for q in questions]
    summary = summarise(rows)
    result = {
        **header,
        "split": split,
        "limit": limit,
        "types": sorted({kind for value in types or [] for kind in value.split(",") if kind}),
        "llm": llm,
        "settings": settings.model_dump(mode="json"),
        "resumed": resumed,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "wall_seconds": round(wall_seconds, 1),
        "cpu_per_wall": round(cpu_seconds / wall_seconds, 2) if wall_seconds > 0 else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "summary": summary,
        "aims": aims(summary),
        "rows": rows,
    }
    body = markdown_body(result)
    if record:
        path = record_run(
            f"answer-diagnosis-{split.replace('_', '-')}",
            f"assistant: per-question answer diagnosis, {split} questions ({len(rows)})",
            result,
            body,
        )
        console.print(f"Wrote {path} and a section of benchmarks/RESULTS.md")
    print("\n".join(body))


if __name__ == "__main__":
    typer.run(main)
