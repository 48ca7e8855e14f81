"""One behavioural contract, run on every index backend: the local index with exact (bfloat16) and compressed
(residual_pq) token storage, and Qdrant in qdrant-client's local mode (a folder on disk). Real encoder, real
knowledge-base paragraphs; each backend is persisted and reopened through the factory."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from colbert_att_assistant.knowledge_base.ingest import load_or_rebuild
from colbert_att_assistant.retriever import IndexMismatchError, InvalidDocumentError
from colbert_att_assistant.retriever.index import BaseMultiVectorIndex, DocumentInput, MultiVectorIndex
from colbert_att_assistant.retriever.index.factory import new_index, open_index
from colbert_att_assistant.retriever.index.qdrant_index import QdrantMultiVectorIndex
from colbert_att_assistant.retriever.index.qdrant_settings import POINTER_FILE, QdrantSettings
from colbert_att_assistant.retriever.llama_retriever import ColBERTAttRetriever
from colbert_att_assistant.retriever.scoring import ScoringMode
from colbert_att_assistant.retriever.settings import IndexSettings, StorageSettings
from tests.conftest import REPO

BACKENDS = ["local-bfloat16", "local-residual_pq", "qdrant-folder"]
GUIDES = [
    "care/care-pearls",
    "care/care-calfskin",
    "care/care-cashmere",
    "care/care-silk-scarves",
    "care/care-mechanical-watches",
    "faq/faq-gift-wrapping",
    "faq/faq-returns-exchanges",
    "internal/internal-returns-exceptions",
    "internal/internal-discount-authority",
]
PUBLIC_ONLY = MetadataFilters(filters=[MetadataFilter(key="audience", value="public", operator=FilterOperator.EQ)])


def _paragraphs() -> list[DocumentInput]:
    """Up to three body paragraphs of each guide, with its audience and category."""
    documents = []
    for guide in GUIDES:
        _, front, body = (
            (REPO / "knowledge_base" / "documents" / f"{guide}.md").read_text(encoding="utf-8").split("---", 2)
        )
        meta = yaml.safe_load(front)
        paragraphs = [p for p in body.split("\n\n") if len(p.split()) > 15 and not p.startswith("#")][:3]
        for number, paragraph in enumerate(paragraphs):
            metadata = {"audience": meta["audience"], "category": meta["category"], "source": meta["id"]}
            documents.append(DocumentInput(id=f"{meta['id']}-{number}", text=paragraph, metadata=metadata))
    return documents


@pytest.fixture(scope="module")
def documents() -> list[DocumentInput]:
    documents = _paragraphs()
    assert len(documents) >= 20 and {d.metadata["audience"] for d in documents} == {"public", "internal"}
    return documents


def _new(backend: str, encoder, folder: Path) -> BaseMultiVectorIndex:
    if backend == "qdrant-folder":
        return new_index(encoder, qdrant=QdrantSettings(location=str(folder / "qdrant"), collection="contract"))
    storage = StorageSettings()
    if backend == "local-residual_pq":
        storage = StorageSettings(vector_format="residual_pq", centroids=128, pq_rotation=False)
    return new_index(encoder, IndexSettings(storage=storage))


@pytest.fixture(params=BACKENDS)
def index(request, cached_encoder, documents, tmp_path) -> Iterator[BaseMultiVectorIndex]:
    """A fresh index of the paragraphs on each backend (encodings are memoised, so this is cheap)."""
    index = _new(request.param, cached_encoder, tmp_path)
    index.add(documents)
    yield index
    index.close()


def test_holds_exactly_what_was_added(index, documents):
    assert len(index) == len(documents)
    assert sorted(index.document_ids()) == sorted(d.id for d in documents)
    assert documents[0].id in index and "no-such-id" not in index and 3 not in index
    stored = index.get(documents[4].id)
    assert stored.text == documents[4].text and stored.metadata == documents[4].metadata
    assert len(stored.weights) == len(stored.token_ids) > 0
    assert index.token_count == sum(len(index.get(d.id).weights) for d in documents)
    with pytest.raises(InvalidDocumentError, match="No document"):
        index.get("no-such-id")


def test_bad_input_is_refused_and_changes_nothing(index, documents):
    fresh = {"id": "fresh", "text": "A new paragraph about cleaning silver jewellery with a soft cloth."}
    with pytest.raises(InvalidDocumentError, match="already in the index"):
        index.add([fresh, documents[0]])
    with pytest.raises(InvalidDocumentError, match="appears twice"):
        index.upsert([fresh, fresh])
    with pytest.raises(InvalidDocumentError, match="empty text"):
        index.add([{"id": "blank", "text": "   "}])
    with pytest.raises(InvalidDocumentError, match="Document 0 is not valid"):
        index.add([{"id": "no-text"}])
    with pytest.raises(InvalidDocumentError, match="not in the index"):
        index.delete([documents[0].id, "no-such-id"])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="top_k must be a positive integer"):
            index.search("pearls", top_k=bad)
    assert len(index) == len(documents) and "fresh" not in index and documents[0].id in index


def test_search_ranks_the_relevant_guide_first_and_explains_it(index, cached_encoder):
    query = cached_encoder.encode_query("how should I store my pearl necklace")
    hits = index.search(query, top_k=5, explain=True)
    # Top two, not first: compressed storage trained on this small sample may swap close neighbours.
    assert len(hits) == 5 and "care-pearls" in {h.metadata["source"] for h in hits[:2]}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= h.normalised_score <= 1.0 for h in hits)
    stored = index.get(hits[0].id)
    assert [m.query_position for m in hits[0].matches] == list(range(len(query.token_ids)))
    for match in hits[0].matches:
        assert match.document_token_id == int(stored.token_ids[match.document_position])
        assert match.document_weight == pytest.approx(float(stored.weights[match.document_position]))
    # The alignment behind the score: each query token's best similarity is the one the match reports.
    similarities = index.token_similarities(query, hits[0].id)
    assert similarities.shape == (len(query.token_ids), len(stored.weights))
    np.testing.assert_allclose(similarities.max(axis=1), [m.similarity for m in hits[0].matches], rtol=0, atol=2e-2)
    # Candidates find what scoring every document finds.
    exhaustive = index.search(query, top_k=3, exhaustive=True)
    assert [h.id for h in exhaustive] == [h.id for h in hits[:3]]
    assert not index.search(query, top_k=3)[0].matches  # explanations only when asked


def test_metadata_filters_hold_and_follow_metadata_updates(index, documents, cached_encoder):
    query = cached_encoder.encode_query("can a client return an item after thirty days")
    public = index.search(query, top_k=len(documents), filters=PUBLIC_ONLY)
    assert public and all(h.metadata["audience"] == "public" for h in public)
    assert len(public) == sum(d.metadata["audience"] == "public" for d in documents)
    internal_id = next(d.id for d in documents if d.metadata["audience"] == "internal")
    index.update_metadata(internal_id, {"audience": "public", "category": "returns", "source": "reviewed"})
    assert internal_id in {h.id for h in index.search(query, top_k=len(documents), filters=PUBLIC_ONLY)}
    assert index.get(internal_id).metadata == {"audience": "public", "category": "returns", "source": "reviewed"}
    with pytest.raises(InvalidDocumentError, match="No document"):
        index.update_metadata("no-such-id", {})


def test_upsert_replaces_and_delete_removes(index, documents, cached_encoder):
    target = documents[0].id
    index.upsert([{"id": target, "text": "Saddle soap restores the shine of vintage riding boots after a muddy hack."}])
    assert len(index) == len(documents)
    hits = index.search(cached_encoder.encode_query("saddle soap for riding boots"), top_k=1)
    assert hits[0].id == target and "riding boots" in index.get(target).text
    index.delete([target, documents[1].id])
    assert len(index) == len(documents) - 2 and target not in index
    assert target not in {h.id for h in index.search("pearls", top_k=len(documents), exhaustive=True)}


def test_persisted_index_reopens_with_the_same_results(index, tmp_path, cached_encoder):
    query = cached_encoder.encode_query("cashmere pilling")
    before, count = index.search(query, top_k=4, mode=ScoringMode.MAXSIM), len(index)
    index.persist(tmp_path / "persisted")
    index.close()  # Qdrant's local folder admits one client at a time
    with open_index(tmp_path / "persisted", encoder=cached_encoder) as reopened:
        assert type(reopened) is type(index) and len(reopened) == count
        after = reopened.search(query, top_k=4, mode=ScoringMode.MAXSIM)
        assert [h.id for h in after] == [h.id for h in before]
        np.testing.assert_allclose([h.score for h in after], [h.score for h in before], rtol=1e-6)


def test_a_retriever_works_on_every_backend(index):
    retriever = ColBERTAttRetriever(index, similarity_top_k=2)
    nodes = retriever.retrieve("cleaning a calfskin handbag")
    assert len(nodes) == 2 and nodes[0].node.metadata["source"] == "care-calfskin"
    retriever.insert_nodes([TextNode(id_="boots", text="Riding boots want saddle soap and a soft horsehair brush.")])
    assert retriever.retrieve("saddle soap for riding boots")[0].node.node_id == "boots"
    retriever.delete_nodes(["boots"])
    assert "boots" not in index


def test_every_backend_refuses_another_encoder_setting(cached_encoder, tmp_path, documents):
    from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings
    from colbert_att_assistant.retriever.settings import AttentionStrategy

    other = ColBERTAttEncoder(
        EncoderSettings(attention_strategy=AttentionStrategy.RECEIVED_ALL), checkpoint=cached_encoder.checkpoint
    )
    local = MultiVectorIndex(cached_encoder)
    local.add(documents[:2])
    local.persist(tmp_path / "local")
    qdrant = QdrantSettings(location=str(tmp_path / "qdrant"))
    with QdrantMultiVectorIndex(cached_encoder, qdrant=qdrant) as collection:
        collection.add(documents[:2])
        collection.persist(tmp_path / "pointer")
    for directory in (tmp_path / "local", tmp_path / "pointer"):
        with pytest.raises(IndexMismatchError, match="attention_strategy"):
            open_index(directory, encoder=other)


@pytest.mark.parametrize("backend", ["local", "qdrant"])
def test_the_knowledge_base_syncs_into_either_backend(backend, cached_encoder, tmp_path):
    folder = tmp_path / "documents"
    for guide in ("care/care-pearls", "care/care-cashmere", "internal/internal-returns-exceptions"):
        (folder / guide).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "knowledge_base" / "documents" / f"{guide}.md", folder / f"{guide}.md")
    qdrant = QdrantSettings(location=str(tmp_path / "qdrant"), collection="kb") if backend == "qdrant" else None
    index_dir = tmp_path / "index"

    index, first = load_or_rebuild(folder, index_dir, encoder=cached_encoder, qdrant=qdrant)
    assert first.added > 3 and first.rebuilt_because is None
    assert index.search("how should I store my pearl necklace", top_k=1)[0].metadata["audience"] == "public"
    index.close()
    assert (index_dir / (POINTER_FILE if backend == "qdrant" else "manifest.json")).is_file()

    (folder / "care" / "care-cashmere.md").unlink()
    index, second = load_or_rebuild(folder, index_dir, encoder=cached_encoder, qdrant=qdrant)
    assert second.added == 0 and second.removed > 0 and second.rebuilt_because is None
    kept = sorted(index.document_ids())
    assert len(kept) == first.added - second.removed
    index.close()
    with open_index(index_dir, encoder=cached_encoder) as reopened:
        assert type(reopened).__name__ == ("QdrantMultiVectorIndex" if qdrant else "MultiVectorIndex")
        assert sorted(reopened.document_ids()) == kept

    index, third = load_or_rebuild(folder, index_dir, encoder=cached_encoder, qdrant=qdrant, rebuild=True)
    assert third.rebuilt_because == "asked to rebuild" and third.added == len(index) == len(kept)
    index.close()
