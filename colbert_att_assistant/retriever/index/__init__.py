"""Multi-vector indexes: one contract (`base.py`), the local FAISS / compressed index and its on-disk format
(`multivector_index.py`, `manifest.py`), the Qdrant backend (`qdrant_index.py`), and `factory.py` to open either."""

from colbert_att_assistant.retriever.index.base import (
    BaseMultiVectorIndex,
    DocumentInput,
    SearchHit,
    StoredDocument,
    TokenMatch,
)
from colbert_att_assistant.retriever.index.manifest import FORMAT_VERSION, IndexManifest
from colbert_att_assistant.retriever.index.multivector_index import MultiVectorIndex

__all__ = [
    "FORMAT_VERSION",
    "BaseMultiVectorIndex",
    "DocumentInput",
    "IndexManifest",
    "MultiVectorIndex",
    "SearchHit",
    "StoredDocument",
    "TokenMatch",
]
