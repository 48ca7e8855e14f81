"""Open the index backend that settings name: the local index in a directory (FAISS or compressed storage), or a
Qdrant collection (`QdrantSettings`: a server URL or qdrant-client's local mode). Callers get a
`BaseMultiVectorIndex` and never need to know which."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.errors import IndexCorruptError, IndexMismatchError
from colbert_att_assistant.retriever.index.base import BaseMultiVectorIndex
from colbert_att_assistant.retriever.index.integrity import Verification
from colbert_att_assistant.retriever.index.manifest import MANIFEST_NAME
from colbert_att_assistant.retriever.index.multivector_index import MultiVectorIndex
from colbert_att_assistant.retriever.index.qdrant_settings import POINTER_FILE, QdrantSettings
from colbert_att_assistant.retriever.index.storage import read_manifest
from colbert_att_assistant.retriever.settings import CandidateSettings, IndexSettings


def new_index(
    encoder: ColBERTAttEncoder, settings: IndexSettings | None = None, qdrant: QdrantSettings | None = None
) -> BaseMultiVectorIndex:
    """An empty local index, or the Qdrant collection `qdrant` names (created when it does not exist)."""
    if qdrant is not None:
        from colbert_att_assistant.retriever.index.qdrant_index import QdrantMultiVectorIndex

        return QdrantMultiVectorIndex(encoder, settings, qdrant)
    return MultiVectorIndex(encoder, settings)


def open_index(
    directory: str | Path,
    encoder: ColBERTAttEncoder | None = None,
    candidate_settings: CandidateSettings | None = None,
) -> BaseMultiVectorIndex:
    """Load what `persist(directory)` wrote: a Qdrant pointer file reopens the collection, else the local index."""
    if (Path(directory) / POINTER_FILE).is_file():
        from colbert_att_assistant.retriever.index.qdrant_index import QdrantMultiVectorIndex

        return QdrantMultiVectorIndex.load(directory, encoder=encoder)
    return MultiVectorIndex.load(directory, encoder=encoder, candidate_settings=candidate_settings)


@dataclass
class OpenedIndex:
    """An index opened to be brought up to date, and what its caller must know to finish the job."""

    index: BaseMultiVectorIndex
    directory: Path
    where: str  # the directory or the collection, for messages
    existed: bool  # there was an index to open (it may have been unusable)
    unusable_because: str | None  # why the existing index could not be used (it was replaced by an empty one)
    write_needed: bool  # nothing usable on disk yet, or an older format: persist even if nothing changes

    def save(self, changed: bool) -> None:
        """Persist after an update: the local index writes a new generation, Qdrant (whose changes are already
        stored) writes the pointer file that `open_index(directory)` follows. An in-memory collection keeps none."""
        qdrant: QdrantSettings | None = getattr(self.index, "qdrant", None)
        if qdrant is not None and qdrant.in_memory:
            return
        if changed or self.write_needed:
            self.index.persist(self.directory)


def open_for_update(
    directory: Path,
    encoder: ColBERTAttEncoder,
    qdrant: QdrantSettings | None = None,
    rebuild: bool = False,
) -> OpenedIndex:
    """The index at `directory` (or in the Qdrant collection), every file verified, or an empty one when there is
    none, when it cannot be used (damaged, another encoder), or when `rebuild` asks for one."""
    if qdrant is not None:
        return _open_collection_for_update(directory, encoder, qdrant, rebuild)
    existed = (directory / MANIFEST_NAME).is_file()
    empty = MultiVectorIndex(encoder, IndexSettings(encoder=encoder.settings))
    if not existed or rebuild:
        return OpenedIndex(empty, directory, str(directory), existed, None, write_needed=True)
    try:
        # Every file hashed before use: a knowledge base is small, and its text is shown to clients.
        index = MultiVectorIndex.load(directory, encoder=encoder, verification=Verification.FULL)
        up_to_date_format = read_manifest(directory).has_checksums
    except (IndexMismatchError, IndexCorruptError) as exc:
        return OpenedIndex(empty, directory, str(directory), True, str(exc), write_needed=True)
    # An index written before checksums existed is written again to gain them.
    return OpenedIndex(index, directory, str(directory), True, None, write_needed=not up_to_date_format)


def _open_collection_for_update(
    directory: Path, encoder: ColBERTAttEncoder, qdrant: QdrantSettings, rebuild: bool
) -> OpenedIndex:
    from colbert_att_assistant.retriever.index.qdrant_index import (
        QdrantMultiVectorIndex,
        collection_exists,
        drop_collection,
    )

    where = qdrant.describe()
    write_needed = not (directory / POINTER_FILE).is_file()
    existed = drop_collection(qdrant) if rebuild else collection_exists(qdrant)
    unusable_because = None
    try:
        index = QdrantMultiVectorIndex(encoder, None, qdrant)
    except (IndexMismatchError, IndexCorruptError) as exc:
        unusable_because = str(exc)
        drop_collection(qdrant)
        index = QdrantMultiVectorIndex(encoder, IndexSettings(encoder=encoder.settings), qdrant)
    return OpenedIndex(index, directory, where, existed, unusable_because, write_needed or rebuild)
