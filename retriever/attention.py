"""The token importance `A` of ColBERT-Att, read from the encoder's self-attention maps.

The encoder runs with fused (SDPA) attention, which returns no attention maps. Instead of re-running it in
eager mode (about 3x slower on this CPU), the maps we need are recomputed from the hidden states that enter
each layer, with that layer's own query/key projections: softmax(Q K^T / sqrt(d) + mask). For the [CLS]
strategies only one row of each map is computed. `tests/test_attention.py` checks this equals the eager maps.
"""

from __future__ import annotations

import torch

from retriever.settings import AttentionScaling, AttentionStrategy


def _self_attention_modules(backbone: torch.nn.Module) -> list[torch.nn.Module] | None:
    """The per-layer self-attention modules of a BERT-like encoder, or None for other architectures."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if layers is None:
        return None
    modules = [getattr(getattr(layer, "attention", None), "self", None) for layer in layers]
    if any(m is None or not hasattr(m, "query") or not hasattr(m, "key") for m in modules):
        return None
    return modules


def supports_recomputed_attention(backbone: torch.nn.Module) -> bool:
    return _self_attention_modules(backbone) is not None


def _layer_attention(
    module: torch.nn.Module, hidden: torch.Tensor, key_mask: torch.Tensor, cls_row_only: bool
) -> torch.Tensor:
    """Head-averaged attention probabilities (B, Lq, L) of one layer, Lq = 1 for the [CLS] row only."""
    batch, length, _ = hidden.shape
    heads = module.num_attention_heads
    head_size = module.attention_head_size
    queries_in = hidden[:, :1] if cls_row_only else hidden
    query = module.query(queries_in).view(batch, -1, heads, head_size).transpose(1, 2)
    key = module.key(hidden).view(batch, length, heads, head_size).transpose(1, 2)
    scores = torch.matmul(query, key.transpose(-1, -2)) * (head_size**-0.5)
    scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1).mean(dim=1)


def _reduce_to_token_weights(probs: torch.Tensor, row_mask: torch.Tensor, cls_row_only: bool) -> torch.Tensor:
    if cls_row_only:
        return probs[:, 0, :]
    # Attention received: mean over the rows of real (non-padding) tokens.
    rows = row_mask.to(probs.dtype)[:, :, None]
    return (probs * rows).sum(dim=1) / rows.sum(dim=1).clamp(min=1.0)


def token_attention_weights(
    backbone: torch.nn.Module,
    hidden_states: tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor,
    strategy: AttentionStrategy,
    scaling: AttentionScaling = AttentionScaling.RAW,
    temperature: float = 1.0,
    attentions: tuple[torch.Tensor, ...] | None = None,
) -> torch.Tensor:
    """A for every token position (B, L); zero at padding.

    hidden_states: the backbone's output_hidden_states (embeddings first). attentions: eager attention maps,
    only for architectures whose layers cannot be recomputed here.
    """
    key_mask = attention_mask.bool()
    if strategy is AttentionStrategy.NONE:
        return torch.zeros(attention_mask.shape, dtype=torch.float32)
    cls_row_only = strategy in (AttentionStrategy.CLS_LAST, AttentionStrategy.CLS_ALL)
    last_only = strategy in (AttentionStrategy.CLS_LAST, AttentionStrategy.RECEIVED_LAST)

    modules = _self_attention_modules(backbone)
    layer_count = len(modules) if modules is not None else len(attentions or ())
    layer_ids = [layer_count - 1] if last_only else list(range(layer_count))
    per_layer = []
    for layer_id in layer_ids:
        if modules is not None:
            probs = _layer_attention(modules[layer_id], hidden_states[layer_id], key_mask, cls_row_only)
        elif attentions is not None:
            maps = attentions[layer_id].mean(dim=1)
            probs = maps[:, :1] if cls_row_only else maps
        else:
            raise ValueError("This architecture needs eager attention maps (pass attentions=...).")
        per_layer.append(_reduce_to_token_weights(probs, key_mask, cls_row_only))
    weights = torch.stack(per_layer).mean(dim=0).float()

    if scaling is AttentionScaling.BY_LENGTH:
        weights = weights * key_mask.sum(dim=1, keepdim=True).float()
    weights = weights / temperature
    return weights.masked_fill(~key_mask, 0.0)
