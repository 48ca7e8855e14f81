"""The token importance `A` of ColBERT-Att, read from the encoder's self-attention maps.

The encoder runs with fused (SDPA) attention, which returns no attention maps. Instead of re-running it in
eager mode (about 3x slower on this CPU), the maps we need are recomputed from the hidden states that enter
each layer, with that layer's own query/key projections: softmax(Q K^T / sqrt(d) + mask). For the [CLS]
strategies only one row of each map is computed. `tests/test_attention.py` checks this equals the eager maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from colbert_att_assistant.retriever.settings import AttentionScaling, AttentionStrategy

# Feature kinds of `attention_features`, in their order: per layer and head, the [CLS] row, then received attention.
FEATURE_KINDS = ("cls", "received")


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


def _layer_head_attention(
    module: torch.nn.Module, hidden: torch.Tensor, key_mask: torch.Tensor, cls_row_only: bool
) -> torch.Tensor:
    """Attention probabilities (B, heads, Lq, L) of one layer, Lq = 1 for the [CLS] row only."""
    batch, length, _ = hidden.shape
    heads = module.num_attention_heads
    head_size = module.attention_head_size
    queries_in = hidden[:, :1] if cls_row_only else hidden
    query = module.query(queries_in).view(batch, -1, heads, head_size).transpose(1, 2)
    key = module.key(hidden).view(batch, length, heads, head_size).transpose(1, 2)
    scores = torch.matmul(query, key.transpose(-1, -2)) * (head_size**-0.5)
    scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1)


def _layer_attention(
    module: torch.nn.Module, hidden: torch.Tensor, key_mask: torch.Tensor, cls_row_only: bool
) -> torch.Tensor:
    """Head-averaged attention probabilities (B, Lq, L) of one layer, Lq = 1 for the [CLS] row only."""
    return _layer_head_attention(module, hidden, key_mask, cls_row_only).mean(dim=1)


def _reduce_to_token_weights(probs: torch.Tensor, row_mask: torch.Tensor, cls_row_only: bool) -> torch.Tensor:
    if cls_row_only:
        return probs[:, 0, :]
    # Attention received: mean over the rows of real (non-padding) tokens.
    rows = row_mask.to(probs.dtype)[:, :, None]
    return (probs * rows).sum(dim=1) / rows.sum(dim=1).clamp(min=1.0)


def attention_features(
    backbone: torch.nn.Module,
    hidden_states: tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor,
    attentions: tuple[torch.Tensor, ...] | None = None,
) -> torch.Tensor:
    """Per-token attention features (B, L, 2 * layers * heads), zero at padding.

    Feature k * layers * heads + layer * heads + head is, for kind k in FEATURE_KINDS, the attention the [CLS]
    token pays to the token in that layer and head, or the attention the token receives there (mean over the rows
    of real tokens). Every fixed strategy is a linear mix of these: cls_all is the mean of the first half.
    """
    key_mask = attention_mask.bool()
    modules = _self_attention_modules(backbone)
    layer_count = len(modules) if modules is not None else len(attentions or ())
    rows = key_mask.to(torch.float32)[:, None, :, None]
    cls_rows, received = [], []
    for layer_id in range(layer_count):
        if modules is not None:
            probs = _layer_head_attention(modules[layer_id], hidden_states[layer_id], key_mask, cls_row_only=False)
        elif attentions is not None:
            probs = attentions[layer_id]
        else:
            raise ValueError("This architecture needs eager attention maps (pass attentions=...).")
        probs = probs.float()
        cls_rows.append(probs[:, :, 0, :])
        received.append((probs * rows).sum(dim=2) / rows.sum(dim=2).clamp(min=1.0))
    features = torch.cat([torch.cat(cls_rows, dim=1), torch.cat(received, dim=1)], dim=1)  # (B, F, L)
    return features.transpose(1, 2).masked_fill(~key_mask[:, :, None], 0.0)


def token_attention_weights(
    backbone: torch.nn.Module,
    hidden_states: tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor,
    strategy: AttentionStrategy,
    scaling: AttentionScaling = AttentionScaling.RAW,
    temperature: float = 1.0,
    attentions: tuple[torch.Tensor, ...] | None = None,
    mix: Sequence[float] | None = None,
) -> torch.Tensor:
    """A for every token position (B, L); zero at padding.

    hidden_states: the backbone's output_hidden_states (embeddings first). attentions: eager attention maps,
    only for architectures whose layers cannot be recomputed here. mix: for the learned strategy, one weight per
    feature of `attention_features` (already divided by the mix's own temperature).
    """
    key_mask = attention_mask.bool()
    if strategy is AttentionStrategy.NONE:
        return torch.zeros(attention_mask.shape, dtype=torch.float32)
    if strategy is AttentionStrategy.LEARNED:
        if mix is None:
            raise ValueError("The learned attention strategy needs its mix (EncoderSettings.attention_mix).")
        features = attention_features(backbone, hidden_states, attention_mask, attentions)
        if features.shape[-1] != len(mix):
            raise ValueError(
                f"The attention mix has {len(mix)} weights but this encoder gives {features.shape[-1]} features "
                "(2 x layers x heads): the mix was learned for another architecture."
            )
        weights = features @ torch.tensor(list(mix), dtype=torch.float32)
        return _scaled(weights, key_mask, scaling, temperature)
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
    return _scaled(weights, key_mask, scaling, temperature)


def zero_special_tokens(weights: torch.Tensor, input_ids: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    """A = 0 (a factor exp(0) = 1 in Eq. 2) at the given special tokens."""
    if not special_ids:
        return weights
    return weights.masked_fill(torch.isin(input_ids, torch.tensor(list(special_ids))), 0.0)


def _scaled(
    weights: torch.Tensor, key_mask: torch.Tensor, scaling: AttentionScaling, temperature: float
) -> torch.Tensor:
    if scaling is AttentionScaling.BY_LENGTH:
        weights = weights * key_mask.sum(dim=1, keepdim=True).float()
    weights = weights / temperature
    return weights.masked_fill(~key_mask, 0.0)
