"""Which index backend a directory or a setting names: the local FAISS / compressed index, or Qdrant."""

from __future__ import annotations

from pathlib import Path

from retriever.encoder import ColBERTAttEncoder
from retriever.index.multivector_index import MultiVectorIndex
from retriever.index.qdrant_index import POINTER_FILE, QdrantMultiVectorIndex, QdrantSettings
from retriever.settings import CandidateSettings, IndexSettings

AnyIndex = MultiVectorIndex | QdrantMultiVectorIndex


def new_index(
    encoder: ColBERTAttEncoder, settings: IndexSettings | None = None, qdrant: QdrantSettings | None = None
) -> AnyIndex:
    """An empty local index, or a Qdrant-backed one when `qdrant` settings are given."""
    if qdrant is not None:
        return QdrantMultiVectorIndex(encoder, settings, qdrant)
    return MultiVectorIndex(encoder, settings)


def open_index(
    directory: str | Path,
    encoder: ColBERTAttEncoder | None = None,
    candidate_settings: CandidateSettings | None = None,
) -> AnyIndex:
    """Load what `persist(directory)` wrote: a Qdrant pointer file reopens the collection, else the local index."""
    if (Path(directory) / POINTER_FILE).is_file():
        return QdrantMultiVectorIndex.load(directory, encoder=encoder)
    return MultiVectorIndex.load(directory, encoder=encoder, candidate_settings=candidate_settings)
