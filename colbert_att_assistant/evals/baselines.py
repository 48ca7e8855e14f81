"""The dense baseline for evaluation, over the same texts as the ColBERT-Att index: the encoder's mean-pooled
sentence embedding (how all-MiniLM-L6-v2 is meant to be used). Returns {document id: score} for the top k, the shape
`ranx.Run` takes. The BM25 baseline is `retriever/bm25.py` (training mines negatives with it too)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder


@torch.no_grad()
def mean_pooled_embeddings(encoder: ColBERTAttEncoder, texts: Sequence[str], max_tokens: int) -> np.ndarray:
    """Sentence embeddings: mean of the last hidden states over real tokens, L2-normalised (no projection)."""
    vectors = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), encoder.settings.batch_size):
        batch = [texts[i] for i in order[start : start + encoder.settings.batch_size]]
        tokens = encoder.tokenizer(batch, truncation=True, max_length=max_tokens, padding=True, return_tensors="pt")
        hidden = encoder.backbone(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        vectors.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    stacked = np.concatenate(vectors)
    result = np.empty_like(stacked)
    result[order] = stacked
    return result


class DenseBaseline:
    def __init__(self, encoder: ColBERTAttEncoder, ids: Sequence[str], texts: Sequence[str]):
        self.encoder = encoder
        self.ids = list(ids)
        self.matrix = mean_pooled_embeddings(encoder, texts, encoder.settings.document_max_tokens)

    def search(self, query: str, k: int) -> dict[str, float]:
        vector = mean_pooled_embeddings(self.encoder, [query], self.encoder.settings.query_max_tokens)[0]
        scores = self.matrix @ vector
        top = np.argsort(-scores)[:k]
        return {self.ids[i]: float(scores[i]) for i in top}
