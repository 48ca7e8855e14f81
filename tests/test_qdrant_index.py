"""The Qdrant backend (qdrant-client's embedded local mode, in memory and in a folder) against the local index, with
the real encoder on real knowledge-base paragraphs: same top results and scores, same filters, in-place changes,
reopening with the model check, and the LlamaIndex retriever on top."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from colbert_att_assistant.retriever import (
    ColBERTAttEncoder,
    EncoderSettings,
    IndexMismatchError,
    InvalidDocumentError,
    MultiVectorIndex,
)
from colbert_att_assistant.retriever.filters import metadata_matches
from colbert_att_assistant.retriever.index import DocumentInput
from colbert_att_assistant.retriever.index.qdrant_index import (
    QdrantMultiVectorIndex,
    QdrantSettings,
    QdrantUnavailableError,
    UnsupportedFilterError,
    point_id,
)
from colbert_att_assistant.retriever.llama_retriever import ColBERTAttRetriever
from colbert_att_assistant.retriever.scoring import ScoringMode
from colbert_att_assistant.retriever.settings import AttentionStrategy, IndexSettings, StorageSettings
from tests.conftest import REPO

QUERIES = [
    "how should I store my pearl necklace",
    "cleaning a calfskin handbag after rain",
    "can I return an item I bought online",
    "is my watch water resistant",
    "gift wrapping for a present",
]
MODES = [ScoringMode.COLBERT_ATT, ScoringMode.MAXSIM]


GUIDES = [
    "care/care-pearls",
    "care/care-calfskin",
    "care/care-rain-water-damage",
    "care/care-mechanical-watches",
    "care/care-watch-water-resistance",
    "care/care-silk-scarves",
    "care/care-cashmere",
    "faq/faq-gift-wrapping",
    "faq/faq-returns-exchanges",
    "faq/faq-delivery-tracking",
    "internal/internal-returns-exceptions",
    "internal/internal-watch-service-triage",
    "internal/internal-discount-authority",
]


def _knowledge_base_documents(limit: int = 26) -> list[DocumentInput]:
    """Two body paragraphs from each of a few care, FAQ and internal guides, with their front-matter metadata."""
    documents = []
    for guide in GUIDES:
        path = REPO / "knowledge_base" / "documents" / f"{guide}.md"
        _, front, body = path.read_text(encoding="utf-8").split("---", 2)
        meta = yaml.safe_load(front)
        paragraphs = [p for p in body.split("\n\n") if len(p.split()) > 15 and not p.startswith("#")][:2]
        for number, paragraph in enumerate(paragraphs):
            metadata = {
                "source": meta["id"],
                "category": meta["category"],
                "audience": meta["audience"],
                "last_reviewed": str(meta["last_reviewed"]),
                "position": len(documents),
                "materials": list(meta.get("materials") or []),
            }
            if number == 0:
                metadata["lead"] = "yes"
            documents.append(DocumentInput(id=f"{meta['id']}-{number}", text=paragraph, metadata=metadata))
    return documents[:limit]


@pytest.fixture(scope="module")
def documents() -> list[DocumentInput]:
    documents = _knowledge_base_documents()
    assert len(documents) >= 20
    return documents


@pytest.fixture(scope="module")
def local_index(cached_encoder, documents) -> MultiVectorIndex:
    index = MultiVectorIndex(cached_encoder)
    index.add(documents)
    return index


@pytest.fixture(scope="module", params=["memory", "folder"])
def qdrant_index(request, cached_encoder, documents, tmp_path_factory):
    if request.param == "memory":
        settings = QdrantSettings()
    else:
        settings = QdrantSettings(location=str(tmp_path_factory.mktemp("qdrant")), collection="kb")
    index = QdrantMultiVectorIndex(cached_encoder, qdrant=settings)
    index.add(documents)
    yield index
    index.close()


_ENCODED_QUERIES: dict[str, object] = {}


def _top(index, query, **kwargs):
    """Ids, scores and normalised scores; each query text is encoded once per session (every index here uses the
    same bundled encoder and settings), the forward pass being the slow part on a shared CPU."""
    if query not in _ENCODED_QUERIES:
        _ENCODED_QUERIES[query] = index.encoder.encode_query(query)
    hits = index.search(_ENCODED_QUERIES[query], **kwargs)
    return [h.id for h in hits], np.array([h.score for h in hits]), np.array([h.normalised_score for h in hits])


def test_settings_want_exactly_one_place():
    assert QdrantSettings().location == ":memory:"
    assert QdrantSettings(url="http://localhost:6333").location is None
    with pytest.raises(ValueError, match="either location.*or url"):
        QdrantSettings(location="/tmp/q", url="http://localhost:6333")
    with pytest.raises(ValueError, match="apply to a Qdrant server"):
        QdrantSettings(api_key="secret")
    with pytest.raises(ValueError, match="extra"):
        QdrantSettings(host="localhost")


def test_same_top_results_and_scores_as_the_local_index(qdrant_index, local_index):
    assert len(qdrant_index) == len(local_index)
    assert qdrant_index.document_ids() == sorted(local_index.document_ids())
    for query in QUERIES:
        for mode in MODES:
            expected_ids, expected_scores, expected_normalised = _top(
                local_index, query, top_k=5, mode=mode, exhaustive=True
            )
            for exhaustive in (False, True):
                ids, scores, normalised = _top(qdrant_index, query, top_k=5, mode=mode, exhaustive=exhaustive)
                assert ids == expected_ids, (query, mode, exhaustive)
                np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
                np.testing.assert_allclose(normalised, expected_normalised, rtol=1e-6)


def test_explanations_equal_the_local_index(qdrant_index, local_index):
    query = QUERIES[0]
    expected = local_index.search(query, top_k=2, explain=True, exhaustive=True)
    found = qdrant_index.search(query, top_k=2, explain=True)
    assert [h.id for h in found] == [h.id for h in expected]
    for a, b in zip(found, expected, strict=True):
        assert a.text == b.text and a.metadata == b.metadata
        assert [(m.document_position, m.document_token_id) for m in a.matches] == [
            (m.document_position, m.document_token_id) for m in b.matches
        ]
        np.testing.assert_allclose([m.similarity for m in a.matches], [m.similarity for m in b.matches], rtol=1e-6)
        np.testing.assert_allclose(
            [m.document_weight for m in a.matches], [m.document_weight for m in b.matches], rtol=1e-6
        )


def test_maxsim_candidates_alone_already_give_the_maxsim_top(cached_encoder, local_index, documents):
    # With no spare candidates, Qdrant's own MaxSim ranking must already hold the exact MaxSim top 5.
    with QdrantMultiVectorIndex(cached_encoder, qdrant=QdrantSettings(prefetch_limit=5)) as index:
        index.add(documents)
        for query in QUERIES:
            expected, _, _ = _top(local_index, query, top_k=5, mode="maxsim", exhaustive=True)
            found, _, _ = _top(index, query, top_k=5, mode="maxsim")
            assert set(found) == set(expected), query


FILTERS = [
    MetadataFilters(filters=[MetadataFilter(key="audience", value="public")]),
    MetadataFilters(filters=[MetadataFilter(key="category", value="watch-care", operator=FilterOperator.NE)]),
    MetadataFilters(
        filters=[MetadataFilter(key="source", value=["care-pearls", "faq-gift-wrapping"], operator=FilterOperator.IN)]
    ),
    MetadataFilters(filters=[MetadataFilter(key="source", value=["care-calfskin"], operator=FilterOperator.NIN)]),
    MetadataFilters(
        filters=[
            MetadataFilter(key="position", value=4, operator=FilterOperator.GT),
            MetadataFilter(key="position", value=15, operator=FilterOperator.LTE),
        ]
    ),
    MetadataFilters(filters=[MetadataFilter(key="last_reviewed", value="2026-09-15", operator=FilterOperator.GTE)]),
    MetadataFilters(filters=[MetadataFilter(key="last_reviewed", value="2026-09-15", operator=FilterOperator.LT)]),
    MetadataFilters(
        filters=[MetadataFilter(key="materials", value=["pearl", "silk twill"], operator=FilterOperator.ANY)]
    ),
    MetadataFilters(
        filters=[
            MetadataFilter(key="materials", value=["stainless steel", "sapphire crystal"], operator=FilterOperator.ALL)
        ]
    ),
    MetadataFilters(filters=[MetadataFilter(key="lead", value=None, operator=FilterOperator.IS_EMPTY)]),
    MetadataFilters(filters=[MetadataFilter(key="lead", value="yes", operator=FilterOperator.NE)]),
    MetadataFilters(
        filters=[
            MetadataFilter(key="position", value=2, operator=FilterOperator.LT),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="lead", value="yes"),
                    MetadataFilter(key="position", value=[7, 9, 11], operator=FilterOperator.IN),
                ],
                condition=FilterCondition.AND,
            ),
        ],
        condition=FilterCondition.OR,
    ),
    MetadataFilters(filters=[MetadataFilter(key="audience", value="public")], condition=FilterCondition.NOT),
    MetadataFilters(filters=[MetadataFilter(key="source", value="no-such-guide")]),
    MetadataFilters(filters=[MetadataFilter(key="source", value=[], operator=FilterOperator.IN)]),
]


@pytest.mark.parametrize("filters", FILTERS, ids=range(len(FILTERS)))
def test_filters_give_the_local_index_results(qdrant_index, local_index, documents, filters):
    allowed = {d.id for d in documents if metadata_matches(d.metadata, filters)}
    for query in QUERIES[:2]:
        expected, expected_scores, _ = _top(local_index, query, top_k=50, filters=filters)
        found, scores, _ = _top(qdrant_index, query, top_k=50, filters=filters)
        assert set(expected) == allowed
        assert found == expected
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)


def test_untranslatable_filters_are_clear_errors(qdrant_index):
    for rule in (
        MetadataFilter(key="source", value="pearl", operator=FilterOperator.TEXT_MATCH),
        MetadataFilter(key="source", value="pearl", operator=FilterOperator.CONTAINS),
        MetadataFilter(key="source", value="pearls", operator=FilterOperator.GT),
    ):
        with pytest.raises(UnsupportedFilterError, match="Qdrant"):
            qdrant_index.search(QUERIES[0], filters=MetadataFilters(filters=[rule]))


def test_upsert_replaces_delete_removes_metadata_updates(cached_encoder, documents):
    with QdrantMultiVectorIndex(cached_encoder) as index:
        index.add(documents[:6])
        assert len(index) == 6 and documents[0].id in index and "nope" not in index
        with pytest.raises(InvalidDocumentError, match="already in the index"):
            index.add([documents[0]])

        replaced = DocumentInput(id=documents[0].id, text=documents[10].text, metadata={"audience": "internal"})
        index.upsert([replaced])
        assert len(index) == 6
        stored = index.get(documents[0].id)
        assert stored.text == documents[10].text and stored.metadata == {"audience": "internal"}
        assert len(stored.token_ids) == len(stored.weights) == stored.vectors.shape[0]
        assert index.search(documents[10].text[:120], top_k=1)[0].id == documents[0].id

        index.update_metadata(documents[1].id, {"audience": "internal", "flag": 1})
        assert index.get(documents[1].id).metadata == {"audience": "internal", "flag": 1}
        internal = MetadataFilters(filters=[MetadataFilter(key="audience", value="internal")])
        assert {h.id for h in index.search(QUERIES[0], filters=internal)} == {documents[0].id, documents[1].id}

        index.delete([documents[0].id, documents[2].id])
        assert len(index) == 4 and documents[0].id not in index
        assert documents[0].id not in {h.id for h in index.search(documents[10].text[:120], top_k=10)}
        with pytest.raises(InvalidDocumentError, match="not in the index"):
            index.delete([documents[3].id, "no-such-id"])
        assert documents[3].id in index  # nothing deleted
        with pytest.raises(InvalidDocumentError, match="No document"):
            index.get(documents[0].id)


class _OtherModelEncoder(ColBERTAttEncoder):
    @property
    def weights_sha256(self) -> str:
        return "f" * 64


def test_a_local_folder_reopens_and_checks_the_encoder(cached_encoder, local_index, documents, tmp_path):
    settings = QdrantSettings(location=str(tmp_path / "store"), collection="guides")
    with QdrantMultiVectorIndex(cached_encoder, qdrant=settings) as index:
        index.add(documents)
        before = _top(index, QUERIES[1], top_k=5)[0]
        index.persist(tmp_path / "pointer")

    with QdrantMultiVectorIndex(cached_encoder, qdrant=settings) as reopened:
        assert len(reopened) == len(documents)
        with pytest.raises(QdrantUnavailableError, match="already accessed"):
            QdrantMultiVectorIndex(cached_encoder, qdrant=settings)
        assert _top(reopened, QUERIES[1], top_k=5)[0] == before
        assert reopened.manifest.model.weights_sha256 == cached_encoder.weights_sha256
    with QdrantMultiVectorIndex.load(tmp_path / "pointer", encoder=cached_encoder) as loaded:
        assert _top(loaded, QUERIES[1], top_k=5)[0] == before

    other_settings = ColBERTAttEncoder(
        EncoderSettings(attention_strategy=AttentionStrategy.RECEIVED_ALL), checkpoint=cached_encoder.checkpoint
    )
    with pytest.raises(IndexMismatchError, match="attention_strategy.*cls_all.*received_all"):
        QdrantMultiVectorIndex(other_settings, qdrant=settings)
    other_model = _OtherModelEncoder(cached_encoder.settings, checkpoint=cached_encoder.checkpoint)
    other_model.model_name = "some-other-colbert"
    with pytest.raises(IndexMismatchError, match="all-MiniLM-L6-v2.*some-other-colbert"):
        QdrantMultiVectorIndex(other_model, qdrant=settings)
    # A failed open releases the folder: it can be opened again.
    with QdrantMultiVectorIndex(cached_encoder, qdrant=settings) as again:
        assert len(again) == len(documents)


def test_token_pruning_is_applied_as_in_the_local_index(cached_encoder, documents):
    settings = IndexSettings(storage=StorageSettings(prune_fraction=0.3))
    local = MultiVectorIndex(cached_encoder, settings)
    local.add(documents)
    with QdrantMultiVectorIndex(cached_encoder, settings) as index:
        index.add(documents)
        assert len(index.get(documents[0].id).weights) == len(local.get(documents[0].id).weights)
        for query in QUERIES[:2]:
            expected, expected_scores, _ = _top(local, query, top_k=5, exhaustive=True)
            found, scores, _ = _top(index, query, top_k=5)
            assert found == expected
            np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
    with pytest.raises(ValueError, match="residual_pq"):
        QdrantMultiVectorIndex(cached_encoder, IndexSettings(storage=StorageSettings(vector_format="residual_pq")))


def test_an_in_memory_collection_cannot_be_persisted(cached_encoder, tmp_path):
    with QdrantMultiVectorIndex(cached_encoder) as index, pytest.raises(ValueError, match="in memory"):
        index.persist(tmp_path / "pointer")


def test_point_ids_are_deterministic():
    assert point_id("care-pearls-0") == point_id("care-pearls-0") != point_id("care-pearls-1")


def test_works_through_the_llama_index_retriever(qdrant_index, local_index, cached_encoder, documents):
    retriever = ColBERTAttRetriever(index=qdrant_index, similarity_top_k=3)
    for query in QUERIES[2:4]:
        found = retriever.retrieve(query)
        expected_ids, _, expected_normalised = _top(local_index, query, top_k=3, exhaustive=True)
        assert [n.node.node_id for n in found] == expected_ids
        np.testing.assert_allclose([n.score for n in found], expected_normalised, rtol=1e-6)

    with QdrantMultiVectorIndex(cached_encoder) as index:
        fresh = ColBERTAttRetriever(index=index, similarity_top_k=2)
        fresh.insert_nodes([TextNode(id_=d.id, text=d.text, metadata=d.metadata) for d in documents[:5]])
        assert len(index) == 5
        top = fresh.retrieve(documents[3].text[:100])[0]
        assert top.node.node_id == documents[3].id and 0.0 <= top.score <= 1.0
        fresh.delete_nodes([documents[3].id])
        assert documents[3].id not in index


def test_the_backend_is_chosen_by_settings_and_reopened_from_its_directory(cached_encoder, documents, tmp_path):
    nodes = [TextNode(id_=d.id, text=d.text, metadata=d.metadata) for d in documents[:6]]
    store = QdrantSettings(location=str(tmp_path / "store"), collection="guides")
    retriever = ColBERTAttRetriever.from_defaults(nodes=nodes, encoder=cached_encoder, qdrant=store)
    assert isinstance(retriever.index, QdrantMultiVectorIndex)
    expected = [n.node.node_id for n in retriever.retrieve(QUERIES[0])]
    retriever.persist(tmp_path / "qdrant_pointer")
    retriever.index.close()
    reopened = ColBERTAttRetriever.from_persist_dir(tmp_path / "qdrant_pointer", encoder=cached_encoder)
    assert isinstance(reopened.index, QdrantMultiVectorIndex)
    assert [n.node.node_id for n in reopened.retrieve(QUERIES[0])] == expected
    reopened.index.close()

    local = ColBERTAttRetriever.from_defaults(nodes=nodes, encoder=cached_encoder)
    local.persist(tmp_path / "local")
    assert type(ColBERTAttRetriever.from_persist_dir(tmp_path / "local", encoder=cached_encoder).index).__name__ == (
        "MultiVectorIndex"
    )
