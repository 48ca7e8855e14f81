"""Atomic, generation-based persistence of an index directory (format described in `manifest.py`)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch
from pydantic import ValidationError

from retriever.errors import IndexCorruptError, IndexMismatchError
from retriever.index.manifest import FORMAT_VERSION, MANIFEST_NAME, DataFile, IndexManifest

_GENERATION_FILE = re.compile(r"^[a-z_]+\.g(\d+)\.[a-z]+$")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, writer: Callable[[Path], None]) -> DataFile:
    writer(path)
    _fsync_path(path)
    return DataFile(name=path.name, bytes=path.stat().st_size)


def generation_file(directory: Path, stem: str, generation: int, extension: str) -> Path:
    return directory / f"{stem}.g{generation:06d}.{extension}"


def read_manifest(directory: Path) -> IndexManifest:
    manifest_path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise IndexCorruptError(f"Index directory {directory} does not exist. Build one first (`colbert-att build`).")
    if not manifest_path.is_file():
        raise IndexCorruptError(
            f"{directory} has no {MANIFEST_NAME}: it is not an index directory, or its first write never finished."
        )
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{manifest_path} is not valid JSON ({exc}). Rebuild the index.") from exc
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise IndexMismatchError(
            f"{directory} uses index format {version}, newer than this code's format {FORMAT_VERSION}. "
            "Upgrade colbert-att-assistant or rebuild the index."
        )
    try:
        manifest = IndexManifest.model_validate(raw)
    except ValidationError as exc:
        raise IndexCorruptError(f"{manifest_path} does not describe a valid index: {exc}") from exc
    for key, entry in manifest.files.items():
        path = directory / entry.name
        if not path.is_file():
            raise IndexCorruptError(f"{directory}: the {key} file {entry.name} named in the manifest is missing.")
        if path.stat().st_size != entry.bytes:
            raise IndexCorruptError(
                f"{directory}: {entry.name} has {path.stat().st_size} bytes, the manifest says {entry.bytes}."
            )
    return manifest


def write_generation(
    directory: Path,
    manifest_without_files: IndexManifest,
    vectors: torch.Tensor,
    weights: np.ndarray,
    token_ids: np.ndarray,
    document_lines: list[dict],
    faiss_index: faiss.Index,
) -> IndexManifest:
    """Write one complete generation, then switch the manifest to it, then remove older generations."""
    directory.mkdir(parents=True, exist_ok=True)
    generation = manifest_without_files.generation
    files = {
        "vectors": _write_file(
            generation_file(directory, "vectors", generation, "npy"),
            # bfloat16 has no numpy dtype: its bit patterns are saved as int16.
            lambda p: np.save(p, vectors.contiguous().view(torch.int16).numpy()),
        ),
        "weights": _write_file(
            generation_file(directory, "weights", generation, "npy"),
            lambda p: np.save(p, np.ascontiguousarray(weights, dtype=np.float32)),
        ),
        "token_ids": _write_file(
            generation_file(directory, "token_ids", generation, "npy"),
            lambda p: np.save(p, np.ascontiguousarray(token_ids, dtype=np.int32)),
        ),
        "documents": _write_file(
            generation_file(directory, "documents", generation, "jsonl"),
            lambda p: p.write_text(
                "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in document_lines),
                encoding="utf-8",
            ),
        ),
        "faiss": _write_file(
            generation_file(directory, "faiss", generation, "index"),
            lambda p: faiss.write_index(faiss_index, str(p)),
        ),
    }
    manifest = manifest_without_files.model_copy(update={"files": files})
    temporary = directory / f"{MANIFEST_NAME}.tmp"
    temporary.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    _fsync_path(temporary)
    os.replace(temporary, directory / MANIFEST_NAME)  # the commit point
    _fsync_path(directory)
    remove_other_generations(directory, generation)
    return manifest


def remove_other_generations(directory: Path, keep_generation: int) -> None:
    for path in directory.iterdir():
        match = _GENERATION_FILE.match(path.name)
        if match and int(match.group(1)) != keep_generation:
            path.unlink(missing_ok=True)


def read_document_lines(path: Path) -> list[dict]:
    lines = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise IndexCorruptError(f"{path}, line {number}: not valid JSON ({exc}).") from exc
    return lines
