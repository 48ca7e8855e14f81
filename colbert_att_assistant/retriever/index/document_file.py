"""A loaded generation's documents file (`manifest.py`: one JSON line per document), read on demand.

Loading scans the file once and keeps, per document, only what search needs for every candidate: its slot, id,
word and token counts, where its line and its tokens start, and its metadata as compact filter columns
(`metadata_columns.py`). Text and full metadata are read back from the file (`os.pread`, so the pages sit in the
OS cache, not in this process) for the documents a caller looks at: the hits of a search, `index.get(id)`. So a
loaded index's memory grows by tens of bytes per document, not by its text and a Python object per document.

The file is checksummed before the scan (`integrity.py`) and generation files are never written in place, so a
line read later is the line scanned. The descriptor stays open for the index's life: a later write of the index
removes this generation's files, and an open file stays readable. Every read still checks its line's slot and
id, so a file damaged behind an index without checksums gives a clear error rather than another passage.
"""

from __future__ import annotations

import json
import os
import weakref
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from colbert_att_assistant.retriever.index.integrity import unusable
from colbert_att_assistant.retriever.index.metadata_columns import MetadataColumns


class DocumentFile:
    """Rows in file order (ascending slots): `slots`, `ids`, `n_words`, `token_starts` (rows + 1, the token arrays'
    offsets), and `metadata` columns; `record(row)` reads a row's text and metadata."""

    def __init__(
        self,
        path: Path,
        directory: Path,
        descriptor: int,
        slots: np.ndarray,
        ids: list[str],
        n_words: np.ndarray,
        token_starts: np.ndarray,
        line_starts: np.ndarray,
        metadata: MetadataColumns,
    ):
        self.path = path
        self.directory = directory
        self.slots = slots
        self.ids = ids
        self.n_words = n_words
        self.token_starts = token_starts
        self.line_starts = line_starts
        self.metadata = metadata
        self._descriptor = descriptor
        self._closer = weakref.finalize(self, os.close, descriptor)

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def token_count(self) -> int:
        return int(self.token_starts[-1])

    @classmethod
    def scan(cls, path: Path, directory: Path, next_slot: int) -> DocumentFile:
        """Read the compact per-document columns from `path`; IndexCorruptError (naming the file and line) when a
        line is not JSON or not a document line, or when slots are out of order or ids repeat."""
        descriptor = os.open(path, os.O_RDONLY)
        try:
            return cls._scan(path, directory, descriptor, next_slot)
        except BaseException:
            os.close(descriptor)
            raise

    @classmethod
    def _scan(cls, path: Path, directory: Path, descriptor: int, next_slot: int) -> DocumentFile:
        slots, n_words, token_starts, line_starts = array("q"), array("q"), array("q", [0]), array("q", [0])
        ids: list[str] = []
        metadata = MetadataColumns()
        # Read through the descriptor that later reads use (they do not move its offset: pread).
        with open(descriptor, "rb", closefd=False) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise unusable(directory, f"{path}, line {number}: not valid JSON ({exc}).") from exc
                try:
                    slot, document_id, words, tokens, fields = _document_fields(line)
                except (KeyError, TypeError, ValueError) as exc:
                    raise unusable(directory, f"{path}, line {number}: a document line is malformed ({exc}).") from exc
                previous = slots[-1] if slots else -1
                if not previous < slot < next_slot:
                    raise unusable(
                        directory,
                        f"{path}, line {number}: slot {slot} is out of order (after slot {previous}; the manifest's "
                        f"next slot is {next_slot}).",
                    )
                slots.append(slot)
                ids.append(document_id)
                n_words.append(words)
                token_starts.append(token_starts[-1] + tokens)
                line_starts.append(line_starts[-1] + len(raw))
                metadata.add(fields)
        return cls(
            path,
            directory,
            descriptor,
            _int64(slots),
            ids,
            _int64(n_words),
            _int64(token_starts),
            _int64(line_starts),
            metadata.finish(),
        )

    def slot_by_id(self) -> dict[str, int]:
        """Each row's slot by its id; IndexCorruptError when an id is on two lines."""
        mapping = dict(zip(self.ids, self.slots.tolist(), strict=True))
        if len(mapping) != len(self.ids):
            seen: set[str] = set()
            repeated = next(i for i in self.ids if i in seen or seen.add(i))
            raise unusable(self.directory, f"{self.path}: document id {repeated!r} is on more than one line.")
        return mapping

    def record(self, row: int) -> tuple[str, dict[str, Any]]:
        """The text and metadata of the document on `row`, read from the file now."""
        start, end = int(self.line_starts[row]), int(self.line_starts[row + 1])
        try:
            raw = os.pread(self._descriptor, end - start, start)
        except OSError as exc:
            raise unusable(self.directory, f"{self.path}: unreadable ({exc}).") from exc
        where = f"{self.path}, line {row + 1}"
        if len(raw) != end - start:
            raise unusable(self.directory, f"{where}: the file is shorter than when the index was loaded.")
        try:
            line = json.loads(raw)
            text, metadata = line["text"], line["metadata"]
            same = line["slot"] == int(self.slots[row]) and line["id"] == self.ids[row]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise unusable(self.directory, f"{where}: changed since the index was loaded ({exc}).") from exc
        if not same or not isinstance(text, str) or not isinstance(metadata, dict):
            raise unusable(self.directory, f"{where}: changed since the index was loaded (another document).")
        return text, metadata


def _document_fields(line: Any) -> tuple[int, str, int, int, dict[str, Any]]:
    if not isinstance(line, dict):
        raise TypeError(f"a JSON {type(line).__name__}, not an object")
    slot, document_id, words, tokens, metadata = (
        line["slot"],
        line["id"],
        line["n_words"],
        line["n_tokens"],
        line["metadata"],
    )
    if not isinstance(document_id, str) or not isinstance(line["text"], str) or not isinstance(metadata, dict):
        raise TypeError("id and text must be strings, metadata an object")
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (slot, words, tokens)) or tokens < 0:
        raise ValueError(f"slot, n_words and n_tokens must be whole numbers, got {slot!r}, {words!r}, {tokens!r}")
    return slot, document_id, words, tokens, metadata


def _int64(values: array) -> np.ndarray:
    return np.frombuffer(values, dtype=np.int64) if len(values) else np.zeros(0, np.int64)
