"""The encoder as a trainable module: the same token vectors and attention weights A as `ColBERTAttEncoder`,
on padded batches, with gradients.

Tokenisation (markers, [MASK] query expansion, punctuation skipped in documents, truncation) is the encoder's
own, so that what is trained is exactly what is searched. A is read from the attention maps the way the
encoder reads it (`attention.token_attention_weights`); by default it is computed outside the autograd graph
(see `TrainableColBERT.attention_grad`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from colbert_att_assistant.retriever.attention import supports_recomputed_attention, token_attention_weights
from colbert_att_assistant.retriever.checkpoint import LoadedCheckpoint
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.settings import AttentionStrategy, EncoderSettings


@dataclass
class PaddedEncoding:
    """vectors (B, L, dim) unit length, weights A (B, L), keep (B, L): the tokens that take part in the score
    (not padding, not skipped punctuation), n_words (B,): words of each text (for delta)."""

    vectors: torch.Tensor
    weights: torch.Tensor
    keep: torch.Tensor
    n_words: torch.Tensor
    token_ids: torch.Tensor


class TrainableColBERT(torch.nn.Module):
    """Backbone + optional projection of a checkpoint, encoding texts like `ColBERTAttEncoder` but with grad.

    attention_grad=False (default) detaches A. Reasons: A is the encoder's own reading of its attention, not a
    learned scoring head; with raw scaling exp(A) is within a few percent of 1, so its gradient is small next
    to the cosines' and mostly invites the shortcut of reshaping the [CLS] attention (which every layer also
    uses to build the vectors) to fit the loss; and recomputing the maps without a graph saves memory and time
    on a 2-core CPU. With attention_grad=True the loss also trains the query/key projections through A.
    """

    def __init__(self, checkpoint: LoadedCheckpoint, settings: EncoderSettings, attention_grad: bool = False):
        super().__init__()
        self.checkpoint = checkpoint
        self.backbone = checkpoint.backbone
        self.projection = checkpoint.projection
        self.settings = settings
        self.attention_grad = attention_grad
        # Used for its tokenisation and conventions only; it shares the modules trained here.
        self.encoder = ColBERTAttEncoder(settings, checkpoint=checkpoint)
        self._needs_eager_maps = (
            settings.attention_strategy is not AttentionStrategy.NONE
            and not supports_recomputed_attention(self.backbone)
        )

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode(self, texts: list[str], is_query: bool) -> PaddedEncoding:
        encoder = self.encoder
        max_tokens = self.settings.query_max_tokens if is_query else self.settings.document_max_tokens
        marker = encoder._query_marker_id if is_query else encoder._document_marker_id
        items = encoder._tokenize(texts, max_tokens, marker, is_query)
        # The same padding and [MASK] expansion as inference, so training sees what search will see.
        input_ids, attention_mask, keep = encoder._batch_tensors(items, is_query)
        device = self.device
        input_ids, attention_mask, keep = input_ids.to(device), attention_mask.to(device), keep.to(device)
        output = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
            output_hidden_states=True,
            output_attentions=self._needs_eager_maps,
        )
        hidden = output.last_hidden_state
        if self.projection is not None:
            hidden = self.projection(hidden)
        vectors = torch.nn.functional.normalize(hidden, p=2, dim=-1)
        with torch.set_grad_enabled(self.attention_grad and torch.is_grad_enabled()):
            weights = token_attention_weights(
                self.backbone,
                output.hidden_states,
                attention_mask,
                self.settings.attention_strategy,
                self.settings.attention_scaling,
                self.settings.attention_temperature,
                attentions=output.attentions if self._needs_eager_maps else None,
            ).to(device)
        n_words = torch.tensor([item.n_words for item in items], dtype=torch.float32, device=device)
        return PaddedEncoding(vectors, weights, keep, n_words, input_ids)


def initial_projection(
    kind: str, dim: int, hidden_size: int, seed: int, sample_vectors: torch.Tensor | None = None
) -> torch.nn.Linear:
    """A new bias-free projection hidden_size -> dim with orthonormal rows.

    pca: the top `dim` right singular vectors of the (uncentred) token vectors of sample texts, the rows that
    keep the most of their dot products; orthogonal: random orthonormal rows.
    """
    if dim > hidden_size:
        raise ValueError(f"projection_dim {dim} is larger than the encoder's {hidden_size} dimensions.")
    linear = torch.nn.Linear(hidden_size, dim, bias=False)
    if kind == "pca":
        if sample_vectors is None or sample_vectors.shape[0] < dim:
            raise ValueError(f"PCA initialisation needs at least {dim} token vectors.")
        _, _, right = torch.linalg.svd(sample_vectors.double(), full_matrices=False)
        rows = right[:dim].float()
        # Sign convention: each row points the way most tokens do, so the result does not depend on the SVD routine.
        signs = torch.sign((sample_vectors @ rows.T).sum(dim=0))
        signs[signs == 0] = 1.0
        linear.weight.data.copy_(rows * signs[:, None])
    else:
        generator = torch.Generator().manual_seed(seed)
        torch.nn.init.orthogonal_(linear.weight, generator=generator)
    return linear
