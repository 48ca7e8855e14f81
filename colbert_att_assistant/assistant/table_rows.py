"""Table rows named by the question's own values: "I'm a UK 8 in dresses, what is that in French sizes?" names the
row of the size table whose UK cell is 8.

The token alignment reads numbers poorly (to it every row of a size table looks alike, and the sentence that
introduces the table matches the question's words best), so such a row is found by its cells instead: a row is
named when one of its cells is a number the question gives, and it is the only row of its table with that value, or
the only one where the value stands in a column the question names next to the number ("UK 8", "8 UK")."""

from __future__ import annotations

import re
from collections.abc import Sequence

from colbert_att_assistant.assistant.evidence import EvidenceUnit, PassageUnit, split_passage

_NUMBER = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)?½?(?![\w½])")
_WORD = re.compile(r"[^\W\d_]+")


def value_mentions(question: str) -> list[tuple[str, frozenset[str]]]:
    """Each number of `question` with the words just before and after it, lower case: [("8", {"uk", "in"})]."""
    mentions = []
    for match in _NUMBER.finditer(question):
        before = _WORD.findall(question[: match.start()])[-1:]
        after = _WORD.findall(question[match.end() :])[:1]
        mentions.append((match.group().replace(",", "."), frozenset(w.lower() for w in [*before, *after])))
    return mentions


def _column_words(column: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(column)}


Row = tuple[int, PassageUnit]  # (position in the passage, unit)


def _named_rows(table: list[Row], value: str, near: frozenset[str]) -> list[Row]:
    holding = [(position, unit) for position, unit in table if any(cell == value for _, cell in unit.cells)]
    if len(holding) > 1:
        holding = [
            (position, unit)
            for position, unit in holding
            if any(cell == value and _column_words(column) & near for column, cell in unit.cells)
        ]
    return holding if len(holding) == 1 else []


def rows_named_by(question: str, passages: Sequence[tuple[int, str]], limit: int = 2) -> list[EvidenceUnit]:
    """The table rows of `passages` ((number, text), best first) that `question` names by value, at most `limit`."""
    mentions = value_mentions(question)
    if not mentions:
        return []
    found: dict[tuple[int, int], EvidenceUnit] = {}
    for number, text in passages:
        heading, units = split_passage(text)
        tables: dict[int, list[tuple[int, PassageUnit]]] = {}
        for position, unit in enumerate(units):
            if unit.kind == "table_row" and unit.cells:
                tables.setdefault(unit.block, []).append((position, unit))
        for table in tables.values():
            for value, near in mentions:
                for position, unit in _named_rows(table, value, near):
                    found.setdefault((number, position), EvidenceUnit(number, position, heading, unit.text, 1.0))
    return list(found.values())[:limit]
