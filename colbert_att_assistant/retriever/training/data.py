"""Training examples (query, positive, hard negatives), streamed from gzipped jsonl files and mixed by weight.

Sources: the shared training sets (`SHARED_SOURCES`; SQuAD is joined from its passages and pairs_by_id files),
the house's own jsonl pairs in the same shape, and BEIR-format train splits. Each source is read as a stream
through a shuffle buffer (`shuffle_buffer` rows in memory, not the whole file), pass after pass; a seeded
generator picks the source of every example by its weight. Everything is a function of the seed, so the state
of the stream is a few counters (`StreamState`): a resumed run replays the buffers up to them, without parsing,
and continues with exactly the examples an uninterrupted run would have drawn.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from colbert_att_assistant.paths import PROJECT_ROOT
from colbert_att_assistant.retriever.beir import iter_corpus, load_qrels, load_queries
from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.training.config import (
    SHARED_SOURCES,
    VALIDATION_SETS,
    SourceState,
    StreamState,
    TrainingConfig,
)

logger = logging.getLogger(__name__)

SQUAD_PASSAGES = ".passages.jsonl.gz"
SQUAD_PAIRS = ".pairs_by_id.jsonl.gz"


class TrainingDataError(ColBERTAttError, ValueError):
    """A training or validation file is missing or has a malformed row."""


@dataclass(frozen=True)
class TrainingExample:
    query: str
    positive: str
    negatives: tuple[str, ...]
    source: str
    negative_weight: float = 1.0  # of this query's own negatives in the loss


@dataclass(frozen=True)
class RawRow:
    """One row as read, before parsing: the file, its line number and the text (or a ready record)."""

    path: Path
    line: int
    payload: str | dict[str, Any]


def find_training_dir(configured: str | None) -> Path:
    if configured is not None:
        folder = Path(configured).expanduser()
        if not folder.is_dir():
            raise TrainingDataError(f"Training data folder {folder} does not exist.")
        return folder
    repo = PROJECT_ROOT
    for candidate in (os.environ.get("COLBERT_ATT_SHARED_DIR"), repo.parent / "shared", "/work/shared"):
        if candidate and (Path(candidate) / "training" / "README.md").is_file():
            return Path(candidate) / "training"
    raise TrainingDataError(
        "The shared training folder was not found (looked for ../shared/training); pass --training-data-dir, "
        "or train on your own files only with --mix none --pairs FILE."
    )


def _open_text(path: Path):
    if not path.is_file():
        raise TrainingDataError(f"Training data file {path} does not exist.")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8-sig")


def _iter_lines(paths: list[Path]) -> Iterator[RawRow]:
    for path in paths:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield RawRow(path, number, line)


def _decode(row: RawRow) -> dict[str, Any]:
    if isinstance(row.payload, dict):
        return row.payload
    try:
        record = json.loads(row.payload)
    except json.JSONDecodeError as exc:
        raise TrainingDataError(f"{row.path}, line {row.line}: not valid JSON ({exc.msg}).") from exc
    if not isinstance(record, dict):
        raise TrainingDataError(f"{row.path}, line {row.line}: expected a JSON object.")
    return record


def _text_field(record: dict[str, Any], key: str, row: RawRow) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise TrainingDataError(f"{row.path}, line {row.line}: field {key!r} must be a string.")
    return value


def _negatives_field(record: dict[str, Any], key: str, row: RawRow) -> list:
    value = record.get(key) or []
    if not isinstance(value, list):
        raise TrainingDataError(f"{row.path}, line {row.line}: field {key!r} must be a list.")
    return value


def _pair_parser(row: RawRow) -> tuple[str, str, list[str]]:
    record = _decode(row)
    negatives = _negatives_field(record, "negatives", row)
    if not all(isinstance(n, str) for n in negatives):
        raise TrainingDataError(f"{row.path}, line {row.line}: 'negatives' must be a list of strings.")
    return _text_field(record, "query", row), _text_field(record, "positive", row), negatives


def _load_passages(path: Path) -> dict[str, str]:
    passages = {}
    for row in _iter_lines([path]):
        record = _decode(row)
        passages[str(record.get("pid"))] = _text_field(record, "text", row)
    return passages


def _squad_parser(passages_file: Path) -> Callable[[RawRow], tuple[str, str, list[str]]]:
    passages: dict[str, str] = {}

    def parse(row: RawRow) -> tuple[str, str, list[str]]:
        if not passages:
            passages.update(_load_passages(passages_file))
        record = _decode(row)
        ids = [record.get("positive_id"), *_negatives_field(record, "negative_ids", row)]
        missing = [pid for pid in ids if str(pid) not in passages]
        if missing:
            raise TrainingDataError(f"{row.path}, line {row.line}: passage id {missing[0]!r} not in {passages_file}.")
        texts = [passages[str(pid)] for pid in ids]
        return _text_field(record, "query", row), texts[0], texts[1:]

    return parse


@dataclass
class SourceSpec:
    """A named source: how to read its rows in file order and how to parse one."""

    name: str
    weight: float
    negative_weight: float
    read: Callable[[], Iterator[RawRow]]
    parse: Callable[[RawRow], tuple[str, str, list[str]]]
    files: list[Path] = field(default_factory=list)

    def check(self) -> None:
        for path in self.files:
            if not path.is_file():
                raise TrainingDataError(f"Training data file {path} does not exist (source {self.name!r}).")


def _shared_files(folder: Path, entries: tuple[str, ...]) -> tuple[list[Path], Callable | None]:
    """Files of a shared source and, for SQuAD, the parser that joins its passages."""
    if len(entries) == 1 and not entries[0].endswith(".gz"):
        stem = entries[0]
        return [folder / f"{stem}{SQUAD_PAIRS}", folder / f"{stem}{SQUAD_PASSAGES}"], _squad_parser(
            folder / f"{stem}{SQUAD_PASSAGES}"
        )
    return [folder / name for name in entries], None


def shared_source(name: str, folder: Path, weight: float, negative_weight: float) -> SourceSpec:
    files, squad = _shared_files(folder, SHARED_SOURCES[name])
    readable = files[:1] if squad is not None else files
    return SourceSpec(
        name, weight, negative_weight, lambda: _iter_lines(readable), squad or _pair_parser, files=list(files)
    )


def pairs_source(paths: list[Path], weight: float, negative_weight: float) -> SourceSpec:
    return SourceSpec("pairs", weight, negative_weight, lambda: _iter_lines(paths), _pair_parser, files=paths)


def _bm25_negatives(
    texts: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]], per_query: int
) -> dict[str, list[str]]:
    """The best BM25 (stemmed) documents of each judged query that are not judged for it: hard negatives."""
    from colbert_att_assistant.retriever.bm25 import BM25Baseline  # bm25s is only needed when negatives are mined

    ids = list(texts)
    bm25 = BM25Baseline(ids, [texts[i] for i in ids], stemming=True)
    mined = {}
    for query_id, judged in qrels.items():
        if query_id in queries:
            ranked = bm25.search(queries[query_id], per_query + len(judged))
            mined[query_id] = [doc_id for doc_id in ranked if doc_id not in judged][:per_query]
    return mined


def beir_source(folder: Path, split: str, weight: float, negative_weight: float, bm25_negatives: int = 0) -> SourceSpec:
    """(query, relevant document[, BM25 negatives]) rows of a BEIR split.

    Without negatives only the judged documents are kept in memory; mining reads the whole corpus once.
    """
    rows: list[RawRow] = []

    def read() -> Iterator[RawRow]:
        if not rows:
            qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
            needed = {doc_id for judged in qrels.values() for doc_id, rel in judged.items() if rel > 0}
            texts = {
                doc.id: doc.full_text
                for doc in iter_corpus(folder / "corpus.jsonl")
                if bm25_negatives or doc.id in needed
            }
            queries = load_queries(folder / "queries.jsonl")
            negatives = _bm25_negatives(texts, queries, qrels, bm25_negatives) if bm25_negatives else {}
            for query_id in sorted(qrels):
                for doc_id in sorted(qrels[query_id]):
                    if qrels[query_id][doc_id] > 0 and query_id in queries and doc_id in texts:
                        record = {
                            "query": queries[query_id],
                            "positive": texts[doc_id],
                            "negatives": [texts[n] for n in negatives.get(query_id, [])],
                        }
                        rows.append(RawRow(folder / "qrels" / f"{split}.tsv", len(rows) + 1, record))
            if not rows:
                raise TrainingDataError(f"{folder}: the {split!r} split has no judged (query, document) pairs.")
        return iter(rows)

    files = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"]
    return SourceSpec("beir", weight, negative_weight, read, _pair_parser, files=files)


def build_sources(config: TrainingConfig) -> list[SourceSpec]:
    sources = []
    if config.mix:
        folder = find_training_dir(config.training_data_dir)
        for name, weight in config.mix.items():
            sources.append(shared_source(name, folder, weight, config.negative_weight(name)))
    if config.pairs:
        paths = [Path(p).expanduser() for p in config.pairs]
        sources.append(pairs_source(paths, config.pairs_weight, config.negative_weight("pairs")))
    if config.beir_dir is not None:
        folder = Path(config.beir_dir).expanduser()
        sources.append(
            beir_source(
                folder, config.beir_split, config.beir_weight, config.negative_weight("beir"), config.beir_negatives
            )
        )
    for source in sources:
        source.check()
    return sources


def _seed_parts(seed: int, name: str, *more: int) -> list[int]:
    return [seed, zlib.crc32(name.encode()), *more]


class SourceStream:
    """Endless passes over one source, each shuffled through a buffer seeded by (seed, source, pass)."""

    def __init__(self, spec: SourceSpec, seed: int, buffer_size: int, hard_negatives: int, max_chars: int):
        self.spec = spec
        self.seed = seed
        self.buffer_size = buffer_size
        self.hard_negatives = hard_negatives
        self.max_chars = max_chars
        self.state = SourceState()
        self._rows = self._shuffled(0)

    def _shuffled(self, epoch: int) -> Iterator[RawRow]:
        rng = np.random.default_rng(_seed_parts(self.seed, self.spec.name, epoch))
        buffer: list[RawRow] = []
        for row in self.spec.read():
            if len(buffer) < self.buffer_size:
                buffer.append(row)
                continue
            slot = int(rng.integers(self.buffer_size))
            yield buffer[slot]
            buffer[slot] = row
        for slot in rng.permutation(len(buffer)):
            yield buffer[int(slot)]

    def restore(self, state: SourceState) -> None:
        """Continue from `state`: replay that pass's shuffle up to the rows already used, without parsing."""
        self.state = state.model_copy()
        self._rows = self._shuffled(state.epoch)
        for _ in range(state.consumed):
            if next(self._rows, None) is None:
                raise TrainingDataError(f"Source {self.spec.name!r} has fewer rows than its saved position.")

    def _next_row(self) -> RawRow:
        row = next(self._rows, None)
        if row is None:
            if self.state.consumed == 0:
                raise TrainingDataError(f"Source {self.spec.name!r} has no rows ({self.spec.files}).")
            self.state = SourceState(epoch=self.state.epoch + 1, consumed=0)
            self._rows = self._shuffled(self.state.epoch)
            return self._next_row()
        self.state = SourceState(epoch=self.state.epoch, consumed=self.state.consumed + 1)
        return row

    def next_example(self) -> TrainingExample:
        for _ in range(1000):
            row = self._next_row()
            query, positive, negatives = self.spec.parse(row)
            negatives = [n[: self.max_chars] for n in negatives if n.strip() and n != positive]
            if not query.strip() or not positive.strip():
                continue  # an empty row teaches nothing; skipping it is deterministic
            chosen: tuple[str, ...] = ()
            if self.hard_negatives and negatives and self.spec.negative_weight > 0:
                rng = np.random.default_rng(_seed_parts(self.seed, self.spec.name, *self.state.model_dump().values()))
                picks = rng.choice(len(negatives), size=min(self.hard_negatives, len(negatives)), replace=False)
                chosen = tuple(negatives[int(i)] for i in sorted(picks))
            return TrainingExample(query, positive[: self.max_chars], chosen, self.spec.name, self.spec.negative_weight)
        raise TrainingDataError(f"Source {self.spec.name!r}: 1000 rows in a row had an empty query or positive.")


class TrainingStream:
    """Examples from several sources, each drawn from a source picked at random by weight."""

    def __init__(self, config: TrainingConfig, sources: list[SourceSpec] | None = None):
        self.sources = sources if sources is not None else build_sources(config)
        if not self.sources:
            raise TrainingDataError("No training sources.")
        self.streams = [
            SourceStream(s, config.seed, config.shuffle_buffer, config.hard_negatives, config.max_document_chars)
            for s in self.sources
        ]
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        self.probabilities = weights / weights.sum()
        self.mixer = np.random.default_rng(config.seed)
        self.examples = 0

    def next_example(self) -> TrainingExample:
        index = int(self.mixer.choice(len(self.streams), p=self.probabilities)) if len(self.streams) > 1 else 0
        self.examples += 1
        return self.streams[index].next_example()

    def next_batch(self, size: int) -> list[TrainingExample]:
        return [self.next_example() for _ in range(size)]

    def state(self) -> StreamState:
        return StreamState(
            mixer_rng=self.mixer.bit_generator.state,
            sources={stream.spec.name: stream.state.model_copy() for stream in self.streams},
            examples=self.examples,
        )

    def restore(self, state: StreamState) -> None:
        names = {stream.spec.name for stream in self.streams}
        if names != set(state.sources):
            raise TrainingDataError(f"Saved stream has sources {sorted(state.sources)}, this run has {sorted(names)}.")
        self.mixer.bit_generator.state = state.mixer_rng
        self.examples = state.examples
        for stream in self.streams:
            stream.restore(state.sources[stream.spec.name])


# ---- validation ---------------------------------------------------------------------------------------------


@dataclass
class ValidationSet:
    """Each query re-ranks its positive among `candidates` (indices into `documents`); `positives[i]` is one of
    them."""

    queries: list[str]
    documents: list[str]
    candidates: list[list[int]]
    positives: list[int]
    name: str


def _validation_rows(spec: str, config: TrainingConfig) -> tuple[Iterator[tuple[str, str, list[str]]], str]:
    if spec in VALIDATION_SETS:
        folder = find_training_dir(config.training_data_dir)
        files, squad = _shared_files(folder, (VALIDATION_SETS[spec],))
        for path in files:
            if not path.is_file():
                raise TrainingDataError(f"Validation file {path} does not exist.")
        parse = squad or _pair_parser
        return (parse(row) for row in _iter_lines(files[:1])), spec
    path = Path(spec).expanduser()
    if not path.is_file():
        raise TrainingDataError(
            f"Validation file {path} does not exist (give squad_dev, nq_dev, a jsonl file of pairs, or none)."
        )
    return (_pair_parser(row) for row in _iter_lines([path])), str(path)


def load_validation_set(config: TrainingConfig) -> ValidationSet | None:
    """A fixed, seeded slice of a dev set: `val_queries` queries, each with `val_candidates` candidates (its
    positive, its given negatives, then other queries' positives)."""
    if config.validation is None:
        return None
    rows, name = _validation_rows(config.validation, config)
    rows = [r for r in rows if r[0].strip() and r[1].strip()]
    if not rows:
        raise TrainingDataError(f"Validation set {name} has no usable rows.")
    rng = np.random.default_rng(_seed_parts(config.seed, "validation"))
    chosen = [rows[int(i)] for i in rng.permutation(len(rows))[: config.val_queries]]
    documents: list[str] = []
    index_of: dict[str, int] = {}

    def document_index(text: str) -> int:
        text = text[: config.max_document_chars]
        if text not in index_of:
            index_of[text] = len(documents)
            documents.append(text)
        return index_of[text]

    positives = [document_index(positive) for _, positive, _ in chosen]
    own = [[document_index(n) for n in negatives if n.strip()] for _, _, negatives in chosen]
    candidates = []
    for i, positive in enumerate(positives):
        pool = list(dict.fromkeys([positive, *own[i]]))[: config.val_candidates]
        others = [p for p in dict.fromkeys(positives) if p not in pool]
        extra = config.val_candidates - len(pool)
        if extra > 0 and others:
            pool += [others[int(j)] for j in rng.permutation(len(others))[:extra]]
        candidates.append(pool)
    return ValidationSet([q for q, _, _ in chosen], documents, candidates, positives, name)
