"""What every index backend is: the shared types, the input checks, and the search contract.

A backend (`multivector_index.py`: local FAISS or compressed storage; `qdrant_index.py`: a Qdrant collection) only
stores documents' token vectors and proposes candidate documents for a query. Everything else is here and is the
same for all of them: checking documents before anything is encoded, the add / upsert / delete rules, the model
compatibility check, and the exact ColBERT-Att re-ranking of the candidates (`rerank.py`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from llama_index.core.vector_stores.types import MetadataFilters
from pydantic import BaseModel

from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder, EncodedText, ProgressCallback
from colbert_att_assistant.retriever.errors import IndexMismatchError, InvalidDocumentError, InvalidQueryError
from colbert_att_assistant.retriever.index.documents import (
    Candidates,
    DocumentInput,
    SearchHit,
    StoredDocument,
    TokenMatch,
    coerce_documents,
    pruned_tokens,
)
from colbert_att_assistant.retriever.index.manifest import ModelIdentity
from colbert_att_assistant.retriever.index.rerank import rerank, score_documents, score_documents_for_queries
from colbert_att_assistant.retriever.scoring import ScoredBatch, ScoringMode
from colbert_att_assistant.retriever.settings import IndexSettings

__all__ = [
    "VECTOR_AFFECTING_FIELDS",
    "BaseMultiVectorIndex",
    "Candidates",
    "DocumentInput",
    "SearchHit",
    "StoredDocument",
    "TokenMatch",
    "check_compatible",
    "check_top_k",
    "coerce_documents",
    "pruned_tokens",
]

# Encoder settings that change the stored vectors or weights; the others (batch size, threads) do not.
VECTOR_AFFECTING_FIELDS = (
    "attention_strategy",
    "attention_scaling",
    "attention_temperature",
    "document_max_tokens",
    "skip_document_punctuation",
    "attention_mix",
    "special_token_attention",
)


def check_top_k(top_k: object) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")


def check_compatible(where: str, model: ModelIdentity, settings: IndexSettings, encoder: ColBERTAttEncoder) -> None:
    """Raise IndexMismatchError when `encoder` would not give the vectors stored at `where` (another model, or an
    encoder setting that changes vectors or weights)."""
    if model.weights_sha256 != encoder.weights_sha256 or model.dim != encoder.dim:
        raise IndexMismatchError(
            f"{where} was built with model {model.name} (weights {model.weights_sha256[:12]}, dim {model.dim}), "
            f"but the encoder is {encoder.model_name} (weights {encoder.weights_sha256[:12]}, dim {encoder.dim}). "
            "Load it with the same model or rebuild the index."
        )
    built = settings.encoder
    for name in VECTOR_AFFECTING_FIELDS:
        if getattr(built, name) != getattr(encoder.settings, name):
            raise IndexMismatchError(
                f"{where} was built with {name}={getattr(built, name)!r}, but the encoder uses "
                f"{name}={getattr(encoder.settings, name)!r}. Use the index's setting or rebuild the index."
            )


class BaseMultiVectorIndex(ABC):
    """Documents' token vectors, searched by backend candidates then re-ranked with the exact ColBERT-Att score.

    A backend implements storage (`_present`, `_store`, `_delete`, the inspection methods, `update_metadata`),
    candidate generation (`_candidates`) and persistence (`persist`, `load`); this class does the rest.
    """

    encoder: ColBERTAttEncoder
    settings: IndexSettings

    # ---- inspection: each backend ---------------------------------------------------------------------------

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, document_id: object) -> bool: ...

    @property
    @abstractmethod
    def token_count(self) -> int: ...

    @abstractmethod
    def document_ids(self) -> list[str]: ...

    @abstractmethod
    def get(self, document_id: str) -> StoredDocument: ...

    def model_identity(self) -> ModelIdentity:
        return ModelIdentity(
            name=self.encoder.model_name, weights_sha256=self.encoder.weights_sha256, dim=self.encoder.dim
        )

    # ---- changes --------------------------------------------------------------------------------------------

    @abstractmethod
    def _present(self, document_ids: list[str]) -> set[str]:
        """Which of `document_ids` are stored."""

    @abstractmethod
    def _store(self, batch: list[DocumentInput], encoded: list[EncodedText]) -> None:
        """Store encoded (and pruned) documents, replacing any stored under the same id."""

    @abstractmethod
    def _delete(self, document_ids: list[str]) -> None:
        """Remove documents that are all present."""

    @abstractmethod
    def update_metadata(self, document_id: str, metadata: dict[str, Any]) -> None:
        """Replace a document's metadata without re-encoding it (its text is unchanged)."""

    def add(
        self, documents: Iterable[DocumentInput | dict[str, Any]], progress: ProgressCallback | None = None
    ) -> None:
        """Add new documents. An id already in the index is an error (use `upsert` to replace)."""
        batch = coerce_documents(documents)
        present = self._present([d.id for d in batch])
        if present:
            first = next(d.id for d in batch if d.id in present)
            raise InvalidDocumentError(
                f"{len(present)} id(s) already in the index (e.g. {first!r}); use upsert() to replace them."
            )
        self._store(batch, self._encode(batch, progress))

    def upsert(
        self, documents: Iterable[DocumentInput | dict[str, Any]], progress: ProgressCallback | None = None
    ) -> None:
        """Add documents, replacing any with the same id."""
        batch = coerce_documents(documents)
        # Encoding may fail on bad input: it happens before anything is changed.
        self._store(batch, self._encode(batch, progress))

    def delete(self, document_ids: Iterable[str]) -> None:
        ids = list(dict.fromkeys(document_ids))
        present = self._present(ids) if ids else set()
        unknown = [i for i in ids if i not in present]
        if unknown:
            raise InvalidDocumentError(
                f"{len(unknown)} id(s) are not in the index (e.g. {unknown[0]!r}); nothing deleted."
            )
        if ids:
            self._delete(ids)

    def _encode(self, batch: list[DocumentInput], progress: ProgressCallback | None) -> list[EncodedText]:
        if not batch:
            return []
        encoded = self.encoder.encode_documents([d.text for d in batch], progress=progress)
        # Attention-based token pruning, the same for every backend (none by default).
        return [pruned_tokens(item, self.settings.storage.prune_fraction) for item in encoded]

    # ---- search ---------------------------------------------------------------------------------------------

    @abstractmethod
    def _candidates(
        self, query: EncodedText, top_k: int, filters: MetadataFilters | None, exhaustive: bool
    ) -> Candidates:
        """Documents to score exactly: every one that passes `filters` when `exhaustive`, else the backend's
        candidates (at least `top_k` of them where that many pass)."""

    def _candidates_batch(
        self, queries: Sequence[EncodedText], top_k: int, filters: MetadataFilters | None
    ) -> list[Candidates]:
        """`_candidates` of each query (not exhaustive); a backend that can propose for many queries in one call
        overrides this, with the same candidates."""
        return [self._candidates(query, top_k, filters, False) for query in queries]

    def _token_vectors(self, documents: Sequence[StoredDocument]) -> torch.Tensor:
        """The documents' token vectors, concatenated, in the space of `_query_in_storage_space`."""
        if not documents:
            return torch.zeros((0, self.encoder.dim), dtype=torch.bfloat16)
        return torch.cat([d.vectors for d in documents if d.vectors is not None])

    def _query_in_storage_space(self, query: EncodedText) -> np.ndarray:
        return query.vectors

    def _before_search(self) -> None:
        """A hook for a backend that must refuse to search (e.g. a stored file failed its checksum)."""
        return None

    def search(
        self,
        query: str | EncodedText,
        top_k: int = 10,
        mode: ScoringMode | str = ScoringMode.COLBERT_ATT,
        filters: MetadataFilters | None = None,
        exhaustive: bool = False,
        explain: bool = False,
    ) -> list[SearchHit]:
        """Top documents for a query, best first: the backend's candidates re-ranked with the exact score.

        `exhaustive` scores every document that passes the filter exactly instead; `explain` fills each hit's
        `matches` with the document token each query token matched."""
        check_top_k(top_k)
        mode = ScoringMode(mode)
        self._before_search()
        encoded = self.encoder.encode_query(query) if isinstance(query, str) else query
        return self._ranked(encoded, self._candidates(encoded, top_k, filters, exhaustive), top_k, mode, explain)

    def search_batch(
        self,
        queries: Sequence[str | EncodedText],
        top_k: int = 10,
        mode: ScoringMode | str = ScoringMode.COLBERT_ATT,
        filters: MetadataFilters | None = None,
    ) -> list[list[SearchHit]]:
        """`search` for many queries, one list of hits per query in their order: the strings are encoded in one
        batched forward pass and the candidates come from `_candidates_batch` (one FAISS search for the local
        index), then each query is re-ranked as `search` does.

        Given the same encodings, the hits are those of `search` one query at a time. Strings encoded together get
        query vectors that differ from one-at-a-time encoding in the last float bits, which can pick another of
        two near-tied document tokens in the bfloat16 MaxSim and move a score by up to about 1e-3 of its size
        (2 of the 300 SciFact test queries, their ids and order unchanged)."""
        check_top_k(top_k)
        mode = ScoringMode(mode)
        encoded = self._encode_queries(queries)
        if not encoded:
            return []
        self._before_search()
        found = self._candidates_batch(encoded, top_k, filters)
        return [
            self._ranked(query, candidates, top_k, mode, explain=False)
            for query, candidates in zip(encoded, found, strict=True)
        ]

    def _encode_queries(self, queries: Sequence[str | EncodedText]) -> list[EncodedText]:
        """Every query as an encoding, the strings encoded together; a bad query is named by its position."""
        if isinstance(queries, str):
            raise InvalidQueryError("search_batch takes a list of queries; use search() for a single query.")
        queries = list(queries)
        for position, query in enumerate(queries):
            if not isinstance(query, str | EncodedText):
                raise InvalidQueryError(
                    f"Query {position} is a {type(query).__name__}, not a string or an EncodedText."
                )
            if isinstance(query, str) and not query.strip():
                raise InvalidQueryError(f"Query {position} is empty or whitespace: give some words to search for.")
        texts = [query for query in queries if isinstance(query, str)]
        encoded = iter(self.encoder.encode_queries(texts) if texts else [])
        return [next(encoded) if isinstance(query, str) else query for query in queries]

    def _ranked(
        self, query: EncodedText, candidates: Candidates, top_k: int, mode: ScoringMode, explain: bool
    ) -> list[SearchHit]:
        if not candidates.documents:
            return []
        scored = self.score(query, candidates.documents, mode)
        return rerank(query, candidates, scored, top_k, explain)

    def score(self, query: EncodedText, documents: Sequence[StoredDocument], mode: ScoringMode) -> ScoredBatch:
        """The exact scores of `documents` for the query, in their order."""
        return score_documents(
            self._query_in_storage_space(query), query.weights, documents, self._token_vectors, mode, self.settings
        )

    def score_queries(
        self, queries: Sequence[EncodedText], documents: Sequence[StoredDocument], mode: ScoringMode | str
    ) -> list[ScoredBatch]:
        """`score` for each query, the documents' vectors read once for all of them (an exhaustive evaluation)."""
        return score_documents_for_queries(
            [(self._query_in_storage_space(q), q.weights) for q in queries],
            documents,
            self._token_vectors,
            ScoringMode(mode),
            self.settings,
        )

    def token_similarities(self, query: EncodedText, document_id: str) -> np.ndarray:
        """(query tokens, stored tokens) cosine similarities of one document: the alignment behind its score."""
        vectors = self._token_vectors([self.get(document_id)]).float().numpy()
        return np.asarray(self._query_in_storage_space(query), dtype=np.float32) @ vectors.T

    # ---- persistence and lifecycle --------------------------------------------------------------------------

    @abstractmethod
    def persist(self, directory: str | Path) -> BaseModel:
        """Make `load(directory)` give this index back; returns what was recorded (the manifest)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path, encoder: ColBERTAttEncoder | None = None) -> Self:
        """Reopen what `persist(directory)` recorded, checked against the encoder."""

    def close(self) -> None:
        """Release what the backend holds open (nothing for the local index)."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
