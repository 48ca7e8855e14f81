"""Late-interaction scores: plain MaxSim and ColBERT-Att (arXiv 2603.25248, Eq. 2).

    S(Q, D) = sum_i exp(A_qi) * max_j cos(q_i, d_j) * exp(A_dw) ** delta
    d_w = argmax_j cos(q_i, d_j),   delta = min(1, doc_len_words / l)

The query-only and document-only variants drop one of the two weights, for ablations. Every function scores a
batch of candidate documents of different lengths at once: their token rows are concatenated, one matrix
product gives all similarities, and a padded index turns them into per-document maxima.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch


class ScoringMode(StrEnum):
    COLBERT_ATT = "colbert_att"
    MAXSIM = "maxsim"
    QUERY_WEIGHTED = "query_weighted"
    DOCUMENT_WEIGHTED = "document_weighted"

    @property
    def uses_query_weights(self) -> bool:
        return self in (ScoringMode.COLBERT_ATT, ScoringMode.QUERY_WEIGHTED)

    @property
    def uses_document_weights(self) -> bool:
        return self in (ScoringMode.COLBERT_ATT, ScoringMode.DOCUMENT_WEIGHTED)


@dataclass(frozen=True)
class CandidateBatch:
    """Token data of several documents, concatenated in document order.

    vectors (T, dim) float32 array or float32 / bfloat16 tensor, weights (T,), lengths (B,) tokens per document,
    n_words (B,) words per document.
    """

    vectors: np.ndarray | torch.Tensor
    weights: np.ndarray
    lengths: np.ndarray
    n_words: np.ndarray


@dataclass(frozen=True)
class ScoredBatch:
    """raw (B,) float64: S(Q, D); normalised (B,): S divided by its upper bound (every cosine = 1), clipped to [0, 1];
    best_token (B, n_query_tokens): index of d_w inside each document; best_similarity: its cosine."""

    raw: np.ndarray
    normalised: np.ndarray
    best_token: np.ndarray
    best_similarity: np.ndarray


def length_exponent(n_words: np.ndarray, length_words: float, fixed: bool) -> np.ndarray:
    """delta = min(1, doc_len / l), or 1 for every document when fixed."""
    if fixed:
        return np.ones(len(n_words), dtype=np.float32)
    return np.minimum(1.0, np.asarray(n_words, dtype=np.float32) / float(length_words))


def pooled_cosines(
    query: torch.Tensor, documents: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor
) -> torch.Tensor:
    """(B,) cosine of the query's mean token vector with each document's mean token vector: a dense embedding
    that costs nothing beyond the stored tokens."""
    pooled_query = torch.nn.functional.normalize(query.float().mean(dim=0), dim=0)
    sums = torch.zeros((len(lengths), documents.shape[1]), dtype=torch.float32)
    owner = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    sums.index_add_(0, owner, documents[: int(lengths.sum())].float())
    return torch.nn.functional.normalize(sums, dim=1) @ pooled_query


def score_batch(
    query_vectors: np.ndarray,
    query_weights: np.ndarray,
    candidates: CandidateBatch,
    mode: ScoringMode,
    length_words: float = 150.0,
    fixed_delta: bool = False,
    pooled_weight: float = 0.0,
) -> ScoredBatch:
    """Eq. 2 for every candidate. pooled_weight > 0 adds the free dense signal: pooled_weight x sum_i exp(A_qi) x
    the cosine of the mean query and mean document token vectors (scaled by the query's weight mass, so that the
    weight means the same for every query and mode)."""
    n_docs = len(candidates.lengths)
    n_query = len(query_vectors)
    if n_docs == 0:
        empty = np.zeros(0, dtype=np.float32)
        return ScoredBatch(empty, empty, np.zeros((0, n_query), dtype=np.int64), np.zeros((0, n_query), np.float32))

    q = torch.from_numpy(np.ascontiguousarray(query_vectors, dtype=np.float32))
    d = candidates.vectors
    d = d if isinstance(d, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32))
    # (n_query, T) cosines (unit vectors), in the storage precision: this only has to find d_w. A last column of
    # -inf is what the padding of shorter documents reads below, so no mask has to be applied to the padded matrix.
    similarity = q.to(d.dtype) @ d.T
    total = similarity.shape[1]
    similarity = torch.cat([similarity, similarity.new_full((n_query, 1), float("-inf"))], dim=1)

    lengths = torch.from_numpy(np.asarray(candidates.lengths, dtype=np.int64))
    starts = torch.cumsum(lengths, 0) - lengths
    max_len = int(lengths.max())
    positions = torch.arange(max_len)
    valid = positions[None, :] < lengths[:, None]  # (B, Lmax)
    columns = torch.where(valid, starts[:, None] + positions[None, :], total)
    padded = similarity[:, columns]  # (n_query, B, Lmax)
    # The first of tied maxima, as argmax gives it; max(dim) is several times faster than argmax on bfloat16.
    best_token = padded.max(dim=2).indices  # (n_query, B)
    winner_rows = starts[None, :] + best_token
    # The winners' cosines again in float32, so that scores carry no low-precision rounding.
    best_similarity = (d[winner_rows.reshape(-1)].float().view(n_query, n_docs, -1) * q[:, None, :]).sum(dim=2)

    # The weights' factors in float64: exp(A) of a length-scaled A (up to ~180 here) overflows float32 to inf.
    best_similarity = best_similarity.double()
    if mode.uses_query_weights:
        query_factor = torch.exp(torch.from_numpy(np.asarray(query_weights, dtype=np.float64)))
    else:
        query_factor = torch.ones(n_query, dtype=torch.float64)

    if mode.uses_document_weights:
        delta = torch.from_numpy(length_exponent(candidates.n_words, length_words, fixed_delta)).double()
        doc_weights = torch.from_numpy(np.asarray(candidates.weights, dtype=np.float64))
        winner_weights = doc_weights[winner_rows]  # (n_query, B): A of d_w
        doc_factor = torch.exp(winner_weights) ** delta[None, :]
        padded_weights = torch.cat([doc_weights, doc_weights.new_full((1,), float("-inf"))])[columns]
        doc_bound = torch.exp(padded_weights.max(dim=1).values) ** delta  # (B,)
    else:
        doc_factor = torch.ones_like(best_similarity)
        doc_bound = torch.ones(n_docs, dtype=torch.float64)

    raw = (query_factor[:, None] * best_similarity * doc_factor).sum(dim=0)
    upper = query_factor.sum() * doc_bound
    if pooled_weight:
        pooled = pooled_cosines(q, d, lengths, starts).double()
        raw = raw + pooled_weight * query_factor.sum() * pooled
        upper = upper + pooled_weight * query_factor.sum()
    normalised = (raw / upper).clamp(0.0, 1.0)
    return ScoredBatch(
        raw=raw.numpy(),  # float64: large weights must not overflow
        normalised=normalised.numpy().astype(np.float32),
        best_token=best_token.T.numpy(),
        best_similarity=best_similarity.T.numpy().astype(np.float32),
    )
