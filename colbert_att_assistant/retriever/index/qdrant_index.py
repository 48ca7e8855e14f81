"""A Qdrant backend for the multi-vector index: Qdrant stores the documents and generates candidates, and the exact
ColBERT-Att score re-ranks them here.

Who does what
-------------
Qdrant holds one point per document in a collection with a single multivector named vector (`colbert`, size
`encoder.dim`, `MultiVectorConfig(comparator=MAX_SIM)`), and the document's payload:

    doc_id          the document id (point ids are a deterministic UUID5 of it, see `point_id`)
    text            the document text
    metadata        the document metadata; a LlamaIndex filter on key `k` becomes a Qdrant condition on
                    `metadata.k` (see `qdrant_filters.py`), evaluated by Qdrant before it ranks anything
    token_weights   the attention weight A of every stored token vector
    token_ids       the word-piece id of every stored token vector (for `explain=True` and `get`)
    n_words         the document's length in words (the exponent delta = min(1, n_words / l))

A search sends the query's token vectors as a multivector query (`query_points`). Qdrant ranks the documents that
pass the filter by plain MaxSim, sum_i max_j q_i . d_j, and returns the best `max(prefetch_limit, top_k)` of them
with their stored vectors and payload. Those candidates are then scored by the re-ranking step every backend shares
(`rerank.py`, through `BaseMultiVectorIndex.search`), and the best `top_k` are returned.

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
`IndexMismatchError`. `storage.vector_format` must be "bfloat16" (residual_pq is the local index's own format).
`persist(directory)` writes only a small pointer file (`qdrant_index.json`: the connection settings without the API
key, and the manifest) so that `QdrantMultiVectorIndex.load(directory)` can reopen it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from llama_index.core.vector_stores.types import MetadataFilters
from pydantic import BaseModel, ConfigDict, ValidationError

from colbert_att_assistant.retriever.index.qdrant_settings import missing_qdrant_client

try:  # an optional extra (also imported by qdrant_filters.py): say how to install it, not a bare ModuleNotFoundError
    from qdrant_client import QdrantClient, models
except ImportError as exc:
    raise missing_qdrant_client() from exc

from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder, EncodedText
from colbert_att_assistant.retriever.errors import (
    ColBERTAttError,
    IndexCorruptError,
    IndexMismatchError,
    InvalidDocumentError,
)
from colbert_att_assistant.retriever.index.base import (
    BaseMultiVectorIndex,
    Candidates,
    DocumentInput,
    StoredDocument,
    check_compatible,
)
from colbert_att_assistant.retriever.index.manifest import ModelIdentity
from colbert_att_assistant.retriever.index.qdrant_filters import UnsupportedFilterError, translate_filters
from colbert_att_assistant.retriever.index.qdrant_settings import POINTER_FILE, QdrantSettings
from colbert_att_assistant.retriever.settings import IndexSettings

__all__ = [
    "POINTER_FILE",
    "QdrantCollectionManifest",
    "QdrantMultiVectorIndex",
    "QdrantSettings",
    "QdrantUnavailableError",
    "UnsupportedFilterError",
    "collection_exists",
    "drop_collection",
    "point_id",
    "translate_filters",
    "vectors_config",
]

logger = logging.getLogger(__name__)

VECTOR_NAME = "colbert"
MANIFEST_KEY = "colbert_att_manifest"
QDRANT_FORMAT_VERSION = 1
# Point ids are UUID5s of the document id in this namespace: the same document id always maps to the same point.
_POINT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/colbert-att-assistant/document-id")
_PAGE = 256  # points per scroll page / per upsert request


class QdrantUnavailableError(ColBERTAttError):
    """The Qdrant server cannot be reached, or the local folder is held by another client."""


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


def collection_exists(qdrant: QdrantSettings) -> bool:
    if qdrant.in_memory:
        return False  # every in-memory client is a new, empty engine
    client = qdrant.client()
    try:
        return client.collection_exists(qdrant.collection)
    finally:
        client.close()


def drop_collection(qdrant: QdrantSettings) -> bool:
    """Delete the collection and its documents; True when there was one. (Local mode: the folder must be free.)"""
    if qdrant.in_memory:
        return False
    client = qdrant.client()
    try:
        existed = client.collection_exists(qdrant.collection)
        if existed:
            client.delete_collection(qdrant.collection)
            logger.info("Deleted %s.", qdrant.describe())
        return existed
    finally:
        client.close()


class QdrantMultiVectorIndex(BaseMultiVectorIndex):
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
                    check_compatible(self._where, stored.model, stored.settings, encoder)
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
                    if self.settings.storage.vector_format != "bfloat16":
                        raise ValueError(
                            f"storage.vector_format={self.settings.storage.vector_format!r} is a local-index format; "
                            "the Qdrant backend stores bfloat16-rounded vectors (for smaller vectors on a server, "
                            "configure Qdrant's own quantization on the collection)."
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

    # ---- inspection ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return self._client.count(self.qdrant.collection, exact=True).count

    def __contains__(self, document_id: object) -> bool:
        if not isinstance(document_id, str) or not document_id:
            return False
        return bool(self._present([document_id]))

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
        return self._stored_document(points[0].payload, points[0].vector)

    def _present(self, document_ids: list[str]) -> set[str]:
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

    def _stored_document(self, payload: dict[str, Any], vector: Any) -> StoredDocument:
        """A point's payload and token vectors as the local index's `StoredDocument` (slot -1)."""
        raw = vector.get(VECTOR_NAME) if isinstance(vector, dict) else vector
        vectors = np.asarray(raw, dtype=np.float32)
        weights = np.asarray(payload["token_weights"], dtype=np.float32)
        token_ids = np.asarray(payload["token_ids"], dtype=np.int32)
        if vectors.ndim != 2 or vectors.shape != (len(weights), self.encoder.dim) or len(token_ids) != len(weights):
            raise IndexCorruptError(
                f"{self._where}: document {payload.get('doc_id')!r} has vectors of shape {vectors.shape} but "
                f"{len(weights)} weights and {len(token_ids)} token ids. Re-index it."
            )
        return StoredDocument(
            slot=-1,
            id=payload["doc_id"],
            text=payload["text"],
            metadata=payload.get("metadata") or {},
            n_words=int(payload["n_words"]),
            # The stored values are bfloat16-rounded, so this conversion is exact: the local index's tensor.
            vectors=torch.from_numpy(vectors).to(torch.bfloat16),
            weights=weights,
            token_ids=token_ids,
        )

    # ---- changes ------------------------------------------------------------------------------------------

    def _delete(self, document_ids: list[str]) -> None:
        with self._lock:
            for start in range(0, len(document_ids), _PAGE):
                chunk = document_ids[start : start + _PAGE]
                self._client.delete(
                    self.qdrant.collection,
                    points_selector=models.PointIdsList(points=[point_id(i) for i in chunk]),
                    wait=True,
                )

    def update_metadata(self, document_id: str, metadata: dict[str, Any]) -> None:
        if document_id not in self:
            raise InvalidDocumentError(f"No document with id {document_id!r} in {self._where}.")
        with self._lock:
            # A top-level payload key is replaced as a whole, so old metadata keys do not survive.
            self._client.set_payload(
                self.qdrant.collection, payload={"metadata": dict(metadata)}, points=[point_id(document_id)], wait=True
            )

    def _store(self, batch: list[DocumentInput], encoded: list[EncodedText]) -> None:
        """Write the points; one already stored under a document id is replaced (its point id is the same)."""
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

    # ---- candidates ---------------------------------------------------------------------------------------

    def _candidates(
        self, query: EncodedText, top_k: int, filters: MetadataFilters | None, exhaustive: bool
    ) -> Candidates:
        """Qdrant's best `max(prefetch_limit, top_k)` documents by plain MaxSim among those passing the filter
        (every one of them when `exhaustive`), with their stored vectors for the exact re-ranking."""
        query_filter = translate_filters(filters) if filters is not None and filters.filters else None
        if exhaustive:
            points = list(self._scroll(query_filter))
        else:
            with self._lock:
                response = self._client.query_points(
                    self.qdrant.collection,
                    query=np.asarray(query.vectors, dtype=np.float32).tolist(),
                    using=VECTOR_NAME,
                    query_filter=query_filter,
                    limit=max(self.qdrant.prefetch_limit, top_k),
                    with_payload=True,
                    with_vectors=[VECTOR_NAME],
                )
            points = [(p.payload or {}, p.vector) for p in response.points]
        documents = [self._stored_document(payload, vector) for payload, vector in points]
        # Ties break on the document id so that results are deterministic.
        return Candidates(documents, np.argsort(np.argsort([d.id for d in documents], kind="stable"), kind="stable"))

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
