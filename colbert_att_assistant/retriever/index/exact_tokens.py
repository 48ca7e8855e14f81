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
        if self.candidates is None:
            return None
        neighbours = settings.tokens_per_query_token
        for _ in range(3):
            similarities, slots = self.candidates.search(query.vectors, neighbours, allowed)
            found = slots >= 0
            unique_slots, column = np.unique(slots[found], return_inverse=True)
            if len(unique_slots) >= top_k:
                break
            neighbours *= 4  # too few distinct documents among the neighbours: look further
        else:
            # Even a wider search found fewer than top_k documents (a selective filter, or a tiny IVF probe).
            return None
        # Approximate MaxSim from the retrieved tokens only: each query token's best retrieved match per document.
        best = np.zeros((len(query.vectors), len(unique_slots)), dtype=np.float32)
        rows = np.broadcast_to(np.arange(len(query.vectors))[:, None], slots.shape)[found]
        np.maximum.at(best, (rows, column), similarities[found])
        order = np.argsort(-best.sum(axis=0), kind="stable")[: max(settings.rerank_depth, top_k)]
        return unique_slots[order]

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
