"""Why a passage was found, for staff: the passage in its original text with the words the query matched
highlighted, a one-line reason, and the token matches with their weights on a scale a reader can compare.

Word pieces are mapped back to characters with `encoder.document_token_spans(text)`, which lists the spans of the
tokens the index stored, in the same order, so `TokenMatch.document_position` indexes it directly.

The attention weights A are small masses (exp(A) is 1.00–1.03 for almost every token), so they are shown relative
to their mean: over the passage's tokens for the passage side, over the query's words for the query side. "2.4×"
means the encoder attends to that token 2.4 times as much as to the passage's average token.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from retriever.encoder import ColBERTAttEncoder
from retriever.index import MultiVectorIndex, SearchHit
from retriever.scoring import ScoringMode, length_exponent
from webapp.passages import heading_length

SPECIAL = re.compile(r"^\[(CLS|SEP|PAD|MASK|unused\d+)\]$")
WORD_CHARACTER = re.compile(r"\w")
# A query word counts as "found" when its best passage token is at least this similar.
CLOSE_MATCH = 0.75


@dataclass
class MatchedWord:
    start: int
    end: int
    queries: list[tuple[str, float, float]] = field(default_factory=list)  # (query word, cosine, contribution)

    @property
    def best(self) -> float:
        return max(contribution for _, _, contribution in self.queries)


@dataclass(frozen=True)
class MatchRow:
    query_word: str
    passage_word: str
    similarity: float
    query_attention: float  # relative to the query's mean
    passage_attention: float  # relative to the passage's mean
    contribution: float


def _word_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a word piece's span to the whole word it is part of ("##skin" → "calfskin")."""
    while start > 0 and WORD_CHARACTER.match(text[start - 1]):
        start -= 1
    while end < len(text) and WORD_CHARACTER.match(text[end]):
        end += 1
    return start, end


def _query_words(pieces: list[str]) -> list[str]:
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
    hit: SearchHit,
    index: MultiVectorIndex,
    encoder: ColBERTAttEncoder,
    query_pieces: list[str],
    query_weights: np.ndarray,
    mode: ScoringMode,
) -> tuple[str, list[MatchedWord], list[MatchRow], int]:
    """The passage text, its matched words (character spans), the match rows, and where the body starts."""
    document = index.get(hit.id)
    text = document.text
    spans = encoder.document_token_spans(text)
    pieces = encoder.token_strings(document.token_ids)
    aligned = len(spans) == len(pieces)  # False only for an index whose stored tokens were pruned
    query_words = _query_words(query_pieces)
    content = [i for i, piece in enumerate(query_pieces) if not SPECIAL.match(piece)]
    query_mean_weights = np.asarray(query_weights, dtype=np.float64)[content]
    passage_weights = np.asarray(
        [w for w, piece in zip(document.weights, pieces, strict=True) if not SPECIAL.match(piece)], dtype=np.float64
    )
    delta = float(
        length_exponent(np.array([document.n_words]), index.settings.delta_length_words, index.settings.fixed_delta)[0]
    )
    words: dict[tuple[int, int], MatchedWord] = {}
    rows = []
    for match in hit.matches:
        piece = query_pieces[match.query_position]
        if SPECIAL.match(piece):
            continue
        query_factor = math.exp(match.query_weight) if mode.uses_query_weights else 1.0
        passage_factor = math.exp(match.document_weight) ** delta if mode.uses_document_weights else 1.0
        contribution = query_factor * match.similarity * passage_factor
        passage_word = pieces[match.document_position]
        if aligned and not SPECIAL.match(passage_word):
            start, end = _word_span(text, *map(int, spans[match.document_position]))
            passage_word = text[start:end]
            word = words.setdefault((start, end), MatchedWord(start, end))
            word.queries.append((query_words[match.query_position], match.similarity, contribution))
        rows.append(
            MatchRow(
                query_word=query_words[match.query_position],
                passage_word=passage_word,
                similarity=match.similarity,
                query_attention=_relative(query_mean_weights, match.query_weight),
                passage_attention=_relative(passage_weights, match.document_weight),
                contribution=contribution,
            )
        )
    body_start = heading_length(text, str(hit.metadata.get("title", "")), str(hit.metadata.get("header_path", "")))
    return text, sorted(words.values(), key=lambda w: w.start), rows, body_start


def why_line(rows: list[MatchRow]) -> str:
    """ "Found 6 of 8 query words closely: calfskin, wallet, wet…; strongest wet → wet (0.97)"."""
    # Stop words and punctuation match something in every passage: they do not say why this one.
    rows = [r for r in rows if WORD_CHARACTER.search(r.query_word) and r.query_word.lower() not in ENGLISH_STOP_WORDS]
    if not rows:
        return "No content word of the question matched."
    by_word: dict[str, MatchRow] = {}
    for row in rows:
        if row.query_word not in by_word or row.similarity > by_word[row.query_word].similarity:
            by_word[row.query_word] = row
    close = [row for row in by_word.values() if row.similarity >= CLOSE_MATCH]
    strongest = max(by_word.values(), key=lambda row: row.contribution)
    found = ", ".join(dict.fromkeys(row.query_word for row in sorted(close, key=lambda r: -r.contribution)))
    focus = [row for row in close if row.passage_attention >= 1.5 and not SPECIAL.match(row.passage_word)]
    summary = f"{len(close)} of {len(by_word)} content words of the question found closely (cosine ≥ {CLOSE_MATCH})"
    parts = [
        summary + (f": {found}" if found else ""),
        f"strongest “{strongest.query_word}” → “{strongest.passage_word}” ({strongest.similarity:.2f})",
    ]
    if focus:
        parts.append("passage attends most to " + ", ".join(dict.fromkeys(f"“{r.passage_word}”" for r in focus)))
    return "; ".join(parts) + "."


def highlighted_text(text: str, words: list[MatchedWord], start: int = 0, end: int | None = None) -> str:
    """`text[start:end]` with matched words in <mark>, darker for a larger contribution relative to this passage's
    weakest and strongest match; the tooltip names the query words that chose each word."""
    end = len(text) if end is None else end
    strengths = [word.best for word in words]
    low, high = min(strengths, default=0.0), max(strengths, default=0.0)
    parts, cursor = [], start
    for word in words:
        if word.start < cursor or word.end > end:
            continue
        parts.append(html.escape(text[cursor : word.start]))
        level = (word.best - low) / (high - low) if high > low else 1.0
        title = ", ".join(f"{q} (cosine {cosine:.2f})" for q, cosine, _ in word.queries)
        parts.append(
            f"<mark class='match' data-level='{round(level * 4)}' title='{html.escape(title, quote=True)}'>"
            f"{html.escape(text[word.start : word.end])}</mark>"
        )
        cursor = word.end
    parts.append(html.escape(text[cursor:end]))
    return "".join(parts)


def explanation_html(
    hit: SearchHit,
    index: MultiVectorIndex,
    encoder: ColBERTAttEncoder,
    query_pieces: list[str],
    query_weights: np.ndarray,
    mode: ScoringMode,
    rank: int,
) -> str:
    text, words, rows, body_start = explain_hit(hit, index, encoder, query_pieces, query_weights, mode)
    title = str(hit.metadata.get("title", hit.id))
    section = str(hit.metadata.get("header_path", ""))
    audience = str(hit.metadata.get("audience", ""))
    table_rows = "".join(
        "<tr>"
        f"<td>{html.escape(row.query_word)}</td><td>{html.escape(row.passage_word)}</td>"
        f"<td>{row.similarity:.2f}</td><td>{row.query_attention:.1f}×</td><td>{row.passage_attention:.1f}×</td>"
        f"<td>{row.contribution:.3f}</td></tr>"
        for row in sorted(rows, key=lambda r: -r.contribution)
    )
    table = (
        "<table class='matches'><thead><tr><th>query word</th><th>matched passage word</th><th>cosine</th>"
        "<th>query attention (× query mean)</th><th>passage attention (× passage mean)</th><th>contribution</th>"
        f"</tr></thead><tbody>{table_rows}</tbody></table>"
    )
    heading = f"{rank}. {title}" + (f" · {section}" if section else "")
    # The chunk's heading is indexed with it and often holds the best matches: shown too, set apart.
    heading_line = (
        f"<span class='indexed-heading' title='Indexed with the passage'>"
        f"{highlighted_text(text, words, 0, body_start).rstrip()}</span>\n"
        if body_start
        else ""
    )
    return (
        f"<div class='passage'><h4>{html.escape(heading)} <span class='meta'>score {hit.score:.2f} "
        f"({hit.normalised_score:.2f} of the maximum) · {html.escape(audience)}</span></h4>"
        f"<p class='why'><strong>Why:</strong> {html.escape(why_line(rows))}</p>"
        f"<div class='passage-text'>{heading_line}{highlighted_text(text, words, body_start)}</div>"
        f"<details><summary>token matches</summary>{table}</details></div>"
    )
