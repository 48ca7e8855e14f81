"""The local multi-vector index: documents held in memory-mapped files, candidates from FAISS (exact storage) or
centroid lists (compressed storage), in-place add / upsert / delete, metadata pre-filters, and atomic persistence.

How the token vectors are stored is one `TokenStorage` (`token_storage.py`), chosen by `settings.storage.vector_format`;
this module owns the documents, their slots, the filters and the on-disk generation (`manifest.py`).

A loaded index keeps its generation's documents on disk (`document_file.py`): per document only its slot, id,
counts and filter columns are in memory, and a `DiskDocument` is built for a document when search or `get` looks at
it. Documents stored after loading (or in an index never persisted) are `StoredDocument`s held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from llama_index.core.vector_stores.types import MetadataFilters

from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder, EncodedText
from colbert_att_assistant.retriever.errors import ColBERTAttError, InvalidDocumentError
from colbert_att_assistant.retriever.filters import metadata_matches
from colbert_att_assistant.retriever.index.base import (
    VECTOR_AFFECTING_FIELDS,
    BaseMultiVectorIndex,
    Candidates,
    DocumentInput,
    SearchHit,
    StoredDocument,
    TokenMatch,
    check_compatible,
    coerce_documents,
    pruned_tokens,
)
from colbert_att_assistant.retriever.index.candidates import pq_subvectors
from colbert_att_assistant.retriever.index.compression import default_centroid_count
from colbert_att_assistant.retriever.index.document_file import DocumentFile
from colbert_att_assistant.retriever.index.documents import DiskDocument, DocumentSequence
from colbert_att_assistant.retriever.index.exact_tokens import ExactTokenStore
from colbert_att_assistant.retriever.index.integrity import IntegrityCheck, Verification, unusable
from colbert_att_assistant.retriever.index.manifest import IndexManifest
from colbert_att_assistant.retriever.index.residual_tokens import ResidualTokenStore
from colbert_att_assistant.retriever.index.storage import (
    jsonl_writer,
    next_generation,
    read_manifest,
    write_generation,
)
from colbert_att_assistant.retriever.index.token_storage import TokenStorage
from colbert_att_assistant.retriever.settings import CandidateSettings, IndexSettings, StorageSettings

__all__ = [
    "MEMORY_MAPPED_FILES",
    "VECTOR_AFFECTING_FIELDS",
    "DocumentInput",
    "MultiVectorIndex",
    "SearchHit",
    "StoredDocument",
    "TokenMatch",
    "coerce_documents",
    "pruned_tokens",
]

# Loaded documents kept between searches (their token arrays' views, no text: about 2.3 KB each): building one
# costs microseconds, which a search that scores every document of a small or filtered pool would otherwise pay
# for each of them on every query. And the texts and metadata last read (a search reads each hit's twice).
DOCUMENTS_KEPT = 4096
RECORDS_KEPT = 256

TOKEN_STORAGE: dict[str, type[TokenStorage]] = {
    kind.format_name: kind for kind in (ExactTokenStore, ResidualTokenStore)
}
# Files `load` memory-maps rather than reads, per vector format (see `TokenStorage.memory_mapped_files`).
MEMORY_MAPPED_FILES = {name: set(kind.memory_mapped_files) for name, kind in TOKEN_STORAGE.items()}


class MultiVectorIndex(BaseMultiVectorIndex):
    """Token vectors per document, searched by FAISS or centroid-list candidates then re-ranked exactly."""

    def __init__(self, encoder: ColBERTAttEncoder, settings: IndexSettings | None = None):
        settings = settings or IndexSettings()
        self.encoder = encoder
        self.settings = settings.model_copy(update={"encoder": encoder.settings})
        pq_subvectors(encoder.dim, self.settings.candidates)  # refuse settings that could not build, before any add
        storage = self.settings.storage
        token_storage = TOKEN_STORAGE[storage.vector_format]
        self.token_storage: TokenStorage = token_storage(encoder.dim, storage, len(encoder.tokenizer))
        # Documents stored in this process, by slot; those of a loaded generation are in `_file` instead.
        self._added: dict[int, StoredDocument] = {}
        self._added_tokens = 0
        self._file: DocumentFile | None = None  # set by load()
        self._file_tokens: dict[str, Any] = {}  # the loaded generation's token arrays (memory-mapped)
        self._file_live = np.zeros(0, dtype=bool)  # the file's rows still in the index
        self._file_live_count = 0
        self._file_live_tokens = 0
        self._file_metadata: dict[int, dict[str, Any]] = {}  # update_metadata of a loaded document, by slot
        self._file_documents = lru_cache(maxsize=DOCUMENTS_KEPT)(self._file_document)
        self._file_records = lru_cache(maxsize=RECORDS_KEPT)(self._read_file_row)
        self._slot_by_id: dict[str, int] = {}
        self._next_slot = 0
        self._created_at = datetime.now(UTC)
        self._allowed_cache: dict[str, np.ndarray] = {}  # cleared by every change
        self._integrity: IntegrityCheck | None = None  # set by load()

    # ---- inspection ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._file_live_count + len(self._added)

    def __contains__(self, document_id: object) -> bool:
        return document_id in self._slot_by_id

    @property
    def token_count(self) -> int:
        return self._file_live_tokens + self._added_tokens

    @property
    def compressed(self) -> bool:
        return isinstance(self.token_storage, ResidualTokenStore)

    @property
    def faiss_kind(self) -> str | None:
        return self.token_storage.candidate_kind

    def document_ids(self) -> list[str]:
        loaded = [] if self._file is None else [self._file.ids[row] for row in np.flatnonzero(self._file_live)]
        return loaded + [self._added[slot].id for slot in sorted(self._added)]

    def get(self, document_id: str) -> StoredDocument:
        if document_id not in self._slot_by_id:
            raise InvalidDocumentError(f"No document with id {document_id!r} in the index.")
        return self._document(self._slot_by_id[document_id])

    def _ordered(self) -> DocumentSequence:
        return DocumentSequence(self._all_slots(), self._document)

    def _document(self, slot: int) -> StoredDocument:
        added = self._added.get(slot)
        return added if added is not None else self._file_documents(slot)

    def _file_row(self, slot: int) -> int:
        assert self._file is not None
        return int(np.searchsorted(self._file.slots, slot))

    def _file_document(self, slot: int) -> DiskDocument:
        """A loaded document: its rows of the token arrays (views) now, its text and metadata when read (slots are
        never reused, so a kept one never goes stale; its metadata is looked up at each read)."""
        assert self._file is not None
        row = self._file_row(slot)
        start, end = self._file.token_starts[row], self._file.token_starts[row + 1]
        tokens = self.token_storage.fields({key: column[start:end] for key, column in self._file_tokens.items()})
        return DiskDocument(
            slot, self._file.ids[row], int(self._file.n_words[row]), *tokens, read=partial(self._file_records, row)
        )

    def _read_file_row(self, row: int) -> tuple[str, dict[str, Any]]:
        assert self._file is not None
        text, metadata = self._file.record(row)
        return text, self._file_metadata.get(int(self._file.slots[row]), metadata)

    # ---- changes ------------------------------------------------------------------------------------------

    def update_metadata(self, document_id: str, metadata: dict[str, Any]) -> None:
        slot = self.get(document_id).slot
        if slot in self._added:
            self._added[slot].metadata = dict(metadata)
        else:
            self._file_metadata[slot] = dict(metadata)
            self._file_records.cache_clear()
        self._allowed_cache.clear()

    def _present(self, document_ids: list[str]) -> set[str]:
        return {i for i in document_ids if i in self._slot_by_id}

    def _delete(self, document_ids: list[str]) -> None:
        self._remove([self._slot_by_id[i] for i in document_ids])

    def _store(self, batch: list[DocumentInput], encoded: list[EncodedText]) -> None:
        self._remove([self._slot_by_id[d.id] for d in batch if d.id in self._slot_by_id])
        if not batch:
            return
        new_documents = []
        for document, item, tokens in zip(batch, encoded, self.token_storage.stored_tokens(encoded), strict=True):
            stored = StoredDocument(
                self._next_slot, document.id, document.text, dict(document.metadata), item.n_words, *tokens
            )
            self._added[stored.slot] = stored
            self._added_tokens += len(stored.weights)
            self._slot_by_id[stored.id] = stored.slot
            self._next_slot += 1
            new_documents.append(stored)
        self.token_storage.added(new_documents, self._ordered, self.token_count, self.settings.candidates)
        self._allowed_cache.clear()

    def _remove(self, slots: list[int]) -> None:
        if not slots:
            return
        for slot in slots:
            added = self._added.pop(slot, None)
            if added is not None:
                self._added_tokens -= len(added.weights)
                del self._slot_by_id[added.id]
                continue
            assert self._file is not None
            row = self._file_row(slot)
            self._file_live[row] = False
            self._file_live_count -= 1
            self._file_live_tokens -= int(self._file.token_starts[row + 1] - self._file.token_starts[row])
            self._file_metadata.pop(slot, None)
            del self._slot_by_id[self._file.ids[row]]
        self.token_storage.removed(slots)
        self._allowed_cache.clear()

    def train_codec(self, sample_vectors: np.ndarray) -> None:
        """Learn the residual_pq centroids and codebooks (done by the first insert unless called before)."""
        if not isinstance(self.token_storage, ResidualTokenStore):
            raise ColBERTAttError(f"A {self.settings.storage.vector_format} index has no codec to train.")
        self.token_storage.train_on_first_batch(sample_vectors)

    # ---- search -------------------------------------------------------------------------------------------

    def _all_slots(self) -> np.ndarray:
        # Slots stored after loading are all above the loaded generation's, so this is in slot order.
        added = np.fromiter(sorted(self._added), dtype=np.int64, count=len(self._added))
        return added if self._file is None else np.concatenate([self._file.slots[self._file_live], added])

    def _allowed_slots(self, filters: MetadataFilters | None) -> np.ndarray | None:
        if filters is None or not filters.filters:
            return None
        key = filters.model_dump_json()
        if key not in self._allowed_cache:
            self._allowed_cache[key] = self._matching_slots(filters)
        return self._allowed_cache[key]

    def _matching_slots(self, filters: MetadataFilters) -> np.ndarray:
        """Slots whose metadata pass `filters`, in order: the loaded documents' from their filter columns (or from
        the file for a key that has none), the others' from the metadata in memory."""
        in_memory = {slot: d.metadata for slot, d in self._added.items()} | self._file_metadata
        matching = [slot for slot, metadata in in_memory.items() if metadata_matches(metadata, filters)]
        parts = [np.array(matching, dtype=np.int64)]
        if self._file is not None:
            file = self._file
            rows = np.flatnonzero(self._file_live)
            if self._file_metadata:  # rows whose metadata changed were decided above
                rows = rows[~np.isin(file.slots[rows], np.fromiter(self._file_metadata, dtype=np.int64))]
            passed = file.metadata.matching(filters, rows, lambda row: file.record(row)[1])
            parts.append(file.slots[rows[passed]])
        return np.sort(np.concatenate(parts))

    def _candidate_slots(self, queries: list[EncodedText], allowed: np.ndarray | None, top_k: int) -> list[np.ndarray]:
        """The slots to score exactly for each query: the storage's candidates, or every allowed slot for a small
        pool or when the candidates are too few."""
        settings = self.settings.candidates
        pool_size = len(self) if allowed is None else len(allowed)
        found: list[np.ndarray | None] = [None] * len(queries)
        if pool_size > max(settings.exact_below_documents, top_k):
            found = self.token_storage.candidate_slots_batch(queries, allowed, top_k, self._next_slot, settings)
        if all(slots is not None for slots in found):
            return [slots for slots in found if slots is not None]
        everything = self._all_slots() if allowed is None else allowed
        return [everything if slots is None else slots for slots in found]

    def _before_search(self) -> None:
        if self._integrity is not None:
            self._integrity.raise_if_failed()  # a memory-mapped file failed its background checksum

    def _candidates(
        self, query: EncodedText, top_k: int, filters: MetadataFilters | None, exhaustive: bool
    ) -> Candidates:
        if not exhaustive:
            return self._candidates_batch([query], top_k, filters)[0]
        allowed = self._allowed_slots(filters)
        if self._nothing_to_search(allowed):
            return _no_candidates()
        return _as_candidates(self._all_slots() if allowed is None else allowed, self._document)

    def _candidates_batch(
        self, queries: Sequence[EncodedText], top_k: int, filters: MetadataFilters | None
    ) -> list[Candidates]:
        # One filter for the batch: its allowed slots are found once, and FAISS searches every query at once.
        allowed = self._allowed_slots(filters)
        if self._nothing_to_search(allowed):
            return [_no_candidates() for _ in queries]
        return [_as_candidates(slots, self._document) for slots in self._candidate_slots(list(queries), allowed, top_k)]

    def _nothing_to_search(self, allowed: np.ndarray | None) -> bool:
        return not len(self) or (allowed is not None and len(allowed) == 0)

    def _token_vectors(self, documents: list[StoredDocument]) -> torch.Tensor:
        return self.token_storage.token_vectors(documents)

    def _query_in_storage_space(self, query: EncodedText) -> np.ndarray:
        return self.token_storage.query_vectors(query)

    # ---- another storage kind -----------------------------------------------------------------------------

    def copy_with_storage(self, storage: StorageSettings, batch_documents: int = 512) -> MultiVectorIndex:
        """A copy of this index with its tokens stored another way (compressed, pruned), without re-encoding.

        The source must hold exact bfloat16 vectors: recompressing decoded vectors would add a second error.
        The residual_pq codebooks learn from a sample of `storage.training_tokens` tokens of the whole collection.
        """
        if not isinstance(self.token_storage, ExactTokenStore):
            raise ColBERTAttError("Convert from a bfloat16 index: this one is already compressed.")
        converted = MultiVectorIndex(self.encoder, self.settings.model_copy(update={"storage": storage}))
        converted._created_at = self._created_at
        ordered = self._ordered()
        target = converted.token_storage
        if isinstance(target, ResidualTokenStore) and ordered:
            lengths = np.array([len(d.weights) for d in ordered])
            sample = np.concatenate([_exact_tokens(ordered[p]).vectors for p in _document_sample(lengths, storage)])
            n_centroids = storage.centroids or default_centroid_count(int(lengths.sum()), storage.training_tokens)
            target.train(sample, n_centroids)
        for start in range(0, len(ordered), batch_documents):
            documents = ordered[start : start + batch_documents]
            converted._store(
                [DocumentInput(id=d.id, text=d.text, metadata=d.metadata) for d in documents],
                [pruned_tokens(_exact_tokens(d), storage.prune_fraction) for d in documents],
            )
        return converted

    # ---- persistence --------------------------------------------------------------------------------------

    def persist(self, directory: str | Path) -> IndexManifest:
        """Write the index to `directory` atomically: a reader always sees the previous or the new state."""
        directory = Path(directory)
        ordered = self._ordered()
        token_count = self.token_count
        writers = self.token_storage.file_writers(ordered, token_count, self.settings.candidates)
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
            vector_dtype=self.settings.storage.vector_format.value,
            faiss_kind=self.faiss_kind or "flat",
            document_count=len(ordered),
            token_count=token_count,
            next_slot=self._next_slot,
            files={},
        )
        return write_generation(directory, manifest, writers)

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
        check_compatible(str(directory), manifest.model, manifest.settings, encoder)
        # Search-time candidate settings are today's defaults unless given: the manifest only records the ones
        # in force when the index was written (its candidate structure itself is on disk).
        settings = manifest.settings.model_copy(update={"candidates": candidate_settings or CandidateSettings()})
        index = cls(encoder, settings)
        index._created_at = manifest.created_at
        index._next_slot = manifest.next_slot
        index._integrity = integrity
        files = {key: directory / entry.name for key, entry in manifest.files.items()}
        try:
            # Malformed lines (possible only in an index without checksums) are IndexCorruptError naming the line.
            documents = DocumentFile.scan(files["documents"], directory, manifest.next_slot)
            columns = index.token_storage.read(files, manifest.document_count > 0, settings.candidates)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise unusable(directory, f"{directory}: cannot read index data ({exc}).") from exc
        lengths = {key: len(column) for key, column in columns.items()}
        if any(n != manifest.token_count for n in lengths.values()) or len(documents) != manifest.document_count:
            raise unusable(
                directory,
                f"{directory}: data does not match the manifest (rows per token array {lengths}, {len(documents)} "
                f"documents; manifest says {manifest.token_count} tokens, {manifest.document_count} documents).",
            )
        if documents.token_count != manifest.token_count:
            raise unusable(directory, f"{directory}: token counts in documents and token arrays disagree.")
        index._attach_file(documents, columns)
        candidate_tokens = index.token_storage.candidate_token_count()
        if candidate_tokens is not None and candidate_tokens != manifest.token_count:
            raise unusable(directory, f"{directory}: the FAISS index and the token arrays disagree on token counts.")
        return index

    def wait_verified(self, timeout: float | None = None) -> bool:
        """Wait for a background checksum check of the loaded files (True when done; IndexCorruptError if failed)."""
        return True if self._integrity is None else self._integrity.wait(timeout)

    def _attach_file(self, documents: DocumentFile, token_columns: dict[str, Any]) -> None:
        """Serve the loaded generation's documents from `documents` and its token arrays."""
        self._slot_by_id = documents.slot_by_id()
        self._file = documents
        self._file_tokens = token_columns
        self._file_live = np.ones(len(documents), dtype=bool)
        self._file_live_count = len(documents)
        self._file_live_tokens = documents.token_count


def _no_candidates() -> Candidates:
    return Candidates([], np.zeros(0, np.int64))


def _as_candidates(slots: np.ndarray, document: Callable[[int], StoredDocument]) -> Candidates:
    # Ties break on slot order (insertion order) so that results are deterministic.
    slots = np.asarray(slots, dtype=np.int64)
    return Candidates(DocumentSequence(slots, document), slots)


def _exact_tokens(document: StoredDocument) -> EncodedText:
    """A stored bfloat16 document's tokens as an encoding (exactly the stored values, before any pruning)."""
    assert document.vectors is not None
    return EncodedText(
        vectors=document.vectors.float().numpy(),
        weights=np.asarray(document.weights, dtype=np.float32),
        token_ids=np.asarray(document.token_ids),
        n_words=document.n_words,
        truncated=False,
    )


def _document_sample(lengths: np.ndarray, storage: StorageSettings) -> list[int]:
    """Whole documents drawn at random until `storage.training_tokens` tokens are in: an unbiased sample of the
    collection for training a codec. Positions in document order."""
    rng = np.random.default_rng(1234)
    chosen, total = [], 0
    for position in rng.permutation(len(lengths)):
        chosen.append(int(position))
        total += lengths[position]
        if total >= storage.training_tokens:
            break
    return sorted(chosen)
