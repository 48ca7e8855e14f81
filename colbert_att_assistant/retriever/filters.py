"""Evaluate LlamaIndex `MetadataFilters` against a document's metadata dict."""

from __future__ import annotations

from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

_MISSING = object()


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple | set) else [value]


def _matches_one(metadata: dict[str, Any], rule: MetadataFilter) -> bool:
    actual = metadata.get(rule.key, _MISSING)
    expected = rule.value
    op = rule.operator
    if op is FilterOperator.IS_EMPTY:
        return actual is _MISSING or actual in (None, "", [])
    if actual is _MISSING:
        # A missing key can only satisfy "not equal" / "not in".
        return op in (FilterOperator.NE, FilterOperator.NIN)
    try:
        match op:
            case FilterOperator.EQ:
                return actual == expected
            case FilterOperator.NE:
                return actual != expected
            case FilterOperator.GT:
                return actual > expected
            case FilterOperator.GTE:
                return actual >= expected
            case FilterOperator.LT:
                return actual < expected
            case FilterOperator.LTE:
                return actual <= expected
            case FilterOperator.IN:
                return any(a in _as_list(expected) for a in _as_list(actual))
            case FilterOperator.NIN:
                return not any(a in _as_list(expected) for a in _as_list(actual))
            case FilterOperator.ANY:
                return any(e in _as_list(actual) for e in _as_list(expected))
            case FilterOperator.ALL:
                return all(e in _as_list(actual) for e in _as_list(expected))
            case FilterOperator.CONTAINS:
                return expected in _as_list(actual) if isinstance(actual, list) else str(expected) in str(actual)
            case FilterOperator.TEXT_MATCH:
                return str(expected) in str(actual)
            case FilterOperator.TEXT_MATCH_INSENSITIVE:
                return str(expected).lower() in str(actual).lower()
    except TypeError:
        # Comparing unlike types (e.g. a number with a string) is a non-match, not a crash.
        return False
    raise ValueError(f"Unsupported filter operator {op!r}.")


def metadata_matches(metadata: dict[str, Any], filters: MetadataFilters | None) -> bool:
    if filters is None or not filters.filters:
        return True
    results = (
        metadata_matches(metadata, rule) if isinstance(rule, MetadataFilters) else _matches_one(metadata, rule)
        for rule in filters.filters
    )
    match filters.condition:
        case FilterCondition.OR:
            return any(results)
        case FilterCondition.NOT:
            return not any(results)
        case _:
            return all(results)
