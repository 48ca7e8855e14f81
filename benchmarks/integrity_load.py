"""What verifying an index's checksums costs at load, against the same load without them, on warm caches.

    python -m colbert_att_assistant.knowledge_base.ingest --index-dir /tmp/kb
    python -m colbert_att_assistant.retriever build --corpus ../shared/datasets/scifact/corpus.jsonl --index-dir
    /tmp/scifact
    python benchmarks/integrity_load.py --index knowledge-base=/tmp/kb --index scifact=/tmp/scifact

For each index: load with every file hashed (full), with the memory-mapped token arrays hashed in a background
thread (background: when load returns, and when the thread is done), and without checksums (the same files
hard-linked next to a format 1 manifest, which is how an index loaded before checksums existed). Also the raw
speed of sha256 against the alternatives on this machine, and what hashing adds to writing an index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
import zlib
from pathlib import Path
from typing import Annotated

import typer

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.retriever.index.integrity import Verification, file_sha256
from colbert_att_assistant.retriever.index.multivector_index import MEMORY_MAPPED_FILES
from colbert_att_assistant.retriever.index.storage import read_manifest
from colbert_att_assistant.retriever.settings import EncoderSettings

HASH_SAMPLE_BYTES = 256 << 20


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def hash_speeds() -> dict[str, float]:
    """GiB/s of each checksum over one in-memory buffer (8 MiB updates, as when hashing a file)."""
    data = memoryview(os.urandom(HASH_SAMPLE_BYTES))
    step = 8 << 20

    def sha(name: str):
        def run() -> None:
            digest = hashlib.new(name)
            for start in range(0, len(data), step):
                digest.update(data[start : start + step])

        return run

    def crc32() -> None:
        value = 0
        for start in range(0, len(data), step):
            value = zlib.crc32(data[start : start + step], value)

    speeds = {}
    for name, run in {"sha256": sha("sha256"), "blake2b": sha("blake2b"), "crc32": crc32}.items():
        started = time.perf_counter()
        run()
        speeds[name] = round(HASH_SAMPLE_BYTES / (time.perf_counter() - started) / (1 << 30), 2)
    return speeds


def unchecked_copy(directory: Path, into: Path) -> Path:
    """The index's files hard-linked (same pages in the cache) beside a manifest without checksums."""
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["format_version"] = 1
    for entry in manifest["files"].values():
        entry.pop("sha256", None)
        os.link(directory / entry["name"], into / entry["name"])
    (into / "manifest.json").write_text(json.dumps(manifest))
    return into


def timed_loads(directory: Path, encoder: ColBERTAttEncoder, verification: Verification, repeats: int):
    """Median seconds until load returns, and until every checksum is verified."""
    returned, verified = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        index = MultiVectorIndex.load(directory, encoder=encoder, verification=verification)
        returned.append(time.perf_counter() - started)
        index.wait_verified()
        verified.append(time.perf_counter() - started)
        del index
    return round(statistics.median(returned), 3), round(statistics.median(verified), 3)


def measure(label: str, directory: Path, encoder: ColBERTAttEncoder, repeats: int) -> dict:
    manifest = read_manifest(directory)
    total = sum(entry.bytes for entry in manifest.files.values())
    mapped_keys = MEMORY_MAPPED_FILES[manifest.vector_dtype]
    mapped = sum(entry.bytes for key, entry in manifest.files.items() if key in mapped_keys)
    MultiVectorIndex.load(directory, encoder=encoder, verification=Verification.FULL)  # warm the page cache
    started = time.perf_counter()
    for entry in manifest.files.values():
        file_sha256(directory / entry.name)
    hash_all = time.perf_counter() - started
    with tempfile.TemporaryDirectory(dir=directory.parent) as scratch:
        baseline, _ = timed_loads(unchecked_copy(directory, Path(scratch)), encoder, Verification.FULL, repeats)
    full, _ = timed_loads(directory, encoder, Verification.FULL, repeats)
    background_returned, background_verified = timed_loads(directory, encoder, Verification.BACKGROUND, repeats)
    return {
        "index": label,
        "documents": manifest.document_count,
        "tokens": manifest.token_count,
        "codec": manifest.vector_dtype,
        "files_mib": round(total / (1 << 20), 1),
        "memory_mapped_mib": round(mapped / (1 << 20), 1),
        "hash_every_file_s": round(hash_all, 3),
        "load_without_checksums_s": baseline,
        "load_full_s": full,
        "load_background_returns_s": background_returned,
        "load_background_verified_s": background_verified,
        "load_average": load_average(),
    }


def main(
    index: Annotated[list[str], typer.Option(help="label=index directory (repeatable).")],
    repeats: Annotated[int, typer.Option(min=1)] = 5,
    record: Annotated[bool, typer.Option(help="Write the results JSON and a RESULTS.md section.")] = True,
) -> None:
    # The unchecked copies are format 1 on purpose: their "loaded without verifying" warning is expected here.
    logging.getLogger("colbert_att_assistant.retriever.index.integrity").setLevel(logging.ERROR)
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=2))
    result: dict = {**run_header(), "load_average_before": load_average(), "hash_gib_per_s": hash_speeds()}
    result["indexes"] = [
        measure(label, Path(directory), encoder, repeats)
        for label, _, directory in (item.partition("=") for item in index)
    ]
    result["load_average_after"] = load_average()
    print(json.dumps(result, indent=2))
    if not record:
        return
    speeds = result["hash_gib_per_s"]
    body = [
        f"- load average before / after: {result['load_average_before']} / {result['load_average_after']}; "
        f"warm page cache, median of {repeats} loads each",
        f"- checksum speed, GiB/s in memory: sha256 {speeds['sha256']}, crc32 {speeds['crc32']}, "
        f"blake2b {speeds['blake2b']} (sha256 chosen: no new dependency, `sha256sum` can check it)",
        "",
        "| index | files MiB (memory-mapped) | load without checksums s | full verification s | background: load "
        "returns s / all verified s | hashing every file s (added to each write) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["indexes"]:
        body.append(
            f"| {row['index']} ({row['documents']} docs, {row['tokens']} tokens, {row['codec']}) | "
            f"{row['files_mib']} ({row['memory_mapped_mib']}) | {row['load_without_checksums_s']} | "
            f"{row['load_full_s']} | {row['load_background_returns_s']} / {row['load_background_verified_s']} | "
            f"{row['hash_every_file_s']} |"
        )
    record_run("integrity-load", "index load: cost of verifying checksums", result, body)


if __name__ == "__main__":
    typer.run(main)
