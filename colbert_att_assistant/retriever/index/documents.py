"""The documents an index takes and gives back: input documents, stored token data, and search hits."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from colbert_att_assistant.retriever.encoder import EncodedText
from colbert_att_assistant.retriever.errors import InvalidDocumentError
from colbert_att_assistant.retriever.index.compression import CompressedTokens, prune_by_attention


class DocumentInput(BaseModel):
    """A document to index: a stable string id, its text, and metadata (kept and filterable)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


@dataclass
class StoredDocument:
    """One document's stored tokens: `vectors` (bfloat16, exact storage and Qdrant) or `compressed` (residual_pq).

    `slot` is the local index's row number (insertion order); -1 for a document read from Qdrant."""

    slot: int
    id: str
    text: str
    metadata: dict[str, Any]
    n_words: int
    vectors: torch.Tensor | None  # bfloat16 (n, dim), see manifest.py for why not float16
    weights: np.ndarray  # (n,) attention weight A of each stored token
    token_ids: np.ndarray  # (n,) word-piece ids
    compressed: CompressedTokens | None = None


TextAndMetadata = Callable[[], tuple[str, dict[str, Any]]]


class DiskDocument(StoredDocument):
    """A stored document whose text and metadata stay in the index's documents file, read when asked for.

    Search gets one per candidate to score its tokens; only the hits it returns read their text, so a loaded
    index holds no passage text in memory beyond the few last read (`document_file.py`, `multivector_index.py`).
    """

    def __init__(
        self,
        slot: int,
        id: str,
        n_words: int,
        vectors: torch.Tensor | None,
        weights: np.ndarray,
        token_ids: np.ndarray,
        compressed: CompressedTokens | None,
        read: TextAndMetadata,
    ):
        self.slot = slot
        self.id = id
        self.n_words = n_words
        self.vectors = vectors
        self.weights = weights
        self.token_ids = token_ids
        self.compressed = compressed
        self._read = read

    @property  # type: ignore[override]
    def text(self) -> str:
        return self._read()[0]

    @property  # type: ignore[override]
    def metadata(self) -> dict[str, Any]:
        return self._read()[1]


class DocumentSequence(Sequence[StoredDocument]):
    """Documents by slot, each built when it is looked at: lets search, persistence and conversion walk a large
    index without one object per document alive at once."""

    def __init__(self, slots: np.ndarray, document: Callable[[int], StoredDocument]):
        self.slots = slots
        self._document = document

    def __len__(self) -> int:
        return len(self.slots)

    @overload
    def __getitem__(self, position: int) -> StoredDocument: ...

    @overload
    def __getitem__(self, position: slice) -> list[StoredDocument]: ...

    def __getitem__(self, position: int | slice) -> StoredDocument | list[StoredDocument]:
        if isinstance(position, slice):
            return [self._document(int(slot)) for slot in self.slots[position]]
        return self._document(int(self.slots[position]))

    def __iter__(self) -> Iterator[StoredDocument]:
        return (self._document(int(slot)) for slot in self.slots)


@dataclass(frozen=True)
class TokenMatch:
    """Which document token a query token matched (d_w), with both attention weights."""

    query_position: int
    query_token_id: int
    document_position: int
    document_token_id: int
    similarity: float
    query_weight: float
    document_weight: float


@dataclass
class SearchHit:
    id: str
    score: float
    normalised_score: float
    text: str
    metadata: dict[str, Any]
    matches: list[TokenMatch] = field(default_factory=list)


@dataclass
class Candidates:
    """Documents a backend proposes for exact re-ranking; among equal scores the smaller `tie_break` ranks first."""

    documents: Sequence[StoredDocument]
    tie_break: np.ndarray


def coerce_documents(documents: Iterable[DocumentInput | dict[str, Any]]) -> list[DocumentInput]:
    coerced = []
    for position, document in enumerate(documents):
        if isinstance(document, DocumentInput):
            coerced.append(document)
            continue
        try:
            coerced.append(DocumentInput.model_validate(document))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors())
            raise InvalidDocumentError(f"Document {position} is not valid ({problems}).") from exc
    seen: set[str] = set()
    for document in coerced:
        if document.id in seen:
            raise InvalidDocumentError(f"Document id {document.id!r} appears twice in one batch; ids must be unique.")
        seen.add(document.id)
        if not document.text.strip():
            raise InvalidDocumentError(f"Document {document.id!r} has empty text; there is nothing to index.")
    return coerced


def pruned_tokens(item: EncodedText, fraction: float) -> EncodedText:
    """The tokens kept after attention-based pruning (all of them when fraction is 0)."""
    if fraction <= 0:
        return item
    keep = prune_by_attention(item.weights, fraction)
    return EncodedText(
        vectors=item.vectors[keep],
        weights=item.weights[keep],
        token_ids=item.token_ids[keep],
        n_words=item.n_words,
        truncated=item.truncated,
    )
