"""The assistant under a second brand profile: the Wix Help Center, asked WixQA's real customer questions.

    python benchmarks/brand_profile_eval.py [--profile brands/wix-help-centre.yaml] [--limit 40] \
        [--checkpoint runs/brand-wix.jsonl] [--threads N] [--query-max-tokens N] [--no-record]

The assistant is built exactly as the chat app builds it (`index_brand_documents` then `Assistant.from_settings`
with `AssistantSettings(brand_profile=...)`: the profile's documents indexed into the profile's index_dir), then asked
the first `--limit` questions of WixQA's queries.jsonl one at a time, each in a fresh customer session. For each
answer it records: answered or abstained (and why), how the text was made (`answer_path`), whether a gold article
(answers.jsonl `article_ids`) is among the sources shown and among the citations, the grounding judge's verdict on
the answer against its own citations (`assistant.grounding_note.judge_turn`, as the chat's warning note does), its word
overlap with the expert's answer (token F1 and an LCS-based ROUGE-L F), and whether any other house's name leaks
into it. With --checkpoint, each answered question is appended to a JSONL file at once, and a rerun with the same
file skips the questions already there. Appends a dated section to benchmarks/RESULTS.md and writes
benchmarks/results/<stamp>-brand-profile-<profile>.json, unless --no-record.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.answer_diagnosis import read_checkpoint
from colbert_att_assistant.assistant.brand import BRANDS_DIR, BrandProfile
from colbert_att_assistant.assistant.chat import Assistant, AssistantAnswer
from colbert_att_assistant.assistant.grounding_note import judge_turn
from colbert_att_assistant.assistant.settings import AssistantSettings, Audience
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.knowledge_base.ingest import index_brand_documents
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.settings import EncoderSettings

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = BRANDS_DIR / "wix-help-centre.yaml"
DEFAULT_LIMIT = 40
ANSWER_CHARS = 140
# Names of the other bundled house: none may reach a Wix client.
OTHER_HOUSE_NAMES = ("Maison Corvane", "Corvane")
# The paths that answer the question; "acknowledged" (a message read as asking nothing) and "invalid" do not.
ANSWER_PATHS = ("generated", "extractive")
NOT_SEARCHED = ("acknowledged", "invalid")
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
console = Console(stderr=True, soft_wrap=True)


# ---- overlap with the expert answer -------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-cased words of an answer, without link targets or [n] citation marks."""
    return _WORD.findall(_CITATION.sub(" ", _MARKDOWN_LINK.sub(r"\1", text)).lower())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style bag-of-words F1."""
    predicted, expected = Counter(words(prediction)), Counter(words(reference))
    common = sum((predicted & expected).values())
    if not common:
        return 0.0
    precision, recall = common / sum(predicted.values()), common / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: the longest common word subsequence against both lengths."""
    a, b = words(prediction), words(reference)
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if word == other else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if not lcs:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


# ---- the questions ------------------------------------------------------------------------------------------------


def corpus_id(raw: str) -> str:
    """An article id as `knowledge_base.documents_io.read_corpus` stores it (lower case, [a-z0-9-])."""
    return re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")


def wixqa_questions(folder: Path, limit: int) -> list[dict]:
    """The first `limit` questions of queries.jsonl with their expert answer and gold article ids."""
    answers = {}
    with (folder / "answers.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                answers[record["_id"]] = record
    questions = []
    with (folder / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            expert = answers.get(record["_id"], {})
            questions.append(
                {
                    "id": record["_id"],
                    "text": record["text"],
                    "expert_answer": expert.get("answer", ""),
                    "gold": [corpus_id(article) for article in expert.get("article_ids", [])],
                }
            )
            if len(questions) == limit:
                break
    return questions


# ---- one question -------------------------------------------------------------------------------------------------


def row_for(question: dict, answer: AssistantAnswer, assistant: Assistant, brand: BrandProfile) -> dict:
    shown = list(dict.fromkeys(s.document_id for s in answer.sources))
    cited = list(dict.fromkeys(c.document_id for c in answer.citations))
    gold = set(question["gold"])
    report = None
    answered = answer.answer_path in ANSWER_PATHS
    if answered and answer.text.strip():
        started = time.perf_counter()
        report = judge_turn(assistant.judge, answer)
        judge_ms = (time.perf_counter() - started) * 1000
    return {
        "id": question["id"],
        "question": question["text"],
        "answer": answer.text,
        "expert_answer": question["expert_answer"],
        "abstained": answer.abstained,
        "abstain_reason": answer.abstain_reason,
        "answer_path": answer.answer_path,
        "shown_docs": shown,
        "cited_docs": cited,
        "gold_docs": sorted(gold),
        "gold_shown": bool(gold & set(shown)),
        "gold_cited": bool(gold & set(cited)),
        "supported": report.supported if report else None,
        "strictly_supported": report.strictly_supported if report else None,
        "claims": len(report.claims) if report else 0,
        "unsupported_claims": sum(not claim.supported for claim in report.claims) if report else 0,
        "judge_ms": round(judge_ms, 1) if report else None,
        "token_f1": round(token_f1(answer.text, question["expert_answer"]), 4) if answered else None,
        "rouge_l": round(rouge_l(answer.text, question["expert_answer"]), 4) if answered else None,
        "other_house_named": any(name.lower() in answer.text.lower() for name in OTHER_HOUSE_NAMES),
        "handoff_from_profile": answer.text.startswith(brand.strings.abstain) if answer.abstained else None,
        "load_average": round(os.getloadavg()[0], 2),  # the machine is shared: each timing with its load
        "first_token_ms": round(answer.timings_ms.get("first_token", 0.0), 1),
        "total_ms": round(answer.timings_ms.get("total", 0.0), 1),
    }


def ask(assistant: Assistant, question: dict) -> AssistantAnswer:
    session_id = f"brand-profile-eval-{question['id']}"
    assistant.reset(session_id)
    try:
        return assistant.answer(question["text"], session_id=session_id, audience=Audience.CUSTOMER)
    finally:
        assistant.reset(session_id)


# ---- totals and report --------------------------------------------------------------------------------------------


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _mean(values: list[float | None], digits: int = 4) -> float | None:
    present = [v for v in values if v is not None]
    return round(float(np.mean(present)), digits) if present else None


def summarise(rows: list[dict]) -> dict:
    answered = [r for r in rows if r["answer_path"] in ANSWER_PATHS]
    judged = [r for r in answered if r["supported"] is not None]
    totals = [r["total_ms"] for r in rows]
    return {
        "questions": len(rows),
        "answered": len(answered),
        "answer_rate": _share([r["answer_path"] in ANSWER_PATHS for r in rows]),
        "acknowledged": sum(r["answer_path"] == "acknowledged" for r in rows),
        "abstain_reasons": dict(Counter(r["abstain_reason"] for r in rows if r["abstained"]).most_common()),
        "answer_paths": dict(Counter(r["answer_path"] for r in rows).most_common()),
        "gold_shown": _share([r["gold_shown"] for r in rows]),
        # A message read as asking nothing is not searched at all: the share among the questions that were.
        "gold_shown_of_searched": _share([r["gold_shown"] for r in rows if r["answer_path"] not in NOT_SEARCHED]),
        "gold_cited_of_answered": _share([r["gold_cited"] for r in answered]),
        "gold_cited_of_all": _share([r["gold_cited"] for r in rows]),
        "abstained_with_gold_shown": sum(r["abstained"] and r["gold_shown"] for r in rows),
        "abstained_or_acknowledged_with_gold_shown": sum(
            r["answer_path"] not in ANSWER_PATHS and r["gold_shown"] for r in rows
        ),
        "supported_of_answered": _share([r["supported"] for r in judged]),
        "strictly_supported_of_answered": _share([r["strictly_supported"] for r in judged]),
        "supported_by_path": {
            path: _share([r["supported"] for r in judged if r["answer_path"] == path])
            for path in sorted({r["answer_path"] for r in judged})
        },
        "token_f1_answered": _mean([r["token_f1"] for r in answered]),
        "rouge_l_answered": _mean([r["rouge_l"] for r in answered]),
        "token_f1_by_path": {
            path: _mean([r["token_f1"] for r in answered if r["answer_path"] == path])
            for path in sorted({r["answer_path"] for r in answered})
        },
        "other_house_named": sum(r["other_house_named"] for r in rows),
        "handoffs_not_from_profile": sum(r["handoff_from_profile"] is False for r in rows),
        "total_ms_p50": round(float(np.percentile(totals, 50)), 1) if totals else None,
        "total_ms_p95": round(float(np.percentile(totals, 95)), 1) if totals else None,
        "load_average_while_asking": _mean([r.get("load_average") for r in rows], digits=1),
    }


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _cell(text: str, limit: int = ANSWER_CHARS) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown(result: dict) -> list[str]:
    s = result["summary"]
    paths = ", ".join(f"{path} {count}" for path, count in s["answer_paths"].items())
    reasons = ", ".join(f"{reason} {count}" for reason, count in s["abstain_reasons"].items()) or "none"
    by_path = ", ".join(f"{path} {_percent(share)}" for path, share in s["supported_by_path"].items()) or "–"
    f1_by_path = ", ".join(f"{path} {value}" for path, value in s["token_f1_by_path"].items()) or "–"
    body = [
        f"- profile `{result['profile']}` ({result['brand']}); documents {result['documents']}; index "
        f"{result['index_dir']}; LLM {result['llm']}; encoder query_max_tokens {result['query_max_tokens']}; "
        f"abstention thresholds: the calibrated ones (fitted on the knowledge base's calibration half)",
        f"- questions: the first {s['questions']} of WixQA queries.jsonl, each in a fresh customer session; "
        f"{result['resumed']} taken from the checkpoint",
        f"- per question p50 {s['total_ms_p50']:,.0f} ms, p95 {s['total_ms_p95']:,.0f} ms (each answer's time and the "
        f"1-minute load average when it was asked are in the checkpoint rows; mean load while asking "
        f"{s['load_average_while_asking']}, {os.cpu_count()} cores shared with other jobs)",
        f"- this run: {s['questions'] - result['resumed']} questions asked in {result['wall_seconds'] / 60:.1f} min, "
        f"load average {result['load_start']} at start, {result['load_end']} at end; "
        f"peak RSS {result['peak_rss_mib']} MiB",
        "",
        "| | |",
        "|---|---|",
        f"| answered | {s['answered']} / {s['questions']} ({_percent(s['answer_rate'])}) |",
        f"| answer paths | {paths} |",
        f"| abstain reasons | {reasons} |",
        f"| gold article among the sources shown (of all / of the questions searched) | {_percent(s['gold_shown'])} / "
        f"{_percent(s['gold_shown_of_searched'])} |",
        f"| gold article cited (of answered / of all) | {_percent(s['gold_cited_of_answered'])} / "
        f"{_percent(s['gold_cited_of_all'])} |",
        f"| not answered although a gold article was shown (abstained / all) | {s['abstained_with_gold_shown']} / "
        f"{s['abstained_or_acknowledged_with_gold_shown']} |",
        f"| read as asking nothing (`acknowledged`: the profile's greeting reply instead of an answer) | "
        f"{s['acknowledged']} |",
        f"| answers judged supported by their citations | {_percent(s['supported_of_answered'])} "
        f"(by path: {by_path}) |",
        f"| answers strictly supported | {_percent(s['strictly_supported_of_answered'])} |",
        f"| overlap with the expert answer, answered (token F1 / ROUGE-L F) | {s['token_f1_answered']} / "
        f"{s['rouge_l_answered']} (token F1 by path: {f1_by_path}) |",
        f"| answers naming the other house | {s['other_house_named']} |",
        f"| handoffs not taken from the profile | {s['handoffs_not_from_profile']} |",
        "",
        "<details><summary>every question</summary>",
        "",
        "| id | outcome | gold shown / cited | supported | F1 | answer |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        outcome = f"abstained ({row['abstain_reason']})" if row["abstained"] else row["answer_path"]
        answered = row["answer_path"] in ANSWER_PATHS
        supported = "–" if row["supported"] is None or not answered else ("yes" if row["supported"] else "no")
        f1 = "–" if row["token_f1"] is None or not answered else f"{row['token_f1']:.2f}"
        body.append(
            f"| {row['id']} | {outcome} | {'yes' if row['gold_shown'] else 'no'} / "
            f"{'yes' if row['gold_cited'] else 'no'} | {supported} | {f1} | {_cell(row['answer'])} |"
        )
    body += ["", "</details>"]
    return body


def shared_wixqa_dir() -> Path:
    candidates = [os.environ.get("COLBERT_ATT_SHARED_DIR"), REPO.parent / "shared", Path("/work/shared")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "datasets" / "wixqa" / "answers.jsonl").is_file():
            return Path(candidate) / "datasets" / "wixqa"
    raise typer.BadParameter("No WixQA folder found under COLBERT_ATT_SHARED_DIR, ../shared or /work/shared.")


def main(
    profile: Annotated[Path, typer.Option(help="The brand profile YAML.")] = DEFAULT_PROFILE,
    limit: Annotated[int, typer.Option(min=1, help="The first N WixQA questions.")] = DEFAULT_LIMIT,
    checkpoint: Annotated[
        Path | None, typer.Option(help="JSONL of answered questions: appended as they finish, skipped on a rerun.")
    ] = None,
    wixqa_dir: Annotated[Path | None, typer.Option(help="The WixQA BEIR folder (default: shared datasets).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="LLM and encoder threads; None: all cores.")] = None,
    query_max_tokens: Annotated[
        int | None, typer.Option(min=4, max=512, help="Encoder query length; None: the EncoderSettings default.")
    ] = None,
    record: Annotated[bool, typer.Option(help="Write the results JSON and a RESULTS.md section.")] = True,
) -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(
        logging.ERROR
    )  # long customer messages are cut by design
    header = run_header("python benchmarks/brand_profile_eval.py " + " ".join(sys.argv[1:]))
    folder = wixqa_dir or shared_wixqa_dir()
    questions = wixqa_questions(folder, limit)
    settings = AssistantSettings.load(brand_profile=str(profile), llm={"threads": threads})
    brand = settings.brand()
    done = read_checkpoint(checkpoint)
    encoder_settings = EncoderSettings(num_threads=threads)
    if query_max_tokens is not None:
        encoder_settings = encoder_settings.model_copy(update={"query_max_tokens": query_max_tokens})
    other = {row.get("query_max_tokens") for row in done.values()} - {encoder_settings.query_max_tokens}
    if other:
        raise typer.BadParameter(
            f"{checkpoint} holds answers at query_max_tokens {sorted(map(str, other))}, not "
            f"{encoder_settings.query_max_tokens}: use another checkpoint file."
        )
    todo = [q for q in questions if q["id"] not in done]
    resumed = len(questions) - len(todo)
    load_start = os.getloadavg()
    llm = next((row["llm"] for row in done.values() if row.get("llm")), settings.llm.bundled_model)
    started = time.perf_counter()
    if todo:
        console.print(f"Building the assistant for {brand.name} ({len(todo)} questions to ask, {resumed} resumed)")
        index, _ = index_brand_documents(settings, ColBERTAttEncoder(encoder_settings), show_progress=True)
        assistant = Assistant.from_settings(settings, index=index)
        llm = assistant.chat_model.name
        if brand.strings.examples:
            ask(assistant, {"id": "warm-up", "text": brand.strings.examples[0]})
        started = time.perf_counter()
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            # A run killed mid-write leaves a torn last line; the next row must not be glued to it.
            if checkpoint.exists() and checkpoint.stat().st_size and not checkpoint.read_bytes().endswith(b"\n"):
                with checkpoint.open("a", encoding="utf-8") as handle:
                    handle.write("\n")
        for number, question in enumerate(todo, start=1):
            answer = ask(assistant, question)
            row = row_for(question, answer, assistant, brand)
            row.update(commit=header["commit"], llm=llm, query_max_tokens=encoder_settings.query_max_tokens)
            done[question["id"]] = row
            if checkpoint is not None:
                with checkpoint.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            outcome = f"abstained ({row['abstain_reason']})" if row["abstained"] else row["answer_path"]
            console.print(
                f"[{number}/{len(todo)}] {question['id']} {outcome}; gold shown {row['gold_shown']}, cited "
                f"{row['gold_cited']}; supported {row['supported']}; F1 {row['token_f1']}; {row['total_ms']:.0f} ms",
                markup=False,
                highlight=False,
            )
    wall_seconds = time.perf_counter() - started
    rows = [done[q["id"]] for q in questions]
    result = {
        **header,
        "profile": str(profile.resolve().relative_to(REPO)) if profile.resolve().is_relative_to(REPO) else str(profile),
        "brand": brand.name,
        "documents": brand.documents,
        "index_dir": str(settings.index_dir(brand).relative_to(REPO))
        if settings.index_dir(brand).is_relative_to(REPO)
        else str(settings.index_dir(brand)),
        "llm": llm,
        "query_max_tokens": encoder_settings.query_max_tokens,
        "resumed": resumed,
        "load_start": "/".join(f"{x:.2f}" for x in load_start),
        "load_end": "/".join(f"{x:.2f}" for x in os.getloadavg()),
        "wall_seconds": round(wall_seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "summary": summarise(rows),
        "rows": rows,
    }
    body = markdown(result)
    if record:
        path = record_run(
            f"brand-profile-{profile.stem}",
            f"second brand profile: {brand.name} on WixQA questions ({len(rows)})",
            result,
            body,
        )
        console.print(f"Wrote {path} and a section of benchmarks/RESULTS.md")
    print("\n".join(body))


if __name__ == "__main__":
    typer.run(main)
