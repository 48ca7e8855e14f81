"""ColBERT-Att: late-interaction retrieval weighted by the encoder's own self-attention (arXiv 2603.25248)."""

from retriever.encoder import ColBERTAttEncoder, EncodedText
from retriever.errors import (
    ColBERTAttError,
    IndexCorruptError,
    IndexMismatchError,
    InvalidDocumentError,
    InvalidQueryError,
)
from retriever.index import MultiVectorIndex
from retriever.llama_retriever import ColBERTAttRetriever
from retriever.scoring import ScoringMode
from retriever.settings import EncoderSettings, IndexSettings

__all__ = [
    "ColBERTAttEncoder",
    "ColBERTAttError",
    "ColBERTAttRetriever",
    "EncodedText",
    "EncoderSettings",
    "IndexCorruptError",
    "IndexMismatchError",
    "IndexSettings",
    "InvalidDocumentError",
    "InvalidQueryError",
    "MultiVectorIndex",
    "ScoringMode",
]
