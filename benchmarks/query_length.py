"""How long clients' questions are in word pieces, and what cutting them at `query_max_tokens` costs retrieval.

    python benchmarks/query_length.py [--limits 32,64,128] [--datasets wixqa,kb] [--split calibration] \
                                      [--threads 1] [--no-record]

- `wixqa`: the 160 WixQA expert questions (real customer messages, often two or three sentences) against the 173
  articles, indexed as `colbert_att_assistant.evals.retrieval` indexes them (title + text, one document per article;
  `indexes/wixqa`).
- `kb`: the answerable labelled knowledge-base questions of one half (`--split`; choose on `calibration`, check on
  `held_out`), each searched as the assistant searches it: a follow-up joined with its previous turn
  (`evals.calibrate_abstention.retrieval_query`), in its own mode (customer questions see public chunks only), against
  the assistant's own chunk index of the documents (`knowledge_base.ingest.load_or_rebuild`; `indexes/query-length-kb`).
  Gold chunks: knowledge_base/eval/qrels/test.tsv. The same half's questions (unanswerable ones too) are also run
  through the assistant's two retrieval gates with the calibrated thresholds, since a longer query moves the
  normalised scores those thresholds were fitted on.

`query_max_tokens` does not change any stored vector, so one index serves every limit: for each limit the index is
loaded from disk with an encoder that shares the checkpoint and differs only in that setting, and the load must
succeed without a rebuild (the run fails otherwise). Queries are encoded and searched one at a time (p50/p95 include
the query encoding). Metrics come from ranx over the top 100. Appends a dated section to benchmarks/RESULTS.md and
writes benchmarks/results/<stamp>-query-length-<split>.json, unless --no-record.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from llama_index.core.vector_stores.types import MetadataFilters
from ranx import Qrels, Run, evaluate
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from colbert_att_assistant.assistant.abstention import AbstentionCalibration
from colbert_att_assistant.assistant.chat import PUBLIC_ONLY
from colbert_att_assistant.assistant.settings import AssistantSettings, Audience
from colbert_att_assistant.evals.calibrate_abstention import question_scores, retrieval_query
from colbert_att_assistant.evals.labelled_questions import load_questions
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.evals.retrieval import build_or_load_index
from colbert_att_assistant.knowledge_base.documents_io import DOCUMENTS_DIR
from colbert_att_assistant.knowledge_base.ingest import load_or_rebuild
from colbert_att_assistant.retriever.beir import BeirDataset, load_qrels
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.retriever.scoring import ScoringMode
from colbert_att_assistant.retriever.settings import EncoderSettings

REPO = Path(__file__).resolve().parent.parent
KB_QRELS = REPO / "knowledge_base" / "eval" / "qrels" / "test.tsv"
WIXQA_INDEX_DIR = REPO / "indexes" / "wixqa"
KB_INDEX_DIR = REPO / "indexes" / "query-length-kb"
METRICS = ["ndcg@10", "recall@3", "recall@10", "mrr@10"]
TOP_K = 100
# Long enough to never cut a question here: the reference for counting each question's word pieces.
UNCUT = 512
console = Console(stderr=True, soft_wrap=True)


@dataclass
class Query:
    id: str
    text: str
    filters: MetadataFilters | None = None


def shared_wixqa_dir() -> Path:
    candidates = [os.environ.get("COLBERT_ATT_SHARED_DIR"), REPO.parent / "shared", Path("/work/shared")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "datasets" / "wixqa" / "queries.jsonl").is_file():
            return Path(candidate) / "datasets" / "wixqa"
    raise typer.BadParameter("No WixQA folder found under COLBERT_ATT_SHARED_DIR, ../shared or /work/shared.")


def encoder_with_limit(base: ColBERTAttEncoder, limit: int) -> ColBERTAttEncoder:
    """The same checkpoint (no second copy of the weights), another query length."""
    return ColBERTAttEncoder(base.settings.model_copy(update={"query_max_tokens": limit}), checkpoint=base.checkpoint)


def word_pieces(encoder: ColBERTAttEncoder, texts: list[str]) -> list[int]:
    """Each text's length as the encoder counts it against query_max_tokens: special tokens and marker included."""
    uncut = encoder_with_limit(encoder, UNCUT)
    return [len(encoded.token_ids) for encoded in uncut.encode_queries(texts)]


def length_summary(lengths: list[int], limits: list[int]) -> dict:
    values = np.asarray(lengths)
    return {
        "queries": len(lengths),
        "p50": int(np.percentile(values, 50)),
        "p90": int(np.percentile(values, 90)),
        "max": int(values.max()),
        "over": {str(limit): int((values > limit).sum()) for limit in limits},
    }


def search_all(
    indexes: list[MultiVectorIndex], queries: list[Query]
) -> tuple[list[dict[str, dict[str, float]]], list[list[float]], list[int]]:
    """Per index: (run, seconds per query, queries the encoder cut). One query at a time, its encoding included; the
    indexes take turns on each query, so that a change of machine load falls on every limit alike."""
    runs: list[dict[str, dict[str, float]]] = [{} for _ in indexes]
    seconds: list[list[float]] = [[] for _ in indexes]
    cut = [0 for _ in indexes]
    for query in queries:
        for position, index in enumerate(indexes):
            started = time.perf_counter()
            encoded = index.encoder.encode_query(query.text)
            hits = index.search(encoded, top_k=TOP_K, mode=ScoringMode.COLBERT_ATT, filters=query.filters)
            seconds[position].append(time.perf_counter() - started)
            cut[position] += encoded.truncated
            runs[position][query.id] = {hit.id: hit.score for hit in hits} or {"__no_result__": 0.0}
    return runs, seconds, cut


def scores(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], ids: list[str]) -> dict[str, float]:
    if not ids:
        return {}
    chosen = Qrels({qid: qrels[qid] for qid in ids})
    values = evaluate(chosen, Run({qid: run[qid] for qid in ids}), METRICS, make_comparable=True)
    return {metric: round(float(value) * 100, 2) for metric, value in values.items()}


def per_query_ndcg(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], ids: list[str]) -> np.ndarray:
    if not ids:
        return np.zeros(0)
    chosen = Qrels({qid: qrels[qid] for qid in ids})
    return np.asarray(evaluate(chosen, Run({qid: run[qid] for qid in ids}), "ndcg@10", return_mean=False))


def measure(
    name: str,
    queries: list[Query],
    qrels: dict[str, dict[str, int]],
    load_index,
    base: ColBERTAttEncoder,
    limits: list[int],
) -> dict:
    """Retrieval quality and query latency at each limit; `load_index(encoder)` loads the one index from disk."""
    lengths = dict(zip([q.id for q in queries], word_pieces(base, [q.text for q in queries]), strict=True))
    summary = length_summary(list(lengths.values()), limits)
    # The questions the shortest limit cuts: the only ones a longer limit can change.
    long_ids = [qid for qid, n in lengths.items() if n > min(limits)]
    long_set = set(long_ids)
    ids = [q.id for q in queries]
    indexes = [load_index(encoder_with_limit(base, limit)) for limit in limits]
    runs, seconds, cuts = search_all(indexes, queries)
    baseline = per_query_ndcg(qrels, runs[0], long_ids)
    rows = []
    for limit, run, times, cut in zip(limits, runs, seconds, cuts, strict=True):
        ndcg_long = per_query_ndcg(qrels, run, long_ids)
        long_times = [t for query, t in zip(queries, times, strict=True) if query.id in long_set]
        rows.append(
            {
                "query_max_tokens": limit,
                "cut": cut,
                "all": scores(qrels, run, ids),
                "long": scores(qrels, run, long_ids),
                "long_better": int((ndcg_long > baseline + 1e-9).sum()),
                "long_worse": int((ndcg_long < baseline - 1e-9).sum()),
                "p50_ms": round(float(np.percentile(times, 50)) * 1000, 1),
                "p95_ms": round(float(np.percentile(times, 95)) * 1000, 1),
                "p50_ms_long": round(float(np.percentile(long_times, 50)) * 1000, 1) if long_times else None,
            }
        )
        console.print(f"{name} query_max_tokens={limit}: {rows[-1]}", highlight=False)
    return {"lengths": summary, "long_queries": len(long_ids), "rows": rows}


# ---- the two collections --------------------------------------------------------------------------------------


def wixqa_benchmark(base: ColBERTAttEncoder, limits: list[int]) -> dict:
    data = BeirDataset.load(shared_wixqa_dir(), "test")
    build_or_load_index(data, base, WIXQA_INDEX_DIR, use_title=True)  # built once with the default settings

    def load(encoder: ColBERTAttEncoder) -> MultiVectorIndex:
        return MultiVectorIndex.load(WIXQA_INDEX_DIR, encoder=encoder)  # raises IndexMismatchError if incompatible

    queries = [Query(qid, text) for qid, text in data.queries.items()]
    return {"documents": len(data.corpus), **measure("wixqa", queries, data.qrels, load, base, limits)}


def kb_benchmark(base: ColBERTAttEncoder, limits: list[int], split: str) -> dict:
    settings = AssistantSettings.load()
    documents = DOCUMENTS_DIR  # the labelled questions are about the bundled house's documents
    load_or_rebuild(documents, KB_INDEX_DIR, encoder=base, show_progress=True)

    def load(encoder: ColBERTAttEncoder) -> MultiVectorIndex:
        index, report = load_or_rebuild(documents, KB_INDEX_DIR, encoder=encoder)
        if report.rebuilt_because or report.changed:
            raise RuntimeError(f"query_max_tokens={encoder.settings.query_max_tokens} needed a rebuild: {report}")
        return index

    qrels_all = load_qrels(KB_QRELS)
    questions = load_questions(split)  # type: ignore[arg-type]
    answerable = [q for q in questions if q.answerable and q.id in qrels_all]
    unjudged = [q.id for q in questions if q.answerable and q.id not in qrels_all]
    queries = [
        Query(q.id, retrieval_query(q), PUBLIC_ONLY if q.asked_by is Audience.CUSTOMER else None) for q in answerable
    ]
    qrels = {q.id: qrels_all[q.id] for q in answerable}
    result = measure("kb", queries, qrels, load, base, limits)
    result["answerable_without_qrels"] = unjudged
    indexed = set(load(base).document_ids())
    # Gold chunks no longer in the index (a document edited after the labels were made) can never be found.
    result["gold_chunks_not_indexed"] = sorted({chunk for q in qrels.values() for chunk in q} - indexed)

    # The assistant's gates at their calibrated thresholds: does a longer query let through the same share?
    calibration = AbstentionCalibration.load()
    retrieval = settings.retrieval
    gates = []
    for limit in limits:
        index = load(encoder_with_limit(base, limit))
        pairs = question_scores(index, questions, retrieval.scoring, retrieval.top_k, retrieval.evidence_units)
        passes = [
            top >= (calibration.min_score_to_answer if calibration else 0.0)
            and evidence >= (calibration.min_evidence_to_answer if calibration else 0.0)
            for top, evidence in pairs
        ]
        answerable_pass = [p for p, q in zip(passes, questions, strict=True) if q.answerable]
        unanswerable_pass = [p for p, q in zip(passes, questions, strict=True) if not q.answerable]
        gates.append(
            {
                "query_max_tokens": limit,
                "answerable_passing": f"{sum(answerable_pass)} / {len(answerable_pass)}",
                "unanswerable_blocked": f"{len(unanswerable_pass) - sum(unanswerable_pass)} / {len(unanswerable_pass)}",
                "median_top_score_answerable": round(
                    float(np.median([t for (t, _), q in zip(pairs, questions, strict=True) if q.answerable])), 4
                ),
            }
        )
    result["gates"] = gates
    result["calibration"] = calibration.model_dump() if calibration else None
    return result


# ---- report -----------------------------------------------------------------------------------------------------


def markdown(result: dict) -> list[str]:
    body = [
        f"- load average (1/5/15 min) at start {result['load_start']}, at end {result['load_end']}; "
        f"torch threads {result['threads']}; wall time {result['wall_seconds']:.0f} s",
        "- one index per collection, built once; for each limit it is loaded from disk by an encoder sharing the "
        "checkpoint with only query_max_tokens changed: every load succeeded without a rebuild",
        "- 'long': the questions longer than the shortest limit (the only ones a longer limit can change); "
        "better / worse: of those, how many gain or lose nDCG@10 against the shortest limit",
    ]
    names = {"wixqa": "WixQA (160 expert questions, 173 articles)", "kb": f"knowledge base, {result['split']} half"}
    for name, data in result["datasets"].items():
        lengths = data["lengths"]
        over = ", ".join(f"> {limit}: {count}" for limit, count in lengths["over"].items())
        body += [
            "",
            f"**{names[name]}**: {lengths['queries']} questions; word pieces (special tokens included) p50 "
            f"{lengths['p50']}, p90 {lengths['p90']}, max {lengths['max']}; questions longer than {over}",
            "",
            "| query_max_tokens | cut | " + " | ".join(METRICS) + " | long nDCG@10 | long recall@3 | better / worse "
            "| p50 ms | p95 ms | p50 ms long |",
            "|---|---|" + "---|" * (len(METRICS) + 6),
        ]
        for row in data["rows"]:
            body.append(
                f"| {row['query_max_tokens']} | {row['cut']} | "
                + " | ".join(str(row["all"][m]) for m in METRICS)
                + f" | {row['long'].get('ndcg@10', '–')} | {row['long'].get('recall@3', '–')} | "
                f"{row['long_better']} / {row['long_worse']} | {row['p50_ms']} | {row['p95_ms']} | "
                f"{row['p50_ms_long'] or '–'} |"
            )
        if data.get("gold_chunks_not_indexed"):
            body.append(f"- gold chunks not in the index (stale labels): {', '.join(data['gold_chunks_not_indexed'])}")
        if data.get("gates"):
            calibration = data["calibration"] or {}
            body += [
                "",
                f"Retrieval gates at the calibrated thresholds (top score ≥ {calibration.get('min_score_to_answer')}, "
                f"evidence ≥ {calibration.get('min_evidence_to_answer')}; fitted with query_max_tokens 32), "
                f"all {result['split']} questions:",
                "",
                "| query_max_tokens | answerable passing | unanswerable blocked | median top score (answerable) |",
                "|---|---|---|---|",
                *(
                    f"| {g['query_max_tokens']} | {g['answerable_passing']} | {g['unanswerable_blocked']} | "
                    f"{g['median_top_score_answerable']} |"
                    for g in data["gates"]
                ),
            ]
    return body


def main(
    limits: Annotated[str, typer.Option(help="Comma-separated query_max_tokens values; the first is the baseline.")] = (
        "32,64,128"
    ),
    datasets: Annotated[str, typer.Option(help="Comma-separated, from wixqa, kb.")] = "wixqa,kb",
    split: Annotated[str, typer.Option(help="kb half: calibration (choose on it) or held_out (check).")] = (
        "calibration"
    ),
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
    record: Annotated[bool, typer.Option(help="Write the results JSON and a RESULTS.md section.")] = True,
) -> None:
    chosen_limits = [int(value) for value in limits.split(",") if value.strip()]
    chosen = [name.strip() for name in datasets.split(",") if name.strip()]
    if set(chosen) - {"wixqa", "kb"} or not chosen:
        raise typer.BadParameter(f"datasets must be among wixqa, kb; got {datasets!r}.")
    if split not in ("calibration", "held_out"):
        raise typer.BadParameter(f"split must be calibration or held_out, not {split!r}.")
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(
        logging.ERROR
    )  # the cuts are counted here instead
    header = run_header("python benchmarks/query_length.py " + " ".join(sys.argv[1:]))
    load_start = os.getloadavg()
    started = time.perf_counter()
    base = ColBERTAttEncoder(EncoderSettings(num_threads=threads))
    results = {}
    if "wixqa" in chosen:
        results["wixqa"] = wixqa_benchmark(base, chosen_limits)
    if "kb" in chosen:
        results["kb"] = kb_benchmark(base, chosen_limits, split)
    result = {
        **header,
        "split": split,
        "threads": threads,
        "model": base.model_name,
        "load_start": "/".join(f"{x:.2f}" for x in load_start),
        "load_end": "/".join(f"{x:.2f}" for x in os.getloadavg()),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "datasets": results,
    }
    body = markdown(result)
    if record:
        path = record_run(
            f"query-length-{split.replace('_', '-')}",
            f"query length: retrieval at query_max_tokens {', '.join(map(str, chosen_limits))} "
            f"({', '.join(chosen)}; kb {split} half)",
            result,
            body,
        )
        console.print(f"Wrote {path} and a section of benchmarks/RESULTS.md")
    print("\n".join(body))


if __name__ == "__main__":
    typer.run(main)
