"""Evaluate retrieval methods side by side on a BEIR dataset, all over the same texts and the same encoder.

    python -m colbert_att_assistant.evals.retrieval --dataset ../shared/datasets/scifact --split test \
        --methods bm25,bm25_stemmed,dense,maxsim,colbert_att,hybrid --index-dir indexes/scifact

Metrics come from ranx. Results go to benchmarks/results/<stamp>-eval-<dataset>-<split>.json and a dated table is
appended to benchmarks/RESULTS.md. Queries whose record carries metadata.previous_turn (follow-ups in the
knowledge base's labelled set) are searched as "previous turn + follow-up", the simplest condensation.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from ranx import Qrels, Run, evaluate, fuse
from rich.console import Console
from rich.progress import track
from rich.table import Table

from colbert_att_assistant.evals.baselines import DenseBaseline
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import BeirDataset, query_texts
from colbert_att_assistant.retriever.bm25 import BM25Baseline
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import DocumentInput, MultiVectorIndex
from colbert_att_assistant.retriever.progress import encoding_progress
from colbert_att_assistant.retriever.settings import AttentionMix, AttentionStrategy, EncoderSettings, IndexSettings

METHODS = ("bm25", "bm25_stemmed", "dense", "maxsim", "colbert_att", "hybrid")
METRICS = ["ndcg@10", "recall@10", "recall@100", "mrr@10"]
console = Console(stderr=True, soft_wrap=True)


def build_or_load_index(
    data: BeirDataset, encoder: ColBERTAttEncoder, index_dir: Path | None, use_title: bool
) -> MultiVectorIndex:
    if index_dir is not None and (index_dir / "manifest.json").is_file():
        index = MultiVectorIndex.load(index_dir, encoder=encoder)
    else:
        index = MultiVectorIndex(encoder, IndexSettings(encoder=encoder.settings))
    missing = [d for d in data.corpus.values() if d.id not in index]
    if missing:
        documents = [DocumentInput(id=d.id, text=d.full_text if use_title else d.text) for d in missing]
        with encoding_progress(len(documents), "Encoding corpus") as advance:
            index.add(documents, progress=advance)
        if index_dir is not None:
            index.persist(index_dir)
    return index


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
    runs: dict[str, Run] = {}
    for method in methods:
        if method == "hybrid":
            continue
        if method in ("bm25", "bm25_stemmed"):
            searcher = BM25Baseline(ids, texts, stemming=method == "bm25_stemmed").search
        elif method == "dense":
            searcher = DenseBaseline(encoder, ids, texts).search
        else:
            assert index is not None

            def searcher(query: str, k: int, mode: str = method) -> dict[str, float]:
                return {h.id: h.score for h in index.search(query, top_k=k, mode=mode)}

        results, seconds = {}, []
        for qid, text in track(queries.items(), description=method, console=console):
            started = time.perf_counter()  # one query at a time, query encoding included
            results[qid] = searcher(text, k) or {"__no_result__": 0.0}
            seconds.append(time.perf_counter() - started)
        if latencies is not None:
            latencies[method] = seconds
        runs[method] = Run(results, name=method)
    if "hybrid" in methods:
        # Reciprocal rank fusion of stemmed BM25 with ColBERT-Att.
        runs["hybrid"] = fuse(runs=[runs["bm25_stemmed"], runs["colbert_att"]], method="rrf")
        runs["hybrid"].name = "hybrid"
    return runs


def main(
    dataset: Annotated[Path, typer.Option(help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")],
    split: Annotated[str, typer.Option()] = "test",
    methods: Annotated[str, typer.Option(help=f"Comma-separated, from {', '.join(METHODS)}.")] = ",".join(METHODS),
    index_dir: Annotated[Path | None, typer.Option(help="Reuse / keep the ColBERT index here.")] = None,
    attention: Annotated[AttentionStrategy, typer.Option()] = AttentionStrategy.CLS_ALL,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N queries.")] = None,
    title: Annotated[bool, typer.Option(help="Prefix each document with its title.")] = True,
    record: Annotated[bool, typer.Option(help="Write results to benchmarks/.")] = True,
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
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = set(chosen) - set(METHODS)
    if unknown:
        raise typer.BadParameter(f"Unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}.")
    if "hybrid" in chosen:
        chosen = list(dict.fromkeys([*chosen[: chosen.index("hybrid")], "bm25_stemmed", "colbert_att", "hybrid"]))
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(
        logging.ERROR
    )  # long queries are truncated by design
    data = BeirDataset.load(dataset, split)
    queries = query_texts(dataset, data.queries)
    if limit is not None:
        queries = dict(list(queries.items())[:limit])
    mix = AttentionMix.load(attention_mix) if attention_mix is not None else None
    if mix is not None:
        attention = AttentionStrategy.LEARNED
    encoder = ColBERTAttEncoder(
        EncoderSettings(
            model_path=model,
            attention_strategy=attention,
            attention_mix=mix,
            special_token_attention=special_tokens,
            num_threads=threads,
        )
    )
    index = build_or_load_index(data, encoder, index_dir, title) if {"maxsim", "colbert_att"} & set(chosen) else None
    latencies: dict[str, list[float]] = {}
    runs = run_methods(data, queries, chosen, encoder, index, title, latencies=latencies)
    qrels = Qrels({qid: data.qrels[qid] for qid in queries})
    scores = {name: evaluate(qrels, run, METRICS, make_comparable=True) for name, run in runs.items()}
    p50_ms = {name: round(float(np.percentile(values, 50)) * 1000, 1) for name, values in latencies.items()}
    p95_ms = {name: round(float(np.percentile(values, 95)) * 1000, 1) for name, values in latencies.items()}

    table = Table("method", *METRICS, "p50 ms", "p95 ms")
    for name, values in scores.items():
        table.add_row(
            name, *(f"{values[m] * 100:.2f}" for m in METRICS), str(p50_ms.get(name, "-")), str(p95_ms.get(name, "-"))
        )
    Console().print(table)
    if not record:
        return
    result = {
        **run_header("python -m colbert_att_assistant.evals.retrieval " + " ".join(sys.argv[1:])),
        "dataset": str(dataset),
        "split": split,
        "queries": len(queries),
        "documents": len(data.corpus),
        "attention": attention.value,
        "attention_mix": str(attention_mix) if attention_mix is not None else None,
        "special_tokens": special_tokens,
        "model": encoder.model_name,
        "scores": {name: {m: round(v * 100, 2) for m, v in values.items()} for name, values in scores.items()},
        "query_p50_ms": p50_ms,
        "query_p95_ms": p95_ms,
    }
    body = [
        f"- model: {encoder.model_name}",
        "- p50 / p95: one query at a time, query encoding included, top 100 (hybrid: fused afterwards, not timed)",
        "",
        "| method | " + " | ".join(METRICS) + " | p50 ms | p95 ms |",
        "|---|" + "---|" * (len(METRICS) + 2),
        *(
            f"| {n} | " + " | ".join(str(v) for v in s.values()) + f" | {p50_ms.get(n, '-')} | {p95_ms.get(n, '-')} |"
            for n, s in result["scores"].items()
        ),
    ]
    name = dataset.resolve().name
    record_run(
        f"eval-{name}-{split}",
        f"evaluation: {name} {split} ({len(queries)} queries, {len(data.corpus)} documents)",
        result,
        body,
    )


if __name__ == "__main__":
    typer.run(main)
