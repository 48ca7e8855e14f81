"""Compressed token vectors: nearest k-means centroid + product-quantised residual (ColBERTv2 style, with FAISS).

A 384-d unit token vector takes 768 bytes as bfloat16. Here it becomes a centroid id (2 bytes) and a residual code
of `pq_subvectors` bytes (48 by default: 8 dimensions per byte), 50 bytes in all. Decoding adds the residual back
to the centroid and renormalises, since every score is a cosine. The centroids double as the coarse lists that
generate candidates (`centroid_candidates.py`), so compression needs no second structure over the tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.settings import StorageSettings

MIN_TRAINING_TOKENS = 1024


def default_centroid_count(token_count: int, training_tokens: int = 262_144) -> int:
    """About 8 * sqrt(tokens), rounded to a power of two, between 64 and 65,536 (ids fit in uint16).

    Chosen on SciFact train (benchmarks/codec_choice.py): 8,192 centroids lost 1.2 nDCG@10 less than 2,048
    (2 * sqrt(tokens), the earlier default). Capped at one centroid per 32 training tokens, so k-means stays fed.
    """
    target = 8.0 * math.sqrt(max(token_count, 1))
    cap = max(64, training_tokens // 32)
    return int(min(65536, cap, max(64, 2 ** round(math.log2(target)))))


def centroid_id_dtype(n_centroids: int) -> np.dtype:
    return np.dtype(np.uint16) if n_centroids <= 65536 else np.dtype(np.int32)


@dataclass(frozen=True)
class CompressedTokens:
    """Codes of n tokens: centroid ids (n,) and residual codes (n, pq_subvectors) uint8."""

    centroid_ids: np.ndarray
    codes: np.ndarray

    def __len__(self) -> int:
        return len(self.centroid_ids)


class ResidualCodec:
    def __init__(
        self,
        centroids: np.ndarray,
        product_quantizer: faiss.ProductQuantizer,
        rotation: np.ndarray | None = None,
    ):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.product_quantizer = product_quantizer
        # Optional OPQ rotation (dim, dim), applied to residuals before PQ: it spreads their variance evenly over
        # the sub-vectors, which plain PQ assumes and untrained (non-ColBERT) token vectors do not give.
        self.rotation = None if rotation is None else np.ascontiguousarray(rotation, dtype=np.float32)
        # Centroids in the rotated space: search decodes there and rotates the query instead (`to_code_space`),
        # one (query tokens x dim x dim) product per query instead of one per decoded document token.
        self._code_space_centroids = self.centroids if rotation is None else self.centroids @ self.rotation
        self._assigner = faiss.IndexFlatIP(self.centroids.shape[1])
        self._assigner.add(self.centroids)

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def n_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def bytes_per_token(self) -> int:
        return int(self.product_quantizer.code_size) + centroid_id_dtype(self.n_centroids).itemsize

    @classmethod
    def train(
        cls,
        sample: np.ndarray,
        n_centroids: int,
        pq_subvectors: int,
        pq_bits: int = 8,
        seed: int = 1234,
        niter: int = 12,
        rotate: bool = False,
        rotation_iterations: int = 50,
    ) -> ResidualCodec:
        """Learn centroids and residual codebooks from a sample of unit token vectors (tokens, dim)."""
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        n_tokens, dim = sample.shape
        if n_tokens < MIN_TRAINING_TOKENS:
            raise ColBERTAttError(
                f"residual_pq storage needs at least {MIN_TRAINING_TOKENS} tokens to learn its codebooks, got "
                f"{n_tokens}. Index more text at once, or use vector format 'bfloat16' for a collection this small."
            )
        if dim % pq_subvectors:
            raise ColBERTAttError(f"pq_subvectors={pq_subvectors} must divide the vector dimension {dim}.")
        n_centroids = min(n_centroids, n_tokens // 4)
        # Spherical k-means: centroids stay on the unit sphere, where the token vectors are.
        kmeans = faiss.Kmeans(dim, n_centroids, niter=niter, seed=seed, spherical=True, min_points_per_centroid=1)
        kmeans.train(sample)
        codec_without_pq = cls(kmeans.centroids, faiss.ProductQuantizer(dim, pq_subvectors, pq_bits))
        residuals = np.ascontiguousarray(sample - codec_without_pq.centroids[codec_without_pq.assign(sample)])
        rotation = None
        if rotate:
            opq = faiss.OPQMatrix(dim, pq_subvectors)
            opq.niter = rotation_iterations  # FAISS's default, 50, is what benchmarks/codec_choice.py measured
            opq.pq = faiss.ProductQuantizer(dim, pq_subvectors, pq_bits)  # rotation learnt for these codebooks
            opq.train(residuals)
            # FAISS applies OPQ as y = x @ A.T with A (dim_out, dim_in) row-major.
            rotation = faiss.vector_to_array(opq.A).reshape(dim, dim).T.copy()
            residuals = residuals @ rotation
        # 2 ** pq_bits codewords per sub-vector; FAISS packs the codes bitwise (8 bits: one byte per sub-vector).
        product_quantizer = faiss.ProductQuantizer(dim, pq_subvectors, pq_bits)
        product_quantizer.cp.min_points_per_centroid = 1  # small samples are fine for the codebooks
        product_quantizer.cp.seed = seed
        product_quantizer.train(np.ascontiguousarray(residuals, dtype=np.float32))
        return cls(kmeans.centroids, product_quantizer, rotation)

    @classmethod
    def train_for(cls, storage: StorageSettings, sample: np.ndarray, n_centroids: int) -> ResidualCodec:
        """`train` with the codebook sizes and rotation that the index's storage settings ask for."""
        return cls.train(
            sample,
            n_centroids,
            storage.pq_subvectors,
            storage.pq_bits,
            rotate=storage.pq_rotation,
            rotation_iterations=storage.pq_rotation_iterations,
        )

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        _, nearest = self._assigner.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
        return nearest[:, 0]

    def encode(self, vectors: np.ndarray) -> CompressedTokens:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        nearest = self.assign(vectors)
        residuals = vectors - self.centroids[nearest]
        if self.rotation is not None:
            residuals = residuals @ self.rotation
        residuals = np.ascontiguousarray(residuals, dtype=np.float32)
        return CompressedTokens(
            centroid_ids=nearest.astype(centroid_id_dtype(self.n_centroids)),
            codes=self.product_quantizer.compute_codes(residuals),
        )

    def encode_each(self, token_vectors: list[np.ndarray]) -> list[CompressedTokens]:
        """Codes of several documents' tokens: one FAISS call for the whole batch, split back per document."""
        if not token_vectors:
            return []
        whole = self.encode(np.concatenate(token_vectors))
        bounds = np.cumsum([len(v) for v in token_vectors])[:-1]
        return [
            CompressedTokens(centroid_ids=ids, codes=codes)
            for ids, codes in zip(np.split(whole.centroid_ids, bounds), np.split(whole.codes, bounds), strict=True)
        ]

    def decode(self, centroid_ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Unit float32 vectors (n, dim) from their codes, in the encoder's space."""
        vectors = self.decode_in_code_space(centroid_ids, codes)
        return vectors if self.rotation is None else vectors @ self.rotation.T  # orthogonal: the transpose undoes it

    def decode_in_code_space(self, centroid_ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Unit vectors in the rotated space; their cosines with `to_code_space(q)` equal those of `decode` with q."""
        if len(codes) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._code_space_centroids[np.asarray(centroid_ids, dtype=np.int64)]
        vectors += self.product_quantizer.decode(np.ascontiguousarray(codes, dtype=np.uint8))
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def to_code_space(self, vectors: np.ndarray) -> np.ndarray:
        """Query (or any) vectors rotated like the residual codes, for scoring against `decode_in_code_space`."""
        vectors = np.asarray(vectors, dtype=np.float32)
        return vectors if self.rotation is None else _search_product(vectors, self.rotation)

    def centroid_similarity(self, query_vectors: np.ndarray) -> np.ndarray:
        """(query tokens, centroids) cosines: which centroid lists each query token probes."""
        return _search_product(np.asarray(query_vectors, dtype=np.float32), self.centroids.T)

    # ---- files ------------------------------------------------------------------------------------------------

    def write_codebooks(self, path: Path) -> None:
        """The residual codebooks; the centroids (and any rotation) are saved as plain .npy files beside them."""
        faiss.write_ProductQuantizer(self.product_quantizer, str(path))

    def file_writers(self) -> dict[str, tuple[str, Callable[[Path], None]]]:
        """Index files of this codec, by manifest key: (extension, writer)."""
        writers: dict[str, tuple[str, Callable[[Path], None]]] = {
            "codec_centroids": ("npy", lambda path: np.save(path, self.centroids)),
            "codec_pq": ("faiss", self.write_codebooks),
        }
        if self.rotation is not None:
            writers["codec_rotation"] = ("npy", lambda path: np.save(path, self.rotation))
        return writers

    @classmethod
    def read(cls, centroids_path: Path, codebook_path: Path, rotation_path: Path | None = None) -> ResidualCodec:
        rotation = None if rotation_path is None else np.load(rotation_path)
        return cls(np.load(centroids_path), faiss.read_ProductQuantizer(str(codebook_path)), rotation)


def _search_product(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """left @ right in torch, whose threads also score the candidates: numpy's OpenBLAS threads spin-wait after a
    product, and beside torch's they took the 2 cores from each other (100K pool at 2 threads: p95 120 ms, 40 ms
    with these products in torch)."""
    return (torch.from_numpy(np.ascontiguousarray(left)) @ torch.from_numpy(right)).numpy()


def prune_by_attention(weights: np.ndarray, fraction: float) -> np.ndarray:
    """Positions (sorted) of the tokens kept after dropping `fraction` of them with the lowest weight A.

    At least one token is always kept; ties keep the earlier token, so the result is deterministic.
    """
    n = len(weights)
    keep = max(1, n - math.floor(fraction * n + 1e-9))
    if keep >= n:
        return np.arange(n)
    order = np.argsort(-np.asarray(weights, dtype=np.float64), kind="stable")[:keep]
    return np.sort(order)
