"""A pool of >= 100,000 real passages (SciFact's corpus plus every passage of ../shared/training/), indexed with
compressed storage in bounded memory, then searched with SciFact's test queries from a fresh process.

    python benchmarks/large_pool.py build --index-dir indexes/pool      # resumable: rerun to continue
    python benchmarks/large_pool.py search --index-dir indexes/pool

Training passages longer than 128 word pieces are cut at sentence boundaries (LlamaIndex SentenceSplitter with the
encoder's own tokenizer) into passages of at most 128 word pieces, the size a retailer's chunker would give; the
SciFact abstracts are kept whole (as in the 5K runs) so that their qrels stay valid. The training passages are
distractors for SciFact's queries: nDCG@10 here is SciFact test in a 20x larger haystack.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import resource
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from llama_index.core.node_parser import SentenceSplitter
from ranx import Qrels, Run, evaluate, fuse
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn, track

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.bm25 import BM25Baseline
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import DocumentInput, MultiVectorIndex
from colbert_att_assistant.retriever.index.streaming_build import build_compressed_index
from colbert_att_assistant.retriever.settings import CandidateSettings, EncoderSettings, IndexSettings, StorageSettings

app = typer.Typer(help=__doc__)
TRAINING = Path("../shared/training")
SCIFACT = Path("../shared/datasets/scifact")
PAIR_FILES = ("covid_faq", "covid_qa_paragraphs", "medquad", "nq_qed_dev", "nq_qed_train")
SQUAD_PASSAGES = ("squad_v1.1_dev.passages", "squad_v1.1_train.passages")
CHUNK_WORD_PIECES = 128


def _training_passages(training: Path) -> Iterator[tuple[str, str]]:
    """(source, text) of every distinct passage, positives and negatives, in a fixed order."""
    seen: set[str] = set()
    for name in PAIR_FILES:
        with gzip.open(training / f"{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                for text in [row["positive"], *row.get("negatives", [])]:
                    if text not in seen:
                        seen.add(text)
                        yield name, text
    for name in SQUAD_PASSAGES:
        with gzip.open(training / f"{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
            for line in handle:
                text = json.loads(line)["text"]
                if text not in seen:
                    seen.add(text)
                    yield name, text


def pool_documents(encoder: ColBERTAttEncoder, training: Path, scifact: Path) -> Iterator[DocumentInput]:
    data = BeirDataset.load(scifact, "test")
    for document in data.corpus.values():
        yield DocumentInput(id=f"scifact:{document.id}", text=document.full_text, metadata={"source": "scifact"})
    splitter = SentenceSplitter(
        chunk_size=CHUNK_WORD_PIECES, chunk_overlap=0, tokenizer=encoder.tokenizer.tokenize, include_metadata=False
    )
    for source, text in _training_passages(training):
        key = hashlib.sha1(text.encode()).hexdigest()[:16]
        for number, chunk in enumerate(splitter.split_text(text)):
            if chunk.strip():
                yield DocumentInput(id=f"{source}:{key}:{number}", text=chunk, metadata={"source": source})


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@app.command()
def count(training: Path = TRAINING, scifact: Path = SCIFACT) -> None:
    """How many passages the pool has (no encoding)."""
    encoder = ColBERTAttEncoder(EncoderSettings())
    n = sum(1 for _ in pool_documents(encoder, training, scifact))
    print(n)


@app.command()
def build(
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/pool"),
    training: Path = TRAINING,
    scifact: Path = SCIFACT,
    centroids: Annotated[int, typer.Option(help="k-means centroids (about 2*sqrt(tokens)).")] = 8192,
    prune_fraction: Annotated[float, typer.Option()] = 0.0,
    rotation: Annotated[bool, typer.Option(help="OPQ rotation of the residuals (benchmarks/codec_choice.py).")] = True,
    threads: Annotated[int, typer.Option()] = 2,
    total: Annotated[int | None, typer.Option(help="Pool size if known (for the progress bar).")] = None,
) -> None:
    """Stream-build the pool index (resumes an interrupted build in the same directory)."""
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=threads))
    settings = IndexSettings(
        encoder=encoder.settings,
        storage=StorageSettings(
            vector_format="residual_pq", centroids=centroids, prune_fraction=prune_fraction, pq_rotation=rotation
        ),
    )
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]pool"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False
    ) as progress:
        task = progress.add_task("encode", total=total)
        manifest = build_compressed_index(
            pool_documents(encoder, training, scifact),
            index_dir,
            encoder,
            settings,
            batch_documents=512,
            progress=lambda n: progress.advance(task, n),
        )
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in index_dir.iterdir() if p.is_file())
    result = {
        **run_header(),
        "documents": manifest.document_count,
        "tokens": manifest.token_count,
        "build_seconds_this_run": round(seconds, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "index_bytes": size,
        "bytes_per_token": round(size / max(manifest.token_count, 1), 2),
        "centroids": centroids,
        "pq_rotation": rotation,
        "prune_fraction": prune_fraction,
    }
    record_run(
        "large-pool-build",
        f"large pool build ({manifest.document_count} passages, residual_pq)",
        result,
        [
            f"- {manifest.document_count} passages, {manifest.token_count} tokens; {centroids} centroids, "
            f"48-byte residual codes{' (OPQ-rotated)' if rotation else ''}, prune fraction {prune_fraction}",
            f"- build time of this run {seconds:.0f} s ({manifest.document_count / seconds:.1f} passages/s, "
            f"{manifest.token_count / seconds:.0f} tokens/s if it ran in one go); "
            f"peak RSS {result['peak_rss_mib']} MiB",
            f"- on disk {size / 2**20:.1f} MiB = {result['bytes_per_token']} bytes per token (all files)",
        ],
    )


def _row(qrels: Qrels, runs: dict, latencies: list[float]) -> dict[str, float]:
    metrics = evaluate(qrels, Run(runs), ["ndcg@10", "recall@10"])
    return {
        "ndcg@10": round(100 * metrics["ndcg@10"], 2),
        "recall@10": round(100 * metrics["recall@10"], 2),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
    }


def _open_pool(index_dir: Path, encoder: ColBERTAttEncoder, nprobe: int, rerank_depth: int) -> MultiVectorIndex:
    return MultiVectorIndex.load(
        index_dir,
        encoder=encoder,
        candidate_settings=CandidateSettings(centroid_nprobe=nprobe, rerank_depth=rerank_depth),
    )


def _test_queries(scifact: Path, limit: int | None) -> tuple[list[tuple[str, str]], dict[str, dict[str, int]]]:
    """SciFact test queries (id, text) and their judgements under the pool's document ids."""
    data = BeirDataset.load(scifact, "test")
    queries = list(data.queries.items())[:limit]
    return queries, {q: {f"scifact:{d}": s for d, s in data.qrels[q].items()} for q, _ in queries}


@app.command()
def search(
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/pool"),
    scifact: Path = SCIFACT,
    limit: Annotated[int | None, typer.Option(help="Only the first N test queries.")] = None,
    threads: Annotated[int, typer.Option()] = 2,
    nprobe: Annotated[int, typer.Option()] = 4,
    rerank_depth: Annotated[int, typer.Option()] = 64,
    exhaustive_queries: Annotated[
        int, typer.Option(help="Also score the whole pool exactly for the first N queries (seconds per query).")
    ] = 10,
) -> None:
    """SciFact test queries against the pool: nDCG@10, latency (encoding + search, one at a time), peak RSS."""
    rss_before = _peak_rss_mib()
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=threads))
    started = time.perf_counter()
    index = _open_pool(index_dir, encoder, nprobe, rerank_depth)
    load_seconds = time.perf_counter() - started
    rss_loaded = _peak_rss_mib()
    queries, relevant = _test_queries(scifact, limit)
    qrels = Qrels(relevant)
    rows = {}
    method_runs: dict[str, dict] = {}
    for mode in ("maxsim", "colbert_att"):
        runs, latencies = {}, []
        index.search(queries[0][1], top_k=10, mode=mode)  # warm-up: first-touch of the code paths
        for query_id, text in track(queries, description=mode):
            tick = time.perf_counter()
            hits = index.search(text, top_k=10, mode=mode)
            latencies.append((time.perf_counter() - tick) * 1000)
            runs[query_id] = {hit.id: hit.score for hit in hits}
        rows[mode] = _row(qrels, runs, latencies)
        method_runs[mode] = runs
    rss_searched = _peak_rss_mib()  # before BM25 and exhaustive scoring, which hold far more in RAM
    # BM25 (stemmed, bm25s) over the same passages. Dense is not run at this scale: it needs a second encoding pass
    # of the whole pool (mean pooling), about as long as the build itself on this CPU.
    ids = index.document_ids()
    bm25 = BM25Baseline(ids, [index.get(i).text for i in ids], stemming=True)
    runs, latencies = {}, []
    for query_id, text in queries:
        tick = time.perf_counter()
        runs[query_id] = bm25.search(text, 10) or {"__no_result__": 0.0}
        latencies.append((time.perf_counter() - tick) * 1000)
    rows["bm25_stemmed"] = _row(qrels, runs, latencies)
    # Hybrid as in evals.retrieval: reciprocal rank fusion (ranx) of the two top-10 runs (not timed).
    fused = fuse(runs=[Run(runs), Run(method_runs["colbert_att"])], method="rrf")
    metrics = evaluate(qrels, fused, ["ndcg@10", "recall@10"])
    rows["hybrid_rrf"] = {
        "ndcg@10": round(100 * metrics["ndcg@10"], 2),
        "recall@10": round(100 * metrics["recall@10"], 2),
        "p50_ms": None,
        "p95_ms": None,
    }
    del bm25
    # Candidate generation against exhaustive exact scoring of every passage, on the first queries only.
    subset = queries[:exhaustive_queries]
    comparison = {}
    if subset:
        subset_qrels = Qrels({q: relevant[q] for q, _ in subset})
        for exhaustive in (False, True):
            runs, latencies = {}, []
            for query_id, text in track(subset, description=f"colbert_att exhaustive={exhaustive}"):
                tick = time.perf_counter()
                hits = index.search(text, top_k=10, mode="colbert_att", exhaustive=exhaustive)
                latencies.append((time.perf_counter() - tick) * 1000)
                runs[query_id] = {hit.id: hit.score for hit in hits}
            comparison["exhaustive" if exhaustive else "candidates"] = _row(subset_qrels, runs, latencies)
    result = {
        **run_header(),
        "documents": len(index),
        "tokens": index.token_count,
        "queries": len(queries),
        "nprobe": nprobe,
        "rerank_depth": rerank_depth,
        "load_seconds": round(load_seconds, 1),
        "peak_rss_mib_before_load": round(rss_before, 1),
        "peak_rss_mib_after_load": round(rss_loaded, 1),
        "peak_rss_mib_colbert_search": round(rss_searched, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "methods": rows,
        "candidates_vs_exhaustive": comparison,
    }
    table = ["", "| method | nDCG@10 | Recall@10 | p50 ms | p95 ms |", "|---|---|---|---|---|"]
    table += [f"| {m} | {r['ndcg@10']} | {r['recall@10']} | {r['p50_ms']} | {r['p95_ms']} |" for m, r in rows.items()]
    if comparison:
        table += [
            "",
            f"ColBERT-Att, first {len(subset)} queries: centroid-list candidates against exact scoring of all passages",
            "",
            "| path | nDCG@10 | Recall@10 | p50 ms | p95 ms |",
            "|---|---|---|---|---|",
        ]
        table += [
            f"| {m} | {r['ndcg@10']} | {r['recall@10']} | {r['p50_ms']} | {r['p95_ms']} |"
            for m, r in comparison.items()
        ]
    record_run(
        "large-pool-search",
        f"large pool search: scifact test in {len(index)} passages",
        result,
        [
            f"- {len(index)} passages, {index.token_count} tokens, residual_pq, centroid nprobe {nprobe}, "
            f"re-rank depth {rerank_depth}; {len(queries)} queries, top 10, one query at a time, encoding included",
            f"- load {load_seconds:.1f} s (memory-mapped); peak RSS after load {result['peak_rss_mib_after_load']} "
            f"MiB, after the MaxSim and ColBERT-Att searches {result['peak_rss_mib_colbert_search']} MiB, at the end "
            f"(BM25 over the pool's texts and exhaustive scoring included) {result['peak_rss_mib']} MiB",
            *table,
        ],
    )


def _exhaustive_top(
    index: MultiVectorIndex,
    encoded: list,
    state_file: Path,
    top_k: int,
    chunk_documents: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(queries, top_k) row positions and scores of the best passages of the whole pool for each query, scored
    exactly; each chunk of passages is decoded once for all queries. Saved after every chunk: a rerun resumes."""
    ids = index.document_ids()
    best_rows = np.full((len(encoded), top_k), -1, dtype=np.int64)
    best_scores = np.full((len(encoded), top_k), -np.inf)
    done = 0
    if state_file.exists():
        saved = np.load(state_file)
        if int(saved["documents"]) == len(ids) and saved["rows"].shape == best_rows.shape:
            best_rows, best_scores, done = saved["rows"], saved["scores"], int(saved["done"])
    for start in track(range(done, len(ids), chunk_documents), description="exhaustive colbert_att"):
        documents = [index.get(document_id) for document_id in ids[start : start + chunk_documents]]
        for q, scored in enumerate(index.score_queries(encoded, documents, "colbert_att")):
            rows = np.concatenate([best_rows[q], start + np.arange(len(documents))])
            scores = np.concatenate([best_scores[q], scored.raw.astype(np.float64)])
            keep = np.lexsort((rows, -scores))[:top_k]  # ties to the earlier passage, as a stable sort would
            best_rows[q], best_scores[q] = rows[keep], scores[keep]
        done = min(start + chunk_documents, len(ids))
        np.savez(state_file.with_suffix(".tmp.npz"), rows=best_rows, scores=best_scores, done=done, documents=len(ids))
        state_file.with_suffix(".tmp.npz").replace(state_file)
    return best_rows, best_scores


@app.command()
def exhaustive(
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/pool"),
    scifact: Path = SCIFACT,
    state_file: Annotated[
        Path, typer.Option(help="Progress of the exhaustive scoring (resumed from if present).")
    ] = Path("indexes/pool-exhaustive.npz"),
    limit: Annotated[int | None, typer.Option(help="Only the first N test queries.")] = None,
    threads: Annotated[int, typer.Option()] = 2,
    nprobe: Annotated[int, typer.Option()] = 4,
    rerank_depth: Annotated[int, typer.Option()] = 64,
    chunk_documents: Annotated[int, typer.Option()] = 1024,
) -> None:
    """Every SciFact test query scored exactly against every pool passage (ColBERT-Att), against the candidates
    the index proposes at the given settings: nDCG@10 of both and the share of the exhaustive top 10 found."""
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=threads))
    index = _open_pool(index_dir, encoder, nprobe, rerank_depth)
    queries, relevant = _test_queries(scifact, limit)
    qrels = Qrels(relevant)
    encoded = [encoder.encode_query(text) for _, text in queries]  # as search() encodes them, one at a time
    started = time.perf_counter()
    rows, scores = _exhaustive_top(index, encoded, state_file, 10, chunk_documents)
    exhaustive_seconds = time.perf_counter() - started
    ids = index.document_ids()
    exhaustive_run = {
        q: {ids[r]: float(s) for r, s in zip(rows[i], scores[i], strict=True)} for i, (q, _) in enumerate(queries)
    }
    candidate_run = {
        q: {hit.id: hit.score for hit in index.search(query, top_k=10, mode="colbert_att")}
        for (q, _), query in zip(queries, encoded, strict=True)
    }
    agreement = [len(set(candidate_run[q]) & set(exhaustive_run[q])) / 10 for q, _ in queries]
    same_top10 = sum(list(candidate_run[q]) == list(exhaustive_run[q]) for q, _ in queries)
    metrics = {
        name: evaluate(qrels, Run(run), ["ndcg@10", "recall@10"])
        for name, run in (("exhaustive", exhaustive_run), ("candidates", candidate_run))
    }
    result = {
        **run_header(),
        "documents": len(index),
        "tokens": index.token_count,
        "queries": len(queries),
        "nprobe": nprobe,
        "rerank_depth": rerank_depth,
        "exhaustive_seconds_this_run": round(exhaustive_seconds, 1),
        "ndcg@10": {name: round(100 * m["ndcg@10"], 2) for name, m in metrics.items()},
        "recall@10": {name: round(100 * m["recall@10"], 2) for name, m in metrics.items()},
        "exhaustive_top10_found_percent": round(100 * float(np.mean(agreement)), 2),
        "queries_with_the_same_top10_in_order": same_top10,
    }
    ndcg, recall = result["ndcg@10"], result["recall@10"]
    record_run(
        "large-pool-exhaustive",
        f"large pool: candidates against exhaustive scoring, scifact test in {len(index)} passages",
        result,
        [
            f"- {len(index)} passages, {index.token_count} tokens, {index.settings.storage.vector_format}; centroid "
            f"nprobe {nprobe}, re-rank depth {rerank_depth}; {len(queries)} queries, ColBERT-Att, top 10; "
            f"exhaustive = every passage scored exactly ({exhaustive_seconds:.0f} s this run, all queries at once "
            "per chunk of passages)",
            "",
            "| path | nDCG@10 | Recall@10 |",
            "|---|---|---|",
            f"| candidates | {ndcg['candidates']} | {recall['candidates']} |",
            f"| exhaustive | {ndcg['exhaustive']} | {recall['exhaustive']} |",
            "",
            f"- nDCG@10 candidates - exhaustive: {ndcg['candidates'] - ndcg['exhaustive']:+.2f}; the candidates hold "
            f"{result['exhaustive_top10_found_percent']}% of the exhaustive top 10; the same top 10 in the same "
            f"order for {same_top10} of {len(queries)} queries",
        ],
    )


if __name__ == "__main__":
    app()
