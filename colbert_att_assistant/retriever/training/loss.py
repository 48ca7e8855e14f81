"""The differentiable score and the contrastive loss.

Score (arXiv 2603.25248, Eq. 2) on padded batches, every query against every document of the batch:

    S(Q, D) = sum_i exp(A_qi) * max_j cos(q_i, d_j) * exp(A_dw) ** delta,   d_w = argmax_j cos(q_i, d_j)

delta = 1 while training (as in the paper) unless `delta_length_words` is set; plain MaxSim sets every
exp(A) to 1. Only kept tokens count (padding and skipped punctuation are masked). The gradient reaches each
query token's best document token through its cosine (and through A when A is not detached).

Loss: cross-entropy of each query over all documents of the batch: its positive, the other queries'
positives (in-batch negatives) and every query's given hard negatives. Logits are S divided by
sum_i exp(A_qi) (the score if every cosine were 1 and A_dw = 0, so logits are on a cosine scale whatever the
query length) and by a temperature. A query's own given negatives can be down-weighted (a weight w adds
log w to their logits: they count w times in the softmax's denominator) when the source says they are partly
relevant (MedQuAD). Duplicated texts in a batch are encoded once, so a passage that two queries share is
never a negative for either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from colbert_att_assistant.retriever.training.config import TrainingScore
from colbert_att_assistant.retriever.training.data import TrainingExample
from colbert_att_assistant.retriever.training.model import PaddedEncoding


@dataclass
class BatchLayout:
    """The unique documents of a batch, each query's target column and the per-(query, document) log-weights."""

    queries: list[str]
    documents: list[str]
    targets: torch.Tensor  # (B,) long
    log_weights: torch.Tensor  # (B, N): 0, log w for down-weighted own negatives, -inf for dropped ones


def layout_batch(examples: list[TrainingExample]) -> BatchLayout:
    documents: list[str] = []
    column: dict[str, int] = {}
    for text in [e.positive for e in examples] + [n for e in examples for n in e.negatives]:
        if text not in column:
            column[text] = len(documents)
            documents.append(text)
    targets = [column[e.positive] for e in examples]
    log_weights = torch.zeros((len(examples), len(documents)), dtype=torch.float32)
    for row, example in enumerate(examples):
        if example.negative_weight >= 1.0:
            continue
        value = math.log(example.negative_weight) if example.negative_weight > 0 else float("-inf")
        for negative in example.negatives:
            if column[negative] != targets[row]:
                log_weights[row, column[negative]] = value
    return BatchLayout([e.query for e in examples], documents, torch.tensor(targets, dtype=torch.long), log_weights)


def late_interaction_scores(
    queries: PaddedEncoding,
    documents: PaddedEncoding,
    score: TrainingScore,
    delta_length_words: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S (B, N) for every query against every document, the normaliser sum_i exp(A_qi) (B,))."""
    similarity = torch.einsum("bqd,nld->bnql", queries.vectors, documents.vectors)
    similarity = similarity.masked_fill(~documents.keep[None, :, None, :], float("-inf"))
    best, best_token = similarity.max(dim=-1)  # (B, N, Lq): max_j cos(q_i, d_j) and d_w
    query_mask = queries.keep.to(best.dtype)
    if score is TrainingScore.COLBERT_ATT:
        query_factor = torch.exp(queries.weights) * query_mask
        n_docs = documents.weights.shape[0]
        doc_weights = documents.weights[torch.arange(n_docs, device=best.device)[None, :, None], best_token]
        if delta_length_words is None:
            doc_factor = torch.exp(doc_weights)
        else:
            delta = torch.clamp(documents.n_words / delta_length_words, max=1.0)
            doc_factor = torch.exp(doc_weights * delta[None, :, None])
        terms = best * doc_factor
    else:
        query_factor = query_mask
        terms = best
    scores = (terms * query_factor[:, None, :]).sum(dim=-1)
    return scores, query_factor.sum(dim=-1)


def contrastive_loss(
    scores: torch.Tensor, normaliser: torch.Tensor, layout: BatchLayout, temperature: float
) -> torch.Tensor:
    logits = scores / normaliser[:, None].clamp(min=1e-6) / temperature
    logits = logits + layout.log_weights.to(logits.device)
    return torch.nn.functional.cross_entropy(logits, layout.targets.to(logits.device))
