"""The attention weights recomputed from hidden states equal those read from eager attention maps."""

import pytest
import torch
from transformers import AutoModel

from colbert_att_assistant.retriever.attention import token_attention_weights
from colbert_att_assistant.retriever.checkpoint import bundled_model_path
from colbert_att_assistant.retriever.settings import AttentionScaling, AttentionStrategy


@pytest.fixture(scope="module")
def eager_and_fast():
    folder = bundled_model_path()
    eager = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    fast = AutoModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    return eager, fast


def reference_weights(attentions, mask, strategy):
    """The definitions, spelled out on eager maps (B, H, L, L): rows attend, columns are attended."""
    layers = attentions[-1:] if strategy.value.endswith("_last") else attentions
    per_layer = []
    for maps in layers:
        head_mean = maps.mean(dim=1)
        if strategy.value.startswith("cls"):
            per_layer.append(head_mean[:, 0, :])
        else:
            rows = mask.float()[:, :, None]
            per_layer.append((head_mean * rows).sum(1) / rows.sum(1))
    return torch.stack(per_layer).mean(0) * mask


@pytest.mark.parametrize(
    "strategy",
    [
        AttentionStrategy.CLS_LAST,
        AttentionStrategy.RECEIVED_LAST,
        AttentionStrategy.CLS_ALL,
        AttentionStrategy.RECEIVED_ALL,
    ],
)
def test_recomputed_attention_equals_eager_maps(eager_and_fast, encoder, strategy):
    eager, fast = eager_and_fast
    batch = encoder.tokenizer(
        ["How do I care for my calfskin wallet after it gets wet?", "Pearls: last on, first off."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        eager_out = eager(**batch, output_attentions=True)
        fast_out = fast(**batch, output_hidden_states=True)
    expected = reference_weights(eager_out.attentions, batch["attention_mask"], strategy)
    got = token_attention_weights(fast, fast_out.hidden_states, batch["attention_mask"], strategy)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # The fallback path for architectures we cannot recompute gives the same numbers from eager maps.
    from_maps = token_attention_weights(
        torch.nn.Module(),
        eager_out.hidden_states,
        batch["attention_mask"],
        strategy,
        attentions=eager_out.attentions,
    )
    torch.testing.assert_close(from_maps, expected, atol=1e-5, rtol=1e-4)


def test_cls_row_is_a_probability_distribution(eager_and_fast, encoder):
    _, fast = eager_and_fast
    batch = encoder.tokenizer(
        ["a short one", "a much longer sentence about silk twill scarves"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = fast(**batch, output_hidden_states=True)
    weights = token_attention_weights(fast, out.hidden_states, batch["attention_mask"], AttentionStrategy.CLS_LAST)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    assert torch.all(weights[batch["attention_mask"] == 0] == 0)
    scaled = token_attention_weights(
        fast,
        out.hidden_states,
        batch["attention_mask"],
        AttentionStrategy.CLS_LAST,
        AttentionScaling.BY_LENGTH,
        2.0,
    )
    lengths = batch["attention_mask"].sum(dim=1).float()
    torch.testing.assert_close(scaled.sum(dim=1), lengths / 2.0, atol=1e-4, rtol=0)
