"""Token-level alignment of a claim with passage text through the ColBERT-Att encoder: each claim token's best
cosine match among the passage's tokens, weighted by the claim token's attention weight exp(A)."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from colbert_att_assistant.retriever import ColBERTAttEncoder, EncodedText
from colbert_att_assistant.retriever.encoder import ProgressCallback

# Below the encoder's 300-word-piece document limit with room for [CLS]/[SEP], so nothing is truncated away.
CHUNK_WORD_PIECES = 250
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class TokenWeighting(StrEnum):
    """How exp(A) weights claim tokens. A is a softmax mass where [CLS] takes most of it, so the raw content-token
    values are about 0.01 and exp(A) is nearly uniform; `exp_a_content` rescales A to mean 1 over the claim's
    content tokens first, so that attention actually separates "1911" from "the"."""

    EXP_A = "exp_a"
    EXP_A_CONTENT = "exp_a_content"


@dataclass(frozen=True)
class ClaimTokens:
    vectors: np.ndarray  # (n, dim), unit length, special tokens removed
    raw_attention: np.ndarray  # (n,) A of each kept token


@dataclass(frozen=True)
class Alignment:
    mean_similarity: float  # weighted mean over claim tokens of the best cosine match
    strong_fraction: float  # weighted share of claim tokens whose best match reaches the strong threshold


def claim_weights(tokens: ClaimTokens, weighting: TokenWeighting) -> np.ndarray:
    attention = tokens.raw_attention.astype(np.float64)
    if weighting is TokenWeighting.EXP_A_CONTENT:
        attention = attention / max(float(attention.mean()), 1e-12)
    return np.exp(attention)


def align(tokens: ClaimTokens, passage_vectors: np.ndarray, weighting: TokenWeighting, strong: float) -> Alignment:
    if len(tokens.vectors) == 0 or len(passage_vectors) == 0:
        return Alignment(0.0, 0.0)
    best = (tokens.vectors @ passage_vectors.T).max(axis=1)
    weights = claim_weights(tokens, weighting)
    total = float(weights.sum())
    return Alignment(float(weights @ best) / total, float(weights @ (best >= strong)) / total)


def chunk_text(text: str, count_pieces: Callable[[str], int], budget: int = CHUNK_WORD_PIECES) -> list[str]:
    """Consecutive sentences packed into chunks of at most `budget` word pieces (a longer sentence is cut by
    words), so long passages are read whole instead of truncated at the encoder's limit."""
    units: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
        if not sentence:
            continue
        if count_pieces(sentence) <= budget:
            units.append(sentence)
            continue
        words = sentence.split()
        step = max(1, budget // 2)  # about two word pieces per word in the worst case
        units.extend(" ".join(words[i : i + step]) for i in range(0, len(words), step))
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for unit in units:
        pieces = count_pieces(unit)
        if current and size + pieces > budget:
            chunks.append(" ".join(current))
            current, size = [], 0
        current.append(unit)
        size += pieces
    if current:
        chunks.append(" ".join(current))
    return chunks


class TokenEncoder:
    """The encoder's document side for both claims and passages, with special tokens dropped and passage
    encodings remembered (the chat app judges many answers against the same passages)."""

    def __init__(self, encoder: ColBERTAttEncoder, cache_size: int = 512):
        self.encoder = encoder
        self._special_ids = np.array(sorted(set(encoder.tokenizer.all_special_ids)), dtype=np.int32)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def _content(self, encoded: EncodedText) -> np.ndarray:
        return ~np.isin(encoded.token_ids, self._special_ids)

    def count_pieces(self, text: str) -> int:
        return len(self.encoder.tokenizer.tokenize(text))

    def claims(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> list[ClaimTokens]:
        # Document side: claims are often longer than the 32 word pieces a query keeps, and the bundled checkpoint
        # has no query/document markers or query expansion, so the two sides differ only by that truncation (and
        # punctuation, which documents drop and which carries no support).
        result = []
        for encoded in self.encoder.encode_documents(list(texts), progress):
            keep = self._content(encoded)
            result.append(ClaimTokens(encoded.vectors[keep], encoded.weights[keep]))
        return result

    def passages(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> list[np.ndarray]:
        """Token vectors of each passage, all its chunks together (max-sim over the union equals the max over
        chunks of each chunk's max-sim)."""
        fresh: dict[str, np.ndarray] = {}
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            chunked = [chunk_text(text, self.count_pieces) or [text] for text in missing]
            flat = [chunk for chunks in chunked for chunk in chunks]
            encoded = iter(self.encoder.encode_documents(flat, progress))
            for text, chunks in zip(missing, chunked, strict=True):
                parts = [next(encoded) for _ in chunks]
                fresh[text] = np.concatenate([p.vectors[self._content(p)] for p in parts])
        result = [fresh[text] if text in fresh else self._cache[text] for text in texts]
        for text, vectors in zip(texts, result, strict=True):
            self._cache[text] = vectors
            self._cache.move_to_end(text)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result
