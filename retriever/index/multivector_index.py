"""The multi-vector index: documents' token vectors and weights, FAISS candidates, exact ColBERT-Att re-ranking,
in-place add / upsert / delete, metadata pre-filters, and atomic persistence."""

from __future__ import annotations

import json
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
from retriever.errors import IndexCorruptError, IndexMismatchError, InvalidDocumentError
from retriever.filters import metadata_matches
from retriever.index.candidates import TokenCandidateIndex, choose_kind
from retriever.index.manifest import MANIFEST_NAME, IndexManifest, ModelIdentity
from retriever.index.storage import read_document_lines, read_manifest, write_generation
from retriever.scoring import CandidateBatch, ScoringMode, score_batch
from retriever.settings import CandidateSettings, EncoderSettings, IndexSettings

logger = logging.getLogger(__name__)

# Encoder settings that change the stored vectors or weights; the others (batch size, threads) do not.
_VECTOR_AFFECTING_FIELDS = (
    "attention_strategy",
    "attention_scaling",
    "attention_temperature",
    "document_max_tokens",
    "skip_document_punctuation",
)
_EXACT_SCORING_CHUNK = 1024


class DocumentInput(BaseModel):
    """A document to index: a stable string id, its text, and metadata (kept and filterable)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


@dataclass
class StoredDocument:
    slot: int
    id: str
    text: str
    metadata: dict[str, Any]
    n_words: int
    vectors: torch.Tensor  # bfloat16 (n, dim), see manifest.py for why not float16
    weights: np.ndarray  # float32 (n,)
    token_ids: np.ndarray  # int32 (n,)


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


def _coerce_documents(documents: Iterable[DocumentInput | dict[str, Any]]) -> list[DocumentInput]:
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
        self._candidates: TokenCandidateIndex | None = None
        self._created_at = datetime.now(UTC)
        self._version = 0  # bumped by every change; keys the filter cache
        self._allowed_cache: dict[str, np.ndarray] = {}

    # ---- inspection ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._documents)

    def __contains__(self, document_id: object) -> bool:
        return document_id in self._slot_by_id

    @property
    def token_count(self) -> int:
        return sum(len(d.weights) for d in self._documents.values())

    @property
    def faiss_kind(self) -> str | None:
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
        batch = _coerce_documents(documents)
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
        batch = _coerce_documents(documents)
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

    def _remove(self, slots: list[int]) -> None:
        if not slots:
            return
        for slot in slots:
            document = self._documents.pop(slot)
            del self._slot_by_id[document.id]
        if self._candidates is not None:
            self._candidates.remove(slots)
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

    def _candidate_slots(self, query: EncodedText, allowed: np.ndarray | None, top_k: int) -> np.ndarray:
        settings = self.settings.candidates
        pool_size = len(self._documents) if allowed is None else len(allowed)
        if pool_size <= max(settings.exact_below_documents, top_k) or self._candidates is None:
            return self._all_slots() if allowed is None else allowed
        depth = max(settings.rerank_depth, top_k)
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
        for start in range(0, len(slots), _EXACT_SCORING_CHUNK):
            documents = [self._documents[int(s)] for s in slots[start : start + _EXACT_SCORING_CHUNK]]
            batch = CandidateBatch(
                vectors=torch.cat([d.vectors for d in documents]),
                weights=np.concatenate([d.weights for d in documents]),
                lengths=np.array([len(d.weights) for d in documents]),
                n_words=np.array([d.n_words for d in documents]),
            )
            scored = score_batch(
                query.vectors,
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

    # ---- persistence --------------------------------------------------------------------------------------

    def persist(self, directory: str | Path) -> IndexManifest:
        """Write the index to `directory` atomically: a reader always sees the previous or the new state."""
        directory = Path(directory)
        previous_generation = 0
        if (directory / MANIFEST_NAME).is_file():
            try:
                previous_generation = json.loads((directory / MANIFEST_NAME).read_text()).get("generation", 0)
            except (json.JSONDecodeError, AttributeError):
                previous_generation = 0
        if self._candidates is None:
            self._rebuild_candidates()
        assert self._candidates is not None
        ordered = [self._documents[s] for s in sorted(self._documents)]
        dim = self.encoder.dim
        manifest = IndexManifest(
            generation=int(previous_generation) + 1,
            created_at=self._created_at,
            model=self.model_identity(),
            settings=self.settings,
            faiss_kind=self._candidates.kind,
            document_count=len(ordered),
            token_count=sum(len(d.weights) for d in ordered),
            next_slot=self._next_slot,
            files={},
        )
        return write_generation(
            directory,
            manifest,
            vectors=_concatenate_vectors(ordered, dim),
            weights=np.concatenate([d.weights for d in ordered]) if ordered else np.zeros(0, np.float32),
            token_ids=np.concatenate([d.token_ids for d in ordered]) if ordered else np.zeros(0, np.int32),
            document_lines=[
                {
                    "slot": d.slot,
                    "id": d.id,
                    "n_words": d.n_words,
                    "n_tokens": len(d.weights),
                    "text": d.text,
                    "metadata": d.metadata,
                }
                for d in ordered
            ],
            faiss_index=self._candidates.index,
        )

    @classmethod
    def load(
        cls,
        directory: str | Path,
        encoder: ColBERTAttEncoder | None = None,
        candidate_settings: CandidateSettings | None = None,
    ) -> MultiVectorIndex:
        """Load the last complete generation. Fails clearly on a different model or encoder settings.

        `candidate_settings` (nprobe, neighbours, re-rank depth...) default to `CandidateSettings()`.
        """
        directory = Path(directory)
        manifest = read_manifest(directory)
        if encoder is None:
            encoder = ColBERTAttEncoder(manifest.settings.encoder)
        _check_compatible(directory, manifest, encoder)
        # Search-time candidate settings are today's defaults unless given: the manifest only records the ones
        # in force when the index was written (its FAISS structure itself is on disk).
        settings = manifest.settings.model_copy(update={"candidates": candidate_settings or CandidateSettings()})
        index = cls(encoder, settings)
        index._created_at = manifest.created_at
        index._next_slot = manifest.next_slot
        try:
            # Copy-on-write memory map: pages are read on demand, and torch can view them without a copy.
            vector_bits = np.load(directory / manifest.files["vectors"].name, mmap_mode="c")
            vectors = torch.from_numpy(vector_bits).view(torch.bfloat16)
            weights = np.load(directory / manifest.files["weights"].name)
            token_ids = np.load(directory / manifest.files["token_ids"].name)
            lines = read_document_lines(directory / manifest.files["documents"].name)
            candidates = TokenCandidateIndex.read(
                directory / manifest.files["faiss"].name, settings.candidates.ivf_nprobe
            )
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise IndexCorruptError(f"{directory}: cannot read index data ({exc}). Rebuild the index.") from exc
        if tuple(vectors.shape) != (manifest.token_count, manifest.model.dim) or len(lines) != manifest.document_count:
            raise IndexCorruptError(
                f"{directory}: data does not match the manifest ({tuple(vectors.shape)} vectors, "
                f"{len(lines)} documents; "
                f"manifest says {manifest.token_count} tokens x {manifest.model.dim}, "
                f"{manifest.document_count} documents)."
            )
        offset = 0
        for line in lines:
            end = offset + int(line["n_tokens"])
            document = StoredDocument(
                slot=int(line["slot"]),
                id=line["id"],
                text=line["text"],
                metadata=line["metadata"],
                n_words=int(line["n_words"]),
                vectors=vectors[offset:end],
                weights=weights[offset:end],
                token_ids=token_ids[offset:end],
            )
            index._documents[document.slot] = document
            index._slot_by_id[document.id] = document.slot
            offset = end
        if offset != manifest.token_count or candidates.ntotal != manifest.token_count:
            raise IndexCorruptError(f"{directory}: token counts in documents, vectors and FAISS index disagree.")
        index._candidates = candidates
        return index


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
    for name in _VECTOR_AFFECTING_FIELDS:
        if getattr(built, name) != getattr(encoder.settings, name):
            raise IndexMismatchError(
                f"{directory} was built with {name}={getattr(built, name)!r}, but the encoder uses "
                f"{name}={getattr(encoder.settings, name)!r}. Use the index's setting or rebuild the index."
            )
