"""First measurement of the engine on SciFact: nDCG@10 for plain MaxSim and ColBERT-Att (candidate generation
and exhaustive exact scoring) and single-query latency at 5,183 documents.

    python benchmarks/engine_scifact.py --dataset ../shared/datasets/scifact --index-dir indexes/scifact

Resumable: the index is persisted and reused if it is complete. Writes benchmarks/results/<stamp>-engine.json
and appends a dated section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from ranx import Qrels, Run, evaluate
from rich.progress import track

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import DocumentInput, MultiVectorIndex
from colbert_att_assistant.retriever.settings import CandidateSettings, EncoderSettings, IndexSettings


def main(
    dataset: Annotated[Path, typer.Option()] = Path("../shared/datasets/scifact"),
    split: Annotated[str, typer.Option()] = "test",
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/scifact"),
    threads: Annotated[int, typer.Option()] = 2,
    limit_queries: Annotated[int | None, typer.Option()] = None,
    exhaustive: Annotated[bool, typer.Option(help="Also score every document exactly (slow).")] = True,
) -> None:
    data = BeirDataset.load(dataset, split)
    settings = EncoderSettings(num_threads=threads)
    encoder = ColBERTAttEncoder(settings)
    index_seconds = None
    if (index_dir / "manifest.json").is_file():
        # Search with today's default candidate settings, whatever the index was built with.
        index = MultiVectorIndex.load(index_dir, encoder=encoder, candidate_settings=CandidateSettings())
    else:
        index = MultiVectorIndex(encoder, IndexSettings(encoder=settings))
    if len(index) != len(data.corpus):
        documents = [DocumentInput(id=d.id, text=d.full_text) for d in data.corpus.values() if d.id not in index]
        started = time.perf_counter()
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            print(f"\rencoded {done[0]}/{len(documents)}", end="", file=sys.stderr, flush=True)

        index.add(documents, progress=advance)
        index_seconds = time.perf_counter() - started
        index.persist(index_dir)
        index = MultiVectorIndex.load(index_dir, encoder=encoder, candidate_settings=CandidateSettings())

    queries = dict(list(data.queries.items())[:limit_queries]) if limit_queries else data.queries
    qrels = Qrels({q: data.qrels[q] for q in queries})
    table = {}
    for mode in ("maxsim", "colbert_att"):
        for exhaustive_run in (False, True) if exhaustive else (False,):
            run: dict[str, dict[str, float]] = {}
            latencies = []
            for qid, text in track(queries.items(), description=f"{mode} exhaustive={exhaustive_run}"):
                started = time.perf_counter()
                # Latency includes query encoding, as a user would see it.
                hits = index.search(text, top_k=100, mode=mode, exhaustive=exhaustive_run)
                latencies.append(time.perf_counter() - started)
                run[qid] = {h.id: h.score for h in hits} or {"__none__": 0.0}
            metrics = evaluate(qrels, Run(run), ["ndcg@10", "recall@100", "mrr@10"])
            # What an assistant asks for: the top 10, one query at a time.
            top10_latencies = []
            for text in queries.values():
                started = time.perf_counter()
                index.search(text, top_k=10, mode=mode, exhaustive=exhaustive_run)
                top10_latencies.append(time.perf_counter() - started)
            table[f"{mode}{' exhaustive' if exhaustive_run else ''}"] = {
                **{k: round(float(v) * 100, 2) for k, v in metrics.items()},
                "top10_p50_ms": round(float(np.percentile(top10_latencies, 50)) * 1000, 1),
                "top10_p95_ms": round(float(np.percentile(top10_latencies, 95)) * 1000, 1),
                "top100_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
            }
    result = {
        **run_header(),
        "dataset": str(dataset),
        "split": split,
        "documents": len(index),
        "tokens": index.token_count,
        "faiss": index.faiss_kind,
        "queries": len(queries),
        "encoder": settings.model_dump(mode="json"),
        "candidates": index.settings.candidates.model_dump(mode="json"),
        "index_seconds": None if index_seconds is None else round(index_seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "results": table,
    }
    body = [
        f"- {result['documents']} documents, {result['tokens']} tokens, FAISS {result['faiss']}, "
        f"{result['queries']} queries; index build {result['index_seconds']} s; peak RSS {result['peak_rss_mib']} MiB",
        "",
        "- latency: one query at a time, query encoding + search; top-10 (as the assistant asks) and top-100",
        "",
        "| method | nDCG@10 | Recall@100 | MRR@10 | top-10 p50 ms | top-10 p95 ms | top-100 p50 ms |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {name} | {row['ndcg@10']} | {row['recall@100']} | {row['mrr@10']} | {row['top10_p50_ms']} | "
            f"{row['top10_p95_ms']} | {row['top100_p50_ms']} |"
            for name, row in table.items()
        ),
    ]
    record_run(f"engine-{dataset.name}-{split}", f"engine first look: {dataset.name} {split}", result, body)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
