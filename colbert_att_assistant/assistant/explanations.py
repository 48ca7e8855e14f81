"""Why a passage was found, for staff: the words of the passage the question matched (character spans in the
passage text), the token matches with their weights on a scale a reader can compare, and a one-line reason.

Word pieces are mapped back to characters with `encoder.document_token_spans(text)`, which lists the spans of the
tokens the index stored, in the same order, so `TokenMatch.document_position` indexes it directly.

The attention weights A are small masses (exp(A) is 1.00–1.03 for almost every token), so they are given relative
to their mean: over the passage's tokens for the passage side, over the query's words for the query side. 2.4
means the encoder attends to that token 2.4 times as much as to the passage's average token.

A contribution is the query token's term of the score: exp(A_q) · cos · exp(A_d) ** delta, each factor only where the
scoring mode uses it (plain MaxSim: the cosine alone).
"""

from __future__ import annotations

import math
import re

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from colbert_att_assistant.retriever.encoder import EncodedText
from colbert_att_assistant.retriever.index.base import BaseMultiVectorIndex, SearchHit
from colbert_att_assistant.retriever.scoring import ScoringMode, length_exponent

SPECIAL = re.compile(r"^\[(CLS|SEP|PAD|MASK|unused\d+)\]$")
WORD_CHARACTER = re.compile(r"\w")
# A query word counts as "found" when its best passage token is at least this similar.
CLOSE_MATCH = 0.75
# The passage attends to a word "most" when its weight is at least this many times the passage's mean.
FOCUS_ATTENTION = 1.5


class QueryWordMatch(BaseModel):
    """One query word that chose a passage word as its best match."""

    model_config = ConfigDict(frozen=True)

    query_word: str
    cosine: float
    contribution: float


class MatchedWord(BaseModel):
    """A whole word of the passage text (`text[start:end]`) that query words matched."""

    model_config = ConfigDict(frozen=True)

    start: int = Field(ge=0)
    end: int = Field(ge=0)
    queries: list[QueryWordMatch] = Field(description="The query words that chose this word, in query order.")

    @property
    def best(self) -> float:
        return max(match.contribution for match in self.queries)


class MatchRow(BaseModel):
    """One query token's best match in the passage."""

    model_config = ConfigDict(frozen=True)

    query_word: str
    passage_word: str
    cosine: float
    query_attention: float = Field(description="The query token's attention weight relative to the query's mean.")
    passage_attention: float = Field(description="The passage token's weight relative to the passage's mean.")
    contribution: float


class SourceExplanation(BaseModel):
    """Why one source was found: what the staff page shows under it."""

    model_config = ConfigDict(frozen=True)

    score: float = Field(description="The raw score (the source's `score` is the normalised one).")
    matched_words: list[MatchedWord] = Field(description="Matched words of the passage text, in text order.")
    matches: list[MatchRow] = Field(description="Every content query token's best passage token.")
    why: str = Field(description="One line: how many content words of the question were found, and the strongest.")


def _word_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a word piece's span to the whole word it is part of ("##skin" → "calfskin")."""
    while start > 0 and WORD_CHARACTER.match(text[start - 1]):
        start -= 1
    while end < len(text) and WORD_CHARACTER.match(text[end]):
        end += 1
    return start, end


def query_words(pieces: list[str]) -> list[str]:
    """Each query token as the whole word it belongs to, so "cal", "##f", "##skin" all read "calfskin"."""
    groups: list[list[int]] = []
    for position, piece in enumerate(pieces):
        if piece.startswith("##") and groups:
            groups[-1].append(position)
        else:
            groups.append([position])
    words = list(pieces)
    for group in groups:
        joined = pieces[group[0]] + "".join(pieces[i][2:] for i in group[1:])
        for position in group:
            words[position] = joined
    return words


def _relative(values: np.ndarray, value: float) -> float:
    mean = float(np.mean(values)) if len(values) else 0.0
    return value / mean if mean > 0 else 1.0


def explain_hit(
    hit: SearchHit, index: BaseMultiVectorIndex, query: EncodedText, mode: ScoringMode
) -> SourceExplanation:
    """The explanation of a hit of `index.search(query, mode=mode, explain=True)`."""
    encoder = index.encoder
    document = index.get(hit.id)
    text = document.text
    spans = encoder.document_token_spans(text)
    pieces = encoder.token_strings(document.token_ids)
    aligned = len(spans) == len(pieces)  # False only for an index whose stored tokens were pruned
    query_pieces = encoder.token_strings(query.token_ids)
    words_of_query = query_words(query_pieces)
    content = [i for i, piece in enumerate(query_pieces) if not SPECIAL.match(piece)]
    query_weights = np.asarray(query.weights, dtype=np.float64)[content]
    passage_weights = np.asarray(
        [w for w, piece in zip(document.weights, pieces, strict=True) if not SPECIAL.match(piece)], dtype=np.float64
    )
    settings = index.settings
    delta = float(length_exponent(np.array([document.n_words]), settings.delta_length_words, settings.fixed_delta)[0])
    chosen: dict[tuple[int, int], list[QueryWordMatch]] = {}
    rows = []
    for match in hit.matches:
        if SPECIAL.match(query_pieces[match.query_position]):
            continue
        query_factor = math.exp(match.query_weight) if mode.uses_query_weights else 1.0
        passage_factor = math.exp(match.document_weight) ** delta if mode.uses_document_weights else 1.0
        contribution = query_factor * match.similarity * passage_factor
        query_word = words_of_query[match.query_position]
        passage_word = pieces[match.document_position]
        if aligned and not SPECIAL.match(passage_word):
            start, end = _word_span(text, *map(int, spans[match.document_position]))
            passage_word = text[start:end]
            chosen.setdefault((start, end), []).append(QueryWordMatch(query_word=query_word,
                                                                       cosine=match.similarity,
                                                                       contribution=contribution))  # fmt: skip
        rows.append(
            MatchRow(
                query_word=query_word,
                passage_word=passage_word,
                cosine=match.similarity,
                query_attention=_relative(query_weights, match.query_weight),
                passage_attention=_relative(passage_weights, match.document_weight),
                contribution=contribution,
            )
        )
    matched = [MatchedWord(start=start, end=end, queries=queries) for (start, end), queries in sorted(chosen.items())]
    return SourceExplanation(score=hit.score, matched_words=matched, matches=rows, why=why_line(rows))


def why_line(rows: list[MatchRow]) -> str:
    """ "3 of 4 content words of the question found closely (cosine ≥ 0.75): wet, calfskin, wallet; strongest …"."""
    # Stop words and punctuation match something in every passage: they do not say why this one.
    rows = [r for r in rows if WORD_CHARACTER.search(r.query_word) and r.query_word.lower() not in ENGLISH_STOP_WORDS]
    if not rows:
        return "No content word of the question matched."
    by_word: dict[str, MatchRow] = {}
    for row in rows:
        if row.query_word not in by_word or row.cosine > by_word[row.query_word].cosine:
            by_word[row.query_word] = row
    close = [row for row in by_word.values() if row.cosine >= CLOSE_MATCH]
    strongest = max(by_word.values(), key=lambda row: row.contribution)
    found = ", ".join(dict.fromkeys(row.query_word for row in sorted(close, key=lambda r: -r.contribution)))
    focus = [r for r in close if r.passage_attention >= FOCUS_ATTENTION and not SPECIAL.match(r.passage_word)]
    summary = f"{len(close)} of {len(by_word)} content words of the question found closely (cosine ≥ {CLOSE_MATCH})"
    parts = [
        summary + (f": {found}" if found else ""),
        f"strongest “{strongest.query_word}” → “{strongest.passage_word}” ({strongest.cosine:.2f})",
    ]
    if focus:
        parts.append("passage attends most to " + ", ".join(dict.fromkeys(f"“{r.passage_word}”" for r in focus)))
    return "; ".join(parts) + "."
