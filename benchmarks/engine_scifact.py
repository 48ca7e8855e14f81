"""First measurement of the engine on SciFact: nDCG@10 for plain MaxSim and ColBERT-Att (candidate generation
and exhaustive exact scoring) and single-query latency at 5,183 documents.

    python benchmarks/engine_scifact.py --dataset ../shared/datasets/scifact --index-dir indexes/scifact

Resumable: the index is persisted and reused if it is complete. Writes benchmarks/results/<stamp>-engine.json
and appends a dated section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from ranx import Qrels, Run, evaluate
from rich.progress import track

from retriever.beir import BeirDataset
from retriever.encoder import ColBERTAttEncoder
from retriever.index import DocumentInput, MultiVectorIndex
from retriever.settings import EncoderSettings, IndexSettings

ROOT = Path(__file__).resolve().parent


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> str:
    import os

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    )


def main(
    dataset: Annotated[Path, typer.Option()] = Path("../shared/datasets/scifact"),
    split: Annotated[str, typer.Option()] = "test",
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/scifact"),
    threads: Annotated[int, typer.Option()] = 2,
    limit_queries: Annotated[int | None, typer.Option()] = None,
) -> None:
    data = BeirDataset.load(dataset, split)
    settings = EncoderSettings(num_threads=threads)
    encoder = ColBERTAttEncoder(settings)
    index_seconds = None
    if (index_dir / "manifest.json").is_file():
        index = MultiVectorIndex.load(index_dir, encoder=encoder)
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
        index = MultiVectorIndex.load(index_dir, encoder=encoder)

    queries = dict(list(data.queries.items())[:limit_queries]) if limit_queries else data.queries
    qrels = Qrels({q: data.qrels[q] for q in queries})
    encoded = {qid: encoder.encode_query(text) for qid, text in queries.items()}
    table = {}
    for mode in ("maxsim", "colbert_att"):
        for exhaustive in (False, True):
            run: dict[str, dict[str, float]] = {}
            latencies = []
            for qid, text in track(queries.items(), description=f"{mode} exhaustive={exhaustive}"):
                started = time.perf_counter()
                # Latency includes query encoding, as a user would see it.
                hits = index.search(text, top_k=100, mode=mode, exhaustive=exhaustive)
                latencies.append(time.perf_counter() - started)
                run[qid] = {h.id: h.score for h in hits} or {"__none__": 0.0}
            metrics = evaluate(qrels, Run(run), ["ndcg@10", "recall@100", "mrr@10"])
            table[f"{mode}{' exhaustive' if exhaustive else ''}"] = {
                **{k: round(float(v) * 100, 2) for k, v in metrics.items()},
                "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
                "p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 1),
            }
    del encoded
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "commit": _commit(),
        "command": " ".join(sys.argv),
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
    results_dir = ROOT / "results"
    results_dir.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (results_dir / f"{stamp}-engine-{dataset.name}-{split}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"\n## {result['date']} engine first look: {dataset.name} {split}",
        f"- machine: {result['machine']}; commit {result['commit']}",
        f"- command: `{result['command']}`",
        f"- {result['documents']} documents, {result['tokens']} tokens, FAISS {result['faiss']}, "
        f"{result['queries']} queries; index build {result['index_seconds']} s; peak RSS {result['peak_rss_mib']} MiB",
        "",
        "| method | nDCG@10 | Recall@100 | MRR@10 | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        lines.append(
            f"| {name} | {row['ndcg@10']} | {row['recall@100']} | {row['mrr@10']} | {row['p50_ms']} | {row['p95_ms']} |"
        )
    with (ROOT / "RESULTS.md").open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
