"""Errors a caller can act on. Each message says what is wrong and how to fix it."""


class ColBERTAttError(Exception):
    """Base class for every error this package raises on purpose."""


class InvalidQueryError(ColBERTAttError, ValueError):
    """The query text cannot be searched (empty, whitespace, wrong type)."""


class InvalidDocumentError(ColBERTAttError, ValueError):
    """A document cannot be indexed (empty text, duplicate or unknown id, wrong type)."""


class CheckpointError(ColBERTAttError):
    """A model folder is missing, incomplete or in a layout we cannot read."""


class IndexCorruptError(ColBERTAttError):
    """An index directory is missing, incomplete or unreadable."""


class IndexMismatchError(ColBERTAttError):
    """An index was built with another model, another encoder setting or a newer format."""
