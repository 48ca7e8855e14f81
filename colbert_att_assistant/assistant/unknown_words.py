"""Does the question ask about something the documents do not cover? Read from the words it uses that the documents
never do.

A question about velvet, a wheelchair or a ceramic bezel, put to documents that never use those words, still finds
passages about the things around it (suede, the boutique, the watch), and their lines align well with its other
words. What gives it away is the unknown word itself: its word pieces find nothing like them in those passages.
A paraphrase of something covered ("billfold" for a wallet, "squishy" for lambskin) does find a near token. The
measure is the weakest unknown word's mean best cosine over its word pieces inside the retrieved passages; the
threshold is chosen on the calibration half of the labelled questions (benchmarks/quoted_answers.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from colbert_att_assistant.assistant.vocabulary import DocumentVocabulary
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder, EncodedText


@dataclass(frozen=True)
class UnknownWordMatch:
    word: str | None  # the weakest unknown word; None when the message has none
    similarity: float  # its mean best cosine inside the passages; 1.0 when there is none


def weakest_unknown_word(
    encoder: ColBERTAttEncoder,
    vocabulary: DocumentVocabulary,
    message: str,
    query: EncodedText,
    similarities: Sequence[np.ndarray],
) -> UnknownWordMatch:
    """The message's unknown word that matches the passages least. `query` is `message` encoded; `similarities`
    holds its (query tokens, passage tokens) cosine matrix for each retrieved passage."""
    unknown = vocabulary.unknown_words(message)
    if not unknown or not similarities:
        return UnknownWordMatch(None, 1.0)
    best = np.max(np.concatenate([np.asarray(s, dtype=np.float32) for s in similarities], axis=1), axis=1)
    spans = encoder.query_token_spans(message)[: len(best)]
    weakest = UnknownWordMatch(None, 1.0)
    for start, end, word in unknown:
        pieces = [i for i, (s, e) in enumerate(spans) if e > s and s >= start and e <= end]
        if pieces:  # a word past the query's token limit was not searched
            similarity = float(np.mean(best[pieces]))
            if similarity < weakest.similarity:
                weakest = UnknownWordMatch(word, similarity)
    return weakest
