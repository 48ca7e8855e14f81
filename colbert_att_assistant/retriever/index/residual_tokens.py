"""Compressed token storage (vector format "residual_pq", `compression.py`): a centroid id and a product-quantised
residual per token; the centroids' document lists generate candidates (`centroid_candidates.py`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colbert_att_assistant.retriever.encoder import EncodedText
from colbert_att_assistant.retriever.errors import IndexCorruptError
from colbert_att_assistant.retriever.index.centroid_candidates import CentroidLists
from colbert_att_assistant.retriever.index.compression import (
    CompressedTokens,
    ResidualCodec,
    centroid_id_dtype,
    default_centroid_count,
)
from colbert_att_assistant.retriever.index.documents import StoredDocument
from colbert_att_assistant.retriever.index.storage import FileWriter, npy_rows_writer, npy_writer
from colbert_att_assistant.retriever.index.token_storage import TokenFields, TokenStorage
from colbert_att_assistant.retriever.settings import CandidateSettings

TOKEN_ARRAYS = ("centroid_ids", "codes", "weights", "token_ids")


class ResidualTokenStore(TokenStorage):
    format_name = "residual_pq"
    memory_mapped_files = frozenset(TOKEN_ARRAYS)

    codec: ResidualCodec | None = None
    centroid_lists: CentroidLists | None = None

    @property
    def candidate_kind(self) -> str | None:
        return "centroid_lists"

    @property
    def token_id_dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if self.vocabulary_size <= 65536 else np.dtype(np.int32)

    def train(self, sample_vectors: np.ndarray, n_centroids: int) -> None:
        """Learn the centroids and codebooks from `sample_vectors`; the codes of every later document use them."""
        self.codec = ResidualCodec.train_for(self.storage, sample_vectors, n_centroids)
        self.centroid_lists = CentroidLists.empty(self.codec.n_centroids)

    def train_on_first_batch(self, vectors: np.ndarray) -> None:
        """Train on (a fixed-seed sample of `storage.training_tokens` of) the first documents stored."""
        n_centroids = self.storage.centroids or default_centroid_count(len(vectors), self.storage.training_tokens)
        if len(vectors) > self.storage.training_tokens:
            rng = np.random.default_rng(1234)
            vectors = vectors[np.sort(rng.choice(len(vectors), self.storage.training_tokens, False))]
        self.train(vectors, n_centroids)

    def stored_tokens(self, encoded: list[EncodedText]) -> list[TokenFields]:
        if self.codec is None:
            self.train_on_first_batch(np.concatenate([item.vectors for item in encoded]))
        assert self.codec is not None
        codes = self.codec.encode_each([item.vectors for item in encoded])
        return [
            TokenFields(
                vectors=None,
                weights=item.weights.astype(np.float16),
                token_ids=item.token_ids.astype(self.token_id_dtype),
                compressed=compressed,
            )
            for item, compressed in zip(encoded, codes, strict=True)
        ]

    def added(
        self,
        documents: list[StoredDocument],
        every_document: Callable[[], list[StoredDocument]],
        token_count: int,
        candidates: CandidateSettings,
    ) -> None:
        assert self.centroid_lists is not None
        for document in documents:
            assert document.compressed is not None
            self.centroid_lists.add_document(document.compressed.centroid_ids, document.slot)

    def removed(self, slots: list[int]) -> None:
        if self.centroid_lists is not None:
            self.centroid_lists.remove(slots)

    def candidate_slots(
        self, query: EncodedText, allowed: np.ndarray | None, top_k: int, n_slots: int, settings: CandidateSettings
    ) -> np.ndarray | None:
        if self.codec is None or self.centroid_lists is None:
            return None
        allowed_mask = None
        if allowed is not None:
            allowed_mask = np.zeros(n_slots, dtype=bool)
            allowed_mask[allowed] = True
        centroid_similarity = self.codec.centroid_similarity(query.vectors)
        depth = max(settings.depth_for(compressed=True), top_k)
        nprobe = settings.centroid_nprobe
        for _ in range(3):
            slots = self.centroid_lists.candidates(centroid_similarity, nprobe, depth, allowed_mask)
            if len(slots) >= top_k:
                return slots
            nprobe *= 4  # too few documents in the probed lists (a selective filter): look further
        return None

    def token_vectors(self, documents: Sequence[StoredDocument]) -> torch.Tensor:
        """Decoded float32 vectors in the codec's space (scored against `query_vectors`)."""
        assert self.codec is not None
        compressed = [d.compressed for d in documents if d.compressed is not None]
        return torch.from_numpy(
            self.codec.decode_in_code_space(
                np.concatenate([c.centroid_ids for c in compressed]), np.concatenate([c.codes for c in compressed])
            )
        )

    def query_vectors(self, query: EncodedText) -> np.ndarray:
        return query.vectors if self.codec is None else self.codec.to_code_space(query.vectors)

    def file_writers(
        self, ordered: list[StoredDocument], token_count: int, candidates: CandidateSettings
    ) -> dict[str, tuple[str, FileWriter]]:
        """Token arrays are written document by document through memory maps: persisting an index loaded from
        disk never holds all of its codes in RAM."""
        if self.codec is None or self.centroid_lists is None:
            raise IndexCorruptError("A residual_pq index with no documents has no codebooks yet; add documents.")
        codec = self.codec
        offsets, list_slots = self.centroid_lists.arrays()
        token_arrays = {
            "centroid_ids": (centroid_id_dtype(codec.n_centroids), ()),
            "codes": (np.dtype(np.uint8), (int(codec.product_quantizer.code_size),)),
            "weights": (np.dtype(np.float16), ()),
            "token_ids": (self.token_id_dtype, ()),
        }

        def rows(key: str) -> FileWriter:
            dtype, tail = token_arrays[key]
            return npy_rows_writer(lambda: (_token_array(d, key) for d in ordered), token_count, dtype, tail)

        return {
            **codec.file_writers(),
            "list_offsets": ("npy", npy_writer(offsets, np.int64)),
            "list_slots": ("npy", npy_writer(list_slots, np.int32)),
            **{key: ("npy", rows(key)) for key in token_arrays},
        }

    def read(self, files: dict[str, Path], has_tokens: bool, candidates: CandidateSettings) -> dict[str, Any]:
        """Memory-map the compressed token arrays (read-only) and read the codebooks and centroid lists."""
        self.codec = ResidualCodec.read(files["codec_centroids"], files["codec_pq"], files.get("codec_rotation"))
        self.centroid_lists = CentroidLists(
            self.codec.n_centroids, np.load(files["list_offsets"]), np.load(files["list_slots"])
        )
        if not has_tokens:  # an empty array cannot be memory-mapped
            return {}
        return {key: np.load(files[key], mmap_mode="r") for key in TOKEN_ARRAYS}

    def fields(self, part: dict[str, Any]) -> TokenFields:
        compressed = None
        if part:
            compressed = CompressedTokens(centroid_ids=part["centroid_ids"], codes=part["codes"])
        return TokenFields(
            vectors=None,
            weights=part.get("weights", np.zeros(0, np.float32)),
            token_ids=part.get("token_ids", np.zeros(0, np.int32)),
            compressed=compressed,
        )


def _token_array(document: StoredDocument, key: str) -> np.ndarray:
    if key in ("codes", "centroid_ids"):
        assert document.compressed is not None
        return getattr(document.compressed, key)
    return getattr(document, key)
