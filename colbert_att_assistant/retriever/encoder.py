"""One forward pass per text gives every token's L2-normalised vector and its attention weight A."""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from colbert_att_assistant.retriever.attention import (
    supports_recomputed_attention,
    token_attention_weights,
    zero_special_tokens,
)
from colbert_att_assistant.retriever.checkpoint import LoadedCheckpoint, load_checkpoint, resolve_model_path
from colbert_att_assistant.retriever.errors import ColBERTAttError, InvalidDocumentError, InvalidQueryError
from colbert_att_assistant.retriever.query_graph import QueryGraph, TorchGraphRunner, supports_query_graph
from colbert_att_assistant.retriever.settings import AttentionScaling, AttentionStrategy, EncoderSettings

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class EncodedText:
    """The kept tokens of one text: vectors (n, dim) float32 unit length, weights A (n,), token ids (n,)."""

    vectors: np.ndarray
    weights: np.ndarray
    token_ids: np.ndarray
    n_words: int
    truncated: bool
    # Other ways of reading A, keyed "strategy/scaling", when asked for (attention ablations).
    variant_weights: dict[str, np.ndarray] = field(default_factory=dict)


WeightVariant = tuple[AttentionStrategy, AttentionScaling]
# (input_ids, attention_mask) -> (unit token vectors, raw A): `QueryGraph` in torch or in ONNX Runtime.
QueryRunner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def variant_key(strategy: AttentionStrategy, scaling: AttentionScaling) -> str:
    return f"{strategy.value}/{scaling.value}"


@dataclass
class _Tokenized:
    input_ids: list[int]
    keep: list[bool]
    n_words: int
    truncated: bool
    # (start, end) characters of each input id in the text; (0, 0) for special and marker tokens.
    offsets: list[tuple[int, int]] = field(default_factory=list)


def _is_punctuation(token: str) -> bool:
    stripped = token.removeprefix("##")
    return bool(stripped) and all(
        unicodedata.category(char).startswith("P") or char in "$+<=>^`|~" for char in stripped
    )


class ColBERTAttEncoder:
    """Encodes queries and documents into token vectors and ColBERT-Att attention weights."""

    def __init__(self, settings: EncoderSettings | None = None, checkpoint: LoadedCheckpoint | None = None):
        self.settings = settings or EncoderSettings()
        self.checkpoint = checkpoint or load_checkpoint(self.settings.model_path)
        _, self.model_name = resolve_model_path(self.settings.model_path)
        if self.settings.num_threads is not None:
            torch.set_num_threads(self.settings.num_threads)
        info = self.checkpoint.info
        self.tokenizer = self.checkpoint.tokenizer
        self.backbone = self.checkpoint.backbone
        self.projection = self.checkpoint.projection
        if not supports_recomputed_attention(self.backbone):
            # Attention maps must then come from the model itself.
            self.backbone.set_attn_implementation("eager")
        self.query_expansion = (
            info.query_expansion if self.settings.query_expansion is None else self.settings.query_expansion
        )
        self._query_marker_id = self._marker_id(info.query_marker)
        self._document_marker_id = self._marker_id(info.document_marker)
        vocab_tokens = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self._punctuation_ids = {i for i, tok in enumerate(vocab_tokens) if tok and _is_punctuation(tok)}
        self.query_backend = self._resolved_query_backend()
        self._check_query_backend()
        # Built on the first query (an ONNX export takes seconds), once even when threads ask at the same time.
        self._query_runner: QueryRunner | None = None
        self._query_runner_lock = threading.Lock()

    @property
    def weights_sha256(self) -> str:
        return self.checkpoint.weights_sha256

    @property
    def dim(self) -> int:
        if self.projection is not None:
            return int(self.projection.out_features)
        return int(self.backbone.config.hidden_size)

    def _marker_id(self, marker: str | None) -> int | None:
        if not marker:
            return None
        for candidate in (marker, marker.strip()):
            token_id = self.tokenizer.convert_tokens_to_ids(candidate)
            if token_id is not None and token_id != self.tokenizer.unk_token_id:
                return int(token_id)
        raise InvalidDocumentError(f"Marker token {marker!r} of the checkpoint is not in its tokenizer vocabulary.")

    # ---- tokenisation -------------------------------------------------------------------------------------

    def _tokenize(
        self, texts: Sequence[str], max_tokens: int, marker_id: int | None, is_query: bool
    ) -> list[_Tokenized]:
        budget = max_tokens - (1 if marker_id is not None else 0)
        batch = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=budget,
            return_offsets_mapping=True,
            add_special_tokens=True,
        )
        special_ids = set(self.tokenizer.all_special_ids)
        result = []
        for text, ids, offsets in zip(texts, batch["input_ids"], batch["offset_mapping"], strict=True):
            last_end = max((end for _, end in offsets), default=0)
            truncated = bool(text[last_end:].strip())
            offsets = [tuple(span) for span in offsets]
            if marker_id is not None:
                ids = [ids[0], marker_id, *ids[1:]]
                offsets = [offsets[0], (0, 0), *offsets[1:]]
            skip_punctuation = self.settings.skip_document_punctuation and not is_query
            keep = [not (skip_punctuation and tid in self._punctuation_ids and tid not in special_ids) for tid in ids]
            result.append(_Tokenized(list(ids), keep, len(text[:last_end].split()), truncated, offsets))
        return result

    # ---- the faster query backends -----------------------------------------------------------------------

    def _resolved_query_backend(self) -> str:
        """The configured query backend; for "auto", ONNX Runtime wherever it gives the reference's vectors (float32,
        a fixed reading of A, a BERT-like encoder, the packages installed), else torch."""
        backend = self.settings.query_backend
        if backend != "auto":
            return backend
        from colbert_att_assistant.retriever.onnx_query import onnx_export_available

        fits = (
            self.settings.query_precision == "float32"
            and self.settings.attention_strategy is not AttentionStrategy.LEARNED
            and supports_query_graph(self.backbone)
        )
        return "onnxruntime" if fits and onnx_export_available() else "torch"

    def _check_query_backend(self) -> None:
        backend = self.query_backend
        if backend == "torch":
            return
        if self.settings.query_precision != "float32":
            raise ColBERTAttError(f"query_backend {backend!r} runs in float32: set query_precision to 'float32'.")
        if self.settings.attention_strategy is AttentionStrategy.LEARNED:
            raise ColBERTAttError(f"query_backend {backend!r} reads fixed strategies only; 'learned' needs 'torch'.")
        if not supports_query_graph(self.backbone):
            raise ColBERTAttError(
                f"query_backend {backend!r} needs a BERT-like encoder (per-layer query/key projections); "
                "use query_backend 'torch' for this checkpoint."
            )

    def prepare_query_backend(self) -> None:
        """Build the query backend now (for ONNX Runtime, export the graph if this machine has not yet: about 2 s),
        instead of on the first query, which a server's first client would wait for."""
        self._runner()

    def _runner(self) -> QueryRunner | None:
        """The graph backend's runner, built once; None for the torch path. "auto" takes that path, with a warning,
        when it cannot build ONNX Runtime's (an unwritable cache folder, a failed export) instead of failing."""
        if self._query_runner is not None or self.query_backend == "torch":
            return self._query_runner
        with self._query_runner_lock:
            if self._query_runner is None and self.query_backend != "torch":
                try:
                    self._query_runner = self._build_query_runner()
                except Exception as error:
                    if self.settings.query_backend != "auto":
                        raise
                    logger.warning(
                        "Queries are encoded with torch: the ONNX Runtime encoder failed to build (%s).", error
                    )
                    self.query_backend = "torch"
            return self._query_runner

    def _build_query_runner(self) -> QueryRunner:
        backend = self.query_backend
        graph = QueryGraph(self.backbone, self.projection, self.settings.attention_strategy)
        if backend in ("torch_graph", "torch_traced"):
            return TorchGraphRunner(graph, traced=backend == "torch_traced")
        from colbert_att_assistant.retriever.onnx_query import OnnxQueryRunner, cached_query_model

        precision = "int8" if backend == "onnxruntime_int8" else "float32"
        path = cached_query_model(graph, self.weights_sha256, precision)
        threads = self.settings.query_threads or self.settings.num_threads or torch.get_num_threads()
        return OnnxQueryRunner(path, threads)

    def _forward_query_graph(self, items: list[_Tokenized], runner: QueryRunner) -> list[EncodedText]:
        """Queries through the graph backend: the reference's inputs, outputs and post-processing, one pass."""
        input_ids, attention_mask, keep = self._batch_tensors(items, is_query=True)
        vectors, raw = runner(input_ids, attention_mask)
        key_mask = attention_mask.bool()
        weights = raw.float()
        if self.settings.attention_scaling is AttentionScaling.BY_LENGTH:
            weights = weights * key_mask.sum(dim=1, keepdim=True).float()
        weights = (weights / self.settings.attention_temperature).masked_fill(~key_mask, 0.0)
        weights = self._special_zeroed(weights, input_ids)
        return [
            EncodedText(
                vectors=vectors[row][keep[row]].numpy(),
                weights=weights[row][keep[row]].numpy(),
                token_ids=input_ids[row][keep[row]].numpy().astype(np.int32),
                n_words=item.n_words,
                truncated=item.truncated,
            )
            for row, item in enumerate(items)
        ]

    # ---- forward ------------------------------------------------------------------------------------------

    def _special_zeroed(self, weights: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """EncoderSettings.special_token_attention = "zero": A = 0 at [CLS], [SEP] and the checkpoint's markers."""
        if self.settings.special_token_attention == "keep":
            return weights
        special = [self.tokenizer.cls_token_id, self.tokenizer.sep_token_id]
        special += [self._query_marker_id, self._document_marker_id]
        return zero_special_tokens(weights, input_ids, [i for i in special if i is not None])

    def _batch_tensors(
        self, items: list[_Tokenized], is_query: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask and the kept-token mask of a padded batch (queries [MASK]-expanded)."""
        expand = is_query and self.query_expansion
        length = self.settings.query_max_tokens if expand else max(len(item.input_ids) for item in items)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)
        keep = torch.zeros((len(items), length), dtype=torch.bool)
        for row, item in enumerate(items):
            n = len(item.input_ids)
            input_ids[row, :n] = torch.tensor(item.input_ids)
            attention_mask[row, :n] = 1
            keep[row, :n] = torch.tensor(item.keep)
            if expand and n < length:
                # Query augmentation: [MASK] tokens are kept as query vectors; whether the model attends to
                # them follows the checkpoint's training.
                input_ids[row, n:] = self.tokenizer.mask_token_id
                keep[row, n:] = True
                if self.checkpoint.info.attend_to_expansion_tokens:
                    attention_mask[row, n:] = 1
        return input_ids, attention_mask, keep

    @torch.no_grad()
    def _forward(
        self, items: list[_Tokenized], is_query: bool, variants: Sequence[WeightVariant] = ()
    ) -> list[EncodedText]:
        runner = self._runner() if is_query and not variants else None
        if runner is not None:
            return self._forward_query_graph(items, runner)
        input_ids, attention_mask, keep = self._batch_tensors(items, is_query)
        strategy = self.settings.attention_strategy
        needs_eager_maps = strategy is not AttentionStrategy.NONE and not supports_recomputed_attention(self.backbone)
        low_precision = is_query and self.settings.query_precision == "bfloat16"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low_precision):
            output = self.backbone(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
                output_hidden_states=True,
                output_attentions=needs_eager_maps,
            )
            hidden = output.last_hidden_state
            if self.projection is not None:
                hidden = self.projection(hidden)
            weights = token_attention_weights(
                self.backbone,
                output.hidden_states,
                attention_mask,
                strategy,
                self.settings.attention_scaling,
                self.settings.attention_temperature,
                attentions=output.attentions if needs_eager_maps else None,
                mix=self.settings.attention_mix_side(is_query),
            )
            extra: dict[str, torch.Tensor] = {}
            raw: dict[AttentionStrategy, torch.Tensor] = {}
            for strategy_variant, scaling_variant in variants:
                if strategy_variant not in raw:  # each map is read once; scalings only rescale it
                    raw[strategy_variant] = token_attention_weights(
                        self.backbone,
                        output.hidden_states,
                        attention_mask,
                        strategy_variant,
                        attentions=output.attentions,
                    ).float()
                values = raw[strategy_variant]
                if scaling_variant is AttentionScaling.BY_LENGTH:
                    values = values * attention_mask.sum(dim=1, keepdim=True).float()
                extra[variant_key(strategy_variant, scaling_variant)] = values
        vectors = torch.nn.functional.normalize(hidden.float(), p=2, dim=-1)
        weights = self._special_zeroed(weights.float(), input_ids)
        encoded = []
        for row, item in enumerate(items):
            mask = keep[row]
            encoded.append(
                EncodedText(
                    vectors=vectors[row][mask].numpy(),
                    weights=weights[row][mask].numpy(),
                    token_ids=input_ids[row][mask].numpy().astype(np.int32),
                    n_words=item.n_words,
                    truncated=item.truncated,
                    variant_weights={key: values[row][mask].numpy() for key, values in extra.items()},
                )
            )
        return encoded

    def _encode(
        self,
        texts: Sequence[str],
        is_query: bool,
        progress: ProgressCallback | None,
        variants: Sequence[WeightVariant] = (),
    ) -> list[EncodedText]:
        max_tokens = self.settings.query_max_tokens if is_query else self.settings.document_max_tokens
        marker = self._query_marker_id if is_query else self._document_marker_id
        items = self._tokenize(texts, max_tokens, marker, is_query)
        # Length-sorted batches waste little compute on padding.
        order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
        results: list[EncodedText | None] = [None] * len(items)
        size = self.settings.batch_size
        for start in range(0, len(order), size):
            batch_ids = order[start : start + size]
            batch = [items[i] for i in batch_ids]
            for i, encoded in zip(batch_ids, self._forward(batch, is_query, variants), strict=True):
                results[i] = encoded
            if progress is not None:
                progress(len(batch_ids))
        return [r for r in results if r is not None]

    # ---- public API ---------------------------------------------------------------------------------------

    def encode_queries(self, queries: Sequence[str], progress: ProgressCallback | None = None) -> list[EncodedText]:
        for position, query in enumerate(queries):
            if not isinstance(query, str):
                raise InvalidQueryError(f"Query {position} is a {type(query).__name__}, not a string.")
            if not query.strip():
                raise InvalidQueryError(f"Query {position} is empty or whitespace: give some words to search for.")
        encoded = self._encode(queries, is_query=True, progress=progress)
        for query, item in zip(queries, encoded, strict=True):
            if item.truncated:
                logger.warning(
                    "Query truncated to %d word pieces (query_max_tokens); the rest is ignored: %.80r",
                    self.settings.query_max_tokens,
                    query,
                )
        return encoded

    def encode_query(self, query: str) -> EncodedText:
        return self.encode_queries([query])[0]

    def encode_documents(self, documents: Sequence[str], progress: ProgressCallback | None = None) -> list[EncodedText]:
        for position, document in enumerate(documents):
            if not isinstance(document, str):
                raise InvalidDocumentError(f"Document {position} is a {type(document).__name__}, not a string.")
            if not document.strip():
                raise InvalidDocumentError(f"Document {position} is empty or whitespace: it cannot be indexed.")
        return self._encode(documents, is_query=False, progress=progress)

    def encode_weight_variants(
        self,
        texts: Sequence[str],
        is_query: bool,
        variants: Sequence[WeightVariant],
        progress: ProgressCallback | None = None,
    ) -> list[EncodedText]:
        """Encode once and read A in several ways (`EncodedText.variant_weights`), for attention ablations."""
        return self._encode(texts, is_query=is_query, progress=progress, variants=variants)

    def document_token_spans(self, text: str) -> np.ndarray:
        """(n, 2) character spans in `text` of the tokens `encode_documents([text])` keeps, in the same order;
        (0, 0) for [CLS], [SEP] and the marker. Maps a stored token (a MaxSim winner) back to the words it is."""
        return self._kept_token_spans(text, is_query=False)

    def query_token_spans(self, text: str) -> np.ndarray:
        """`document_token_spans` for a query: the spans in `text` of the tokens `encode_query(text)` keeps, (0, 0)
        for [CLS], [SEP], the marker and [MASK] expansion."""
        return self._kept_token_spans(text, is_query=True)

    def _kept_token_spans(self, text: str, is_query: bool) -> np.ndarray:
        if is_query:
            item = self._tokenize([text], self.settings.query_max_tokens, self._query_marker_id, is_query=True)[0]
        else:
            limit, marker = self.settings.document_max_tokens, self._document_marker_id
            item = self._tokenize([text], limit, marker, is_query=False)[0]
        spans = [span for span, kept in zip(item.offsets, item.keep, strict=True) if kept]
        return np.asarray(spans, dtype=np.int64).reshape(-1, 2)

    def token_strings(self, token_ids: np.ndarray) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens([int(t) for t in token_ids])
