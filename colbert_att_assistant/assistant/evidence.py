"""Evidence: the few passage sentences that answer a question, found by the ColBERT-Att token alignment.

A passage is cut into units a reader can quote on their own: sentences of a paragraph, list items, and table rows
(rendered as "column: cell" pairs, since a bare row means nothing without its header). Each query word piece finds
its most similar stored token in the passage (the MaxSim winner); the character spans of the stored tokens tell
which unit that token is in. A unit's score is the attention-weighted mean, over the question's content word
pieces, of their best similarity inside the unit or (at half weight) inside the passage heading, which names what
the unit is about. Units are then chosen greedily for how much of the question they newly cover, so two units that
say the same thing are not both taken. Settings chosen on the calibration half of the labelled questions (share
of questions whose labelled facts are all inside the chosen units, and prompt length): benchmarks/RESULTS.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from colbert_att_assistant.grounding.lexical import is_prohibition_heading
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder, EncodedText
from colbert_att_assistant.retriever.index import BaseMultiVectorIndex

STOPWORDS = frozenset(STOPWORDS_EN) | {"please", "thanks", "thank", "hi", "hello"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(€£$])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_MARKDOWN_EMPHASIS = re.compile(r"\*\*|__|`")
_SUBHEADING = re.compile(r"^#{1,6}\s+")
# Lines taken after a chosen lead-in that ends in a colon.
LEAD_IN_FOLLOWERS = 4


@dataclass(frozen=True)
class PassageUnit:
    """A quotable piece of a passage: `text` as shown to a reader, `start`/`end` its characters in the passage."""

    start: int
    end: int
    text: str
    kind: str  # "sentence", "list_item" or "table_row"
    block: int = 0  # the paragraph, list or table the unit belongs to, counted from 0 in its passage
    cells: tuple[tuple[str, str], ...] = ()  # a table row's (column, cell) pairs


@dataclass(frozen=True)
class EvidenceUnit:
    source_number: int  # the passage's number among the sources shown ([n] in the prompt)
    position: int  # the unit's order inside its passage
    heading: str
    text: str
    score: float  # share of the question's content this unit covers, in [0, 1]-ish (cosine based)


@dataclass(frozen=True)
class Evidence:
    units: list[EvidenceUnit]

    @property
    def best_score(self) -> float:
        return max((unit.score for unit in self.units), default=0.0)

    def by_source(self) -> dict[int, list[EvidenceUnit]]:
        grouped: dict[int, list[EvidenceUnit]] = {}
        for unit in sorted(self.units, key=lambda u: (u.source_number, u.position)):
            grouped.setdefault(unit.source_number, []).append(unit)
        return grouped


def _plain(text: str) -> str:
    return " ".join(_MARKDOWN_EMPHASIS.sub("", text).split())


def _table_cells(line: str) -> list[str]:
    return [_plain(cell) for cell in line.strip().strip("|").split("|")]


def split_passage(text: str) -> tuple[str, list[PassageUnit]]:
    """(heading, units) of a knowledge-base chunk, whose first line is its "Title > Section" heading.

    A list item under a heading or lead-in that forbids ("Don't", "Never …:") carries it, "Don't: Store cashmere in
    sealed plastic", so that the line quoted alone still says what not to do."""
    heading_end = text.find("\n")
    heading = text[:heading_end].strip() if heading_end >= 0 else ""
    body_start = heading_end + 1 if heading_end >= 0 else 0
    units: list[PassageUnit] = []
    header: list[str] | None = None
    section = heading.rsplit(">", 1)[-1].strip()
    prohibition = section if is_prohibition_heading(section) else None
    offset = body_start
    # A block (paragraph, list, table) starts after a blank line or a subheading, and where the kind of line changes.
    block, block_kind = -1, None
    for line in text[body_start:].splitlines(keepends=True):
        start, stripped = offset, line.strip()
        offset += len(line)
        if not stripped:
            header, block_kind = None, None
            continue
        end = start + len(line.rstrip("\n"))
        if _SUBHEADING.match(stripped):
            section = _plain(_SUBHEADING.sub("", stripped))
            prohibition = section if is_prohibition_heading(section) else None
            block_kind = None
            continue
        kind = "table_row" if stripped.startswith("|") else "list_item" if _LIST_ITEM.match(stripped) else "sentence"
        if kind != block_kind:
            block, block_kind = block + 1, kind
        if kind == "table_row":
            cells = _table_cells(stripped)
            if all(set(cell) <= set("-: ") for cell in cells):
                continue  # the |---|---| separator
            if header is None:
                header = cells
                continue
            pairs = [f"{name}: {cell}" if name else cell for name, cell in zip(header, cells, strict=False) if cell]
            row = tuple(zip(header, cells, strict=False))
            units.append(PassageUnit(start, end, "; ".join(pairs), "table_row", block, row))
            continue
        header = None
        if kind == "list_item":
            item = _plain(_LIST_ITEM.sub("", stripped))
            units.append(PassageUnit(start, end, f"{prohibition}: {item}" if prohibition else item, "list_item", block))
            continue
        plain_line = _plain(stripped)
        if plain_line.endswith(":") and is_prohibition_heading(plain_line):
            prohibition = plain_line.rstrip(":")
        elif not plain_line.endswith(":"):
            prohibition = section if is_prohibition_heading(section) else None
        position = 0
        for sentence in _SENTENCE_END.split(line.rstrip("\n")):
            at = line.find(sentence, position)
            position = at + len(sentence)
            if sentence.strip():
                units.append(PassageUnit(start + at, start + position, _plain(sentence), "sentence", block))
    return heading, units


def content_weights(encoder: ColBERTAttEncoder, query: EncodedText) -> np.ndarray:
    """exp(A) of each query word piece that carries content; 0 for special tokens, [MASK], punctuation and
    stop words, which match something in every passage and so say nothing about this one."""
    tokens = encoder.token_strings(query.token_ids)
    special = set(encoder.tokenizer.all_special_tokens)
    weights = np.exp(np.asarray(query.weights, dtype=np.float64))
    for position, token in enumerate(tokens):
        word = token.removeprefix("##")
        if token in special or not any(c.isalnum() for c in word) or (word in STOPWORDS and not token.startswith("##")):
            weights[position] = 0.0
    return weights


def select_evidence(
    encoder: ColBERTAttEncoder,
    query: EncodedText,
    passages: Sequence[tuple[int, str, np.ndarray]],
    max_units: int = 6,
    min_gain: float = 0.01,
    heading_weight: float = 0.5,
    follow_lead_ins: bool = True,
    neighbours: int = 0,
) -> Evidence:
    """The units of `passages` that best answer `query`. Each passage is (number, text, similarities), the last
    being its (query tokens, stored tokens) cosine matrix (`BaseMultiVectorIndex.token_similarities`).

    With `follow_lead_ins`, a chosen unit that ends in a colon ("After swimming in the sea:") brings the list items
    or table rows that follow it (up to `LEAD_IN_FOLLOWERS`), beyond `max_units`: the lead-in names the case, the
    lines after it hold the answer."""
    weights = content_weights(encoder, query)
    mask = weights > 0
    if not mask.any():
        weights, mask = np.ones_like(weights), np.ones_like(weights, dtype=bool)
    weights = weights[mask] / weights[mask].sum()

    candidates: list[tuple[EvidenceUnit, np.ndarray]] = []
    kinds: dict[tuple[int, int], str] = {}
    for number, text, similarities in passages:
        heading, units = split_passage(text)
        spans = encoder.document_token_spans(text)
        similarity = np.asarray(similarities, dtype=np.float32)[mask]
        if similarity.shape[1] != len(spans):
            raise ValueError(
                f"Source {number} has {similarity.shape[1]} stored tokens but its text tokenises to {len(spans)}: "
                "the index was built with another encoder setting; rebuild it."
            )
        starts = spans[:, 0]
        in_heading = (spans[:, 1] > 0) & (starts < len(heading))
        heading_best = heading_weight * (
            similarity[:, in_heading].max(axis=1) if in_heading.any() else np.zeros(len(weights))
        )
        for position, unit in enumerate(units):
            inside = (spans[:, 1] > 0) & (starts >= unit.start) & (starts < unit.end)
            if not inside.any():
                continue
            best = np.maximum(similarity[:, inside].max(axis=1), heading_best)
            score = float(weights @ best)
            candidates.append((EvidenceUnit(number, position, heading, unit.text, score), best))
            kinds[number, position] = unit.kind
    if not candidates:
        return Evidence([])

    candidates.sort(key=lambda item: (-item[0].score, item[0].source_number, item[0].position))
    chosen = [candidates[0]]
    covered = candidates[0][1].copy()
    for unit, best in candidates[1:]:
        if len(chosen) == max_units:
            break
        gain = float(weights @ (np.maximum(covered, best) - covered))
        if gain >= min_gain:
            chosen.append((unit, best))
            covered = np.maximum(covered, best)
    # The top-ranked passage is the best match as a whole: its best unit is always shown, even when a unit of a
    # lower passage covers the same words (the same fee stated in two FAQs, say).
    first = passages[0][0]
    if not any(unit.source_number == first for unit, _ in chosen):
        best_of_first = next((item for item in candidates if item[0].source_number == first), None)
        if best_of_first is not None:
            chosen = [*chosen[: max_units - 1], best_of_first]
    units = [unit for unit, _ in chosen]
    if follow_lead_ins:
        units = _with_lead_in_followers(units, [unit for unit, _ in candidates], kinds)
    if neighbours:
        units = _with_neighbours(units, [unit for unit, _ in candidates], neighbours)
    return Evidence(units)


def _with_neighbours(chosen: list[EvidenceUnit], candidates: list[EvidenceUnit], reach: int) -> list[EvidenceUnit]:
    by_place = {(unit.source_number, unit.position): unit for unit in candidates}
    taken = {(unit.source_number, unit.position) for unit in chosen}
    result = list(chosen)
    for unit in chosen:
        for step in [*range(-reach, 0), *range(1, reach + 1)]:
            place = (unit.source_number, unit.position + step)
            if place in by_place and place not in taken:
                taken.add(place)
                result.append(by_place[place])
    return result


def _with_lead_in_followers(
    chosen: list[EvidenceUnit], candidates: list[EvidenceUnit], kinds: dict[tuple[int, int], str]
) -> list[EvidenceUnit]:
    by_place = {(unit.source_number, unit.position): unit for unit in candidates}
    taken = {(unit.source_number, unit.position) for unit in chosen}
    result = list(chosen)
    for unit in chosen:
        if not unit.text.rstrip().endswith(":"):
            continue
        for step in range(1, LEAD_IN_FOLLOWERS + 1):
            place = (unit.source_number, unit.position + step)
            follower = by_place.get(place)
            if follower is None or (kinds.get(place) == "sentence" and step > 1):
                break
            if place not in taken:
                taken.add(place)
                result.append(follower)
    return result


def evidence_for(
    index: BaseMultiVectorIndex,
    question: str | EncodedText,
    passages: Sequence[tuple[int, str, str]],
    max_units: int = 6,
    ranked_only: bool = False,
    similarities: Sequence[np.ndarray] | None = None,
) -> Evidence:
    """`select_evidence` for retrieved passages given as (number, node id, text): the question (encoded here unless
    it already is) is aligned with each passage's stored tokens (or `similarities`, those alignments already read,
    one per passage). With `ranked_only`, the `max_units` best-aligned units in score order, without the search for
    coverage and without lead-in followers: candidates for a judge."""
    query = index.encoder.encode_query(question) if isinstance(question, str) else question
    if similarities is None:
        similarities = [index.token_similarities(query, node_id) for _, node_id, _ in passages]
    aligned = [(number, text, matrix) for (number, _, text), matrix in zip(passages, similarities, strict=True)]
    if ranked_only:
        return select_evidence(index.encoder, query, aligned, max_units=max_units, min_gain=-1.0, follow_lead_ins=False)
    return select_evidence(index.encoder, query, aligned, max_units=max_units)


def with_context(units: Sequence[EvidenceUnit], passages: dict[int, str], reach: int) -> list[EvidenceUnit]:
    """`units` and, for each, up to `reach` units either side of it in the same paragraph, list or table of its
    passage (`passages`: number to text), each unit once, in passage order. A quoted line with the sentences around
    it reads as an excerpt, and holds the answer more often than the line alone (benchmarks/RESULTS.md)."""
    taken: dict[tuple[int, int], EvidenceUnit] = {(unit.source_number, unit.position): unit for unit in units}
    quoted_sources = {unit.source_number for unit in units} if reach else set()
    split = {number: split_passage(text) for number, text in passages.items() if number in quoted_sources}
    for unit in units:
        if unit.source_number not in split:
            continue
        heading, passage_units = split[unit.source_number]
        if not 0 <= unit.position < len(passage_units):
            continue
        block = passage_units[unit.position].block
        for position in range(unit.position - reach, unit.position + reach + 1):
            if 0 <= position < len(passage_units) and passage_units[position].block == block:
                neighbour = EvidenceUnit(unit.source_number, position, heading, passage_units[position].text, 0.0)
                taken.setdefault((unit.source_number, position), neighbour)
    return sorted(taken.values(), key=lambda u: (u.source_number, u.position))
