"""The validation metric logged at each checkpoint: MRR@10 and nDCG@10 of each dev query's positive among its
candidates, scored with the search-time score (`scoring.score_batch`: Eq. 2 with delta = min(1, words / 150),
and plain MaxSim for comparison)."""

from __future__ import annotations

import math

import numpy as np
import torch

from colbert_att_assistant.retriever.scoring import CandidateBatch, ScoringMode, score_batch
from colbert_att_assistant.retriever.training.data import ValidationSet
from colbert_att_assistant.retriever.training.model import TrainableColBERT

ENCODE_BATCH = 32


def _encode_all(model: TrainableColBERT, texts: list[str], is_query: bool) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(vectors, weights, n_words) of the kept tokens of every text, encoded in length-sorted batches."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    encoded: list[tuple[np.ndarray, np.ndarray, int] | None] = [None] * len(texts)
    for start in range(0, len(order), ENCODE_BATCH):
        ids = order[start : start + ENCODE_BATCH]
        batch = model.encode([texts[i] for i in ids], is_query=is_query)
        vectors, weights, keep = batch.vectors.float().cpu(), batch.weights.float().cpu(), batch.keep.cpu()
        for row, i in enumerate(ids):
            mask = keep[row]
            encoded[i] = (vectors[row][mask].numpy(), weights[row][mask].numpy(), int(batch.n_words[row]))
    return [e for e in encoded if e is not None]


def _rank_metrics(ranks: list[int], prefix: str) -> dict[str, float]:
    reciprocal = [1.0 / r if r <= 10 else 0.0 for r in ranks]
    gains = [1.0 / math.log2(r + 1) if r <= 10 else 0.0 for r in ranks]
    return {
        f"{prefix}mrr@10": float(np.mean(reciprocal)),
        f"{prefix}ndcg@10": float(np.mean(gains)),
        f"{prefix}recall@1": float(np.mean([r == 1 for r in ranks])),
    }


@torch.no_grad()
def evaluate(model: TrainableColBERT, validation: ValidationSet, length_words: float = 150.0) -> dict[str, float]:
    """Metrics over the validation set; the model is put in eval mode for it and left as it was."""
    was_training = model.training
    model.eval()
    try:
        queries = _encode_all(model, validation.queries, is_query=True)
        documents = _encode_all(model, validation.documents, is_query=False)
    finally:
        model.train(was_training)
    metrics: dict[str, float] = {"queries": float(len(queries))}
    for mode, prefix in ((ScoringMode.COLBERT_ATT, ""), (ScoringMode.MAXSIM, "maxsim_")):
        ranks = []
        for (q_vectors, q_weights, _), candidates, positive in zip(
            queries, validation.candidates, validation.positives, strict=True
        ):
            docs = [documents[i] for i in candidates]
            batch = CandidateBatch(
                vectors=np.concatenate([d[0] for d in docs]),
                weights=np.concatenate([d[1] for d in docs]),
                lengths=np.array([len(d[1]) for d in docs]),
                n_words=np.array([d[2] for d in docs]),
            )
            raw = score_batch(q_vectors, q_weights, batch, mode, length_words=length_words).raw
            own = raw[candidates.index(positive)]
            # Ties count against the positive, so that a collapsed model cannot look good.
            ranks.append(int(np.sum(raw >= own)))
        metrics.update(_rank_metrics(ranks, prefix))
    return metrics
