"""The query forward pass as one graph: token vectors and raw attention weights A from a single backbone call.

The reference path (`ColBERTAttEncoder._forward`) runs the backbone, then recomputes each layer's query and key
projections from its input hidden states to read A (`retriever/attention.py`). Here forward hooks keep the
projections the backbone already computed, so nothing is computed twice and no hidden states are returned.
`QueryGraph` is a plain `torch.nn.Module`, so it runs as is in torch, or exported to ONNX for ONNX Runtime
(`retriever/onnx_query.py`). Only BERT-like backbones (per-layer `attention.self.query` / `.key`) qualify.
"""

from __future__ import annotations

import threading

import torch

from colbert_att_assistant.retriever.attention import _self_attention_modules
from colbert_att_assistant.retriever.settings import AttentionStrategy


def supports_query_graph(backbone: torch.nn.Module) -> bool:
    return _self_attention_modules(backbone) is not None


class QueryGraph(torch.nn.Module):
    """(input_ids, attention_mask) -> (unit token vectors (B, L, D), raw A (B, L) before scaling and masking).

    Raw A equals `token_attention_weights(..., scaling=RAW, temperature=1)` before its final padding mask:
    the head-averaged attention row of [CLS] (cls_*) or the mean row over real tokens (received_*), averaged
    over all layers (*_all) or taken from the last one (*_last); zeros for `none`.
    """

    def __init__(
        self, backbone: torch.nn.Module, projection: torch.nn.Module | None, strategy: AttentionStrategy
    ) -> None:
        super().__init__()
        modules = _self_attention_modules(backbone)
        if modules is None:
            raise ValueError("QueryGraph needs a BERT-like backbone (attention.self.query / .key per layer).")
        self.backbone = backbone
        self.projection = projection
        self.strategy = strategy
        self.heads = int(modules[0].num_attention_heads)
        self.head_size = int(modules[0].attention_head_size)
        last_only = strategy in (AttentionStrategy.CLS_LAST, AttentionStrategy.RECEIVED_LAST)
        self.layer_ids = [len(modules) - 1] if last_only else list(range(len(modules)))
        self.cls_row_only = strategy in (AttentionStrategy.CLS_LAST, AttentionStrategy.CLS_ALL)
        self._attention_modules = modules
        # The projections one forward call captures, per thread: the backbone is shared with the reference
        # path, and a document batch encoded meanwhile in another thread must not overwrite a query's.
        self._local = threading.local()

    def _capture(self, layer_id: int, name: str):
        def hook(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            captured = getattr(self._local, "captured", None)
            if captured is not None:
                captured[(layer_id, name)] = output

        return hook

    def _layer_rows(self, layer_id: int, key_mask: torch.Tensor) -> torch.Tensor:
        """Head-averaged attention rows (B, L) of one layer, from the projections the backbone computed."""
        query = self._local.captured[(layer_id, "query")]
        key = self._local.captured[(layer_id, "key")]
        batch, length, _ = key.shape
        if self.cls_row_only:
            query = query[:, :1]
        query = query.reshape(batch, -1, self.heads, self.head_size).transpose(1, 2)
        key = key.reshape(batch, length, self.heads, self.head_size).transpose(1, 2)
        scores = torch.matmul(query, key.transpose(-1, -2)) * (self.head_size**-0.5)
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1).mean(dim=1)  # (B, Lq, L)
        if self.cls_row_only:
            return probs[:, 0, :]
        rows = key_mask.to(probs.dtype)[:, :, None]
        return (probs * rows).sum(dim=1) / rows.sum(dim=1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        needs_rows = self.strategy is not AttentionStrategy.NONE
        handles = []
        self._local.captured = {}
        if needs_rows:
            for layer_id in self.layer_ids:
                module = self._attention_modules[layer_id]
                handles.append(module.query.register_forward_hook(self._capture(layer_id, "query")))
                handles.append(module.key.register_forward_hook(self._capture(layer_id, "key")))
        try:
            output = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            )
            hidden = output.last_hidden_state
            if self.projection is not None:
                hidden = self.projection(hidden)
            vectors = torch.nn.functional.normalize(hidden.float(), p=2, dim=-1)
            if needs_rows:
                key_mask = attention_mask.bool()
                per_layer = [self._layer_rows(layer_id, key_mask) for layer_id in self.layer_ids]
                weights = torch.stack(per_layer).mean(dim=0).float()
            else:
                weights = torch.zeros(input_ids.shape, dtype=torch.float32)
        finally:
            for handle in handles:
                handle.remove()
            self._local.captured = None
        return vectors, weights


class TorchGraphRunner:
    """Runs `QueryGraph` in torch under inference mode; `traced` records it once with torch.jit.trace, which
    drops the Python of every layer from each call (the recorded graph keeps any length and batch size)."""

    def __init__(self, graph: QueryGraph, traced: bool = False) -> None:
        self.graph = graph.eval()
        self.traced = traced
        self._module: torch.nn.Module | torch.jit.ScriptModule = self.graph
        if traced:
            # Two rows of different real lengths, so that neither the batch size nor the padding is baked in.
            example_ids = torch.full((2, 8), 101, dtype=torch.long)
            example_mask = torch.ones((2, 8), dtype=torch.long)
            example_mask[1, 5:] = 0
            with torch.inference_mode(False), torch.no_grad():
                self._module = torch.jit.trace(self.graph, (example_ids, example_mask), check_trace=False)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.traced:
            # A traced module may not run inside inference mode; no_grad is what it needs.
            with torch.no_grad():
                return self._module(input_ids, attention_mask)
        with torch.inference_mode():
            return self._module(input_ids, attention_mask)
