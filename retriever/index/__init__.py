"""The FAISS-backed multi-vector index and its on-disk format."""

from retriever.index.manifest import FORMAT_VERSION, IndexManifest
from retriever.index.multivector_index import DocumentInput, MultiVectorIndex, SearchHit, TokenMatch

__all__ = ["FORMAT_VERSION", "DocumentInput", "IndexManifest", "MultiVectorIndex", "SearchHit", "TokenMatch"]
