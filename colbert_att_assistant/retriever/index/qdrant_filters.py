"""LlamaIndex metadata filters as Qdrant filters on the `metadata.<key>` payload fields, with the meaning
`retriever.filters.metadata_matches` gives them in the local index (or an error where Qdrant cannot say the same)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
from qdrant_client import models

from colbert_att_assistant.retriever.errors import ColBERTAttError

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class UnsupportedFilterError(ColBERTAttError, ValueError):
    """A metadata filter that the Qdrant backend cannot translate into a Qdrant filter with the same meaning."""


# A condition that never holds (every point has a non-empty doc_id) and its negation, for empty IN / NIN lists.
_NEVER = models.IsEmptyCondition(is_empty=models.PayloadField(key="doc_id"))
_ALWAYS = models.Filter(must_not=[_NEVER])


def _payload_key(key: str) -> str:
    if _PLAIN_KEY.match(key):
        return f"metadata.{key}"
    if '"' in key or not key:
        raise UnsupportedFilterError(f"Metadata key {key!r} cannot be written as a Qdrant payload path.")
    return f'metadata."{key}"'


def _equals(key: str, value: Any) -> models.Condition:
    """`metadata[key] == value` (for an array payload: any element equals value, Qdrant's array semantics)."""
    if value is None:
        return models.IsNullCondition(is_null=models.PayloadField(key=key))
    if isinstance(value, bool):
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))
    if isinstance(value, int | float):
        # A range, not MatchValue: Qdrant never matches a float payload (2.0) with an integer (2), Python does.
        return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
    if isinstance(value, str):
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))
    raise UnsupportedFilterError(
        f"Filter value {value!r} on {key!r}: the Qdrant backend compares with strings and numbers only."
    )


def _any_of(key: str, values: Any) -> models.Condition:
    """Any value of `metadata[key]` (a scalar or an array) is one of `values`."""
    values = list(values) if isinstance(values, list | tuple | set) else [values]
    if not values:
        return _NEVER
    if all(isinstance(v, str) for v in values):
        return models.FieldCondition(key=key, match=models.MatchAny(any=values))
    # Numbers become ranges (see _equals), so that 2 and 2.0 match each other as in Python.
    return models.Filter(should=[_equals(key, v) for v in values])


def _range(key: str, operator: FilterOperator, value: Any) -> models.Condition:
    bounds = {
        FilterOperator.GT: "gt",
        FilterOperator.GTE: "gte",
        FilterOperator.LT: "lt",
        FilterOperator.LTE: "lte",
    }[operator]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return models.FieldCondition(key=key, range=models.Range(**{bounds: value}))
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None:
            # Qdrant compares RFC 3339 strings as datetimes; the local index compares them as strings. The two agree
            # for ISO-8601 values written the same way (e.g. all YYYY-MM-DD).
            return models.FieldCondition(key=key, range=models.DatetimeRange(**{bounds: moment}))
    raise UnsupportedFilterError(
        f"Filter {key} {operator.value} {value!r}: Qdrant ranges compare numbers or ISO-8601 dates only."
    )


def _translate_rule(rule: MetadataFilter) -> models.Condition:
    key = _payload_key(rule.key)
    op, value = rule.operator, rule.value
    match op:
        case FilterOperator.EQ:
            if isinstance(value, list):
                raise UnsupportedFilterError(
                    f"Filter {rule.key} == {value!r}: equality with a list is not supported by the Qdrant backend; "
                    "use IN / ANY / ALL."
                )
            return _equals(key, value)
        case FilterOperator.NE:
            if isinstance(value, list):
                raise UnsupportedFilterError(
                    f"Filter {rule.key} != {value!r}: inequality with a list is not supported; use NIN."
                )
            # must_not also keeps documents without the key, as the local index does.
            return models.Filter(must_not=[_equals(key, value)])
        case FilterOperator.GT | FilterOperator.GTE | FilterOperator.LT | FilterOperator.LTE:
            return _range(key, op, value)
        case FilterOperator.IN | FilterOperator.ANY:
            return _any_of(key, value)
        case FilterOperator.NIN:
            return models.Filter(must_not=[_any_of(key, value)])
        case FilterOperator.ALL:
            values = list(value) if isinstance(value, list | tuple | set) else [value]
            if not values:
                raise UnsupportedFilterError(f"Filter {rule.key} ALL []: an empty ALL list is not supported.")
            return models.Filter(must=[_equals(key, v) for v in values])
        case FilterOperator.IS_EMPTY:
            return models.Filter(
                should=[
                    models.IsEmptyCondition(is_empty=models.PayloadField(key=key)),
                    models.FieldCondition(key=key, match=models.MatchValue(value="")),
                ]
            )
    raise UnsupportedFilterError(
        f"Filter operator {op.value!r} (on {rule.key!r}) is not supported by the Qdrant backend: its Qdrant "
        "counterpart (full-text match) tokenises text, unlike the local index's substring test. Supported: "
        "==, !=, >, >=, <, <=, in, nin, any, all, is_empty, combined with and / or / not."
    )


def translate_filters(filters: MetadataFilters) -> models.Filter:
    """LlamaIndex `MetadataFilters` (as `retriever.filters.metadata_matches` reads them) as a Qdrant `Filter` on the
    `metadata.<key>` payload fields. Raises `UnsupportedFilterError` for what it cannot translate faithfully."""
    if not filters.filters:
        return _ALWAYS
    conditions = [
        translate_filters(rule) if isinstance(rule, MetadataFilters) else _translate_rule(rule)
        for rule in filters.filters
    ]
    match filters.condition:
        case FilterCondition.OR:
            return models.Filter(should=conditions)
        case FilterCondition.NOT:
            return models.Filter(must_not=conditions)
        case _:
            return models.Filter(must=conditions)
