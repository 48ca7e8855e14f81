"""Atomic, generation-based persistence of an index directory (format described in `manifest.py`)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import faiss
import numpy as np
import torch
from pydantic import ValidationError

from colbert_att_assistant.retriever.errors import IndexCorruptError, IndexMismatchError
from colbert_att_assistant.retriever.index.integrity import file_sha256, unusable
from colbert_att_assistant.retriever.index.manifest import FORMAT_VERSION, MANIFEST_NAME, DataFile, IndexManifest

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
    # Hashed from disk after the fsync, so the checksum is of the bytes a reader will get.
    return DataFile(name=path.name, bytes=path.stat().st_size, sha256=file_sha256(path))


def generation_file(directory: Path, stem: str, generation: int, extension: str) -> Path:
    return directory / f"{stem}.g{generation:06d}.{extension}"


def read_manifest(directory: Path) -> IndexManifest:
    """The manifest, checked against the files it names (present, right size); checksums are `integrity.py`'s."""
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
        raise unusable(directory, f"{manifest_path}: the manifest is not valid JSON ({exc}).") from exc
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise IndexMismatchError(
            f"{directory} uses index format {version}, newer than this code's format {FORMAT_VERSION}. "
            "Upgrade colbert-att-assistant or rebuild the index."
        )
    try:
        manifest = IndexManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'manifest'}: {error['msg']}" for error in exc.errors()[:3]
        )
        raise unusable(
            directory, f"{manifest_path}: the manifest does not describe a valid index ({problems})."
        ) from exc
    for key, entry in manifest.files.items():
        path = directory / entry.name
        if not path.is_file():
            raise unusable(directory, f"{path}: the {key} file named in the manifest is missing.")
        size = path.stat().st_size
        if size != entry.bytes:
            what = "truncated" if size < entry.bytes else "longer than written"
            raise unusable(directory, f"{path}: {what} ({size} bytes, the manifest says {entry.bytes}).")
    return manifest


def next_generation(directory: Path) -> int:
    """One past the newest generation in `directory`, from the manifest and from the files themselves: a damaged
    manifest must not make a rebuild write over files that a reader may still have memory-mapped."""
    newest = 0
    try:
        raw = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
        newest = int(raw["generation"]) if isinstance(raw, dict) else 0
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or damaged: the files still tell
    if directory.is_dir():
        for path in directory.iterdir():
            match = _GENERATION_FILE.match(path.name)
            if match:
                newest = max(newest, int(match.group(1)))
    return newest + 1


FileWriter = Callable[[Path], None]


def npy_writer(array: np.ndarray | torch.Tensor, dtype: np.dtype | type) -> FileWriter:
    if isinstance(array, torch.Tensor):
        # bfloat16 has no numpy dtype: its bit patterns are saved as int16.
        array = array.contiguous().view(torch.int16).numpy()
    return lambda path: np.save(path, np.ascontiguousarray(array, dtype=dtype))


def npy_rows_writer(
    chunks: Callable[[], Iterable[np.ndarray]], n_rows: int, dtype: np.dtype, tail: tuple
) -> FileWriter:
    """Write an .npy of `n_rows` rows chunk by chunk through a memory map: no whole-collection array in RAM."""

    def write(path: Path) -> None:
        target = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n_rows, *tail))
        row = 0
        for chunk in chunks():
            target[row : row + len(chunk)] = chunk
            row += len(chunk)
        if row != n_rows:
            raise IndexCorruptError(f"{path}: wrote {row} rows, expected {n_rows}.")
        target.flush()
        del target

    return write


def jsonl_writer(lines: Iterable[dict]) -> FileWriter:
    def write(path: Path) -> None:
        with path.open("w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")

    return write


def faiss_writer(index: faiss.Index) -> FileWriter:
    return lambda path: faiss.write_index(index, str(path))


def write_generation(
    directory: Path, manifest_without_files: IndexManifest, writers: dict[str, tuple[str, FileWriter]]
) -> IndexManifest:
    """Write one complete generation (one file per `writers` key: extension, writer), then switch the manifest
    to it, then remove older generations."""
    directory.mkdir(parents=True, exist_ok=True)
    generation = manifest_without_files.generation
    files = {
        key: _write_file(generation_file(directory, key, generation, extension), writer)
        for key, (extension, writer) in writers.items()
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
