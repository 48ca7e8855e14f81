"""Errors a caller of the assistant can act on; each message says what is wrong and how to fix it."""

from colbert_att_assistant.retriever.errors import ColBERTAttError


class AssistantError(ColBERTAttError):
    """Base class for the assistant's own errors."""


class ModelFileError(AssistantError):
    """A bundled GGUF model is missing, not installed or does not match its pinned checksum."""


class LLMBackendError(AssistantError):
    """The configured LLM backend cannot be built or reached."""


class SettingsError(AssistantError, ValueError):
    """A settings file or environment variable is not valid."""
