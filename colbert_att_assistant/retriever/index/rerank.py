"""The exact re-ranking step every backend shares: score candidate documents with ColBERT-Att, keep the best, and
say which document token each query token matched."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from colbert_att_assistant.retriever.encoder import EncodedText
from colbert_att_assistant.retriever.index.documents import Candidates, SearchHit, StoredDocument, TokenMatch
from colbert_att_assistant.retriever.scoring import CandidateBatch, ScoredBatch, ScoringMode, score_batch
from colbert_att_assistant.retriever.settings import IndexSettings

# Documents scored at once: bounds the (query tokens x document tokens) similarity matrix of an exhaustive search.
SCORING_CHUNK = 1024

TokenVectors = Callable[[Sequence[StoredDocument]], torch.Tensor]


def score_documents(
    query_vectors: np.ndarray,
    query_weights: np.ndarray,
    documents: Sequence[StoredDocument],
    token_vectors: TokenVectors,
    mode: ScoringMode,
    settings: IndexSettings,
) -> ScoredBatch:
    """Exact scores of `documents`, in their order; `token_vectors` gives their vectors in the space of
    `query_vectors` (decoded from compressed storage, or as stored)."""
    return score_documents_for_queries([(query_vectors, query_weights)], documents, token_vectors, mode, settings)[0]


def score_documents_for_queries(
    queries: Sequence[tuple[np.ndarray, np.ndarray]],
    documents: Sequence[StoredDocument],
    token_vectors: TokenVectors,
    mode: ScoringMode,
    settings: IndexSettings,
) -> list[ScoredBatch]:
    """`score_documents` for each (query vectors, query weights) pair, in their order: each chunk of documents is
    read (and decoded) once for all the queries, which is what makes scoring a whole collection for many queries
    (an exhaustive evaluation) affordable on compressed storage."""
    parts: list[list[ScoredBatch]] = [[] for _ in queries]
    for start in range(0, len(documents), SCORING_CHUNK):
        chunk = documents[start : start + SCORING_CHUNK]
        batch = CandidateBatch(
            vectors=token_vectors(chunk),
            weights=np.concatenate([d.weights for d in chunk]),
            lengths=np.array([len(d.weights) for d in chunk]),
            n_words=np.array([d.n_words for d in chunk]),
        )
        for scored, (query_vectors, query_weights) in zip(parts, queries, strict=True):
            scored.append(
                score_batch(
                    query_vectors, query_weights, batch, mode, settings.delta_length_words, settings.fixed_delta
                )
            )
    return [_joined(scored) for scored in parts]


def _joined(parts: list[ScoredBatch]) -> ScoredBatch:
    if len(parts) == 1:
        return parts[0]
    return ScoredBatch(
        raw=np.concatenate([p.raw for p in parts]),
        normalised=np.concatenate([p.normalised for p in parts]),
        best_token=np.concatenate([p.best_token for p in parts]),
        best_similarity=np.concatenate([p.best_similarity for p in parts]),
    )


def rerank(
    query: EncodedText, candidates: Candidates, scored: ScoredBatch, top_k: int, explain: bool
) -> list[SearchHit]:
    """The `top_k` best-scored candidates as hits, best first (ties broken by `candidates.tie_break`)."""
    order = np.lexsort((candidates.tie_break, -scored.raw))[:top_k]
    hits = []
    for position in order:
        document = candidates.documents[int(position)]
        hits.append(
            SearchHit(
                id=document.id,
                score=float(scored.raw[position]),
                normalised_score=float(scored.normalised[position]),
                text=document.text,
                metadata=document.metadata,
                matches=token_matches(query, document, scored, int(position)) if explain else [],
            )
        )
    return hits


def token_matches(query: EncodedText, document: StoredDocument, scored: ScoredBatch, position: int) -> list[TokenMatch]:
    """For each query token, the document token that won its MaxSim (d_w), with both attention weights."""
    best = scored.best_token[position]
    return [
        TokenMatch(
            query_position=i,
            query_token_id=int(query.token_ids[i]),
            document_position=int(best[i]),
            document_token_id=int(document.token_ids[best[i]]),
            similarity=float(scored.best_similarity[position, i]),
            query_weight=float(query.weights[i]),
            document_weight=float(document.weights[best[i]]),
        )
        for i in range(len(query.token_ids))
    ]
