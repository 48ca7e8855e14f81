"""The multi-vector index: documents' token vectors and weights, FAISS candidates, exact ColBERT-Att re-ranking,
in-place add / upsert / delete, metadata pre-filters, and atomic persistence."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from llama_index.core.vector_stores.types import MetadataFilters
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retriever.encoder import ColBERTAttEncoder, EncodedText, ProgressCallback
from retriever.errors import ColBERTAttError, IndexCorruptError, IndexMismatchError, InvalidDocumentError
from retriever.filters import metadata_matches
from retriever.index.candidates import TokenCandidateIndex, choose_kind
from retriever.index.centroid_candidates import CentroidLists
from retriever.index.compression import (
    CompressedTokens,
    ResidualCodec,
    centroid_id_dtype,
    default_centroid_count,
    prune_by_attention,
)
from retriever.index.integrity import IntegrityCheck, Verification, unusable
from retriever.index.manifest import IndexManifest, ModelIdentity
from retriever.index.storage import (
    FileWriter,
    faiss_writer,
    jsonl_writer,
    next_generation,
    npy_rows_writer,
    npy_writer,
    read_document_lines,
    read_manifest,
    write_generation,
)
from retriever.scoring import CandidateBatch, ScoringMode, score_batch
from retriever.settings import CandidateSettings, EncoderSettings, IndexSettings, StorageSettings

logger = logging.getLogger(__name__)

# Encoder settings that change the stored vectors or weights; the others (batch size, threads) do not.
VECTOR_AFFECTING_FIELDS = (
    "attention_strategy",
    "attention_scaling",
    "attention_temperature",
    "document_max_tokens",
    "skip_document_punctuation",
)
_EXACT_SCORING_CHUNK = 1024
# Files `load` memory-maps rather than reads, per storage codec: their checksums may be verified in the
# background (`integrity.py`).
MEMORY_MAPPED_FILES = {
    "bfloat16": {"vectors"},
    "residual_pq": {"centroid_ids", "codes", "weights", "token_ids"},
}


class DocumentInput(BaseModel):
    """A document to index: a stable string id, its text, and metadata (kept and filterable)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


@dataclass
class StoredDocument:
    """One document's stored tokens: `vectors` (bfloat16 storage) or `compressed` (residual_pq storage)."""

    slot: int
    id: str
    text: str
    metadata: dict[str, Any]
    n_words: int
    vectors: torch.Tensor | None  # bfloat16 (n, dim), see manifest.py for why not float16
    weights: np.ndarray  # (n,) attention weight A of each stored token
    token_ids: np.ndarray  # (n,) word-piece ids
    compressed: CompressedTokens | None = None


@dataclass(frozen=True)
class TokenMatch:
    """Which document token a query token matched (d_w), with both attention weights."""

    query_position: int
    query_token_id: int
    document_position: int
    document_token_id: int
    similarity: float
    query_weight: float
    document_weight: float


@dataclass
class SearchHit:
    id: str
    score: float
    normalised_score: float
    text: str
    metadata: dict[str, Any]
    matches: list[TokenMatch] = field(default_factory=list)


def coerce_documents(documents: Iterable[DocumentInput | dict[str, Any]]) -> list[DocumentInput]:
    coerced = []
    for position, document in enumerate(documents):
        if isinstance(document, DocumentInput):
            coerced.append(document)
            continue
        try:
            coerced.append(DocumentInput.model_validate(document))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors())
            raise InvalidDocumentError(f"Document {position} is not valid ({problems}).") from exc
    seen: set[str] = set()
    for document in coerced:
        if document.id in seen:
            raise InvalidDocumentError(f"Document id {document.id!r} appears twice in one batch; ids must be unique.")
        seen.add(document.id)
        if not document.text.strip():
            raise InvalidDocumentError(f"Document {document.id!r} has empty text; there is nothing to index.")
    return coerced


class MultiVectorIndex:
    """Token vectors per document, searched by FAISS candidates then re-ranked with the exact score."""

    def __init__(self, encoder: ColBERTAttEncoder, settings: IndexSettings | None = None):
        settings = settings or IndexSettings()
        self.encoder = encoder
        self.settings = settings.model_copy(update={"encoder": encoder.settings})
        self._documents: dict[int, StoredDocument] = {}
        self._slot_by_id: dict[str, int] = {}
        self._next_slot = 0
        self._candidates: TokenCandidateIndex | None = None  # bfloat16 storage
        self._codec: ResidualCodec | None = None  # residual_pq storage
        self._centroid_lists: CentroidLists | None = None  # residual_pq storage
        self._created_at = datetime.now(UTC)
        self._version = 0  # bumped by every change; keys the filter cache
        self._allowed_cache: dict[str, np.ndarray] = {}
        self._integrity: IntegrityCheck | None = None  # set by load()

    # ---- inspection ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._documents)

    def __contains__(self, document_id: object) -> bool:
        return document_id in self._slot_by_id

    @property
    def token_count(self) -> int:
        return sum(len(d.weights) for d in self._documents.values())

    @property
    def compressed(self) -> bool:
        return self.settings.storage.codec == "residual_pq"

    @property
    def faiss_kind(self) -> str | None:
        if self.compressed:
            return "centroid_lists"
        return None if self._candidates is None else self._candidates.kind

    def document_ids(self) -> list[str]:
        return [self._documents[slot].id for slot in sorted(self._documents)]

    def get(self, document_id: str) -> StoredDocument:
        if document_id not in self._slot_by_id:
            raise InvalidDocumentError(f"No document with id {document_id!r} in the index.")
        return self._documents[self._slot_by_id[document_id]]

    def model_identity(self) -> ModelIdentity:
        return ModelIdentity(
            name=self.encoder.model_name, weights_sha256=self.encoder.weights_sha256, dim=self.encoder.dim
        )

    # ---- changes ------------------------------------------------------------------------------------------

    def add(
        self, documents: Iterable[DocumentInput | dict[str, Any]], progress: ProgressCallback | None = None
    ) -> None:
        """Add new documents. An id already in the index is an error (use `upsert` to replace)."""
        batch = coerce_documents(documents)
        existing = [d.id for d in batch if d.id in self._slot_by_id]
        if existing:
            raise InvalidDocumentError(
                f"{len(existing)} id(s) already in the index (e.g. {existing[0]!r}); use upsert() to replace them."
            )
        self._insert(batch, self.encoder.encode_documents([d.text for d in batch], progress=progress))

    def upsert(
        self, documents: Iterable[DocumentInput | dict[str, Any]], progress: ProgressCallback | None = None
    ) -> None:
        """Add documents, replacing any with the same id."""
        batch = coerce_documents(documents)
        # Encoding may fail on bad input: it happens before anything is changed.
        encoded = self.encoder.encode_documents([d.text for d in batch], progress=progress)
        self._remove([self._slot_by_id[d.id] for d in batch if d.id in self._slot_by_id])
        self._insert(batch, encoded)

    def delete(self, document_ids: Iterable[str]) -> None:
        ids = list(document_ids)
        unknown = [i for i in ids if i not in self._slot_by_id]
        if unknown:
            raise InvalidDocumentError(
                f"{len(unknown)} id(s) are not in the index (e.g. {unknown[0]!r}); nothing deleted."
            )
        self._remove([self._slot_by_id[i] for i in ids])

    def update_metadata(self, document_id: str, metadata: dict[str, Any]) -> None:
        """Replace a document's metadata without re-encoding it (its text is unchanged)."""
        self.get(document_id).metadata = dict(metadata)
        self._changed()

    def _insert(self, batch: list[DocumentInput], encoded: list[EncodedText]) -> None:
        if not batch:
            return
        encoded = [pruned_tokens(item, self.settings.storage.prune_fraction) for item in encoded]
        if self.compressed:
            self._insert_compressed(batch, encoded)
            return
        slots = np.arange(self._next_slot, self._next_slot + len(batch))
        self._next_slot += len(batch)
        for slot, document, item in zip(slots, batch, encoded, strict=True):
            self._documents[int(slot)] = StoredDocument(
                slot=int(slot),
                id=document.id,
                text=document.text,
                metadata=dict(document.metadata),
                n_words=item.n_words,
                vectors=torch.from_numpy(item.vectors).to(torch.bfloat16),
                weights=item.weights.astype(np.float32),
                token_ids=item.token_ids.astype(np.int32),
            )
            self._slot_by_id[document.id] = int(slot)
        wanted_kind = choose_kind(self.settings.candidates, self.token_count)
        if self._candidates is None or self._candidates.kind != wanted_kind:
            self._rebuild_candidates()
        else:
            # FAISS gets the stored (bfloat16-rounded) vectors, exactly what a rebuild would give it.
            new_documents = [self._documents[int(slot)] for slot in slots]
            vectors = _concatenate_vectors(new_documents, self.encoder.dim).float().numpy()
            token_slots = np.repeat(slots, [len(d.weights) for d in new_documents])
            self._candidates.add(vectors, token_slots)
        self._changed()

    def train_codec(self, sample_vectors: np.ndarray) -> None:
        """Learn the residual_pq centroids and codebooks (done by the first insert unless called before)."""
        storage = self.settings.storage
        n_centroids = storage.centroids or default_centroid_count(len(sample_vectors), storage.training_tokens)
        rng = np.random.default_rng(1234)
        if len(sample_vectors) > storage.training_tokens:
            sample_vectors = sample_vectors[np.sort(rng.choice(len(sample_vectors), storage.training_tokens, False))]
        self._codec = ResidualCodec.train_for(storage, sample_vectors, n_centroids)
        self._centroid_lists = CentroidLists.empty(self._codec.n_centroids)

    @property
    def _compressed_token_id_dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if len(self.encoder.tokenizer) <= 65536 else np.dtype(np.int32)

    def _insert_compressed(self, batch: list[DocumentInput], encoded: list[EncodedText]) -> None:
        if self._codec is None:
            self.train_codec(np.concatenate([item.vectors for item in encoded]))
        assert self._codec is not None and self._centroid_lists is not None
        codes = self._codec.encode_each([item.vectors for item in encoded])
        for document, item, compressed in zip(batch, encoded, codes, strict=True):
            slot = self._next_slot
            self._next_slot += 1
            self._documents[slot] = StoredDocument(
                slot=slot,
                id=document.id,
                text=document.text,
                metadata=dict(document.metadata),
                n_words=item.n_words,
                vectors=None,
                weights=item.weights.astype(np.float16),
                token_ids=item.token_ids.astype(self._compressed_token_id_dtype),
                compressed=compressed,
            )
            self._slot_by_id[document.id] = slot
            self._centroid_lists.add_document(compressed.centroid_ids, slot)
        self._changed()

    def _remove(self, slots: list[int]) -> None:
        if not slots:
            return
        for slot in slots:
            document = self._documents.pop(slot)
            del self._slot_by_id[document.id]
        if self._candidates is not None:
            self._candidates.remove(slots)
        if self._centroid_lists is not None:
            self._centroid_lists.remove(slots)
        self._changed()

    def _rebuild_candidates(self) -> None:
        ordered = [self._documents[s] for s in sorted(self._documents)]
        vectors = _concatenate_vectors(ordered, self.encoder.dim).float().numpy()
        token_slots = np.repeat([d.slot for d in ordered], [len(d.weights) for d in ordered])
        self._candidates = TokenCandidateIndex.build(self.encoder.dim, self.settings.candidates, vectors, token_slots)

    def _changed(self) -> None:
        self._version += 1
        self._allowed_cache.clear()

    # ---- search -------------------------------------------------------------------------------------------

    def _all_slots(self) -> np.ndarray:
        return np.array(sorted(self._documents), dtype=np.int64)

    def _allowed_slots(self, filters: MetadataFilters | None) -> np.ndarray | None:
        if filters is None or not filters.filters:
            return None
        key = filters.model_dump_json()
        if key not in self._allowed_cache:
            self._allowed_cache[key] = np.array(
                sorted(s for s, d in self._documents.items() if metadata_matches(d.metadata, filters)),
                dtype=np.int64,
            )
        return self._allowed_cache[key]

    def _centroid_candidate_slots(
        self, query: EncodedText, allowed: np.ndarray | None, top_k: int, depth: int
    ) -> np.ndarray:
        assert self._codec is not None and self._centroid_lists is not None
        allowed_mask = None
        if allowed is not None:
            allowed_mask = np.zeros(self._next_slot, dtype=bool)
            allowed_mask[allowed] = True
        centroid_similarity = np.asarray(query.vectors, dtype=np.float32) @ self._codec.centroids.T
        nprobe = self.settings.candidates.centroid_nprobe
        for _ in range(3):
            slots = self._centroid_lists.candidates(centroid_similarity, nprobe, depth, allowed_mask)
            if len(slots) >= top_k:
                return slots
            nprobe *= 4  # too few documents in the probed lists (a selective filter): look further
        # Still too few: score the whole allowed set exactly rather than return too few.
        return self._all_slots() if allowed is None else allowed

    def _candidate_slots(self, query: EncodedText, allowed: np.ndarray | None, top_k: int) -> np.ndarray:
        settings = self.settings.candidates
        pool_size = len(self._documents) if allowed is None else len(allowed)
        generator_missing = self._codec is None if self.compressed else self._candidates is None
        if pool_size <= max(settings.exact_below_documents, top_k) or generator_missing:
            return self._all_slots() if allowed is None else allowed
        depth = max(settings.rerank_depth, top_k)
        if self.compressed:
            return self._centroid_candidate_slots(query, allowed, top_k, depth)
        neighbours = settings.tokens_per_query_token
        for _ in range(3):
            similarities, slots = self._candidates.search(query.vectors, neighbours, allowed)
            found = slots >= 0
            unique_slots, column = np.unique(slots[found], return_inverse=True)
            if len(unique_slots) >= top_k:
                break
            neighbours *= 4  # too few distinct documents among the neighbours: look further
        else:
            # Even a wider search found fewer than top_k documents (a selective filter, or a tiny IVF probe):
            # score the whole allowed set exactly rather than return too few.
            return self._all_slots() if allowed is None else allowed
        # Approximate MaxSim from the retrieved tokens only: each query token's best retrieved match per document.
        best = np.zeros((len(query.vectors), len(unique_slots)), dtype=np.float32)
        rows = np.broadcast_to(np.arange(len(query.vectors))[:, None], slots.shape)[found]
        np.maximum.at(best, (rows, column), similarities[found])
        order = np.argsort(-best.sum(axis=0), kind="stable")[:depth]
        return unique_slots[order]

    def _score_slots(
        self, query: EncodedText, slots: np.ndarray, mode: ScoringMode
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        raws, normals, best_tokens, best_sims = [], [], [], []
        query_vectors = self._query_in_storage_space(query)
        for start in range(0, len(slots), _EXACT_SCORING_CHUNK):
            documents = [self._documents[int(s)] for s in slots[start : start + _EXACT_SCORING_CHUNK]]
            batch = CandidateBatch(
                vectors=self._token_vectors(documents),
                weights=np.concatenate([d.weights for d in documents]),
                lengths=np.array([len(d.weights) for d in documents]),
                n_words=np.array([d.n_words for d in documents]),
            )
            scored = score_batch(
                query_vectors,
                query.weights,
                batch,
                mode,
                self.settings.delta_length_words,
                self.settings.fixed_delta,
            )
            raws.append(scored.raw)
            normals.append(scored.normalised)
            best_tokens.append(scored.best_token)
            best_sims.append(scored.best_similarity)
        return (
            np.concatenate(raws),
            np.concatenate(normals),
            np.concatenate(best_tokens),
            np.concatenate(best_sims),
        )

    def _token_vectors(self, documents: list[StoredDocument]) -> torch.Tensor:
        """The documents' token vectors, concatenated: bfloat16 as stored, or decoded float32 in the codec's space
        (scored against `_query_in_storage_space`)."""
        if not self.compressed:
            return _concatenate_vectors(documents, self.encoder.dim)
        assert self._codec is not None
        compressed = [d.compressed for d in documents if d.compressed is not None]
        return torch.from_numpy(
            self._codec.decode_in_code_space(
                np.concatenate([c.centroid_ids for c in compressed]), np.concatenate([c.codes for c in compressed])
            )
        )

    def _query_in_storage_space(self, query: EncodedText) -> np.ndarray:
        if self._codec is None:
            return query.vectors
        return self._codec.to_code_space(query.vectors)

    def token_similarities(self, query: EncodedText, document_id: str) -> np.ndarray:
        """(query tokens, stored tokens) cosine similarities of one document: the alignment behind its score."""
        document = self.get(document_id)
        vectors = self._token_vectors([document]).float().numpy()
        return np.asarray(self._query_in_storage_space(query), dtype=np.float32) @ vectors.T

    def search(
        self,
        query: str | EncodedText,
        top_k: int = 10,
        mode: ScoringMode | str = ScoringMode.COLBERT_ATT,
        filters: MetadataFilters | None = None,
        exhaustive: bool = False,
        explain: bool = False,
    ) -> list[SearchHit]:
        """Top documents for a query, best first. `exhaustive` scores every allowed document exactly."""
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        mode = ScoringMode(mode)
        if self._integrity is not None:
            self._integrity.raise_if_failed()  # a memory-mapped file failed its background checksum
        encoded = self.encoder.encode_query(query) if isinstance(query, str) else query
        if not self._documents:
            return []
        allowed = self._allowed_slots(filters)
        if allowed is not None and len(allowed) == 0:
            return []
        if exhaustive:
            slots = self._all_slots() if allowed is None else allowed
        else:
            slots = self._candidate_slots(encoded, allowed, top_k)
        raw, normalised, best_token, best_similarity = self._score_slots(encoded, slots, mode)
        # Ties break on slot order so that results are deterministic.
        order = np.lexsort((slots, -raw))[:top_k]
        hits = []
        for position in order:
            document = self._documents[int(slots[position])]
            matches = []
            if explain:
                matches = [
                    TokenMatch(
                        query_position=i,
                        query_token_id=int(encoded.token_ids[i]),
                        document_position=int(best_token[position, i]),
                        document_token_id=int(document.token_ids[best_token[position, i]]),
                        similarity=float(best_similarity[position, i]),
                        query_weight=float(encoded.weights[i]),
                        document_weight=float(document.weights[best_token[position, i]]),
                    )
                    for i in range(len(encoded.token_ids))
                ]
            hits.append(
                SearchHit(
                    id=document.id,
                    score=float(raw[position]),
                    normalised_score=float(normalised[position]),
                    text=document.text,
                    metadata=document.metadata,
                    matches=matches,
                )
            )
        return hits

    def converted(self, storage: StorageSettings, batch_documents: int = 512) -> MultiVectorIndex:
        """A copy of this index with its tokens stored another way (compressed, pruned), without re-encoding.

        The source must hold exact bfloat16 vectors: recompressing decoded vectors would add a second error.
        The residual_pq codebooks learn from a sample of `storage.training_tokens` tokens of the whole collection.
        """
        if self.compressed:
            raise ColBERTAttError("Convert from a bfloat16 index: this one is already compressed.")
        converted = MultiVectorIndex(self.encoder, self.settings.model_copy(update={"storage": storage}))
        converted._created_at = self._created_at
        ordered = [self._documents[s] for s in sorted(self._documents)]

        def stored_tokens(document: StoredDocument) -> EncodedText:
            assert document.vectors is not None
            return EncodedText(
                vectors=document.vectors.float().numpy(),
                weights=np.asarray(document.weights, dtype=np.float32),
                token_ids=np.asarray(document.token_ids),
                n_words=document.n_words,
                truncated=False,
            )

        if storage.codec == "residual_pq" and ordered:
            rng = np.random.default_rng(1234)
            lengths = np.array([len(d.weights) for d in ordered])
            # Whole documents drawn at random until the sample is full: an unbiased sample of the collection.
            chosen, total = [], 0
            for position in rng.permutation(len(ordered)):
                chosen.append(position)
                total += lengths[position]
                if total >= storage.training_tokens:
                    break
            sample = np.concatenate([stored_tokens(ordered[p]).vectors for p in sorted(chosen)])
            n_centroids = storage.centroids or default_centroid_count(int(lengths.sum()), storage.training_tokens)
            converted._codec = ResidualCodec.train_for(storage, sample, n_centroids)
            converted._centroid_lists = CentroidLists.empty(converted._codec.n_centroids)
        for start in range(0, len(ordered), batch_documents):
            documents = ordered[start : start + batch_documents]
            converted._insert(
                [DocumentInput(id=d.id, text=d.text, metadata=d.metadata) for d in documents],
                [stored_tokens(d) for d in documents],
            )
        return converted

    # ---- persistence --------------------------------------------------------------------------------------

    def persist(self, directory: str | Path) -> IndexManifest:
        """Write the index to `directory` atomically: a reader always sees the previous or the new state."""
        directory = Path(directory)
        ordered = [self._documents[s] for s in sorted(self._documents)]
        token_count = sum(len(d.weights) for d in ordered)
        if self.compressed:
            if self._codec is None:
                raise IndexCorruptError("A residual_pq index with no documents has no codebooks yet; add documents.")
            writers = self._compressed_writers(ordered, token_count)
        else:
            if self._candidates is None:
                self._rebuild_candidates()
            assert self._candidates is not None
            writers = {
                "vectors": ("npy", npy_writer(_concatenate_vectors(ordered, self.encoder.dim), np.int16)),
                "weights": ("npy", npy_writer(_concatenate([d.weights for d in ordered], np.float32), np.float32)),
                "token_ids": ("npy", npy_writer(_concatenate([d.token_ids for d in ordered], np.int32), np.int32)),
                "faiss": ("index", faiss_writer(self._candidates.index)),
            }
        writers["documents"] = (
            "jsonl",
            jsonl_writer(
                {
                    "slot": d.slot,
                    "id": d.id,
                    "n_words": d.n_words,
                    "n_tokens": len(d.weights),
                    "text": d.text,
                    "metadata": d.metadata,
                }
                for d in ordered
            ),
        )
        manifest = IndexManifest(
            generation=next_generation(directory),
            created_at=self._created_at,
            model=self.model_identity(),
            settings=self.settings,
            vector_dtype=self.settings.storage.codec.value,
            faiss_kind=self.faiss_kind or "flat",
            document_count=len(ordered),
            token_count=token_count,
            next_slot=self._next_slot,
            files={},
        )
        return write_generation(directory, manifest, writers)

    def _compressed_writers(self, ordered: list[StoredDocument], token_count: int) -> dict[str, tuple[str, FileWriter]]:
        """Token arrays are written document by document through memory maps: persisting an index loaded from
        disk never holds all of its codes in RAM."""
        assert self._codec is not None and self._centroid_lists is not None
        codec = self._codec
        offsets, list_slots = self._centroid_lists.arrays()
        token_arrays = {
            "centroid_ids": (centroid_id_dtype(codec.n_centroids), ()),
            "codes": (np.dtype(np.uint8), (int(codec.product_quantizer.code_size),)),
            "weights": (np.dtype(np.float16), ()),
            "token_ids": (self._compressed_token_id_dtype, ()),
        }

        def rows(key: str) -> FileWriter:
            dtype, tail = token_arrays[key]
            return npy_rows_writer(lambda: (_token_array(d, key) for d in ordered), token_count, dtype, tail)

        writers: dict[str, tuple[str, FileWriter]] = {
            **codec.file_writers(),
            "list_offsets": ("npy", npy_writer(offsets, np.int64)),
            "list_slots": ("npy", npy_writer(list_slots, np.int32)),
        }
        for key in token_arrays:
            writers[key] = ("npy", rows(key))
        return writers

    @classmethod
    def load(
        cls,
        directory: str | Path,
        encoder: ColBERTAttEncoder | None = None,
        candidate_settings: CandidateSettings | None = None,
        verification: Verification | str = Verification.AUTO,
    ) -> MultiVectorIndex:
        """Load the last complete generation. Fails clearly on a different model or encoder settings, and with
        IndexCorruptError on a file that is missing, resized or fails its checksum (`verification`: when the
        memory-mapped token arrays are hashed, see `integrity.py`; `wait_verified()` waits for a background check).

        `candidate_settings` (nprobe, neighbours, re-rank depth...) default to `CandidateSettings()`.
        """
        directory = Path(directory)
        manifest = read_manifest(directory)
        # Checked before an encoder is built: a damaged index is reported at once, in one line.
        integrity = IntegrityCheck.start(
            directory, manifest, MEMORY_MAPPED_FILES[manifest.vector_dtype], Verification(verification)
        )
        if encoder is None:
            encoder = ColBERTAttEncoder(manifest.settings.encoder)
        _check_compatible(directory, manifest, encoder)
        # Search-time candidate settings are today's defaults unless given: the manifest only records the ones
        # in force when the index was written (its FAISS structure itself is on disk).
        settings = manifest.settings.model_copy(update={"candidates": candidate_settings or CandidateSettings()})
        index = cls(encoder, settings)
        index._created_at = manifest.created_at
        index._next_slot = manifest.next_slot
        index._integrity = integrity
        files = {key: directory / entry.name for key, entry in manifest.files.items()}
        try:
            lines = read_document_lines(files["documents"])
            if index.compressed:
                columns: dict[str, Any] = index._load_compressed(files, manifest.document_count > 0)
            elif manifest.document_count == 0:
                columns = {}
            else:
                # Copy-on-write memory map: pages are read on demand, and torch can view them without a copy.
                columns = {
                    "vectors": torch.from_numpy(np.load(files["vectors"], mmap_mode="c")).view(torch.bfloat16),
                    "weights": np.load(files["weights"]),
                    "token_ids": np.load(files["token_ids"]),
                }
            if not index.compressed:
                index._candidates = TokenCandidateIndex.read(files["faiss"], settings.candidates.ivf_nprobe)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise unusable(directory, f"{directory}: cannot read index data ({exc}).") from exc
        lengths = {key: len(column) for key, column in columns.items()}
        if any(n != manifest.token_count for n in lengths.values()) or len(lines) != manifest.document_count:
            raise unusable(
                directory,
                f"{directory}: data does not match the manifest (rows per token array {lengths}, {len(lines)} "
                f"documents; manifest says {manifest.token_count} tokens, {manifest.document_count} documents).",
            )
        try:
            index._add_loaded_documents(lines, columns)
        except (KeyError, TypeError, ValueError) as exc:  # only if an old index without checksums is damaged
            raise unusable(directory, f"{files['documents']}: a document line is malformed ({exc!r}).") from exc
        if index.token_count != manifest.token_count:
            raise unusable(directory, f"{directory}: token counts in documents and token arrays disagree.")
        if index._candidates is not None and index._candidates.ntotal != manifest.token_count:
            raise unusable(directory, f"{directory}: the FAISS index and the token arrays disagree on token counts.")
        return index

    def wait_verified(self, timeout: float | None = None) -> bool:
        """Wait for a background checksum check of the loaded files (True when done; IndexCorruptError if failed)."""
        return True if self._integrity is None else self._integrity.wait(timeout)

    def _add_loaded_documents(self, lines: list[dict], columns: dict[str, Any]) -> None:
        offset = 0
        for line in lines:
            end = offset + int(line["n_tokens"])
            part = {key: column[offset:end] for key, column in columns.items()}
            compressed = None
            if self.compressed and part:
                compressed = CompressedTokens(centroid_ids=part["centroid_ids"], codes=part["codes"])
            document = StoredDocument(
                slot=int(line["slot"]),
                id=line["id"],
                text=line["text"],
                metadata=line["metadata"],
                n_words=int(line["n_words"]),
                vectors=part.get("vectors"),
                weights=part.get("weights", np.zeros(0, np.float32)),
                token_ids=part.get("token_ids", np.zeros(0, np.int32)),
                compressed=compressed,
            )
            self._documents[document.slot] = document
            self._slot_by_id[document.id] = document.slot
            offset = end

    def _load_compressed(self, files: dict[str, Path], has_tokens: bool) -> dict[str, Any]:
        """Memory-map the compressed token arrays (read-only) and read the codebooks and centroid lists."""
        self._codec = ResidualCodec.read(files["codec_centroids"], files["codec_pq"], files.get("codec_rotation"))
        self._centroid_lists = CentroidLists(
            self._codec.n_centroids, np.load(files["list_offsets"]), np.load(files["list_slots"])
        )
        if not has_tokens:  # an empty array cannot be memory-mapped
            return {}
        return {key: np.load(files[key], mmap_mode="r") for key in ("centroid_ids", "codes", "weights", "token_ids")}


def pruned_tokens(item: EncodedText, fraction: float) -> EncodedText:
    """The tokens kept after attention-based pruning (all of them when fraction is 0)."""
    if fraction <= 0:
        return item
    keep = prune_by_attention(item.weights, fraction)
    return EncodedText(
        vectors=item.vectors[keep],
        weights=item.weights[keep],
        token_ids=item.token_ids[keep],
        n_words=item.n_words,
        truncated=item.truncated,
    )


def _token_array(document: StoredDocument, key: str) -> np.ndarray:
    if key in ("codes", "centroid_ids"):
        assert document.compressed is not None
        return getattr(document.compressed, key)
    return getattr(document, key)


def _concatenate(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)


def _concatenate_vectors(documents: list[StoredDocument], dim: int) -> torch.Tensor:
    if not documents:
        return torch.zeros((0, dim), dtype=torch.bfloat16)
    return torch.cat([d.vectors for d in documents])


def _check_compatible(directory: Path, manifest: IndexManifest, encoder: ColBERTAttEncoder) -> None:
    if manifest.model.weights_sha256 != encoder.weights_sha256:
        raise IndexMismatchError(
            f"{directory} was built with model {manifest.model.name} (weights {manifest.model.weights_sha256[:12]}), "
            f"but the encoder is {encoder.model_name} (weights {encoder.weights_sha256[:12]}). "
            "Load it with the same model or rebuild the index."
        )
    built: EncoderSettings = manifest.settings.encoder
    for name in VECTOR_AFFECTING_FIELDS:
        if getattr(built, name) != getattr(encoder.settings, name):
            raise IndexMismatchError(
                f"{directory} was built with {name}={getattr(built, name)!r}, but the encoder uses "
                f"{name}={getattr(encoder.settings, name)!r}. Use the index's setting or rebuild the index."
            )
