"""ColBERT-Att variants scored from what the default index already stores, so that they cost no re-encoding.

- `colbert_att_zero`: A = 0 at [CLS] / [SEP] and a checkpoint's markers (`EncoderSettings.special_token_attention
  = "zero"`), applied to the stored document weights and the query's weights by token id, which is what the encoder
  does with that setting.
- `colbert_att_pooled`: ColBERT-Att plus POOLED_WEIGHT x the cosine of the mean query and mean document token
  vectors (`score_batch(pooled_weight=...)`, the free dense signal).
- `colbert_att_zero_pooled`: both.

Each re-scores the documents the default ColBERT-Att search scored for the query (its top 100). Candidate
generation reads only token vectors, never A, so for a collection searched through candidates this is the set an
index built with the variant would score; for a collection small enough to be scored exhaustively it is the
default's top 100 rather than every document.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder, EncodedText
from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.index import MultiVectorIndex, StoredDocument
from colbert_att_assistant.retriever.scoring import CandidateBatch, ScoringMode, score_batch

# Chosen on the train side (SciFact train, the shared pairs, the knowledge base's calibration half) for most
# readings of A: benchmarks/RESULTS.md, "attention readings: ... dense fusion".
POOLED_WEIGHT = 0.1


class Variant(BaseModel):
    model_config = ConfigDict(frozen=True)

    zero_special_tokens: bool
    pooled_weight: float = 0.0


VARIANTS: dict[str, Variant] = {
    "colbert_att_zero": Variant(zero_special_tokens=True),
    "colbert_att_pooled": Variant(zero_special_tokens=False, pooled_weight=POOLED_WEIGHT),
    "colbert_att_zero_pooled": Variant(zero_special_tokens=True, pooled_weight=POOLED_WEIGHT),
}


def special_token_ids(encoder: ColBERTAttEncoder) -> np.ndarray:
    """The ids special_token_attention="zero" zeroes: [CLS], [SEP] and the checkpoint's query / document markers."""
    tokenizer = encoder.tokenizer
    info = encoder.checkpoint.info
    markers = [form for m in (info.query_marker, info.document_marker) if m for form in (m, m.strip())]
    ids = [tokenizer.cls_token_id, tokenizer.sep_token_id, *tokenizer.convert_tokens_to_ids(markers)]
    return np.array([i for i in ids if i is not None and i != tokenizer.unk_token_id], dtype=np.int64)


def _weights(weights: np.ndarray, token_ids: np.ndarray, zeroed: np.ndarray | None) -> np.ndarray:
    if zeroed is None:
        return np.asarray(weights, dtype=np.float32)
    return np.where(np.isin(token_ids, zeroed), 0.0, weights).astype(np.float32)


def rescore(
    index: MultiVectorIndex, query: EncodedText, document_ids: Sequence[str], variant: Variant, special: np.ndarray
) -> dict[str, float]:
    """{document id: the variant's score} for stored documents (exact bfloat16 storage)."""
    documents: list[StoredDocument] = [index.get(i) for i in document_ids if i in index]
    if not documents:
        return {}
    if any(d.vectors is None for d in documents):
        raise ColBERTAttError("The ColBERT-Att variants re-score stored bfloat16 vectors; this index is compressed.")
    zeroed = special if variant.zero_special_tokens else None
    batch = CandidateBatch(
        vectors=torch.cat([d.vectors for d in documents if d.vectors is not None]),
        weights=np.concatenate([_weights(d.weights, d.token_ids, zeroed) for d in documents]),
        lengths=np.array([len(d.weights) for d in documents]),
        n_words=np.array([d.n_words for d in documents]),
    )
    settings = index.settings
    scored = score_batch(
        query.vectors,
        _weights(query.weights, query.token_ids, zeroed),
        batch,
        ScoringMode.COLBERT_ATT,
        settings.delta_length_words,
        settings.fixed_delta,
        pooled_weight=variant.pooled_weight,
    )
    return {d.id: float(s) for d, s in zip(documents, scored.raw, strict=True)}


def variant_results(
    index: MultiVectorIndex,
    encoder: ColBERTAttEncoder,
    queries: dict[str, str],
    scored_by_default: dict[str, dict[str, float]],
    names: Sequence[str],
) -> dict[str, dict[str, dict[str, float]]]:
    """{variant: {query id: {document id: score}}}, each query encoded once for all variants."""
    special = special_token_ids(encoder)
    results: dict[str, dict[str, dict[str, float]]] = {name: {} for name in names}
    for qid, text in queries.items():
        query = encoder.encode_query(text)
        for name in names:
            scores = rescore(index, query, list(scored_by_default.get(qid, {})), VARIANTS[name], special)
            results[name][qid] = scores or {"__no_result__": 0.0}
    return results
