"""Exact token storage (vector format "bfloat16"): every token vector as bfloat16, and a FAISS token index whose
nearest neighbours of each query token name the candidate documents (`candidates.py`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colbert_att_assistant.retriever.encoder import EncodedText
from colbert_att_assistant.retriever.index.candidates import TokenCandidateIndex, choose_kind
from colbert_att_assistant.retriever.index.documents import StoredDocument
from colbert_att_assistant.retriever.index.storage import FileWriter, faiss_writer, npy_writer
from colbert_att_assistant.retriever.index.token_storage import TokenFields, TokenStorage, concatenate
from colbert_att_assistant.retriever.settings import CandidateSettings


class ExactTokenStore(TokenStorage):
    format_name = "bfloat16"
    memory_mapped_files = frozenset({"vectors"})

    candidates: TokenCandidateIndex | None = None

    @property
    def candidate_kind(self) -> str | None:
        return None if self.candidates is None else self.candidates.kind

    def stored_tokens(self, encoded: list[EncodedText]) -> list[TokenFields]:
        return [
            TokenFields(
                vectors=torch.from_numpy(item.vectors).to(torch.bfloat16),
                weights=item.weights.astype(np.float32),
                token_ids=item.token_ids.astype(np.int32),
                compressed=None,
            )
            for item in encoded
        ]

    def added(
        self,
        documents: list[StoredDocument],
        every_document: Callable[[], list[StoredDocument]],
        token_count: int,
        candidates: CandidateSettings,
    ) -> None:
        if self.candidates is None or self.candidates.kind != choose_kind(candidates, token_count):
            self.rebuild(every_document(), candidates)
            return
        # FAISS gets the stored (bfloat16-rounded) vectors, exactly what a rebuild would give it.
        self.candidates.add(self.token_vectors(documents).float().numpy(), _token_slots(documents))

    def rebuild(self, ordered: list[StoredDocument], candidates: CandidateSettings) -> None:
        vectors = self.token_vectors(ordered).float().numpy()
        self.candidates = TokenCandidateIndex.build(self.dim, candidates, vectors, _token_slots(ordered))

    def removed(self, slots: list[int]) -> None:
        if self.candidates is not None:
            self.candidates.remove(slots)

    def candidate_slots(
        self, query: EncodedText, allowed: np.ndarray | None, top_k: int, n_slots: int, settings: CandidateSettings
    ) -> np.ndarray | None:
        return self.candidate_slots_batch([query], allowed, top_k, n_slots, settings)[0]

    def candidate_slots_batch(
        self,
        queries: list[EncodedText],
        allowed: np.ndarray | None,
        top_k: int,
        n_slots: int,
        settings: CandidateSettings,
    ) -> list[np.ndarray | None]:
        """One FAISS search over every query token of the batch instead of one per query, split back per query.

        A query gets the candidates it gets alone up to float rounding: FAISS computes a large batch with BLAS, so
        similarities may differ in the last bits, which matters only where two neighbours or two documents'
        approximate scores tie to about 1e-6."""
        if self.candidates is None:
            return [None] * len(queries)
        vectors = np.concatenate([query.vectors for query in queries])
        similarities, slots = self.candidates.search(vectors, settings.tokens_per_query_token, allowed)
        bounds = np.cumsum([len(query.vectors) for query in queries])[:-1]
        per_query = zip(np.split(similarities, bounds), np.split(slots, bounds), strict=True)
        return [
            self._ranked_or_wider(query, *found, allowed, top_k, settings)
            for query, found in zip(queries, per_query, strict=True)
        ]

    def _ranked_or_wider(
        self,
        query: EncodedText,
        similarities: np.ndarray,
        slots: np.ndarray,
        allowed: np.ndarray | None,
        top_k: int,
        settings: CandidateSettings,
    ) -> np.ndarray | None:
        """The query's candidates from its neighbours; when they name fewer than top_k documents, it searches
        again alone with 4 and 16 times as many neighbours. None: even then fewer than top_k (a selective filter,
        or a tiny IVF probe), so every allowed document is scored."""
        assert self.candidates is not None
        neighbours, depth = settings.tokens_per_query_token, settings.depth_for(compressed=False)
        ranked = _approximate_ranking(similarities, slots, top_k, depth)
        for _ in range(2):
            if ranked is not None:
                break
            neighbours *= 4
            similarities, slots = self.candidates.search(query.vectors, neighbours, allowed)
            ranked = _approximate_ranking(similarities, slots, top_k, depth)
        return ranked

    def token_vectors(self, documents: Sequence[StoredDocument]) -> torch.Tensor:
        if not documents:
            return torch.zeros((0, self.dim), dtype=torch.bfloat16)
        return torch.cat([d.vectors for d in documents if d.vectors is not None])

    def file_writers(
        self, ordered: list[StoredDocument], token_count: int, candidates: CandidateSettings
    ) -> dict[str, tuple[str, FileWriter]]:
        if self.candidates is None:
            self.rebuild(ordered, candidates)
        assert self.candidates is not None
        return {
            "vectors": ("npy", npy_writer(self.token_vectors(ordered), np.int16)),
            "weights": ("npy", npy_writer(concatenate([d.weights for d in ordered], np.float32), np.float32)),
            "token_ids": ("npy", npy_writer(concatenate([d.token_ids for d in ordered], np.int32), np.int32)),
            "faiss": ("index", faiss_writer(self.candidates.index)),
        }

    def read(self, files: dict[str, Path], has_tokens: bool, candidates: CandidateSettings) -> dict[str, Any]:
        self.candidates = TokenCandidateIndex.read(files["faiss"], candidates.ivf_nprobe)
        if not has_tokens:
            return {}
        # Copy-on-write memory map: pages are read on demand, and torch can view them without a copy.
        return {
            "vectors": torch.from_numpy(np.load(files["vectors"], mmap_mode="c")).view(torch.bfloat16),
            "weights": np.load(files["weights"]),
            "token_ids": np.load(files["token_ids"]),
        }

    def fields(self, part: dict[str, Any]) -> TokenFields:
        return TokenFields(
            vectors=part.get("vectors"),
            weights=part.get("weights", np.zeros(0, np.float32)),
            token_ids=part.get("token_ids", np.zeros(0, np.int32)),
            compressed=None,
        )

    def candidate_token_count(self) -> int | None:
        return None if self.candidates is None else self.candidates.ntotal


def _token_slots(documents: list[StoredDocument]) -> np.ndarray:
    return np.repeat([d.slot for d in documents], [len(d.weights) for d in documents])


def _approximate_ranking(similarities: np.ndarray, slots: np.ndarray, top_k: int, depth: int) -> np.ndarray | None:
    """Up to max(depth, top_k) documents by approximate MaxSim from the retrieved tokens only (each query token's
    best retrieved match per document, summed), best first; None when fewer than top_k documents were retrieved.

    similarities, slots: (query tokens, neighbours) from FAISS, slot -1 where no token qualified."""
    found = slots >= 0
    unique_slots, column = np.unique(slots[found], return_inverse=True)
    if len(unique_slots) < top_k:
        return None
    best = np.zeros((len(slots), len(unique_slots)), dtype=np.float32)
    rows = np.broadcast_to(np.arange(len(slots))[:, None], slots.shape)[found]
    np.maximum.at(best, (rows, column), similarities[found])
    order = np.argsort(-best.sum(axis=0), kind="stable")[: max(depth, top_k)]
    return unique_slots[order]
