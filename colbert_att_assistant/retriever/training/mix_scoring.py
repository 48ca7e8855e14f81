"""Eq. 2 over cached winners, with A a learnable mix of attention features; nDCG@10 of any reading of A.

    A_q = s * (F_q . w_q),  A_d = s * (F_d . w_d)   (times the attended length under by_length scaling)
    S(Q, D) = sum_i exp(A_qi) * cos_i * exp(A_dw(i)) ** delta

cos_i and d_w(i) come from the cache (they do not depend on A), so a step costs one product of the document
tokens' features with w_d and a gather, whatever the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ranx import Qrels, Run, evaluate

from colbert_att_assistant.retriever.settings import AttentionMix, AttentionScaling, AttentionStrategy
from colbert_att_assistant.retriever.training.attention_cache import CachedCollection

LENGTH_WORDS = 150.0


@dataclass
class PairSet:
    """The tensors of one cached collection restricted to some queries (and optionally to candidates only)."""

    name: str
    query_ids: list[str]
    qrels: dict[str, dict[str, int]]
    doc_ids: list[str]
    query_features: torch.Tensor  # (Q, Lq, F), zero beyond a query's tokens
    query_mask: torch.Tensor  # (Q, Lq)
    query_attended: torch.Tensor  # (Q,)
    doc_features: torch.Tensor  # (T, F), the document tokens that win some pair's query token
    doc_token_attended: torch.Tensor  # (T,): attended length of the token's document
    pair_query: torch.Tensor  # (P,) index into query_ids
    pair_doc: torch.Tensor  # (P,) index into doc_ids
    best_row: torch.Tensor  # (P, Lq): row of doc_features (0 beyond the query's tokens, masked by query_mask)
    best_cos: torch.Tensor  # (P, Lq)
    delta: torch.Tensor  # (P,)
    positive: torch.Tensor  # (P,) bool: judged relevant
    pooled_cos: torch.Tensor  # (P,): cosine of the means of the query's and the document's token vectors


def pair_set(
    cached: CachedCollection,
    query_ids: Sequence[str],
    candidates_only: bool,
    depth: int = 100,
    zero_special: bool = False,
) -> PairSet:
    """Pairs of the given queries: their top `depth` candidates (by MaxSim), plus, unless candidates_only, their
    judged positives found outside it. zero_special: A = 0 at [CLS] and [SEP] (each text's first and last kept
    token), as EncoderSettings.special_token_attention = "zero" reads it."""
    position = {qid: i for i, qid in enumerate(cached.query_ids)}
    wanted = np.array([position[q] for q in query_ids])
    selected = np.isin(cached.pair_query, wanted)
    # Rank of each pair among its query's candidates: pairs are stored in MaxSim order, candidates first.
    rank = np.zeros(len(cached.pair_query), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, cached.pair_query[1:] != cached.pair_query[:-1]])
    for start, end in zip(starts, [*starts[1:], len(rank)], strict=True):
        rank[start:end] = np.arange(end - start)
    keep = selected & ((cached.is_candidate & (rank < depth)) | (~cached.is_candidate & (not candidates_only)))
    remap = {old: new for new, old in enumerate(wanted)}
    pair_query = np.array([remap[q] for q in cached.pair_query[keep]], dtype=np.int64)
    pair_doc = cached.pair_doc[keep]

    q = cached.queries
    longest = cached.best_row.shape[1]
    features = np.zeros((len(wanted), longest, q.features.shape[1]), dtype=np.float32)
    mask = np.zeros((len(wanted), longest), dtype=bool)
    for new, old in enumerate(wanted):
        rows = q.features[q.offsets[old] : q.offsets[old + 1]]
        features[new, : len(rows)] = rows
        mask[new, : len(rows)] = True
    d = cached.docs
    doc_features = d.features.astype(np.float32)
    if zero_special:
        mask_rows = mask.sum(axis=1)
        features[:, 0] = 0.0
        features[np.arange(len(wanted)), mask_rows - 1] = 0.0
        doc_features[d.offsets[:-1]] = 0.0
        doc_features[d.offsets[1:] - 1] = 0.0
    token_doc = np.repeat(np.arange(len(d.attended)), np.diff(d.offsets))
    qrels = {qid: cached.qrels.get(qid, {}) for qid in query_ids}
    positive = np.array(
        [qrels[query_ids[qi]].get(cached.doc_ids[di], 0) > 0 for qi, di in zip(pair_query, pair_doc, strict=True)]
    )
    n_words = d.n_words[pair_doc].astype(np.float32)
    # Only the document tokens that win some query token matter: keep those rows, renumbered.
    best_row = np.clip(cached.best_row[keep], 0, None)
    used, compact = np.unique(best_row, return_inverse=True)
    best_row = compact.reshape(best_row.shape)
    return PairSet(
        name=cached.name,
        query_ids=list(query_ids),
        qrels=qrels,
        doc_ids=cached.doc_ids,
        query_features=torch.from_numpy(features),
        query_mask=torch.from_numpy(mask),
        query_attended=torch.from_numpy(q.attended[wanted].astype(np.float32)),
        doc_features=torch.from_numpy(doc_features[used]),
        doc_token_attended=torch.from_numpy(d.attended[token_doc[used]].astype(np.float32)),
        pair_query=torch.from_numpy(pair_query),
        pair_doc=torch.from_numpy(pair_doc),
        best_row=torch.from_numpy(best_row),
        best_cos=torch.from_numpy(cached.best_cos[keep]),
        delta=torch.from_numpy(np.minimum(1.0, n_words / LENGTH_WORDS)),
        positive=torch.from_numpy(positive),
        pooled_cos=torch.from_numpy((q.pooled[wanted][pair_query] * d.pooled[pair_doc]).sum(axis=1)),
    )


@dataclass
class MixWeights:
    """w_q, w_d (F,) and the scale s (1 / temperature); scaling is raw or by_length."""

    query: torch.Tensor
    document: torch.Tensor
    scale: torch.Tensor
    scaling: AttentionScaling = AttentionScaling.RAW

    @classmethod
    def from_mix(cls, mix: AttentionMix, scaling: AttentionScaling = AttentionScaling.RAW) -> MixWeights:
        return cls(
            torch.tensor(mix.query, dtype=torch.float32),
            torch.tensor(mix.document, dtype=torch.float32),
            torch.tensor(1.0 / mix.temperature),
            scaling,
        )

    @classmethod
    def fixed(cls, strategy: AttentionStrategy, layers: int, heads: int) -> MixWeights:
        return cls.from_mix(AttentionMix.from_strategy(strategy, layers, heads))

    def to_mix(self, layers: int, heads: int, note: str) -> AttentionMix:
        return AttentionMix(
            layers=layers,
            heads=heads,
            query=tuple(float(v) for v in self.query.detach()),
            document=tuple(float(v) for v in self.document.detach()),
            temperature=float(1.0 / self.scale.detach()),
            note=note,
        )


def pair_scores(
    pairs: PairSet, weights: MixWeights, query_side: bool = True, document_side: bool = True
) -> torch.Tensor:
    """Eq. 2 for every pair (P,), divided by sum_i exp(A_qi) (a per-query constant: rankings are unchanged, and
    scores stay on one scale for the loss)."""
    mask = pairs.query_mask.float()
    if query_side:
        a_query = (pairs.query_features @ weights.query) * weights.scale  # (Q, Lq)
        if weights.scaling is AttentionScaling.BY_LENGTH:
            a_query = a_query * pairs.query_attended[:, None]
        query_factor = torch.exp(a_query) * mask
    else:
        query_factor = mask
    query_factor = query_factor / query_factor.sum(dim=1, keepdim=True)
    if document_side:
        a_doc = (pairs.doc_features @ weights.document) * weights.scale  # (T,)
        if weights.scaling is AttentionScaling.BY_LENGTH:
            a_doc = a_doc * pairs.doc_token_attended
        doc_factor = torch.exp(a_doc[pairs.best_row] * pairs.delta[:, None])  # (P, Lq)
    else:
        doc_factor = torch.ones_like(pairs.best_cos)
    return (query_factor[pairs.pair_query] * pairs.best_cos * doc_factor).sum(dim=1)


def reciprocal_rank_fusion(pairs: PairSet, *scores: np.ndarray, k: int = 60) -> np.ndarray:
    """sum over the runs of 1 / (k + rank) within each query (rank from 1)."""
    fused = np.zeros(len(pairs.pair_query))
    query = pairs.pair_query.numpy()
    for values in scores:
        order = np.lexsort((-values, query))  # by query, best first
        rank = np.empty(len(order), dtype=np.int64)
        starts = np.r_[0, np.flatnonzero(np.diff(query[order])) + 1]
        positions = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        rank[order] = positions + 1
        fused += 1.0 / (k + rank)
    return fused


def ndcg_at_10(pairs: PairSet, scores: torch.Tensor | np.ndarray, extra: np.ndarray | None = None) -> float:
    """nDCG@10 (x100) of the pairs ranked by `scores` (+ extra), ranx, over queries with a judged document."""
    values = scores.detach().numpy() if isinstance(scores, torch.Tensor) else scores
    if extra is not None:
        values = values + extra
    run: dict[str, dict[str, float]] = {}
    for qi, di, value in zip(pairs.pair_query.tolist(), pairs.pair_doc.tolist(), values.tolist(), strict=True):
        run.setdefault(pairs.query_ids[qi], {})[pairs.doc_ids[di]] = float(value)
    judged = {q: r for q, r in pairs.qrels.items() if any(v > 0 for v in r.values())}
    for qid in judged:
        run.setdefault(qid, {"__no_result__": 0.0})
    return 100.0 * float(evaluate(Qrels(judged), Run({q: run[q] for q in judged}), "ndcg@10", make_comparable=True))
