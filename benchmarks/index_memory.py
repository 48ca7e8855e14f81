"""Search-process memory of a loaded local index, old code path against new, and an estimate for 1M passages.

    python benchmarks/index_memory.py compare --old-code /tmp/old-index
    python benchmarks/index_memory.py pool --old-code /tmp/old-index        # the same on the 100K pool

`--old-code` is a checkout of the commit before document texts were read on demand (`git worktree add --detach
/tmp/old-index <commit>`); each measurement runs in a fresh process with that checkout or this one first on
PYTHONPATH, so both read the very same index directories (the on-disk format did not change). Measured, old and new
interleaved (old, new, old, new, ...), each in its own process:

- the SciFact index (`indexes/scifact`, 5,183 abstracts, bfloat16 vectors and an IVF FAISS index);
- a residual_pq copy of it (the storage the 100K pool and a 1M collection use), built once into --work-dir;
- the first half of that copy (2,592 passages), so that the cost per passage is a difference of two sizes and
  not an average that includes the encoder and the codebooks.

Each process encodes the 300 SciFact test queries first (so query encoding is not counted), records RSS, loads the
index (checksums verified before measuring), records RSS, runs the 300 queries (top 10, reading every hit's text
and metadata), and records RSS again. RssAnon is the process's own memory (heap, Python objects, arrays read
whole); RssFile is pages of memory-mapped files touched so far (page cache the kernel may drop and re-read).
There is no 100K pool index on this machine (building one takes hours on these 2 cores), so the 1M figure is an
estimate from the per-passage costs measured here.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Annotated

import typer

REPO = Path(__file__).resolve().parent.parent
SCIFACT = REPO.parent / "shared" / "datasets" / "scifact"

app = typer.Typer(help=__doc__, add_completion=False)


def _memory_mib() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return fields


@app.command()
def child(
    index_dir: Annotated[Path, typer.Option()],
    queries: Annotated[int, typer.Option()] = 300,
    trace: Annotated[bool, typer.Option(help="Count Python and numpy allocations (tracemalloc) instead.")] = False,
    scifact: Annotated[Path, typer.Option()] = SCIFACT,
) -> None:
    """One measurement in this process (run by `compare` with the code under test first on PYTHONPATH)."""
    import colbert_att_assistant
    from colbert_att_assistant.retriever.beir import BeirDataset
    from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
    from colbert_att_assistant.retriever.index import MultiVectorIndex
    from colbert_att_assistant.retriever.settings import EncoderSettings

    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=1))
    texts = list(BeirDataset.load(scifact, "test").queries.values())[:queries]
    encoded = encoder.encode_queries(texts)
    if trace:
        tracemalloc.start()
    before = _memory_mib()
    started = time.perf_counter()
    index = MultiVectorIndex.load(index_dir, encoder=encoder, verification="full")
    load_seconds = time.perf_counter() - started
    opened = _memory_mib()
    traced_open, traced_load_peak = tracemalloc.get_traced_memory() if trace else (0, 0)
    latencies, text_bytes = [], 0
    for query in encoded:
        tick = time.perf_counter()
        hits = index.search(query, top_k=10)
        latencies.append((time.perf_counter() - tick) * 1000)
        text_bytes += sum(len(hit.text.encode()) + len(json.dumps(hit.metadata)) for hit in hits)
    del hits
    searched = _memory_mib()
    traced_searched = tracemalloc.get_traced_memory()[0] if trace else 0
    print(
        json.dumps(
            {
                "code": str(Path(colbert_att_assistant.__file__).resolve().parent.parent),
                "trace": trace,
                "documents": len(index),
                "tokens": index.token_count,
                "load_seconds": round(load_seconds, 2),
                "before_load": before,
                "after_open": opened,
                "after_queries": searched,
                "traced_after_open": traced_open,
                "traced_load_peak": traced_load_peak,
                "traced_after_queries": traced_searched,
                "search_p50_ms": round(statistics.median(latencies), 2),
                "hit_bytes_read": text_bytes,
            }
        )
    )


def _measure(code: Path, index_dir: Path, queries: int, trace: bool) -> dict:
    # One thread: on 2 shared cores, OpenMP threads that wait for each other make a query 10-30x slower.
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "child", "--index-dir", str(index_dir)]
    command += ["--queries", str(queries), "--trace" if trace else "--no-trace"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=code)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["code"]) != code.resolve():
        raise RuntimeError(f"the child imported {result['code']}, not {code}")
    return result


def _compressed_copies(source: Path, work: Path) -> tuple[Path, Path]:
    """A residual_pq copy of `source` (default storage settings) and a copy of its first half."""
    from colbert_att_assistant.retriever.index import MultiVectorIndex
    from colbert_att_assistant.retriever.settings import StorageSettings

    full, half = work / "scifact-residual", work / "scifact-residual-half"
    if not (full / "manifest.json").is_file():
        exact = MultiVectorIndex.load(source)
        exact.copy_with_storage(StorageSettings(vector_format="residual_pq")).persist(full)
        del exact
    if not (half / "manifest.json").is_file():
        index = MultiVectorIndex.load(full)
        ids = index.document_ids()
        index.delete(ids[len(ids) // 2 :])
        index.persist(half)
    return full, half


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def _mib(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)


def _summary(rss_runs: list[dict], traced: dict) -> dict:
    def anon_delta(run: dict, when: str) -> float:
        return run[when]["RssAnon"] - run["before_load"]["RssAnon"]

    return {
        "documents": traced["documents"],
        "tokens": traced["tokens"],
        "anon_before_load_mib": _median([r["before_load"]["RssAnon"] for r in rss_runs]),
        "anon_added_by_open_mib": _median([anon_delta(r, "after_open") for r in rss_runs]),
        "anon_added_after_queries_mib": _median([anon_delta(r, "after_queries") for r in rss_runs]),
        "rss_after_queries_mib": _median([r["after_queries"]["VmRSS"] for r in rss_runs]),
        "mapped_file_after_queries_mib": _median([r["after_queries"]["RssFile"] for r in rss_runs]),
        "traced_after_open_mib": _mib(traced["traced_after_open"]),
        "traced_load_peak_mib": _mib(traced["traced_load_peak"]),
        "traced_after_queries_mib": _mib(traced["traced_after_queries"]),
        "load_seconds": _median([r["load_seconds"] for r in rss_runs]),
        "p50_ms": _median([r["search_p50_ms"] for r in rss_runs]),
    }


@app.command()
def compare(
    old_code: Annotated[Path, typer.Option(help="Checkout of the commit before this change.")],
    index_dir: Annotated[Path, typer.Option()] = REPO / "indexes" / "scifact",
    work_dir: Annotated[Path, typer.Option(help="Where the residual_pq copies are built once.")] = Path(
        "/tmp/index-memory"
    ),
    queries: Annotated[int, typer.Option()] = 300,
    repeats: Annotated[int, typer.Option(help="RSS runs per index and code (one tracemalloc run each besides).")] = 2,
    record: Annotated[bool, typer.Option(help="Append to benchmarks/RESULTS.md")] = True,
) -> None:
    from colbert_att_assistant.evals.results_log import record_run, run_header

    full, half = _compressed_copies(index_dir, work_dir)
    indexes = {"scifact_bfloat16": index_dir, "scifact_residual": full, "scifact_residual_half": half}
    codes = {"old": old_code.resolve(), "new": REPO}
    load = [Path("/proc/loadavg").read_text().split()[:3]]
    runs: dict[str, dict[str, list[dict]]] = {name: {"old": [], "new": []} for name in indexes}
    for trace in [False] * repeats + [True]:
        for name, directory in indexes.items():
            for which, code in codes.items():  # old then new, one after the other, for each index
                runs[name][which].append(_measure(code, directory, queries, trace))
                print(name, which, json.dumps(runs[name][which][-1]), flush=True)
        load.append(Path("/proc/loadavg").read_text().split()[:3])
    summary = {name: {which: _summary(r[:-1], r[-1]) for which, r in by_code.items()} for name, by_code in runs.items()}
    estimate = _estimate(summary, indexes)
    result = {**run_header(), "loadavg": load, "summary": summary, "estimate_1m": estimate, "runs": runs}
    print(json.dumps({"summary": summary, "estimate_1m": estimate}, indent=2))
    if record:
        record_run(
            "index-memory", "search memory: document texts read on demand (old vs new code)", result, _body(result)
        )


# A 1M-passage residual_pq index, from the 100K pool's measurements (README): 6.4M distinct (centroid, passage)
# pairs for 111,916 passages in the centroid lists, and 65,536 centroids (the default's cap) at 90M tokens.
MILLION = 1_000_000
POOL_PAIRS_PER_PASSAGE = 6.4e6 / 111_916
CENTROIDS_AT_1M = 65_536
DIM = 384
# Arrays `load` reads whole, per vector format, besides the documents: what tracemalloc sees that is not a
# document's (the codec's centroids are held twice: as trained and in the rotated code space).
ARRAYS_READ_WHOLE = {
    "bfloat16": {"weights": 1, "token_ids": 1},
    "residual_pq": {"list_slots": 1, "list_offsets": 1, "codec_centroids": 2, "codec_rotation": 1},
}


def _arrays_read_whole(directory: Path) -> int:
    manifest = json.loads((directory / "manifest.json").read_text())
    files = manifest["files"]
    return sum(
        files[key]["bytes"] * n for key, n in ARRAYS_READ_WHOLE[manifest["vector_dtype"]].items() if key in files
    )


def _estimate(summary: dict, indexes: dict[str, Path]) -> dict:
    """Bytes per passage that a loaded index holds for its documents, and a 1M-passage search process from them."""
    out: dict[str, dict] = {}
    for which in ("old", "new"):
        per_index = {}
        for name, directory in indexes.items():
            row = summary[name][which]
            held = row["traced_after_open_mib"] * 2**20 - _arrays_read_whole(directory)
            per_index[name] = round(held / row["documents"])
        big, small = summary["scifact_residual"][which], summary["scifact_residual_half"][which]
        slope = (big["traced_after_open_mib"] - small["traced_after_open_mib"]) * 2**20
        slope -= _arrays_read_whole(indexes["scifact_residual"]) - _arrays_read_whole(indexes["scifact_residual_half"])
        documents = per_index["scifact_residual"]
        kept_by_queries = (big["traced_after_queries_mib"] - big["traced_after_open_mib"]) * 2**20
        # What searching adds to the process besides what it keeps (scoring buffers the allocator holds on to).
        query_growth = (big["anon_added_after_queries_mib"] - big["anon_added_by_open_mib"]) * 2**20
        # Three float32 copies of the centroids: the codec's, the rotated ones search decodes in, the FAISS assigner.
        codec = 3 * CENTROIDS_AT_1M * DIM * 4
        lists = POOL_PAIRS_PER_PASSAGE * 4 * MILLION
        baseline = big["anon_before_load_mib"] * 2**20
        total = baseline + codec + lists + documents * MILLION + max(kept_by_queries, query_growth)
        out[which] = {
            "document_bytes_per_passage": per_index,
            "document_bytes_per_passage_full_minus_half": round(slope / (big["documents"] - small["documents"])),
            "kept_after_300_queries_mib": _mib(kept_by_queries),
            "gib_at_1m": {
                "process_before_load": round(baseline / 2**30, 2),
                "codec": round(codec / 2**30, 2),
                "centroid_lists": round(lists / 2**30, 2),
                "documents": round(documents * MILLION / 2**30, 2),
                "added_by_queries": round(max(kept_by_queries, query_growth) / 2**30, 2),
                "total": round(total / 2**30, 2),
            },
        }
    return out


def _body(result: dict) -> list[str]:
    summary, estimate = result["summary"], result["estimate_1m"]
    lines = [
        f"- load average (1, 5, 15 min) at start and after each round: {'; '.join(map(' '.join, result['loadavg']))}"
        " (2 cores shared with other jobs, runs at nice 10: latencies are indicative only; memory is not timing)",
        "- every run a fresh process that encodes the 300 SciFact test queries, loads the index (checksums verified),"
        " then searches them one at a time on one thread (top 10, every hit's text and metadata read); RSS: median of"
        " the runs; traced: one run under tracemalloc (Python and numpy allocations, exact; FAISS's own are not seen)",
        "",
        "| index | passages | code | RssAnon before load | + by open | + after 300 queries | traced after open |"
        " traced peak in load | traced after queries | VmRSS after queries | of it mapped files | load s |"
        " p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in summary.items():
        for which, r in rows.items():
            lines.append(
                f"| {name} | {r['documents']} | {which} | {r['anon_before_load_mib']} | {r['anon_added_by_open_mib']} |"
                f" {r['anon_added_after_queries_mib']} | {r['traced_after_open_mib']} | {r['traced_load_peak_mib']} |"
                f" {r['traced_after_queries_mib']} | {r['rss_after_queries_mib']} |"
                f" {r['mapped_file_after_queries_mib']} | {r['load_seconds']} |"
                f" {r['p50_ms']} |"
            )
    lines += [
        "",
        "- documents' bytes per passage: traced after open less the arrays `load` reads whole (token weights and ids"
        " for bfloat16; centroid lists and codec centroids for residual_pq). The half copy's figure is higher in the"
        " new code because its 2,591 titles stay under the 4,096 distinct values a metadata key keeps in memory for"
        " filters, while the full copy's 5,181 titles are read from the file when a filter needs them; the full"
        " copy's figure is the one scaled. The 1M estimate takes the process before load, the codec at 65,536"
        " centroids (three float32 copies), the centroid lists at the 100K pool's 57 pairs per passage, and the"
        " documents at SciFact's bytes per passage (pool ids are ~40 characters longer: about +40 bytes each), and"
        " what 300 queries added to RssAnon on the full residual_pq copy (scoring buffers, measured at 5K: at 1M the"
        " centroid lists that candidate generation scans are ~10x longer)",
    ]
    for which in ("old", "new"):
        row = estimate[which]
        at = row["gib_at_1m"]
        per = row["document_bytes_per_passage"]
        lines.append(
            f"- {which} code: a loaded index holds {per['scifact_bfloat16']} (bfloat16) / {per['scifact_residual']}"
            f" (residual_pq) bytes per passage for its documents (traced after open, less the arrays read whole;"
            f" full minus half copy: {row['document_bytes_per_passage_full_minus_half']}); 300 queries leave"
            f" {row['kept_after_300_queries_mib']} MiB more. At 1M residual_pq passages (estimate, not run): process"
            f" before load {at['process_before_load']} GiB + codec {at['codec']} + centroid lists"
            f" {at['centroid_lists']} + documents {at['documents']} + added by queries {at['added_by_queries']}"
            f" = **{at['total']} GiB**, besides the page cache of the memory-mapped codes"
        )
    return lines


@app.command()
def pool(
    old_code: Annotated[Path, typer.Option(help="Checkout of the commit before document texts were read on demand.")],
    index_dir: Annotated[Path, typer.Option()] = REPO / "indexes" / "pool",
    queries: Annotated[int, typer.Option()] = 300,
    repeats: Annotated[int, typer.Option(help="RSS runs per code, interleaved old, new, old, new, ...")] = 2,
    record: Annotated[bool, typer.Option(help="Append to benchmarks/RESULTS.md")] = True,
) -> None:
    """Search-process RSS on the 100K pool (`benchmarks/large_pool.py build`), old code against new: the measured
    counterpart of the 1M estimate. No tracemalloc run: at this size it would take longer than the rest."""
    from colbert_att_assistant.evals.results_log import record_run, run_header

    codes = {"old": old_code.resolve(), "new": REPO}
    load = [Path("/proc/loadavg").read_text().split()[:3]]
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(repeats):
        for which, code in codes.items():
            runs[which].append(_measure(code, index_dir, queries, trace=False))
            print(which, json.dumps(runs[which][-1]), flush=True)
        load.append(Path("/proc/loadavg").read_text().split()[:3])

    def median_of(which: str, when: str, field: str) -> float:
        return _median([r[when][field] for r in runs[which]])

    rows = {}
    for which in codes:
        before = median_of(which, "before_load", "RssAnon")
        rows[which] = {
            "documents": runs[which][0]["documents"],
            "anon_before_load_mib": before,
            "anon_added_by_open_mib": round(median_of(which, "after_open", "RssAnon") - before, 1),
            "anon_added_after_queries_mib": round(median_of(which, "after_queries", "RssAnon") - before, 1),
            "rss_after_queries_mib": median_of(which, "after_queries", "VmRSS"),
            "mapped_file_after_queries_mib": median_of(which, "after_queries", "RssFile"),
            "load_seconds": _median([r["load_seconds"] for r in runs[which]]),
            "p50_ms": _median([r["search_p50_ms"] for r in runs[which]]),
        }
    result = {**run_header(), "loadavg": load, "summary": rows, "runs": runs}
    print(json.dumps(rows, indent=2))
    body = [
        f"- load average (1, 5, 15 min) at start and after each round: {'; '.join(map(' '.join, load))}",
        f"- index {index_dir}; every run a fresh process that encodes the {queries} SciFact test queries, loads the"
        " index (checksums verified), then searches them one at a time on one thread (top 10, every hit's text and"
        " metadata read); median of the runs, old and new code interleaved",
        "",
        "| code | passages | RssAnon before load MiB | + by open | + after queries | VmRSS after queries | of it mapped"
        " files | load s | p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for which, r in rows.items():
        body.append(
            f"| {which} | {r['documents']} | {r['anon_before_load_mib']} | {r['anon_added_by_open_mib']} |"
            f" {r['anon_added_after_queries_mib']} | {r['rss_after_queries_mib']} |"
            f" {r['mapped_file_after_queries_mib']} | {r['load_seconds']} | {r['p50_ms']} |"
        )
    if record:
        record_run("index-memory-pool", "search memory on the 100K pool: old vs new code", result, body)


if __name__ == "__main__":
    app()
