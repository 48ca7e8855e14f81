"""ColBERT-Att: late-interaction retrieval weighted by the encoder's own self-attention (arXiv 2603.25248)."""

from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder, EncodedText
from colbert_att_assistant.retriever.errors import (
    ColBERTAttError,
    IndexCorruptError,
    IndexMismatchError,
    InvalidDocumentError,
    InvalidQueryError,
)
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.retriever.llama_retriever import ColBERTAttRetriever
from colbert_att_assistant.retriever.scoring import ScoringMode
from colbert_att_assistant.retriever.settings import EncoderSettings, IndexSettings

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
