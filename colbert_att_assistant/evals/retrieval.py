"""Evaluate retrieval methods side by side, all over the same texts and the same encoder.

    python -m colbert_att_assistant.evals.retrieval

with no --dataset evaluates every standard collection (SciFact test, WixQA, the knowledge base's held-out half,
MS MARCO DL19 5K: `evals/standard_collections.py`) with every method, reusing or building each collection's index
under indexes/, and appends one table (rows: collections, columns: methods) to benchmarks/RESULTS.md.

    python -m colbert_att_assistant.evals.retrieval --dataset ../shared/datasets/scifact --split test \
        --methods bm25,bm25_stemmed,dense,maxsim,colbert_att,hybrid --index-dir indexes/scifact

evaluates one BEIR dataset, with per-method latencies. Metrics come from ranx. Results go to
benchmarks/results/<stamp>-eval-<name>.json and a dated section of benchmarks/RESULTS.md. Queries whose record
carries metadata.previous_turn (follow-ups in the knowledge base's labelled set) are searched as "previous turn +
follow-up", the simplest condensation.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from pydantic import BaseModel
from ranx import Qrels, Run, evaluate, fuse
from rich.console import Console
from rich.progress import track
from rich.table import Table

from colbert_att_assistant.evals.baselines import DenseBaseline
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.evals.standard_collections import (
    INDEXES_DIR,
    KB_EVAL_DIR,
    SHARED_DATASETS_DIR,
    Collection,
    collection_queries,
    standard_collections,
)
from colbert_att_assistant.evals.variants import VARIANTS, variant_results
from colbert_att_assistant.paths import BENCHMARKS_DIR
from colbert_att_assistant.retriever.beir import BeirDataset, query_texts
from colbert_att_assistant.retriever.bm25 import BM25Baseline
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import DocumentInput, MultiVectorIndex
from colbert_att_assistant.retriever.progress import encoding_progress
from colbert_att_assistant.retriever.settings import AttentionMix, AttentionStrategy, EncoderSettings, IndexSettings

BASE_METHODS = ("bm25", "bm25_stemmed", "dense", "maxsim", "colbert_att", "hybrid")
METHODS = (*BASE_METHODS, *VARIANTS)
# Methods computed from other methods' results, and what they need.
PREREQUISITES = {"hybrid": ("bm25_stemmed", "colbert_att"), **{name: ("colbert_att",) for name in VARIANTS}}
METRICS = ["ndcg@10", "recall@10", "recall@100", "mrr@10"]
# The suite's tables: one per metric, collections down, methods across.
TABLE_METRICS = ["ndcg@10", "recall@100", "mrr@10"]
console = Console(stderr=True, soft_wrap=True)


def build_or_load_index(
    data: BeirDataset, encoder: ColBERTAttEncoder, index_dir: Path | None, use_title: bool
) -> MultiVectorIndex:
    """The index at `index_dir` brought up to date with the corpus (documents missing or whose text changed are
    encoded, documents no longer in the corpus leave), persisted there when anything changed."""
    if index_dir is not None and (index_dir / "manifest.json").is_file():
        index = MultiVectorIndex.load(index_dir, encoder=encoder)
    else:
        index = MultiVectorIndex(encoder, IndexSettings(encoder=encoder.settings))
    wanted = {d.id: d.full_text if use_title else d.text for d in data.corpus.values()}
    gone = [i for i in index.document_ids() if i not in wanted]
    stale = [DocumentInput(id=i, text=t) for i, t in wanted.items() if i not in index or index.get(i).text != t]
    if gone:
        index.delete(gone)
    if stale:
        with encoding_progress(len(stale), "Encoding corpus") as advance:
            index.upsert(stale, progress=advance)
    if index_dir is not None and (gone or stale):
        index.persist(index_dir)
    return index


def with_prerequisites(chosen: Sequence[str]) -> list[str]:
    """The chosen methods, each preceded by the methods it is computed from."""
    ordered: list[str] = []
    for method in chosen:
        for needed in (*PREREQUISITES.get(method, ()), method):
            if needed not in ordered:
                ordered.append(needed)
    return ordered


def parse_methods(methods: str) -> list[str]:
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = set(chosen) - set(METHODS)
    if unknown:
        raise typer.BadParameter(f"Unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}.")
    return with_prerequisites(chosen)


def needs_index(methods: Sequence[str]) -> bool:
    return bool({"maxsim", "colbert_att"} & set(methods))


def run_methods(
    data: BeirDataset,
    queries: dict[str, str],
    methods: list[str],
    encoder: ColBERTAttEncoder,
    index: MultiVectorIndex | None,
    use_title: bool,
    k: int = 100,
    latencies: dict[str, list[float]] | None = None,
) -> dict[str, Run]:
    ids = list(data.corpus)
    texts = [d.full_text if use_title else d.text for d in data.corpus.values()]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for method in methods:
        if method in PREREQUISITES:
            continue
        if method in ("maxsim", "colbert_att") and latencies is None:
            assert index is not None
            # Not timed per query: searched in batches, the same hits as one at a time, in a fraction of the time.
            results[method] = searched_in_batches(index, queries, k, method)
            continue
        if method in ("bm25", "bm25_stemmed"):
            searcher = BM25Baseline(ids, texts, stemming=method == "bm25_stemmed").search
        elif method == "dense":
            searcher = DenseBaseline(encoder, ids, texts).search
        else:
            assert index is not None

            def searcher(query: str, k: int, mode: str = method) -> dict[str, float]:
                return {h.id: h.score for h in index.search(query, top_k=k, mode=mode)}

        results[method], seconds = {}, []
        for qid, text in track(queries.items(), description=method, console=console):
            started = time.perf_counter()  # one query at a time, query encoding included
            results[method][qid] = searcher(text, k) or {"__no_result__": 0.0}
            seconds.append(time.perf_counter() - started)
        if latencies is not None:
            latencies[method] = seconds
    variants = [m for m in methods if m in VARIANTS]
    if variants:
        assert index is not None
        results.update(variant_results(index, encoder, queries, results["colbert_att"], variants))
    runs = {name: Run(found, name=name) for name, found in results.items()}
    if "hybrid" in methods:
        # Reciprocal rank fusion of stemmed BM25 with ColBERT-Att.
        runs["hybrid"] = fuse(runs=[runs["bm25_stemmed"], runs["colbert_att"]], method="rrf")
        runs["hybrid"].name = "hybrid"
    return {name: runs[name] for name in methods}


def searched_in_batches(
    index: MultiVectorIndex, queries: dict[str, str], k: int, mode: str, batch_size: int = 32
) -> dict[str, dict[str, float]]:
    """{query id: {document id: score}} of `mode`, the queries searched `batch_size` at a time."""
    ids, texts = list(queries), list(queries.values())
    found: dict[str, dict[str, float]] = {}
    for start in track(range(0, len(texts), batch_size), description=mode, console=console):
        hits = index.search_batch(texts[start : start + batch_size], top_k=k, mode=mode)
        for qid, query_hits in zip(ids[start : start + batch_size], hits, strict=True):
            found[qid] = {h.id: h.score for h in query_hits} or {"__no_result__": 0.0}
    return found


def score_runs(data: BeirDataset, queries: dict[str, str], runs: dict[str, Run]) -> dict[str, dict[str, float]]:
    """{method: {metric: value x 100, two decimals}} over the given queries."""
    qrels = Qrels({qid: data.qrels[qid] for qid in queries})
    return {
        name: {m: round(v * 100, 2) for m, v in evaluate(qrels, run, METRICS, make_comparable=True).items()}
        for name, run in runs.items()
    }


def make_encoder(
    model: str | None,
    attention: AttentionStrategy,
    attention_mix: Path | None,
    special_tokens: str,
    threads: int | None,
) -> ColBERTAttEncoder:
    mix = AttentionMix.load(attention_mix) if attention_mix is not None else None
    return ColBERTAttEncoder(
        EncoderSettings(
            model_path=model,
            attention_strategy=AttentionStrategy.LEARNED if mix is not None else attention,
            attention_mix=mix,
            special_token_attention=special_tokens,
            num_threads=threads,
        )
    )


# ---- every standard collection, one table ---------------------------------------------------------------------


class CollectionResult(BaseModel):
    key: str
    name: str
    split: str
    queries: int
    documents: int
    seconds: float
    load_average: tuple[float, float, float]
    scores: dict[str, dict[str, float]]


def evaluate_collection(
    collection: Collection, methods: list[str], encoder: ColBERTAttEncoder, limit: int | None
) -> CollectionResult:
    started = time.perf_counter()
    console.print(f"[bold]{collection.name}[/bold] ({collection.dataset})")
    data = BeirDataset.load(collection.dataset, collection.split)
    queries = collection_queries(collection, data, limit)
    index = (
        build_or_load_index(data, encoder, collection.index_dir, collection.use_title) if needs_index(methods) else None
    )
    runs = run_methods(data, queries, methods, encoder, index, collection.use_title)
    return CollectionResult(
        key=collection.key,
        name=collection.name,
        split=collection.split,
        queries=len(queries),
        documents=len(data.corpus),
        seconds=round(time.perf_counter() - started, 1),
        load_average=os.getloadavg(),
        scores=score_runs(data, queries, runs),
    )


def metric_table(results: Sequence[CollectionResult], methods: Sequence[str], metric: str) -> list[str]:
    """A Markdown table of one metric, the best method of each collection in bold; for nDCG@10 also ColBERT-Att
    minus MaxSim and minus dense."""
    deltas = metric == "ndcg@10" and {"colbert_att", "maxsim", "dense"} <= set(methods)
    header = ["collection", "queries", "documents", *methods, *(["Att − MaxSim", "Att − dense"] if deltas else [])]
    lines = ["| " + " | ".join(header) + " |", "|---" * 3 + "|" + "---:|" * (len(header) - 3)]
    for result in results:
        values = {m: result.scores[m][metric] for m in methods}
        best = max(values.values())
        cells = [f"**{v:.2f}**" if v == best else f"{v:.2f}" for v in values.values()]
        if deltas:
            cells += [f"{values['colbert_att'] - values[other]:+.2f}" for other in ("maxsim", "dense")]
        lines.append(f"| {result.name} | {result.queries} | {result.documents} | " + " | ".join(cells) + " |")
    return lines


def suite_body(results: Sequence[CollectionResult], methods: Sequence[str], model: str, notes: list[str]) -> list[str]:
    body = [f"- model: {model}", *notes]
    for result in results:
        load = " ".join(f"{v:.2f}" for v in result.load_average)
        body.append(f"- {result.name} ({result.split}): {result.seconds / 60:.1f} min, load average after it {load}")
    for metric in TABLE_METRICS:
        body += ["", f"{metric} x 100:", "", *metric_table(results, methods, metric)]
    return body


def evaluate_suite(
    collections: Sequence[Collection],
    methods: list[str],
    encoder: ColBERTAttEncoder,
    limit: int | None,
    record_to: Path | None,
) -> list[CollectionResult]:
    """Every collection with every method; one JSON file and one RESULTS.md section in `record_to` (if given)."""
    load_before, started = os.getloadavg(), time.perf_counter()
    results = [evaluate_collection(c, methods, encoder, limit) for c in collections]
    for metric in TABLE_METRICS:
        print("\n".join([f"\n{metric}", *metric_table(results, methods, metric)]))
    if record_to is None:
        return results
    wall = time.perf_counter() - started
    notes = [
        f"- wall time {wall / 60:.1f} min; load average (1/5/15 min) at start "
        f"{' '.join(f'{v:.2f}' for v in load_before)}, at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"- queries per collection capped at {limit}" if limit is not None else "- every judged query of each split",
        "- variants re-score the documents the default ColBERT-Att search scored (its top 100): "
        "colbert_att_zero = A 0 at [CLS]/[SEP], *_pooled = + 0.1 x cosine of mean token vectors",
    ]
    result = {
        **run_header("python -m colbert_att_assistant.evals.retrieval " + " ".join(sys.argv[1:])),
        "model": encoder.model_name,
        "encoder": encoder.settings.model_dump(mode="json"),
        "wall_seconds": round(wall, 1),
        "collections": [r.model_dump(mode="json") for r in results],
    }
    record_run(
        "eval-suite",
        "retrieval evaluation: every collection, every method",
        result,
        suite_body(results, methods, encoder.model_name, notes),
        directory=record_to,
    )
    return results


# ---- the command ----------------------------------------------------------------------------------------------


def evaluate_one(
    dataset: Path,
    split: str,
    chosen: list[str],
    encoder: ColBERTAttEncoder,
    index_dir: Path | None,
    limit: int | None,
    title: bool,
    record_to: Path | None,
) -> None:
    data = BeirDataset.load(dataset, split)
    queries = query_texts(dataset, data.queries)
    if limit is not None:
        queries = dict(list(queries.items())[:limit])
    index = build_or_load_index(data, encoder, index_dir, title) if needs_index(chosen) else None
    latencies: dict[str, list[float]] = {}
    runs = run_methods(data, queries, chosen, encoder, index, title, latencies=latencies)
    scores = score_runs(data, queries, runs)
    p50_ms = {name: round(float(np.percentile(values, 50)) * 1000, 1) for name, values in latencies.items()}
    p95_ms = {name: round(float(np.percentile(values, 95)) * 1000, 1) for name, values in latencies.items()}

    table = Table("method", *METRICS, "p50 ms", "p95 ms")
    for name, values in scores.items():
        table.add_row(
            name, *(f"{values[m]:.2f}" for m in METRICS), str(p50_ms.get(name, "-")), str(p95_ms.get(name, "-"))
        )
    Console().print(table)
    if record_to is None:
        return
    result = {
        **run_header("python -m colbert_att_assistant.evals.retrieval " + " ".join(sys.argv[1:])),
        "dataset": str(dataset),
        "split": split,
        "queries": len(queries),
        "documents": len(data.corpus),
        "encoder": encoder.settings.model_dump(mode="json"),
        "model": encoder.model_name,
        "scores": scores,
        "query_p50_ms": p50_ms,
        "query_p95_ms": p95_ms,
    }
    body = [
        f"- model: {encoder.model_name}",
        "- p50 / p95: one query at a time, query encoding included, top 100 (hybrid and colbert_att_* variants: "
        "computed afterwards, not timed)",
        "",
        "| method | " + " | ".join(METRICS) + " | p50 ms | p95 ms |",
        "|---|" + "---|" * (len(METRICS) + 2),
        *(
            f"| {n} | " + " | ".join(str(v) for v in s.values()) + f" | {p50_ms.get(n, '-')} | {p95_ms.get(n, '-')} |"
            for n, s in scores.items()
        ),
    ]
    name = dataset.resolve().name
    record_run(
        f"eval-{name}-{split}",
        f"evaluation: {name} {split} ({len(queries)} queries, {len(data.corpus)} documents)",
        result,
        body,
        directory=record_to,
    )


def main(
    dataset: Annotated[
        Path | None,
        typer.Option(
            help="One BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); none: every standard "
            "collection, one table."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="With --dataset.")] = "test",
    methods: Annotated[str, typer.Option(help=f"Comma-separated, from {', '.join(METHODS)}.")] = ",".join(METHODS),
    index_dir: Annotated[Path | None, typer.Option(help="With --dataset: reuse / keep the ColBERT index here.")] = None,
    collections: Annotated[
        str | None, typer.Option(help="Without --dataset: only these standard collections (comma-separated keys).")
    ] = None,
    shared_datasets: Annotated[Path, typer.Option(help="Where scifact/, wixqa/, msmarco-dl19-5k/ are.")] = (
        SHARED_DATASETS_DIR
    ),
    kb_dataset: Annotated[Path, typer.Option(help="The knowledge base's labelled questions (BEIR).")] = KB_EVAL_DIR,
    index_root: Annotated[Path, typer.Option(help="Without --dataset: each collection's index folder is here.")] = (
        INDEXES_DIR
    ),
    attention: Annotated[AttentionStrategy, typer.Option()] = AttentionStrategy.CLS_ALL,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N queries (of each collection).")] = None,
    title: Annotated[bool, typer.Option(help="With --dataset: prefix each document with its title.")] = True,
    record: Annotated[bool, typer.Option(help="Write results to benchmarks/.")] = True,
    results_dir: Annotated[Path, typer.Option(help="Where RESULTS.md and results/ are.")] = BENCHMARKS_DIR,
    model: Annotated[
        str | None, typer.Option(help="Checkpoint folder (HF, PyLate, Stanford or our own); default: bundled MiniLM.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    attention_mix: Annotated[
        Path | None,
        typer.Option(help="A learned mix (retriever.training.attention_mix train); sets --attention learned."),
    ] = None,
    special_tokens: Annotated[str, typer.Option(help="keep, or zero: A = 0 at [CLS] / [SEP].")] = "keep",
) -> None:
    chosen = parse_methods(methods)
    # Long queries are truncated by design.
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(logging.ERROR)
    record_to = results_dir if record else None
    if dataset is not None:
        encoder = make_encoder(model, attention, attention_mix, special_tokens, threads)
        evaluate_one(dataset, split, chosen, encoder, index_dir, limit, title, record_to)
        return
    suite = pick_collections(standard_collections(shared_datasets, index_root, kb_dataset), collections)
    missing = [str(c.dataset) for c in suite if not (c.dataset / "corpus.jsonl").is_file()]
    if missing:
        raise typer.BadParameter(f"No BEIR corpus.jsonl in {', '.join(missing)} (see --shared-datasets, --kb-dataset).")
    encoder = make_encoder(model, attention, attention_mix, special_tokens, threads)
    evaluate_suite(suite, chosen, encoder, limit, record_to)


def pick_collections(available: list[Collection], keys: str | None) -> list[Collection]:
    if keys is None:
        return available
    wanted = [k.strip() for k in keys.split(",") if k.strip()]
    unknown = set(wanted) - {c.key for c in available}
    if unknown:
        raise typer.BadParameter(
            f"Unknown collections {sorted(unknown)}; choose from {', '.join(c.key for c in available)}."
        )
    return [c for c in available if c.key in wanted]


if __name__ == "__main__":
    typer.run(main)
