"""How the local index keeps its documents' token vectors: one class per storage kind behind one interface.

`ExactTokenStore` (`exact_tokens.py`, vector format "bfloat16") keeps the vectors as bfloat16 and a FAISS token index
for candidates; `ResidualTokenStore` (`residual_tokens.py`, "residual_pq") keeps a centroid id and a product-
quantised residual per token, and its centroid lists for candidates. Each reads and writes its own files of the
on-disk format (`manifest.py`); the index around it (`multivector_index.py`) owns the documents, their slots and
the documents file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from colbert_att_assistant.retriever.encoder import EncodedText
from colbert_att_assistant.retriever.index.compression import CompressedTokens
from colbert_att_assistant.retriever.index.documents import StoredDocument
from colbert_att_assistant.retriever.index.storage import FileWriter
from colbert_att_assistant.retriever.settings import CandidateSettings, StorageSettings


class TokenFields(NamedTuple):
    """A document's stored tokens, as `StoredDocument` holds them."""

    vectors: torch.Tensor | None
    weights: np.ndarray
    token_ids: np.ndarray
    compressed: CompressedTokens | None


class TokenStorage(ABC):
    """Token vectors of the local index in one storage kind, and the structure that proposes candidates."""

    # The manifest's `vector_dtype` for this kind, and the files `load` memory-maps rather than reads (their
    # checksums may be verified in the background, `integrity.py`).
    format_name: ClassVar[str]
    memory_mapped_files: ClassVar[frozenset[str]]

    def __init__(self, dim: int, storage: StorageSettings, vocabulary_size: int):
        self.dim = dim
        self.storage = storage
        self.vocabulary_size = vocabulary_size

    @property
    @abstractmethod
    def candidate_kind(self) -> str | None:
        """The manifest's `faiss_kind`: what generates candidates (None before there is anything to search)."""

    @abstractmethod
    def stored_tokens(self, encoded: list[EncodedText]) -> list[TokenFields]:
        """The stored form of each encoded document."""

    @abstractmethod
    def added(
        self,
        documents: list[StoredDocument],
        every_document: Callable[[], list[StoredDocument]],
        token_count: int,
        candidates: CandidateSettings,
    ) -> None:
        """Make newly stored `documents` findable; `every_document` (in slot order) for a structure rebuilt whole."""

    @abstractmethod
    def removed(self, slots: list[int]) -> None: ...

    @abstractmethod
    def candidate_slots(
        self, query: EncodedText, allowed: np.ndarray | None, top_k: int, n_slots: int, settings: CandidateSettings
    ) -> np.ndarray | None:
        """Up to `settings.rerank_depth` candidate slots (among `allowed`, when given), or None when no candidate
        structure can find `top_k` documents and every allowed document must be scored."""

    def candidate_slots_batch(
        self,
        queries: list[EncodedText],
        allowed: np.ndarray | None,
        top_k: int,
        n_slots: int,
        settings: CandidateSettings,
    ) -> list[np.ndarray | None]:
        """`candidate_slots` of each query; a kind whose structure searches many queries in one call overrides it."""
        return [self.candidate_slots(query, allowed, top_k, n_slots, settings) for query in queries]

    @abstractmethod
    def token_vectors(self, documents: Sequence[StoredDocument]) -> torch.Tensor:
        """The documents' token vectors, concatenated, in the space of `query_vectors`."""

    def query_vectors(self, query: EncodedText) -> np.ndarray:
        return query.vectors

    @abstractmethod
    def file_writers(
        self, ordered: list[StoredDocument], token_count: int, candidates: CandidateSettings
    ) -> dict[str, tuple[str, FileWriter]]:
        """This kind's data files (key: extension, writer) for the documents in slot order."""

    @abstractmethod
    def read(self, files: dict[str, Path], has_tokens: bool, candidates: CandidateSettings) -> dict[str, Any]:
        """Read this kind's files; returns the per-token arrays (memory-mapped), keyed by file."""

    @abstractmethod
    def fields(self, part: dict[str, Any]) -> TokenFields:
        """One document's stored tokens from its rows of the arrays `read` returned."""

    def candidate_token_count(self) -> int | None:
        """Tokens in the candidate structure, when it holds them one by one (checked against the manifest)."""
        return None


def concatenate(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)
