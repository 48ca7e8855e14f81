"""ColBERT-Att as a LlamaIndex retriever (conventions of `llama-index-retrievers-bm25`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import MetadataFilters

from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.errors import InvalidQueryError
from colbert_att_assistant.retriever.index.base import BaseMultiVectorIndex, DocumentInput, SearchHit
from colbert_att_assistant.retriever.index.factory import new_index, open_index
from colbert_att_assistant.retriever.index.qdrant_settings import QdrantSettings
from colbert_att_assistant.retriever.scoring import ScoringMode
from colbert_att_assistant.retriever.settings import EncoderSettings, IndexSettings

RAW_SCORE_KEY = "colbert_att_raw_score"
SCORING_KEY = "colbert_att_scoring"


def _node_to_document(node: BaseNode) -> DocumentInput:
    metadata = dict(node.metadata)
    if node.ref_doc_id is not None:
        metadata.setdefault("ref_doc_id", node.ref_doc_id)
    return DocumentInput(id=node.node_id, text=node.get_content(metadata_mode=MetadataMode.NONE), metadata=metadata)


class ColBERTAttRetriever(BaseRetriever):
    """Retrieves nodes by ColBERT-Att (or plain MaxSim) late interaction over any index backend: the local
    `MultiVectorIndex` (FAISS or compressed storage) or `QdrantMultiVectorIndex` (Qdrant candidates, the same exact
    re-ranking).

    Each `NodeWithScore.score` is the normalised score in [0, 1]; the raw score is in the node's metadata
    under `colbert_att_raw_score`.
    """

    def __init__(
        self,
        index: BaseMultiVectorIndex,
        similarity_top_k: int = 10,
        filters: MetadataFilters | None = None,
        scoring: ScoringMode | str = ScoringMode.COLBERT_ATT,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be at least 1, got {similarity_top_k}.")
        self.index = index
        self.similarity_top_k = similarity_top_k
        self.filters = filters
        self.scoring = ScoringMode(scoring)
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @classmethod
    def from_defaults(
        cls,
        nodes: Sequence[BaseNode] | None = None,
        persist_dir: str | Path | None = None,
        encoder: ColBERTAttEncoder | None = None,
        encoder_settings: EncoderSettings | None = None,
        index_settings: IndexSettings | None = None,
        qdrant: QdrantSettings | None = None,
        **kwargs: Any,
    ) -> ColBERTAttRetriever:
        """Build from nodes (encoded now) or load from a persisted directory; exactly one of the two.

        `qdrant` settings put the nodes in a Qdrant collection instead of the local index.
        """
        if (nodes is None) == (persist_dir is None):
            raise ValueError("Pass exactly one of nodes=... or persist_dir=....")
        if persist_dir is not None:
            return cls.from_persist_dir(persist_dir, encoder=encoder, **kwargs)
        encoder = encoder or ColBERTAttEncoder(encoder_settings)
        index = new_index(encoder, index_settings, qdrant)
        index.add([_node_to_document(node) for node in nodes or []])
        return cls(index, **kwargs)

    @classmethod
    def from_persist_dir(
        cls, path: str | Path, encoder: ColBERTAttEncoder | None = None, **kwargs: Any
    ) -> ColBERTAttRetriever:
        return cls(open_index(path, encoder=encoder), **kwargs)

    def persist(self, path: str | Path) -> None:
        self.index.persist(path)

    def insert_nodes(self, nodes: Sequence[BaseNode]) -> None:
        """Add nodes; a node whose id is already indexed is replaced."""
        self.index.upsert([_node_to_document(node) for node in nodes])

    def delete_nodes(self, node_ids: Sequence[str]) -> None:
        self.index.delete(node_ids)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = query_bundle.query_str
        if not isinstance(query, str):
            raise InvalidQueryError(f"The query is a {type(query).__name__}, not a string.")
        hits = self.index.search(query, top_k=self.similarity_top_k, mode=self.scoring, filters=self.filters)
        return self._nodes(hits)

    def retrieve_batch(self, queries: Sequence[str | QueryBundle]) -> list[list[NodeWithScore]]:
        """The nodes of each query, in their order, as `retrieve` gives them one at a time but faster: the
        queries are encoded together and searched in one batch (`search_batch`). No callback events."""
        if isinstance(queries, str | QueryBundle):
            raise InvalidQueryError("retrieve_batch takes a list of queries; use retrieve() for a single query.")
        texts = [query.query_str if isinstance(query, QueryBundle) else query for query in queries]
        hits = self.index.search_batch(texts, top_k=self.similarity_top_k, mode=self.scoring, filters=self.filters)
        return [self._nodes(query_hits) for query_hits in hits]

    def _nodes(self, hits: list[SearchHit]) -> list[NodeWithScore]:
        results = []
        for hit in hits:
            metadata = {**hit.metadata, RAW_SCORE_KEY: hit.score, SCORING_KEY: self.scoring.value}
            node = TextNode(id_=hit.id, text=hit.text, metadata=metadata)
            # The scores are for ranking, not for the LLM or its embedding.
            node.excluded_llm_metadata_keys = [RAW_SCORE_KEY, SCORING_KEY]
            node.excluded_embed_metadata_keys = [RAW_SCORE_KEY, SCORING_KEY]
            results.append(NodeWithScore(node=node, score=hit.normalised_score))
        return results

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # Encoding and scoring are CPU-bound torch/FAISS work: run them in a worker thread, not on the loop.
        return await asyncio.to_thread(self._retrieve, query_bundle)
