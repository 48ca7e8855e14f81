"""The grounding report: run the assistant over a question set and judge every answer it gives.

    python -m colbert_att_assistant.evals.grounding_report [--questions kb|wixqa] [--split held_out] [--limit N] \
        [--output-dir benchmarks/results] [--no-record] [--checkpoint rows.jsonl] [--faithfulness]

- `kb` (default): the knowledge base's labelled questions of one split (`held_out` by default), each asked in its
  own mode; a follow-up is asked after its previous turn, in the same session.
- `wixqa`: the first `--limit` (default 40) WixQA expert questions, read in place from the shared datasets folder.
  The assistant answers them from an index of the WixQA corpus (one document per article, title in front,
  truncated by the encoder: what `python -m colbert_att_assistant.evals.retrieval` builds), reused from
  `indexes/wixqa` when it loads.
  WixQA has no unanswerable questions, so abstention correctness is reported for `kb` only.

Every answered question is judged against its cited passages and all the passages shown to the model (the
`supported` verdict), and again ALCE-style, each sentence against its own citations only (`supported_own`, what the
chat app's note uses). With `--faithfulness`, LlamaIndex's `FaithfulnessEvaluator` is also run with the assistant's
own LLM on each answer, its cited passages as contexts, and its YES/NO is recorded beside the judge's verdicts with
their agreement and a confusion table (slow: one more LLM call per answer). The offline judge never needs it.

The results JSON (every question, with per-claim verdicts, and the totals) goes to
`<output-dir>/<stamp>-grounding-report-*.json`, a histogram of claim support to
`<output-dir>/grounding_report_<questions>_<date>T<time>.png`, and a dated section to
the RESULTS.md in the output folder's parent (`evals.results_log.record_run`). With `--checkpoint`, each
question's row is appended to that file as it is judged, and a rerun skips the questions already there: a run of
the local LLM over 90 questions takes 10 to 70 minutes on a busy 2-core machine and may be interrupted.
"""

from __future__ import annotations

import csv
import faulthandler
import json
import logging
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from colbert_att_assistant.assistant.chat import Assistant, AssistantAnswer
from colbert_att_assistant.assistant.llm_backends import ChatModel
from colbert_att_assistant.assistant.settings import AssistantSettings, Audience
from colbert_att_assistant.evals.faithfulness import (
    FaithfulnessCheck,
    FaithfulnessVerdict,
)
from colbert_att_assistant.evals.grounding_summary import format_number, markdown_body, plot_support, summarise
from colbert_att_assistant.evals.labelled_questions import load_questions
from colbert_att_assistant.evals.results_log import BENCHMARKS_DIR, record_run, run_header
from colbert_att_assistant.grounding.claims import abstention_correct
from colbert_att_assistant.grounding.judge import EvidenceScope, GroundingJudge, GroundingReport
from colbert_att_assistant.knowledge_base.ingest import index_brand_documents
from colbert_att_assistant.paths import PROJECT_ROOT
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.errors import IndexCorruptError, IndexMismatchError
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.retriever.progress import run_progress
from colbert_att_assistant.retriever.settings import EncoderSettings

REPO = PROJECT_ROOT
KB_QRELS = REPO / "knowledge_base" / "eval" / "qrels" / "test.tsv"
WIXQA_INDEX_DIR = REPO / "indexes" / "wixqa"
WIXQA_DEFAULT_LIMIT = 40

console = Console(stderr=True, soft_wrap=True)
logger = logging.getLogger(__name__)


class QuestionSet(StrEnum):
    KB = "kb"
    WIXQA = "wixqa"


@dataclass(frozen=True)
class ReportQuestion:
    id: str
    text: str
    asked_by: Audience
    type: str
    answerable: bool | None  # None: the data set has no answerability label (WixQA)
    previous_turn: str | None = None
    gold_documents: tuple[str, ...] = field(default=())


# ---- question sets --------------------------------------------------------------------------------------------


def kb_gold_documents(path: Path = KB_QRELS) -> dict[str, set[str]]:
    """query id -> relevant document ids (the qrels name chunks, `<document_id>#<hash>`)."""
    gold: dict[str, set[str]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if int(row["score"]) > 0:
                gold.setdefault(row["query-id"], set()).add(row["corpus-id"].split("#", 1)[0])
    return gold


def kb_questions(split: str, limit: int | None) -> list[ReportQuestion]:
    gold = kb_gold_documents() if KB_QRELS.is_file() else {}
    questions = load_questions(split)  # type: ignore[arg-type]
    return [
        ReportQuestion(
            id=q.id,
            text=q.text,
            asked_by=q.asked_by,
            type=q.type,
            answerable=q.answerable,
            previous_turn=q.previous_turn,
            gold_documents=tuple(sorted(gold.get(q.id, ()))),
        )
        for q in questions[:limit]
    ]


def default_wixqa_dir() -> Path:
    candidates = [os.environ.get("COLBERT_ATT_SHARED_DIR"), REPO.parent / "shared", Path("/work/shared")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "datasets" / "wixqa" / "queries.jsonl").is_file():
            return Path(candidate) / "datasets" / "wixqa"
    raise typer.BadParameter("No WixQA folder found under COLBERT_ATT_SHARED_DIR, ../shared or /work/shared.")


def wixqa_questions(data: BeirDataset, limit: int) -> list[ReportQuestion]:
    """The first `limit` judged WixQA questions, in file order; all asked as a client would (customer mode)."""
    return [
        ReportQuestion(
            id=qid,
            text=text,
            asked_by=Audience.CUSTOMER,
            type="wixqa_expert",
            answerable=None,
            gold_documents=tuple(sorted(data.qrels.get(qid, {}))),
        )
        for qid, text in list(data.queries.items())[:limit]
    ]


def wixqa_index(data: BeirDataset, encoder: ColBERTAttEncoder, index_dir: Path) -> MultiVectorIndex:
    """The WixQA corpus as `evals.retrieval` indexes it (title + text, one document per article), reused from
    `index_dir` when it loads, and labelled public in memory so that customer mode sees every article."""
    from colbert_att_assistant.evals.retrieval import build_or_load_index

    try:
        index = build_or_load_index(data, encoder, index_dir, use_title=True)
    except (IndexMismatchError, IndexCorruptError) as exc:
        # Someone else's index: leave it alone and build one in memory.
        console.print(f"{index_dir} cannot be reused ({exc}); indexing the corpus in memory.")
        index = build_or_load_index(data, encoder, None, use_title=True)
    for document_id in index.document_ids():
        if document_id in data.corpus:
            document = data.corpus[document_id]
            index.update_metadata(
                document_id, {"document_id": document_id, "title": document.title, "audience": "public"}
            )
    return index


# ---- asking and judging ---------------------------------------------------------------------------------------


def ask(assistant: Assistant, question: ReportQuestion) -> AssistantAnswer:
    """The answer to one question; a follow-up is asked after its previous turn, in the same session."""
    session_id = f"grounding-report-{question.id}"
    assistant.reset(session_id)
    try:
        if question.previous_turn:
            assistant.answer(question.previous_turn, session_id=session_id, audience=question.asked_by)
        return assistant.answer(question.text, session_id=session_id, audience=question.asked_by)
    finally:
        assistant.reset(session_id)


def judge_answer(
    judge: GroundingJudge, answer: AssistantAnswer, scope: EvidenceScope = EvidenceScope.ANY
) -> GroundingReport | None:
    """The grounding report of an answered turn (None for an abstention): claims against the cited passages, and
    for `supported` also against every passage the model was shown (scope ANY) or, with OWN_CITATIONS, each claim
    against its own citations only. The question lets the judge tell a restated question from an answer."""
    if answer.abstained or not answer.text.strip():
        return None
    questions = dict.fromkeys(q for q in (answer.question, answer.standalone_question) if q and q.strip())
    return judge.judge(
        answer.text,
        cited={c.number: c.text for c in answer.citations},
        retrieved=[s.text for s in answer.sources if s.text.strip()],
        question="\n".join(questions) or None,
        scope=scope,
    )


def faithfulness_for(check: FaithfulnessCheck | None, answer: AssistantAnswer) -> FaithfulnessVerdict | None:
    """The LLM evaluator's verdict on an answered turn, its cited passages as contexts (None when not asked for)."""
    if check is None or answer.abstained or not answer.text.strip():
        return None
    return check.evaluate(answer.text, [c.text for c in answer.citations])


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def row_for(
    question: ReportQuestion,
    answer: AssistantAnswer,
    report: GroundingReport | None,
    judge_ms: float,
    own: GroundingReport | None = None,
    faithfulness: FaithfulnessVerdict | None = None,
) -> dict:
    cited_docs = list(dict.fromkeys(c.document_id for c in answer.citations))
    gold = list(question.gold_documents)
    return {
        "id": question.id,
        "type": question.type,
        "mode": question.asked_by.value,
        "answerable": question.answerable,
        "question": question.text,
        "previous_turn": question.previous_turn,
        "standalone_question": answer.standalone_question,
        "abstained": answer.abstained,
        "abstain_reason": answer.abstain_reason,
        "abstention_correct": abstention_correct(answer.abstained, question.answerable),
        "answer": answer.text,
        "citations": [
            {"number": c.number, "document_id": c.document_id, "node_id": c.node_id, "section": c.section}
            for c in answer.citations
        ],
        "cited_docs": cited_docs,
        "shown_docs": list(dict.fromkeys(s.document_id for s in answer.sources)),
        "gold_docs": gold,
        "cited_gold": bool(set(cited_docs) & set(gold)) if cited_docs and gold else None,
        "claims": [
            {
                "text": claim.text,
                "cited": claim.cited_numbers,
                "verdict": claim.verdict.value,
                "support": round(claim.support_any, 4),
                "support_cited": round(claim.support_cited, 4),
                "supported": claim.supported,
                "supported_by_citations": claim.supported_by_citations,
                "contradicted": claim.contradicted,
                "reasons": claim.reasons,
            }
            for claim in (report.claims if report else [])
        ],
        "skipped_sentences": len(report.skipped) if report else 0,
        "no_claim_sentences": [{"text": s.text, "reason": s.reason} for s in report.no_claims] if report else [],
        "citation_recall": _round(report.citation_recall) if report else None,
        "citation_precision": _round(report.citation_precision) if report else None,
        "unsupported_rate": _round(report.unsupported_rate) if report else None,
        "answer_support": _round(report.answer_support) if report else None,
        "contradicted_claims": report.contradicted_claims if report else 0,
        "supported": report.supported if report else None,
        "strictly_supported": report.strictly_supported if report else None,
        "supported_own": own.supported if own else None,
        "faithfulness": faithfulness.model_dump() if faithfulness else None,
        "assistant_ms": _round(answer.timings_ms.get("total"), 1),
        "judge_ms": round(judge_ms, 1),
    }


# ---- command --------------------------------------------------------------------------------------------------


def main(
    questions: Annotated[QuestionSet, typer.Option(help="kb: the labelled knowledge-base questions; wixqa.")] = (
        QuestionSet.KB
    ),
    split: Annotated[str, typer.Option(help="kb only: held_out (reported), calibration or all.")] = "held_out",
    limit: Annotated[
        int | None, typer.Option(min=1, help=f"Only the first N questions (wixqa: {WIXQA_DEFAULT_LIMIT} by default).")
    ] = None,
    output_dir: Annotated[
        Path, typer.Option(help="Folder of the results JSON and plot; RESULTS.md is in its parent.")
    ] = BENCHMARKS_DIR / "results",
    record: Annotated[bool, typer.Option(help="Write the results JSON, the plot and a RESULTS.md section.")] = True,
    wixqa_dir: Annotated[Path | None, typer.Option(help="The WixQA BEIR folder (default: shared datasets).")] = None,
    wixqa_index_dir: Annotated[Path, typer.Option(help="Reuse / keep the WixQA index here.")] = WIXQA_INDEX_DIR,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Append each question's row here (JSON lines) and skip the questions already in it."),
    ] = None,
    faithfulness: Annotated[
        bool,
        typer.Option(
            help="Also run LlamaIndex's FaithfulnessEvaluator with the assistant's LLM on each answer (cited passages "
            "as contexts) and compare its verdict with the judge's. One more LLM call per answer."
        ),
    ] = False,
) -> None:
    if split not in ("held_out", "calibration", "all"):
        raise typer.BadParameter(f"split must be held_out, calibration or all, not {split!r}.")
    faulthandler.enable()  # a crash in llama.cpp or torch leaves a traceback in the log
    faulthandler.register(signal.SIGTERM, chain=True)  # and so does being terminated
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(
        logging.ERROR
    )  # long questions are truncated by design
    header = run_header("python -m colbert_att_assistant.evals.grounding_report " + " ".join(sys.argv[1:]))
    load_start = os.getloadavg()
    settings = AssistantSettings.load()
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=2))
    judge = GroundingJudge.load_default(encoder=encoder)

    if questions is QuestionSet.KB:
        console.print(f"Building the assistant (index {settings.retrieval.index_dir})")
        index, _ = index_brand_documents(settings, encoder, show_progress=True)
        assistant = Assistant.from_settings(settings, index=index)
        asked = kb_questions(split, limit)
        index_name = settings.retrieval.index_dir
    else:
        folder = wixqa_dir or default_wixqa_dir()
        data = BeirDataset.load(folder, "test")
        index = wixqa_index(data, encoder, wixqa_index_dir)
        assistant = Assistant(index, ChatModel.from_settings(settings.llm), settings)
        asked = wixqa_questions(data, limit or WIXQA_DEFAULT_LIMIT)
        index_name = f"{_display_path(wixqa_index_dir)} ({folder})"

    check = FaithfulnessCheck(assistant.chat_model.llm) if faithfulness else None
    done = load_checkpoint(checkpoint, {q.id for q in asked})
    rows: list[dict] = []
    started = time.perf_counter()
    with run_progress(console) as progress:
        task = progress.add_task("Asking", total=len(asked))
        for question in asked:
            if question.id in done:
                rows.append(done[question.id])
                progress.advance(task)
                continue
            progress.update(task, description=f"Asking {question.id}")
            answer = ask(assistant, question)
            judged_at = time.perf_counter()
            report = judge_answer(judge, answer)
            judge_ms = (time.perf_counter() - judged_at) * 1000
            own = judge_answer(judge, answer, EvidenceScope.OWN_CITATIONS)
            verdict = faithfulness_for(check, answer)
            row = row_for(question, answer, report, judge_ms, own, verdict)
            rows.append(row)
            if checkpoint is not None:
                with checkpoint.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
            if row["abstained"]:
                outcome = f"abstained ({row['abstain_reason']})"
            else:
                outcome = (
                    f"answered, {len(row['claims'])} claims, {sum(not c['supported'] for c in row['claims'])} "
                    f"unsupported, recall {format_number(row['citation_recall'])}, supported {row['supported']}"
                )
                if verdict is not None:
                    outcome += f", LLM evaluator {verdict.passing} ({verdict.seconds:.0f} s)"
            label = ", unanswerable" if question.answerable is False and question.type != "unanswerable" else ""
            progress.console.print(f"{question.id} [{question.type}{label}] {outcome}", markup=False, highlight=False)
            progress.advance(task)
    wall_seconds = time.perf_counter() - started

    totals = summarise(rows)
    date = header["date"][:10]
    # The time as well as the date: a second run on the same day must not overwrite the first one's plot.
    plot_path = output_dir / f"grounding_report_{questions.value}_{header['date'][:19].replace(':', '')}.png"
    result = {
        **header,
        "questions": questions.value,
        "split": split if questions is QuestionSet.KB else "test",
        "limit": limit if questions is QuestionSet.KB else (limit or WIXQA_DEFAULT_LIMIT),
        "n_questions": len(rows),
        "llm": assistant.chat_model.name,
        "index": index_name,
        "top_k": settings.retrieval.top_k,
        "min_score_to_answer": assistant.min_score_to_answer,
        "judge": {
            "threshold": judge.calibration.threshold,
            "answer_threshold": judge.calibration.answer_threshold,
            "encoder": judge.calibration.encoder,
        },
        "faithfulness_evaluator": "llama_index.core.evaluation.FaithfulnessEvaluator" if faithfulness else None,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(wall_seconds, 1),
        "rows_from_checkpoint": len(done),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "plot": _display_path(plot_path),
        "totals": totals,
        "rows": rows,
    }
    body = markdown_body(result)
    if record:
        plot_support(
            rows,
            judge.calibration.threshold,
            plot_path,
            f"Claim support, {questions.value}"
            + (f" {split}" if questions is QuestionSet.KB else f" (first {len(rows)})")
            + f", {date}",
        )
        name = f"grounding-report-{questions.value}" + (
            f"-{split.replace('_', '-')}" if questions is QuestionSet.KB else ""
        )
        title = f"grounding report: {questions.value}" + (
            f" {split} questions ({len(rows)})" if questions is QuestionSet.KB else f" questions ({len(rows)})"
        )
        path = record_run(name, title, result, body, directory=output_dir.parent)
        if path.parent.resolve() != output_dir.resolve():  # record_run writes into <directory>/results
            output_dir.mkdir(parents=True, exist_ok=True)
            path = path.replace(output_dir / path.name)
        console.print(f"Wrote {path}, {plot_path} and a section of {output_dir.parent / 'RESULTS.md'}")
    print("\n".join(_summary_lines(body)))


def load_checkpoint(path: Path | None, wanted: set[str]) -> dict[str, dict]:
    """Rows of an interrupted run (JSON lines) for the questions of this one, by question id."""
    if path is None or not path.is_file():
        return {}
    rows = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                if row.get("id") in wanted:
                    rows[row["id"]] = row
    if rows:
        console.print(f"Resuming: {len(rows)} questions already answered and judged in {path}")
    return rows


def _summary_lines(body: list[str]) -> list[str]:
    """The markdown body without the long list of unsupported claims."""
    cut = next((i for i, line in enumerate(body) if line.startswith("<details>")), len(body))
    return body[:cut]


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    typer.run(main)
