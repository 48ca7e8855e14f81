"""Settings for the encoder and the index, as pydantic models (they are saved in index manifests)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator


class AttentionStrategy(StrEnum):
    """How the per-token attention weight `A` is read from the encoder's self-attention maps.

    cls_*: the attention the [CLS] token pays to each token (one row of the map, BM42 style).
    received_*: the attention each token receives from all tokens (column mean of the map).
    *_last: last layer only; *_all: averaged over all layers. Always averaged over heads.
    none: A = 0 for every token, which turns ColBERT-Att into plain MaxSim.
    learned: a learned linear mix of the per-layer, per-head [CLS]-row and received attention, one mix for
    queries and one for documents (`AttentionMix`, `python -m colbert_att_assistant.retriever.training.attention_mix`).
    """

    CLS_LAST = "cls_last"
    RECEIVED_LAST = "received_last"
    CLS_ALL = "cls_all"
    RECEIVED_ALL = "received_all"
    NONE = "none"
    LEARNED = "learned"


class AttentionScaling(StrEnum):
    """Raw A is a softmax mass (about 1/L per token), so exp(A) is close to 1 + 1/L.

    by_length multiplies A by the number of attended tokens, so that uniform attention gives A = 1.
    """

    RAW = "raw"
    BY_LENGTH = "by_length"


class AttentionMix(BaseModel):
    """A learned reading of A: A = (features . weights) / temperature, with features the per-layer, per-head
    attention of `colbert_att_assistant.retriever.attention.attention_features` ([CLS] row for every layer and head,
    then received
    attention), one weight vector for query tokens and one for document tokens.

    Saved beside a trained model as attention_mix.json and inside every index manifest that uses it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    query: tuple[float, ...]
    document: tuple[float, ...]
    temperature: float = Field(default=1.0, gt=0)
    note: str = Field(default="", description="Where the mix came from (training data, command).")

    @model_validator(mode="after")
    def _sizes(self) -> AttentionMix:
        expected = 2 * self.layers * self.heads
        for side in ("query", "document"):
            if len(getattr(self, side)) != expected:
                raise ValueError(
                    f"attention mix: {side} has {len(getattr(self, side))} weights, expected 2 x layers x heads = "
                    f"{expected}."
                )
        return self

    def side(self, is_query: bool) -> tuple[float, ...]:
        """The weights of one side, the temperature folded in."""
        weights = self.query if is_query else self.document
        return tuple(w / self.temperature for w in weights)

    @classmethod
    def from_strategy(cls, strategy: AttentionStrategy, layers: int, heads: int) -> AttentionMix:
        """The mix that reads A exactly as a fixed strategy does (same on both sides)."""
        per_kind = layers * heads
        weights = [0.0] * (2 * per_kind)
        kind = 0 if strategy in (AttentionStrategy.CLS_ALL, AttentionStrategy.CLS_LAST) else 1
        if strategy in (AttentionStrategy.CLS_ALL, AttentionStrategy.RECEIVED_ALL):
            chosen = range(per_kind)
        elif strategy in (AttentionStrategy.CLS_LAST, AttentionStrategy.RECEIVED_LAST):
            chosen = range((layers - 1) * heads, per_kind)
        elif strategy is AttentionStrategy.NONE:
            chosen = range(0)
        else:
            raise ValueError(f"{strategy.value} is not a fixed strategy.")
        for feature in chosen:
            weights[kind * per_kind + feature] = 1.0 / len(chosen)
        return cls(layers=layers, heads=heads, query=tuple(weights), document=tuple(weights), note=strategy.value)

    @classmethod
    def load(cls, path: str | Path) -> AttentionMix:
        try:
            return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ValueError(f"Attention mix file {path} does not exist.") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=1) + "\n", encoding="utf-8")


class EncoderSettings(BaseModel):
    """How text becomes token vectors and attention weights."""

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = Field(default=None, description="Model folder; None means the bundled all-MiniLM-L6-v2.")
    # Chosen on SciFact train among the ColBERT-Att (both-sides) variants: benchmarks/RESULTS.md, attention ablation.
    attention_strategy: AttentionStrategy = AttentionStrategy.CLS_ALL
    attention_scaling: AttentionScaling = AttentionScaling.RAW
    attention_temperature: float = Field(default=1.0, gt=0, description="A is divided by this.")
    special_token_attention: Literal["keep", "zero"] = Field(
        default="keep",
        description="zero: A = 0 at [CLS] and [SEP] (and a checkpoint's markers). The [CLS] row gives most of its "
        "mass to [CLS] itself (about 70% on the knowledge base), so the zero-shot reading mostly up-weights the "
        "[CLS]-[CLS] match (benchmarks/RESULTS.md, attention mass).",
    )
    attention_mix: AttentionMix | None = Field(
        default=None, description="The learned reading of A; required by, and only used with, strategy learned."
    )
    query_max_tokens: int = Field(default=32, ge=4, le=512, description="Word pieces, special tokens included.")
    document_max_tokens: int = Field(default=300, ge=8, le=512)
    skip_document_punctuation: bool = True
    query_expansion: bool | None = Field(
        default=None,
        description="Pad queries with [MASK] to query_max_tokens. None: only if the checkpoint was trained with it.",
    )
    query_precision: Literal["float32", "bfloat16"] = Field(
        default="float32",
        description="bfloat16 runs the query forward pass under autocast (faster on CPUs with AVX512-BF16); "
        "documents are always encoded in float32.",
    )
    batch_size: int = Field(default=32, ge=1, le=1024)
    num_threads: int | None = Field(default=None, ge=1, description="torch intra-op threads; None keeps torch's.")
    query_backend: Literal["auto", "torch", "torch_graph", "torch_traced", "onnxruntime", "onnxruntime_int8"] = Field(
        default="auto",
        description="How queries are encoded (documents always use torch): auto, onnxruntime where it applies "
        "(float32, a fixed reading of A, a BERT-like encoder) and torch elsewhere; torch, the reference path; "
        "torch_graph, one pass reusing the backbone's own attention projections; torch_traced, the same recorded with "
        "torch.jit.trace; onnxruntime / onnxruntime_int8, that graph in ONNX Runtime, float32 or int8 weights. "
        "Speed and equality to the reference (vectors within 5.4e-7, same nDCG@10, about half the time): "
        "benchmarks/RESULTS.md, query encoding.",
    )
    query_threads: int | None = Field(
        default=None, ge=1, description="Threads of the non-torch query backends; None: num_threads, else torch's."
    )

    @model_validator(mode="after")
    def _mix_with_learned(self) -> EncoderSettings:
        if self.attention_strategy is AttentionStrategy.LEARNED and self.attention_mix is None:
            raise ValueError("attention_strategy 'learned' needs attention_mix (an AttentionMix, e.g. from JSON).")
        return self

    def attention_mix_side(self, is_query: bool) -> tuple[float, ...] | None:
        """The learned mix's weights for one side, or None when A is read by a fixed strategy."""
        if self.attention_strategy is not AttentionStrategy.LEARNED or self.attention_mix is None:
            return None
        return self.attention_mix.side(is_query)


class CandidateSettings(BaseModel):
    """FAISS candidate generation before exact re-ranking.

    Defaults chosen on SciFact train (809 queries, benchmarks/RESULTS.md) by how often the top 10 equals that of an
    exhaustive search: 4-bit fast-scan codes with 128 neighbours per query token and a re-rank depth of 48 keep 93.4%
    of its top 10, about 1 ms sooner than 64 neighbours and depth 64 (93.2%), and 8-bit codes with 32 neighbours kept
    91.8%; nprobe 4 keeps about as much as 8 in less time. Settings that found a higher nDCG@10 on train with other
    top 10s (16 neighbours: 79% of the exhaustive top 10) lost it on test.
    """

    # An exactly scored candidate costs its whole token matrix, read and multiplied; more neighbours per query token
    # cost only a longer FAISS scan, and find the documents worth that cost more surely.
    EXACT_STORAGE_RERANK_DEPTH: ClassVar[int] = 48
    # Compressed storage draws its candidates from centroid lists instead, measured at the 100K pool with 64.
    COMPRESSED_STORAGE_RERANK_DEPTH: ClassVar[int] = 64

    model_config = ConfigDict(extra="forbid")

    faiss_kind: str = Field(default="auto", pattern="^(auto|flat|ivf)$")
    flat_max_tokens: int = Field(default=50_000, ge=1, description="auto picks IVF above this many tokens.")
    ivf_nlist: int | None = Field(default=None, ge=1, description="None: about 2*sqrt(tokens), power of two.")
    ivf_nprobe: int = Field(default=4, ge=1)
    ivf_codes: Literal["pq4_fastscan", "sq8"] = Field(
        default="pq4_fastscan",
        description="How the IVF index codes each token: product quantisation to 4-bit sub-vectors scanned with "
        "SIMD lookup tables (48 bytes per 384-d token), or 8-bit scalar quantisation (a byte per dimension: 384). "
        "Candidates only: final scores are exact either way.",
    )
    ivf_pq_subvectors: int | None = Field(
        default=None, ge=1, description="pq4_fastscan sub-vectors (half a byte each); None: dim / 4."
    )
    tokens_per_query_token: int = Field(default=128, ge=1, description="FAISS neighbours per query token.")
    rerank_depth: int | None = Field(
        default=None,
        ge=1,
        description="Candidates re-ranked with the exact score; None: 48 for bfloat16 token storage (FAISS "
        "candidates), 64 for compressed storage (centroid-list candidates).",
    )
    exact_below_documents: int = Field(
        default=512, ge=0, description="Collections (or filtered sets) this small are scored exhaustively."
    )
    centroid_nprobe: int = Field(
        default=4, ge=1, description="residual_pq storage: centroid lists probed per query token for candidates."
    )

    def depth_for(self, compressed: bool) -> int:
        """`rerank_depth`, or the default of the storage kind."""
        if self.rerank_depth is not None:
            return self.rerank_depth
        return self.COMPRESSED_STORAGE_RERANK_DEPTH if compressed else self.EXACT_STORAGE_RERANK_DEPTH


class VectorFormat(StrEnum):
    """How each document token vector is written down: exact bfloat16 numbers, or compressed to a centroid id and a
    product-quantised residual."""

    BFLOAT16 = "bfloat16"
    RESIDUAL_PQ = "residual_pq"


class StorageSettings(BaseModel):
    """How document token vectors are kept on disk (`retriever/index/compression.py`, `manifest.py`).

    bfloat16: 768 bytes per 384-d token, exact; candidates from a FAISS token index (small collections).
    residual_pq: ColBERTv2-style nearest k-means centroid + product-quantised residual (2 + pq_subvectors bytes
    per token); candidates from the centroid lists (PLAID style), final scores from the decoded vectors.
    """

    model_config = ConfigDict(extra="forbid")

    # Manifests written before this setting had its name call it "codec"; they load unchanged.
    vector_format: VectorFormat = Field(
        default=VectorFormat.BFLOAT16, validation_alias=AliasChoices("vector_format", "codec")
    )
    pq_subvectors: int = Field(default=48, ge=1, description="residual_pq: sub-vectors of the residual code.")
    pq_bits: int = Field(default=8, ge=4, le=12, description="residual_pq: bits per sub-vector code.")
    pq_rotation: bool = Field(
        default=True,
        description="residual_pq: learn an OPQ rotation of the residuals before product quantisation (chosen on "
        "SciFact train: decoded vectors closer, +0.4 nDCG@10 at 2,048 centroids; benchmarks/codec_choice.py).",
    )
    pq_rotation_iterations: int = Field(
        default=50, ge=1, le=500, description="residual_pq: OPQ training iterations (each re-learns the codebooks)."
    )
    centroids: int | None = Field(
        default=None,
        ge=16,
        le=65536,
        description="residual_pq: k-means centroids; None: about 8*sqrt(tokens) (compression.py).",
    )
    training_tokens: int = Field(
        default=262_144, ge=1024, description="residual_pq: token sample the centroids and codebooks learn from."
    )
    prune_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=0.9,
        description="Drop this fraction of each document's tokens, those with the lowest attention weight A.",
    )


class IndexSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    candidates: CandidateSettings = Field(default_factory=CandidateSettings)
    delta_length_words: float = Field(default=150.0, gt=0, description="l in delta = min(1, doc_len / l).")
    fixed_delta: bool = Field(default=False, description="Use delta = 1 for every document.")
