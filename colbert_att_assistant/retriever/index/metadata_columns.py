"""The metadata filters need of every document of a loaded index, held compactly: one small integer per document
and key, pointing into the key's table of distinct values.

A filter is then decided once per distinct combination of the values of the keys it names (`metadata_matches` reads
only those keys), not once per document. Keys with many distinct values (titles, paths: nearly one per document)
would make their table as large as the collection, so past `MAX_DISTINCT_VALUES` a key is dropped from memory
("wide"): a filter on it reads each document's metadata from the documents file instead, a slower scan whose result
the index caches per filter.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from llama_index.core.vector_stores.types import MetadataFilters

from colbert_att_assistant.retriever.filters import metadata_matches

MAX_DISTINCT_VALUES = 4096
MISSING = -1


def filter_keys(filters: MetadataFilters) -> set[str]:
    """Every metadata key a filter (and its nested filters) reads."""
    keys: set[str] = set()
    for rule in filters.filters:
        keys |= filter_keys(rule) if isinstance(rule, MetadataFilters) else {rule.key}
    return keys


def _value_key(value: Any) -> Hashable:
    """Equal only for values every filter operator treats alike: 1, 1.0 and True stay apart (their str() and
    type differ), and so do -0.0 and 0.0."""
    if value is None or isinstance(value, str | bool | int):
        return (type(value), value)
    if isinstance(value, float):
        return (float, value.hex())
    return (object, json.dumps(value))  # lists and objects, in the order the file holds them


class _Column:
    def __init__(self) -> None:
        self.values: list[Any] = []
        self.lookup: dict[Hashable, int] = {}
        self.codes = array("i")


class MetadataColumns:
    """Per key, a code per document row (MISSING where the document lacks the key) and the distinct values."""

    def __init__(self) -> None:
        self._columns: dict[str, _Column] = {}
        self._codes: dict[str, np.ndarray] = {}
        self.wide: set[str] = set()
        self.rows = 0

    def add(self, metadata: dict[str, Any]) -> None:
        """Append the next row's metadata (rows in documents-file order)."""
        for key, value in metadata.items():
            if key in self.wide:
                continue
            column = self._columns.get(key)
            if column is None:
                column = self._columns[key] = _Column()
            marker = _value_key(value)
            code = column.lookup.get(marker)
            if code is None:
                if len(column.values) == MAX_DISTINCT_VALUES:
                    del self._columns[key]
                    self.wide.add(key)
                    continue
                code = column.lookup[marker] = len(column.values)
                column.values.append(value)
            column.codes.extend([MISSING] * (self.rows - len(column.codes)))
            column.codes.append(code)
        self.rows += 1

    def finish(self) -> MetadataColumns:
        """Pad every column to all rows and drop the lookups; no more rows can be added."""
        for key, column in self._columns.items():
            column.codes.extend([MISSING] * (self.rows - len(column.codes)))
            self._codes[key] = np.frombuffer(column.codes, dtype=np.int32) if self.rows else np.zeros(0, np.int32)
            column.lookup = {}
        return self

    @property
    def keys(self) -> set[str]:
        return set(self._codes)

    def matching(
        self, filters: MetadataFilters, rows: np.ndarray, read_metadata: Callable[[int], dict[str, Any]]
    ) -> np.ndarray:
        """Which of `rows` pass `filters` (a bool per row); `read_metadata(row)` is used only for wide keys."""
        keys = filter_keys(filters)
        if keys & self.wide:
            return np.fromiter(
                (metadata_matches(read_metadata(int(row)), filters) for row in rows), dtype=bool, count=len(rows)
            )
        present = sorted(keys & self.keys)
        if not present or len(rows) == 0:
            return np.full(len(rows), metadata_matches({}, filters), dtype=bool)
        codes = np.stack([self._codes[key][rows] for key in present], axis=1)
        combinations, inverse = np.unique(codes, axis=0, return_inverse=True)
        verdicts = np.array([metadata_matches(self._projection(present, c), filters) for c in combinations.tolist()])
        return verdicts[inverse.reshape(-1)]

    def _projection(self, keys: list[str], codes: list[int]) -> dict[str, Any]:
        """The metadata a document with these codes has for `keys` (a missing key stays missing)."""
        return {key: self._columns[key].values[code] for key, code in zip(keys, codes, strict=True) if code != MISSING}
