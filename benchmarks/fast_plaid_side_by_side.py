"""Side by side with fast-plaid (PyLate's default index) on SciFact: the same token vectors in both systems.

    nice -n 10 .venv/bin/python benchmarks/fast_plaid_side_by_side.py --index-dir indexes/scifact

fast-plaid is a benchmark-time tool here, never a project dependency. `fast-plaid==1.7.0.2110` needs exactly
`torch==2.11.0`, whose only PyPI Linux wheel is the CUDA 13 build (it runs on the CPU once its CUDA libraries are
installed, about 4.8 GB in all), so it lives in a throwaway virtual environment outside the repository:

    python3.11 -m venv /tmp/fastplaid-venv
    nice -n 10 /tmp/fastplaid-venv/bin/pip install "torch==2.11.0" "fast-plaid==1.7.0.2110" numpy

(pin torch: the machine's pip find-links folder holds a CPU torch 2.13, which fast-plaid's extension cannot load.)

What is compared: our index (`MultiVectorIndex` at --index-dir, built by our encoder) already holds every SciFact
document's token vectors; those exact vectors (bfloat16, passed as float16, which holds every bfloat16 value of a unit
vector's size) are exported with the 300 test queries' vectors, encoded once here by `ColBERTAttEncoder`, to a temp
folder (npy). A subprocess in /tmp/fastplaid-venv (`torch.set_num_threads(2)`, device "cpu") builds a fast-plaid
index from them (`FastPlaid.create` at its defaults: nbits 4, 4 k-means iterations) and searches every query one at
a time (`FastPlaid.search`, top 10), at its defaults (n_ivf_probe 8, n_full_scores 4096) and at faster settings.
fast-plaid scores plain MaxSim over its PLAID-compressed vectors; ours scores MaxSim and ColBERT-Att over the
bfloat16 vectors of its FAISS candidates. Search is timed alone (the query vectors are shared); our query encoding
is timed separately. Timing runs A, B, A: ours, then the fast-plaid subprocess, then ours again (both of our rounds
counted), each after 5 warm-up queries; inside each process the variants alternate query by query.

Index build, both from the same pre-encoded vectors: fast-plaid's `create` (k-means + compression + IVF), and ours
as `MultiVectorIndex` storing the same `EncodedText`s (FAISS candidates) and persisting to a temp folder
(`--no-build-ours-too` skips it). Bytes per token: everything in the index folder over its token count.
Appends to benchmarks/RESULTS.md and writes benchmarks/results/<stamp>-fast-plaid-side-by-side-*.json.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FAST_PLAID_PYTHON = Path("/tmp/fastplaid-venv/bin/python")
FAST_PLAID_HALF = "fast-plaid-half"  # argv[1] of the subprocess (it has no typer, so no typer there)
TOP_K = 10
THREADS = 2
WARMUP_QUERIES = 5
# fast-plaid's search defaults, then faster ones: fewer IVF cells probed, fewer candidates fully scored.
FAST_PLAID_VARIANTS: dict[str, dict[str, int]] = {
    "default": {"n_ivf_probe": 8, "n_full_scores": 4096},
    "probe4_full1024": {"n_ivf_probe": 4, "n_full_scores": 1024},
    "probe2_full256": {"n_ivf_probe": 2, "n_full_scores": 256},
}
OUR_MODES = ("maxsim", "colbert_att")
NDCG_TOLERANCE = 0.5


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def timing_summary(latencies: list[float]) -> dict[str, float]:
    total = float(sum(latencies))
    return {
        "queries": len(latencies),
        "queries_per_s": round(len(latencies) / total, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 2),
        "mean_ms": round(total / len(latencies) * 1000, 2),
    }


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def split_rows(matrix: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [matrix[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


# ---- the fast-plaid half (/tmp/fastplaid-venv: torch 2.11 + fast-plaid, numpy, standard library) ----------------


def run_fast_plaid_half(config_path: Path) -> None:
    """Build a fast-plaid index from the exported document vectors, time every variant's search one query at a
    time (variants alternating query by query, rotating), and write the runs and timings as JSON."""
    from importlib.metadata import version

    import torch
    from fast_plaid import search

    config = json.loads(config_path.read_text())
    work = Path(config["work_dir"])
    torch.set_num_threads(config["threads"])
    loads = {"start": load_average()}
    documents = np.load(work / "documents.npy", mmap_mode="r")
    document_offsets = np.load(work / "document_offsets.npy")
    queries = np.load(work / "queries.npy")
    query_offsets = np.load(work / "query_offsets.npy")
    document_vectors = [torch.from_numpy(np.array(rows)) for rows in split_rows(documents, document_offsets)]
    query_vectors = [torch.from_numpy(np.array(rows)).unsqueeze(0) for rows in split_rows(queries, query_offsets)]

    index_dir = work / "fast-plaid-index"
    shutil.rmtree(index_dir, ignore_errors=True)
    index = search.FastPlaid(index=str(index_dir), device="cpu")
    started = time.perf_counter()
    index.create(documents_embeddings=document_vectors)
    build_s = time.perf_counter() - started
    loads["after_build"] = load_average()

    variants: dict[str, dict[str, int]] = config["variants"]
    names = list(variants)

    def one(name: str, query: Any) -> list[tuple[int, float]]:
        return index.search(queries_embeddings=query, top_k=config["top_k"], show_progress=False, **variants[name])[0]

    for query in query_vectors[: config["warmup"]]:
        for name in names:
            one(name, query)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    runs: dict[str, list[list[tuple[int, float]]]] = {name: [] for name in names}
    for number, query in enumerate(query_vectors):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            hits = one(name, query)
            latencies[name].append(time.perf_counter() - t0)
            runs[name].append([(int(doc), float(score)) for doc, score in hits])
    loads["end"] = load_average()
    result = {
        "versions": {"fast-plaid": version("fast-plaid"), "torch": torch.__version__},
        "python": sys.executable,
        "threads": torch.get_num_threads(),
        "build": {
            "seconds": round(build_s, 2),
            "docs_per_s": round(len(document_vectors) / build_s, 2),
            "settings": "FastPlaid.create defaults (nbits 4, kmeans_niters 4, max_points_per_centroid 256)",
            "index_bytes": folder_bytes(index_dir),
            "bytes_per_token": round(folder_bytes(index_dir) / int(document_offsets[-1]), 2),
        },
        "load_average": loads,
        "variants": {
            name: {"settings": variants[name], "latencies_s": latencies[name], "run": runs[name]} for name in names
        },
    }
    (work / "fast_plaid_result.json").write_text(json.dumps(result))


# ---- our half (the project's .venv) -----------------------------------------------------------------------------


def export_vectors(index: Any, encoded_queries: list[Any], work: Path) -> tuple[list[str], int]:
    """Every stored document's token vectors (index order) and the query vectors, as npy for the subprocess."""
    ids = index.document_ids()
    chunks, lengths = [], []
    for document_id in ids:
        vectors = index.get(document_id).vectors
        chunks.append(vectors.float().numpy().astype(np.float16))
        lengths.append(len(vectors))
    np.save(work / "documents.npy", np.concatenate(chunks))
    np.save(work / "document_offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    np.save(work / "queries.npy", np.concatenate([q.vectors for q in encoded_queries]).astype(np.float32))
    query_lengths = [len(q.vectors) for q in encoded_queries]
    np.save(work / "query_offsets.npy", np.concatenate([[0], np.cumsum(query_lengths)]).astype(np.int64))
    return ids, int(sum(lengths))


def time_our_round(index: Any, encoded: list[Any], warmup: bool) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Our modes alternating query by query (rotating), search only (encodings given), top 10."""
    if warmup:
        for query in encoded[:WARMUP_QUERIES]:
            for mode in OUR_MODES:
                index.search(query, top_k=TOP_K, mode=mode)
    latencies: dict[str, list[float]] = {mode: [] for mode in OUR_MODES}
    hits: dict[str, list] = {mode: [] for mode in OUR_MODES}
    for number, query in enumerate(encoded):
        shift = number % len(OUR_MODES)
        for mode in OUR_MODES[shift:] + OUR_MODES[:shift]:
            t0 = time.perf_counter()
            found = index.search(query, top_k=TOP_K, mode=mode)
            latencies[mode].append(time.perf_counter() - t0)
            hits[mode].append([(h.id, h.score) for h in found])
    return latencies, hits


def build_ours(index: Any, ids: list[str], work: Path) -> dict[str, Any]:
    """Our index built from the stored vectors (no encoding): store the `EncodedText`s, then persist."""
    from colbert_att_assistant.retriever.encoder import EncodedText
    from colbert_att_assistant.retriever.index import MultiVectorIndex
    from colbert_att_assistant.retriever.index.documents import DocumentInput

    batch, encoded = [], []
    for document_id in ids:
        stored = index.get(document_id)
        batch.append(DocumentInput(id=document_id, text=stored.text))
        encoded.append(
            EncodedText(
                vectors=stored.vectors.float().numpy(),
                weights=np.asarray(stored.weights, dtype=np.float32),
                token_ids=np.asarray(stored.token_ids),
                n_words=stored.n_words,
                truncated=False,
            )
        )
    load_start = load_average()
    fresh = MultiVectorIndex(index.encoder, index.settings)
    started = time.perf_counter()
    fresh._store(batch, encoded)  # what add() does after encoding: the encoding is shared, so not timed
    stored_at = time.perf_counter()
    target = work / "our-index"
    fresh.persist(target)
    finished = time.perf_counter()
    return {
        "seconds": round(finished - started, 2),
        "store_s": round(stored_at - started, 2),
        "persist_s": round(finished - stored_at, 2),
        "docs_per_s": round(len(ids) / (finished - started), 2),
        "faiss": fresh.faiss_kind,
        "index_bytes": folder_bytes(target),
        "load_average": {"start": load_start, "end": load_average()},
    }


def main(
    dataset: Path = Path("/work/shared/datasets/scifact"),
    split: str = "test",
    index_dir: Path = Path("indexes/scifact"),
    fast_plaid_python: Path = FAST_PLAID_PYTHON,
    build_ours_too: bool = True,
    limit_queries: int | None = None,
    record: bool = True,
) -> None:
    """Measure our index and fast-plaid side by side on the same token vectors (see the module docstring)."""
    if not fast_plaid_python.is_file():
        sys.exit(
            f"{fast_plaid_python} is missing: create the throwaway fast-plaid environment first:\n"
            "    python3.11 -m venv /tmp/fastplaid-venv\n"
            '    nice -n 10 /tmp/fastplaid-venv/bin/pip install "torch==2.11.0" "fast-plaid==1.7.0.2110" numpy'
        )
    import faiss
    import torch
    from ranx import Qrels, Run, evaluate

    from colbert_att_assistant.evals.results_log import record_run, run_header
    from colbert_att_assistant.retriever.beir import BeirDataset
    from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
    from colbert_att_assistant.retriever.index import MultiVectorIndex
    from colbert_att_assistant.retriever.settings import CandidateSettings, EncoderSettings

    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(logging.ERROR)  # long claims truncate
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    loads: dict[str, list[float]] = {"start": load_average()}
    data = BeirDataset.load(dataset, split)
    queries = dict(list(data.queries.items())[:limit_queries]) if limit_queries else dict(data.queries)
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=THREADS))
    index = MultiVectorIndex.load(index_dir, encoder=encoder, candidate_settings=CandidateSettings())

    texts = list(queries.values())
    for text in texts[:WARMUP_QUERIES]:
        encoder.encode_query(text)
    encoded, encode_latencies = [], []
    for text in texts:
        t0 = time.perf_counter()
        encoded.append(encoder.encode_query(text))
        encode_latencies.append(time.perf_counter() - t0)

    with tempfile.TemporaryDirectory(prefix="fast-plaid-side-by-side-") as folder:
        work = Path(folder)
        ids, token_count = export_vectors(index, encoded, work)
        loads["after_export"] = load_average()
        ours_latencies, ours_hits = time_our_round(index, encoded, warmup=True)
        loads["after_ours_round_1"] = load_average()
        config = {
            "work_dir": str(work),
            "threads": THREADS,
            "top_k": TOP_K,
            "warmup": WARMUP_QUERIES,
            "variants": FAST_PLAID_VARIANTS,
        }
        (work / "config.json").write_text(json.dumps(config))
        completed = subprocess.run(
            [str(fast_plaid_python), str(Path(__file__).resolve()), FAST_PLAID_HALF, str(work / "config.json")],
            check=False,
        )
        if completed.returncode != 0:
            sys.exit(f"the fast-plaid half failed (exit {completed.returncode}); its output is above.")
        plaid = json.loads((work / "fast_plaid_result.json").read_text())
        loads["after_fast_plaid"] = load_average()
        second, _ = time_our_round(index, encoded, warmup=False)
        for mode in OUR_MODES:
            ours_latencies[mode] += second[mode]
        loads["after_ours_round_2"] = load_average()
        our_build = build_ours(index, ids, work) if build_ours_too else None
        loads["end"] = load_average()

    qrels = Qrels({qid: data.qrels[qid] for qid in queries})
    qids = list(queries)

    def ndcg(run: dict[str, dict[str, float]]) -> float:
        return round(float(evaluate(qrels, Run(run), "ndcg@10")) * 100, 2)

    our_bytes = folder_bytes(index_dir)
    rows = []
    for mode in OUR_MODES:
        run = {qid: {doc: score for doc, score in hits} for qid, hits in zip(qids, ours_hits[mode], strict=True)}
        rows.append(
            {
                "system": f"ours, {mode}",
                "key": f"ours_{mode}",
                "ndcg@10": ndcg(run),
                **timing_summary(ours_latencies[mode]),
                "build_docs_per_s": our_build["docs_per_s"] if our_build else None,
                "bytes_per_token": round(our_bytes / index.token_count, 2),
            }
        )
    for name, variant in plaid["variants"].items():
        run = {qid: {ids[doc]: score for doc, score in hits} for qid, hits in zip(qids, variant["run"], strict=True)}
        rows.append(
            {
                "system": f"fast-plaid {plaid['versions']['fast-plaid']}, {name} {json.dumps(variant['settings'])}",
                "key": f"fast_plaid_{name}",
                "ndcg@10": ndcg(run),
                **timing_summary(variant["latencies_s"]),
                "build_docs_per_s": plaid["build"]["docs_per_s"],
                "bytes_per_token": plaid["build"]["bytes_per_token"],
            }
        )
    comparisons = {}
    for ours_row in (r for r in rows if r["key"].startswith("ours_")):
        for plaid_row in (r for r in rows if r["key"].startswith("fast_plaid_")):
            difference = round(ours_row["ndcg@10"] - plaid_row["ndcg@10"], 2)
            comparisons[f"{ours_row['key']} vs {plaid_row['key']}"] = {
                "ours_speedup": round(ours_row["queries_per_s"] / plaid_row["queries_per_s"], 2),
                "ndcg@10_difference": difference,
                "equal_ndcg": abs(difference) <= NDCG_TOLERANCE,
            }
    for row in rows:
        print(row)
    for name, comparison in comparisons.items():
        print(name, comparison)

    result = {
        **run_header(),
        "dataset": str(dataset),
        "split": split,
        "documents": len(ids),
        "tokens": token_count,
        "queries": len(qids),
        "threads": THREADS,
        "our_index": {
            "path": str(index_dir),
            "faiss": index.faiss_kind,
            "vector_dtype": "bfloat16",
            "index_bytes": our_bytes,
            "candidates": index.settings.candidates.model_dump(mode="json"),
            "build_from_vectors": our_build,
        },
        "our_query_encode": timing_summary(encode_latencies),
        "fast_plaid": {k: v for k, v in plaid.items() if k != "variants"},
        "load_average": loads,
        "rows": rows,
        "comparisons": comparisons,
    }
    if not record or limit_queries:
        print("not recorded (--no-record or --limit-queries)", file=sys.stderr)
        return
    highest = max(max(values) for values in [*loads.values(), *plaid["load_average"].values()])
    machine = (
        f"a loaded shared machine (load average up to {highest:.2f} on {os.cpu_count()} cores): absolute numbers "
        "are low; the A, B, A order spreads the load over both"
        if highest > 1
        else f"load average at most {highest:.2f}"
    )
    build_line = (
        f"{our_build['seconds']} s ({our_build['store_s']} s store incl. FAISS {our_build['faiss']}, "
        f"{our_build['persist_s']} s persist), {our_build['docs_per_s']} docs/s, load {our_build['load_average']}"
        if our_build
        else "not rebuilt (--no-build-ours-too)"
    )
    body = [
        f"- {len(ids)} SciFact documents, {token_count} stored tokens, {len(qids)} {split} queries, top {TOP_K}, one "
        f"query at a time, search only (query vectors shared), {THREADS} threads, {WARMUP_QUERIES} warm-up queries; "
        "order: ours, fast-plaid subprocess, ours again (both our rounds counted), variants alternating per query",
        f"- same vectors: our index {index_dir} ({index.faiss_kind} candidates, bfloat16 vectors) exported as "
        f"float16 to fast-plaid {plaid['versions']['fast-plaid']} (torch {plaid['versions']['torch']}, CPU, "
        f"{plaid['threads']} threads) in {plaid['python']}",
        f"- our query encoding (not in the search numbers): {result['our_query_encode']}",
        f"- build from the same vectors: fast-plaid create {plaid['build']['seconds']} s, "
        f"{plaid['build']['docs_per_s']} docs/s, {plaid['build']['index_bytes']} bytes "
        f"({plaid['build']['bytes_per_token']} B/token); ours {build_line}; our index folder {our_bytes} bytes "
        f"({round(our_bytes / index.token_count, 2)} B/token: bfloat16 vectors + FAISS + weights/ids + texts)",
        f"- load average (1/5/15 min): ours {loads}; fast-plaid half {plaid['load_average']}; {machine}",
        "",
        "| system | nDCG@10 | queries/s | p50 ms | p95 ms | mean ms | build docs/s | bytes/token |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['system']} | {r['ndcg@10']} | {r['queries_per_s']} | {r['p50_ms']} | {r['p95_ms']} | "
            f"{r['mean_ms']} | {r['build_docs_per_s']} | {r['bytes_per_token']} |"
            for r in rows
        ),
        "",
        "- ours / fast-plaid queries/s (nDCG@10 difference): "
        + "; ".join(f"{name} {c['ours_speedup']}x ({c['ndcg@10_difference']:+})" for name, c in comparisons.items()),
    ]
    path = record_run(
        f"fast-plaid-side-by-side-{dataset.name}-{split}",
        f"side by side with fast-plaid: {dataset.name} {split}",
        result,
        body,
    )
    print(f"recorded {path}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == FAST_PLAID_HALF:
        run_fast_plaid_half(Path(sys.argv[2]))
    else:
        import typer

        typer.run(main)
