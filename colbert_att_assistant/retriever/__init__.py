"""ColBERT-Att: late-interaction retrieval weighted by the encoder's own self-attention (arXiv 2603.25248).

The public names load on first use, so that the encoder and the training code can be imported without the index
backends (faiss, LlamaIndex), e.g. on a training machine that has only torch and transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOME = {
    "ColBERTAttEncoder": "encoder",
    "EncodedText": "encoder",
    "ColBERTAttError": "errors",
    "IndexCorruptError": "errors",
    "IndexMismatchError": "errors",
    "InvalidDocumentError": "errors",
    "InvalidQueryError": "errors",
    "MultiVectorIndex": "index",
    "ColBERTAttRetriever": "llama_retriever",
    "ScoringMode": "scoring",
    "EncoderSettings": "settings",
    "IndexSettings": "settings",
}

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


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value
