"""A Qdrant backend for the multi-vector index: Qdrant stores the documents and generates candidates, and the exact
ColBERT-Att score re-ranks them here.

Who does what
-------------
Qdrant holds one point per document in a collection with a single multivector named vector (`colbert`, size
`encoder.dim`, `MultiVectorConfig(comparator=MAX_SIM)`), and the document's payload:

    doc_id          the document id (point ids are a deterministic UUID5 of it, see `point_id`)
    text            the document text
    metadata        the document metadata; a LlamaIndex filter on key `k` becomes a Qdrant condition on
                    `metadata.k` (see `translate_filters`), evaluated by Qdrant before it ranks anything
    token_weights   the attention weight A of every stored token vector
    token_ids       the word-piece id of every stored token vector (for `explain=True` and `get`)
    n_words         the document's length in words (the exponent delta = min(1, n_words / l))

A search sends the query's token vectors as a multivector query (`query_points`). Qdrant ranks the documents that
pass the filter by plain MaxSim, sum_i max_j q_i . d_j, and returns the best `max(prefetch_limit, top_k)` of them
with their stored vectors and payload. Those candidates are then scored here with `retriever.scoring.score_batch`,
the same function the local index uses, and the best `top_k` are returned.

Why Qdrant's own score is not enough: ColBERT-Att weighs each query token's best match by exp(A_dw) ** delta, where
d_w = argmax_j cos(q_i, d_j) is the document token that won the MaxSim. Qdrant returns only the summed MaxSim, not
which document token won for each query token, and its payload cannot take part in the score, so the weights of
d_w (and the length exponent) can only be applied by re-reading the stored token vectors and weights. In
`ScoringMode.MAXSIM` the re-rank gives Qdrant's own ranking back (same formula); it is kept so that scores,
normalised scores and explanations are exactly those of the local index.

Distance: the collection uses DOT, not COSINE. The encoder's token vectors are already L2-normalised, so the dot
product *is* the cosine; but Qdrant renormalises COSINE vectors when it stores them, which would move the stored
values away from the bfloat16-rounded values the local index keeps (see `manifest.py`). With DOT, Qdrant stores and
returns exactly those values (as float32), so a re-ranked score here equals the local index's score bit for bit.

Pointing it at a Qdrant server or cluster
-----------------------------------------
    QdrantSettings(url="https://my-cluster.eu-central-1-0.aws.cloud.qdrant.io:6333", api_key="...",
                   collection="knowledge_base", prefer_grpc=True)

or, from the environment: `QdrantSettings(url=os.environ["QDRANT_URL"], api_key=os.environ["QDRANT_API_KEY"])`.
With `prefer_grpc=True` the client talks gRPC on port 6334 (vectors travel as packed floats rather than JSON,
which matters since every candidate's token vectors come back with it). A distributed collection is created with
Qdrant's defaults (one shard); to shard or replicate it, create it beforehand with the same vector config
(`vectors_config()`) and the manifest as its metadata, or change it with Qdrant's cluster API afterwards. The
manifest lives in the collection's metadata, which needs a Qdrant server that supports collection metadata.
On a server, filtered searches are fastest with a payload index on each filtered key, e.g.
`index.client.create_payload_index(collection, "metadata.audience", "keyword")` (local mode has no indexes).

Local mode (`location=":memory:"` or `location="<folder>"`) is qdrant-client's embedded, pure-Python engine: no
server, brute-force search over every point (no HNSW), and a folder can be opened by one client at a time (close
the index, or use it as a context manager). It is meant for tests and small collections; the tests run in it.

Persistence and the model check
-------------------------------
With `location="<folder>"` the folder IS the persistent store (qdrant-client writes every change to it), and with
`url=...` the server is. When the collection is created, a `QdrantCollectionManifest` (encoder identity: model
name, weights sha256, dim; the encoder settings that change vectors or weights; the index settings, among them
`storage.prune_fraction`, which is applied here as in the local index) is written into the collection's metadata.
Reopening the collection with an encoder that differs in any of those, or with other storage settings, raises
`IndexMismatchError`. `storage.codec` must be "bfloat16" (residual_pq is the local index's own format).
`persist(directory)` writes only a small pointer file (`qdrant_index.json`: the connection settings without the API
key, and the manifest) so that `QdrantMultiVectorIndex.load(directory)` can reopen it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from qdrant_client import QdrantClient, models

from retriever.encoder import ColBERTAttEncoder, EncodedText, ProgressCallback
from retriever.errors import ColBERTAttError, IndexCorruptError, IndexMismatchError, InvalidDocumentError
from retriever.index.manifest import ModelIdentity
from retriever.index.multivector_index import (
    VECTOR_AFFECTING_FIELDS,
    DocumentInput,
    SearchHit,
    StoredDocument,
    TokenMatch,
    coerce_documents,
    pruned_tokens,
)
from retriever.scoring import CandidateBatch, ScoringMode, score_batch
from retriever.settings import IndexSettings

logger = logging.getLogger(__name__)

VECTOR_NAME = "colbert"
MANIFEST_KEY = "colbert_att_manifest"
POINTER_FILE = "qdrant_index.json"
QDRANT_FORMAT_VERSION = 1
# Point ids are UUID5s of the document id in this namespace: the same document id always maps to the same point.
_POINT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/colbert-att-assistant/document-id")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_PAGE = 256  # points per scroll page / per upsert request


class UnsupportedFilterError(ColBERTAttError, ValueError):
    """A metadata filter that the Qdrant backend cannot translate into a Qdrant filter with the same meaning."""


class QdrantUnavailableError(ColBERTAttError):
    """The Qdrant server cannot be reached, or the local folder is held by another client."""


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


class QdrantCollectionManifest(BaseModel):
    """What a collection was built with; stored in the collection's metadata and checked when it is reopened."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = QDRANT_FORMAT_VERSION
    backend: Literal["qdrant-multivector"] = "qdrant-multivector"
    created_at: datetime
    model: ModelIdentity
    settings: IndexSettings
    vector_name: str = VECTOR_NAME
    # Stored values are the bfloat16-rounded token vectors (exactly those of the local index), held as float32.
    vector_values: Literal["bfloat16-rounded"] = "bfloat16-rounded"


def point_id(document_id: str) -> str:
    """The Qdrant point id of a document id: a UUID5, so the same id always lands on the same point."""
    return str(uuid.uuid5(_POINT_ID_NAMESPACE, document_id))


def vectors_config(dim: int) -> dict[str, models.VectorParams]:
    """The collection's vector config: one MaxSim multivector of unit token vectors (DOT = cosine, see above)."""
    return {
        VECTOR_NAME: models.VectorParams(
            size=dim,
            distance=models.Distance.DOT,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
        )
    }


# ---- metadata filters ---------------------------------------------------------------------------------------------

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


# ---- the index ----------------------------------------------------------------------------------------------------


class QdrantMultiVectorIndex:
    """The multi-vector index on a Qdrant collection: same public methods and results as `MultiVectorIndex`.

    Differences: `document_ids()` is sorted by id (Qdrant keeps no insertion order), exact score ties break on the
    document id, metadata comes back as JSON (tuples become lists, datetimes strings), and `get()` returns a
    `StoredDocument` whose `slot` is -1.
    """

    def __init__(
        self,
        encoder: ColBERTAttEncoder,
        settings: IndexSettings | None = None,
        qdrant: QdrantSettings | None = None,
        client: QdrantClient | None = None,
    ):
        """Open the collection, creating it (with its manifest) if it does not exist.

        `settings` None: the scoring settings recorded in an existing collection's manifest, else the defaults.
        `client`: an already open client for `qdrant` (e.g. to share one in-memory engine); closed by `close()`.
        """
        self.encoder = encoder
        self.qdrant = qdrant or QdrantSettings()
        self._where = self.qdrant.describe()
        try:
            self._client = client if client is not None else self.qdrant.client()
        except RuntimeError as exc:  # local mode: the folder is locked by another client
            raise QdrantUnavailableError(f"Cannot open {self._where}: {exc}") from exc
        self._lock = threading.RLock()
        collection = self.qdrant.collection
        try:
            with self._lock:
                try:
                    exists = self._client.collection_exists(collection)
                except Exception as exc:  # transport-specific errors (httpx, grpc): unreachable server
                    raise QdrantUnavailableError(f"Cannot open {self._where}: {exc}") from exc
                if exists:
                    stored = self._read_manifest()
                    self._check_compatible(stored)
                    if settings is not None and settings.storage != stored.settings.storage:
                        raise IndexMismatchError(
                            f"{self._where} was built with storage settings {stored.settings.storage.model_dump()}, "
                            f"but {settings.storage.model_dump()} were given (they change the stored tokens). "
                            "Open it with settings=None or the collection's storage settings, or rebuild it."
                        )
                    base = settings or stored.settings
                    self.settings = base.model_copy(update={"encoder": encoder.settings})
                    self.manifest = stored
                else:
                    self.settings = (settings or IndexSettings()).model_copy(update={"encoder": encoder.settings})
                    if self.settings.storage.codec != "bfloat16":
                        raise ValueError(
                            f"storage.codec={self.settings.storage.codec!r} is a local-index format; the Qdrant "
                            "backend stores bfloat16-rounded vectors (for smaller vectors on a server, configure "
                            "Qdrant's own quantization on the collection)."
                        )
                    self.manifest = QdrantCollectionManifest(
                        created_at=datetime.now(UTC), model=self.model_identity(), settings=self.settings
                    )
                    self._client.create_collection(
                        collection,
                        vectors_config=vectors_config(encoder.dim),
                        metadata={MANIFEST_KEY: self.manifest.model_dump(mode="json")},
                    )
                    logger.info("Created %s (dim %d, MaxSim multivector).", self._where, encoder.dim)
        except BaseException:
            if client is None:
                self._client.close()
            raise

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the client (in local-folder mode this releases the folder's lock)."""
        with self._lock:
            self._client.close()

    def __enter__(self) -> QdrantMultiVectorIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def client(self) -> QdrantClient:
        return self._client

    def _read_manifest(self) -> QdrantCollectionManifest:
        info = self._client.get_collection(self.qdrant.collection)
        metadata = info.config.metadata or {}
        if MANIFEST_KEY not in metadata:
            raise IndexMismatchError(
                f"{self._where} exists but has no {MANIFEST_KEY!r} in its metadata: it was not created by this "
                "backend. Use another collection name or delete that collection."
            )
        try:
            manifest = QdrantCollectionManifest.model_validate(metadata[MANIFEST_KEY])
        except ValidationError as exc:
            raise IndexCorruptError(f"{self._where}: its manifest cannot be read ({exc}).") from exc
        if manifest.format_version > QDRANT_FORMAT_VERSION:
            raise IndexMismatchError(
                f"{self._where} has format version {manifest.format_version}; this code reads up to "
                f"{QDRANT_FORMAT_VERSION}. Upgrade colbert-att-assistant."
            )
        params = info.config.params.vectors
        vector = params.get(manifest.vector_name) if isinstance(params, dict) else None
        if vector is None or vector.multivector_config is None or vector.size != manifest.model.dim:
            raise IndexCorruptError(
                f"{self._where}: its vector config does not match its manifest (expected a MaxSim multivector "
                f"{manifest.vector_name!r} of size {manifest.model.dim})."
            )
        return manifest

    def _check_compatible(self, manifest: QdrantCollectionManifest) -> None:
        encoder = self.encoder
        if manifest.model.weights_sha256 != encoder.weights_sha256 or manifest.model.dim != encoder.dim:
            raise IndexMismatchError(
                f"{self._where} was built with model {manifest.model.name} (weights "
                f"{manifest.model.weights_sha256[:12]}, dim {manifest.model.dim}), but the encoder is "
                f"{encoder.model_name} (weights {encoder.weights_sha256[:12]}, dim {encoder.dim}). "
                "Open it with the same model or rebuild the collection."
            )
        built = manifest.settings.encoder
        for name in VECTOR_AFFECTING_FIELDS:
            if getattr(built, name) != getattr(encoder.settings, name):
                raise IndexMismatchError(
                    f"{self._where} was built with {name}={getattr(built, name)!r}, but the encoder uses "
                    f"{name}={getattr(encoder.settings, name)!r}. Use the collection's setting or rebuild it."
                )

    # ---- inspection ---------------------------------------------------------------------------------------

    def model_identity(self) -> ModelIdentity:
        return ModelIdentity(
            name=self.encoder.model_name, weights_sha256=self.encoder.weights_sha256, dim=self.encoder.dim
        )

    def __len__(self) -> int:
        with self._lock:
            return self._client.count(self.qdrant.collection, exact=True).count

    def __contains__(self, document_id: object) -> bool:
        if not isinstance(document_id, str) or not document_id:
            return False
        return bool(self._existing([document_id]))

    @property
    def token_count(self) -> int:
        return sum(
            len(payload["token_ids"]) for payload, _ in self._scroll(None, with_vectors=False, fields=["token_ids"])
        )

    def document_ids(self) -> list[str]:
        """Every document id, sorted (Qdrant keeps no insertion order)."""
        return sorted(payload["doc_id"] for payload, _ in self._scroll(None, with_vectors=False, fields=["doc_id"]))

    def get(self, document_id: str) -> StoredDocument:
        with self._lock:
            points = self._client.retrieve(
                self.qdrant.collection, ids=[point_id(document_id)], with_payload=True, with_vectors=[VECTOR_NAME]
            )
        if not points or points[0].payload is None or points[0].payload.get("doc_id") != document_id:
            raise InvalidDocumentError(f"No document with id {document_id!r} in {self._where}.")
        payload = points[0].payload
        vectors, weights, token_ids = self._token_data(payload, points[0].vector)
        return StoredDocument(
            slot=-1,
            id=document_id,
            text=payload["text"],
            metadata=payload.get("metadata") or {},
            n_words=int(payload["n_words"]),
            vectors=vectors,
            weights=weights,
            token_ids=token_ids,
        )

    def _existing(self, document_ids: list[str]) -> set[str]:
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(document_ids), _PAGE):
                chunk = document_ids[start : start + _PAGE]
                points = self._client.retrieve(
                    self.qdrant.collection,
                    ids=[point_id(i) for i in chunk],
                    with_payload=["doc_id"],
                    with_vectors=False,
                )
                found.update(p.payload["doc_id"] for p in points if p.payload)
        return found & set(document_ids)

    def _scroll(
        self,
        query_filter: models.Filter | None,
        with_vectors: bool = True,
        fields: list[str] | None = None,
    ) -> Iterator[tuple[dict[str, Any], Any]]:
        offset = None
        while True:
            with self._lock:
                points, offset = self._client.scroll(
                    self.qdrant.collection,
                    scroll_filter=query_filter,
                    limit=_PAGE,
                    offset=offset,
                    with_payload=fields if fields is not None else True,
                    with_vectors=[VECTOR_NAME] if with_vectors else False,
                )
            for point in points:
                yield point.payload or {}, point.vector
            if offset is None:
                return

    def _token_data(self, payload: dict[str, Any], vector: Any) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        raw = vector.get(VECTOR_NAME) if isinstance(vector, dict) else vector
        vectors = np.asarray(raw, dtype=np.float32)
        weights = np.asarray(payload["token_weights"], dtype=np.float32)
        token_ids = np.asarray(payload["token_ids"], dtype=np.int32)
        if vectors.ndim != 2 or vectors.shape != (len(weights), self.encoder.dim) or len(token_ids) != len(weights):
            raise IndexCorruptError(
                f"{self._where}: document {payload.get('doc_id')!r} has vectors of shape {vectors.shape} but "
                f"{len(weights)} weights and {len(token_ids)} token ids. Re-index it."
            )
        # The stored values are bfloat16-rounded, so this conversion is exact: the same tensor as the local index's.
        return torch.from_numpy(vectors).to(torch.bfloat16), weights, token_ids

    # ---- changes ------------------------------------------------------------------------------------------

    def add(
        self, documents: Iterable[DocumentInput | dict[str, Any]], progress: ProgressCallback | None = None
    ) -> None:
        """Add new documents. An id already in the collection is an error (use `upsert` to replace)."""
        batch = coerce_documents(documents)
        existing = self._existing([d.id for d in batch])
        if existing:
            first = next(d.id for d in batch if d.id in existing)
            raise InvalidDocumentError(
                f"{len(existing)} id(s) already in the index (e.g. {first!r}); use upsert() to replace them."
            )
        self._write(batch, self.encoder.encode_documents([d.text for d in batch], progress=progress))

    def upsert(
        self, documents: Iterable[DocumentInput | dict[str, Any]], progress: ProgressCallback | None = None
    ) -> None:
        """Add documents, replacing any with the same id (the point id is derived from the document id)."""
        batch = coerce_documents(documents)
        # Encoding may fail on bad input: it happens before anything is written.
        self._write(batch, self.encoder.encode_documents([d.text for d in batch], progress=progress))

    def delete(self, document_ids: Iterable[str]) -> None:
        ids = list(document_ids)
        present = self._existing(ids) if ids else set()
        unknown = [i for i in ids if i not in present]
        if unknown:
            raise InvalidDocumentError(
                f"{len(unknown)} id(s) are not in the index (e.g. {unknown[0]!r}); nothing deleted."
            )
        with self._lock:
            for start in range(0, len(ids), _PAGE):
                self._client.delete(
                    self.qdrant.collection,
                    points_selector=models.PointIdsList(points=[point_id(i) for i in ids[start : start + _PAGE]]),
                    wait=True,
                )

    def update_metadata(self, document_id: str, metadata: dict[str, Any]) -> None:
        """Replace a document's metadata without re-encoding it (its text is unchanged)."""
        if document_id not in self:
            raise InvalidDocumentError(f"No document with id {document_id!r} in {self._where}.")
        with self._lock:
            # A top-level payload key is replaced as a whole, so old metadata keys do not survive.
            self._client.set_payload(
                self.qdrant.collection, payload={"metadata": dict(metadata)}, points=[point_id(document_id)], wait=True
            )

    def _write(self, batch: list[DocumentInput], encoded: list[EncodedText]) -> None:
        # The same attention-based token pruning as the local index (none by default).
        encoded = [pruned_tokens(item, self.settings.storage.prune_fraction) for item in encoded]
        points = []
        for document, item in zip(batch, encoded, strict=True):
            # Exactly the values the local index stores (bfloat16), held as float32 so that Qdrant keeps them as is.
            vectors = torch.from_numpy(item.vectors).to(torch.bfloat16).float().numpy()
            points.append(
                models.PointStruct(
                    id=point_id(document.id),
                    vector={VECTOR_NAME: vectors.tolist()},
                    payload={
                        "doc_id": document.id,
                        "text": document.text,
                        "metadata": dict(document.metadata),
                        "n_words": int(item.n_words),
                        "token_weights": item.weights.astype(np.float32).tolist(),
                        "token_ids": item.token_ids.astype(np.int32).tolist(),
                    },
                )
            )
        with self._lock:
            for start in range(0, len(points), _PAGE):
                self._client.upsert(self.qdrant.collection, points=points[start : start + _PAGE], wait=True)

    # ---- search -------------------------------------------------------------------------------------------

    def search(
        self,
        query: str | EncodedText,
        top_k: int = 10,
        mode: ScoringMode | str = ScoringMode.COLBERT_ATT,
        filters: MetadataFilters | None = None,
        exhaustive: bool = False,
        explain: bool = False,
    ) -> list[SearchHit]:
        """Top documents for a query, best first: Qdrant's MaxSim candidates re-ranked with the exact score.

        `exhaustive` scores every document that passes the filter exactly (scrolled from Qdrant) instead."""
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        mode = ScoringMode(mode)
        encoded = self.encoder.encode_query(query) if isinstance(query, str) else query
        query_filter = translate_filters(filters) if filters is not None and filters.filters else None
        if exhaustive:
            candidates = list(self._scroll(query_filter))
        else:
            with self._lock:
                response = self._client.query_points(
                    self.qdrant.collection,
                    query=np.asarray(encoded.vectors, dtype=np.float32).tolist(),
                    using=VECTOR_NAME,
                    query_filter=query_filter,
                    limit=max(self.qdrant.prefetch_limit, top_k),
                    with_payload=True,
                    with_vectors=[VECTOR_NAME],
                )
            candidates = [(p.payload or {}, p.vector) for p in response.points]
        if not candidates:
            return []
        payloads = [payload for payload, _ in candidates]
        token_data = [self._token_data(payload, vector) for payload, vector in candidates]
        batch = CandidateBatch(
            vectors=torch.cat([vectors for vectors, _, _ in token_data]),
            weights=np.concatenate([weights for _, weights, _ in token_data]),
            lengths=np.array([len(weights) for _, weights, _ in token_data]),
            n_words=np.array([int(p["n_words"]) for p in payloads]),
        )
        scored = score_batch(
            encoded.vectors,
            encoded.weights,
            batch,
            mode,
            self.settings.delta_length_words,
            self.settings.fixed_delta,
        )
        # Ties break on the document id so that results are deterministic.
        id_rank = np.argsort(np.argsort(np.array([p["doc_id"] for p in payloads]), kind="stable"), kind="stable")
        order = np.lexsort((id_rank, -scored.raw))[:top_k]
        hits = []
        for position in order:
            payload = payloads[position]
            _, weights, token_ids = token_data[position]
            best = scored.best_token[position]
            matches = []
            if explain:
                matches = [
                    TokenMatch(
                        query_position=i,
                        query_token_id=int(encoded.token_ids[i]),
                        document_position=int(best[i]),
                        document_token_id=int(token_ids[best[i]]),
                        similarity=float(scored.best_similarity[position, i]),
                        query_weight=float(encoded.weights[i]),
                        document_weight=float(weights[best[i]]),
                    )
                    for i in range(len(encoded.token_ids))
                ]
            hits.append(
                SearchHit(
                    id=payload["doc_id"],
                    score=float(scored.raw[position]),
                    normalised_score=float(scored.normalised[position]),
                    text=payload["text"],
                    metadata=payload.get("metadata") or {},
                    matches=matches,
                )
            )
        return hits

    # ---- persistence --------------------------------------------------------------------------------------

    def persist(self, directory: str | Path) -> QdrantCollectionManifest:
        """Write a pointer file to `directory` so that `load(directory)` reopens this collection.

        The data itself is already persistent (in the local folder, or on the server); nothing is copied. The API
        key is not written: pass it to `load`. An in-memory collection cannot be persisted."""
        if self.qdrant.in_memory:
            raise ValueError(
                f'{self._where} is in memory (location=":memory:"): it cannot be persisted. Use '
                'QdrantSettings(location="<folder>") or url=... for a persistent collection.'
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        qdrant = self.qdrant.model_dump(mode="json", exclude={"api_key"})
        if qdrant["location"] is not None:
            qdrant["location"] = str(Path(qdrant["location"]).resolve())
        content = {"qdrant": qdrant, "manifest": self.manifest.model_dump(mode="json")}
        temporary = directory / f".{POINTER_FILE}.tmp"
        temporary.write_text(json.dumps(content, indent=2), encoding="utf-8")
        os.replace(temporary, directory / POINTER_FILE)
        return self.manifest

    @classmethod
    def load(
        cls,
        directory: str | Path,
        encoder: ColBERTAttEncoder | None = None,
        api_key: str | None = None,
    ) -> QdrantMultiVectorIndex:
        """Reopen the collection a `persist(directory)` pointed at (checked against the encoder as always)."""
        path = Path(directory) / POINTER_FILE
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
            qdrant = QdrantSettings.model_validate({**content["qdrant"], "api_key": api_key})
            manifest = QdrantCollectionManifest.model_validate(content["manifest"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexCorruptError(f"{path}: cannot read the Qdrant pointer file ({exc}).") from exc
        if encoder is None:
            encoder = ColBERTAttEncoder(manifest.settings.encoder)
        return cls(encoder, None, qdrant)
