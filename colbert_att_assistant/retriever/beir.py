"""Reading BEIR-format collections: corpus.jsonl, queries.jsonl and qrels/<split>.tsv.

Handles CRLF line ends and the header row BEIR ships; any malformed line is reported with its file and line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from colbert_att_assistant.retriever.errors import ColBERTAttError


class DatasetFormatError(ColBERTAttError, ValueError):
    """A dataset file is missing or has a malformed line."""


@dataclass(frozen=True)
class CorpusDocument:
    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """Title and body as one passage, the way BEIR models usually see them."""
        return f"{self.title}. {self.text}" if self.title.strip() else self.text


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise DatasetFormatError(f"{path} does not exist.")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(f"{path}, line {number}: not valid JSON ({exc.msg}).") from exc
            if not isinstance(record, dict):
                raise DatasetFormatError(f"{path}, line {number}: expected a JSON object.")
            yield number, record


def _required_str(record: dict, key: str, path: Path, number: int) -> str:
    value = record.get(key)
    if value is None:
        raise DatasetFormatError(f"{path}, line {number}: missing field {key!r}.")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DatasetFormatError(f"{path}, line {number}: field {key!r} must be a string.")
    return value


def iter_corpus(path: Path) -> Iterator[CorpusDocument]:
    for number, record in _jsonl_records(path):
        yield CorpusDocument(
            id=_required_str(record, "_id", path, number),
            title=str(record.get("title") or ""),
            text=_required_str(record, "text", path, number),
        )


def load_corpus(path: Path) -> dict[str, CorpusDocument]:
    corpus: dict[str, CorpusDocument] = {}
    for document in iter_corpus(path):
        if document.id in corpus:
            raise DatasetFormatError(f"{path}: document id {document.id!r} appears twice.")
        corpus[document.id] = document
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    return {
        _required_str(record, "_id", path, number): _required_str(record, "text", path, number)
        for number, record in _jsonl_records(path)
    }


def load_qrels(
    path: Path, query_ids: set[str] | None = None, document_ids: set[str] | None = None
) -> dict[str, dict[str, int]]:
    """{query id: {document id: relevance}}; ids unknown to the given queries or corpus are errors."""
    if not path.is_file():
        raise DatasetFormatError(f"{path} does not exist.")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or not "".join(row).strip():
                continue
            if number == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(row) != 3:
                raise DatasetFormatError(f"{path}, line {number}: expected 3 tab-separated fields, found {len(row)}.")
            query_id, document_id, score = (field.strip() for field in row)
            try:
                relevance = int(float(score))
            except ValueError as exc:
                raise DatasetFormatError(f"{path}, line {number}: relevance {score!r} is not a number.") from exc
            if query_ids is not None and query_id not in query_ids:
                raise DatasetFormatError(f"{path}, line {number}: query id {query_id!r} is not in queries.jsonl.")
            if document_ids is not None and document_id not in document_ids:
                raise DatasetFormatError(f"{path}, line {number}: document id {document_id!r} is not in corpus.jsonl.")
            qrels.setdefault(query_id, {})[document_id] = relevance
    return qrels


def query_texts(dataset: Path, queries: dict[str, str]) -> dict[str, str]:
    """Prefix follow-up questions with the turn they depend on (`metadata.previous_turn` of their record, as the
    knowledge base's labelled follow-ups carry)."""
    previous: dict[str, str] = {}
    with (dataset / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line) if line.strip() else {}
            turn = (record.get("metadata") or {}).get("previous_turn")
            if turn:
                previous[str(record["_id"])] = turn
    return {qid: f"{previous[qid]} {text}" if qid in previous else text for qid, text in queries.items()}


@dataclass
class BeirDataset:
    corpus: dict[str, CorpusDocument]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @classmethod
    def load(cls, folder: str | Path, split: str = "test") -> BeirDataset:
        folder = Path(folder)
        corpus = load_corpus(folder / "corpus.jsonl")
        all_queries = load_queries(folder / "queries.jsonl")
        qrels = load_qrels(folder / "qrels" / f"{split}.tsv", set(all_queries), set(corpus))
        # Only the queries judged in this split belong to it.
        queries = {qid: all_queries[qid] for qid in qrels}
        return cls(corpus=corpus, queries=queries, qrels=qrels)
