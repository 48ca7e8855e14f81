"""Fit a query-side and a document-side mix of attention features (and a temperature) with a contrastive loss
over cached pairs, the ColBERT-Att score (Eq. 2) as the ranking function."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from colbert_att_assistant.retriever.training.mix_scoring import MixWeights, PairSet, ndcg_at_10, pair_scores


@dataclass(frozen=True)
class MixTrainingSettings:
    steps: int = 300
    learning_rate: float = 0.05
    # Share of each side's mass spread evenly over all features at the start, so that every feature can grow.
    floor: float = 0.1
    # Softmax temperature of the loss over each query's candidates; scores are mean weighted cosines.
    loss_temperature: float = 0.02
    evaluate_every: int = 25


@dataclass
class _Groups:
    """Each query's pairs as a padded (Q, max pairs) index, and which of them are positives."""

    index: torch.Tensor
    valid: torch.Tensor
    positive: torch.Tensor


def _groups(pairs: PairSet) -> _Groups:
    counts = torch.bincount(pairs.pair_query, minlength=len(pairs.query_ids))
    width = int(counts.max())
    index = torch.zeros((len(pairs.query_ids), width), dtype=torch.long)
    valid = torch.zeros_like(index, dtype=torch.bool)
    order = torch.argsort(pairs.pair_query, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(order)) - starts[pairs.pair_query[order]]
    index[pairs.pair_query[order], slot] = order
    valid[pairs.pair_query[order], slot] = True
    positive = pairs.positive[index] & valid
    keep = positive.any(dim=1) & (positive != valid).any(dim=1)  # a positive and a negative to tell apart
    return _Groups(index[keep], valid[keep], positive[keep])


def contrastive_loss(pairs: PairSet, groups: _Groups, weights: MixWeights, temperature: float) -> torch.Tensor:
    logits = pair_scores(pairs, weights)[groups.index] / temperature
    everything = logits.masked_fill(~groups.valid, float("-inf")).logsumexp(dim=1)
    positives = logits.masked_fill(~groups.positive, float("-inf")).logsumexp(dim=1)
    return (everything - positives).mean()


def train_mix(
    train: Sequence[PairSet],
    validation: Sequence[PairSet],
    start: MixWeights,
    settings: MixTrainingSettings,
    log: list[dict] | None = None,
) -> MixWeights:
    """The mix with the best mean validation nDCG@10 seen while training (the start counts).

    Each side's weights are a convex mix (softmax of logits) of the features, times a shared learned scale (the
    inverse temperature): every fixed strategy is such a mix, and A stays within [0, scale], which keeps a few
    hundred parameters from memorising a few hundred queries through one huge exp(A).
    """
    floor = settings.floor / start.query.numel()

    def logits_of(weights: torch.Tensor) -> torch.Tensor:
        mass = weights / weights.sum().clamp(min=1e-12)
        return torch.log(mass * (1.0 - settings.floor) + floor).clone().requires_grad_(True)

    query_logits, document_logits = logits_of(start.query), logits_of(start.document)
    start_scale = start.scale * start.query.sum().clamp(min=1e-12)
    log_scale = torch.zeros((), requires_grad=True)
    parameters = [query_logits, document_logits, log_scale]
    optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate)
    groups = [_groups(s) for s in train]

    def current() -> MixWeights:
        return MixWeights(
            query_logits.softmax(dim=0),
            document_logits.softmax(dim=0),
            start_scale * torch.exp(log_scale),
            start.scaling,
        )

    def validate(step: int, loss: float) -> float:
        with torch.no_grad():
            weights = current()
            scores = {s.name: round(ndcg_at_10(s, pair_scores(s, weights)), 2) for s in validation}
        mean = sum(scores.values()) / max(len(scores), 1)
        if log is not None:
            log.append(
                {"step": step, "loss": round(loss, 4), "scale": round(float(weights.scale), 3), "validation": scores}
            )
        return mean

    best_score = validate(0, float("nan"))
    best = current()
    for step in range(1, settings.steps + 1):
        optimizer.zero_grad()
        weights = current()
        loss = sum(
            contrastive_loss(s, g, weights, settings.loss_temperature) for s, g in zip(train, groups, strict=True)
        )
        loss = loss / len(train)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if step % settings.evaluate_every == 0 or step == settings.steps:
            score = validate(step, float(loss.detach()))
            if score > best_score:
                best_score, best = score, current()
    return MixWeights(best.query.detach(), best.document.detach(), best.scale.detach(), best.scaling)
