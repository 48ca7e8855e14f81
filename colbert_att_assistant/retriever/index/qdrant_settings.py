"""Where a Qdrant-backed index lives: a server (`url`) or qdrant-client's embedded local mode (`location`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from colbert_att_assistant.retriever.errors import ColBERTAttError

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

# The file `QdrantMultiVectorIndex.persist(directory)` writes: where the collection is, so that it can be reopened.
POINTER_FILE = "qdrant_index.json"


class QdrantNotInstalledError(ColBERTAttError, ImportError):
    """The Qdrant backend was asked for, but qdrant-client (an optional extra) is not installed."""


def missing_qdrant_client() -> QdrantNotInstalledError:
    return QdrantNotInstalledError(
        'The Qdrant backend needs qdrant-client, an optional extra: pip install -e ".[qdrant]" (the dev extra '
        "includes it). Without it, leave retrieval.qdrant unset to use the local index."
    )


class QdrantSettings(BaseModel):
    """Where the Qdrant collection lives: exactly one of `location` (embedded local mode) and `url` (a server)."""

    model_config = ConfigDict(extra="forbid")

    location: str | None = Field(
        default=None,
        description='":memory:" or a folder, for qdrant-client\'s embedded local mode; ":memory:" when url is unset.',
    )
    url: str | None = Field(default=None, description="A Qdrant server or cluster, e.g. https://host:6333.")
    api_key: SecretStr | None = Field(default=None, description="For url only; never written by persist().")
    prefer_grpc: bool = Field(default=False, description="For url only: talk gRPC (port 6334) instead of REST.")
    collection: str = Field(default="colbert_att", min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")
    prefetch_limit: int = Field(default=64, ge=1, description="Candidates taken from Qdrant before exact re-ranking.")
    timeout: int | None = Field(default=None, ge=1, description="Seconds per request to a server (url only).")

    @model_validator(mode="after")
    def _one_place(self) -> QdrantSettings:
        if self.location is not None and self.url is not None:
            raise ValueError(
                f"Give either location ({self.location!r}: local mode) or url ({self.url!r}: a server), not both."
            )
        if self.url is None:
            if self.location is None:
                self.location = ":memory:"
            if not self.location.strip():
                raise ValueError('location must be ":memory:" or a folder path, not an empty string.')
            if self.api_key is not None or self.prefer_grpc or self.timeout is not None:
                raise ValueError(
                    "api_key, prefer_grpc and timeout apply to a Qdrant server (url=...), not to local mode "
                    f"(location={self.location!r})."
                )
        elif not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}.")
        return self

    @property
    def in_memory(self) -> bool:
        return self.url is None and self.location == ":memory:"

    def describe(self) -> str:
        where = self.url or (self.location if self.in_memory else str(Path(str(self.location)).resolve()))
        return f"Qdrant collection {self.collection!r} at {where}"

    def client(self) -> QdrantClient:
        """A client for this place (qdrant-client is imported only here: the settings alone do not need it)."""
        try:
            from qdrant_client import QdrantClient
        except ImportError as exc:
            raise missing_qdrant_client() from exc

        if self.url is not None:
            return QdrantClient(
                url=self.url,
                api_key=self.api_key.get_secret_value() if self.api_key is not None else None,
                prefer_grpc=self.prefer_grpc,
                timeout=self.timeout,
            )
        if self.in_memory:
            return QdrantClient(location=":memory:")
        # The index serialises its own calls (a lock), so the client may be used from worker threads.
        return QdrantClient(path=str(self.location), force_disable_check_same_thread=True)
