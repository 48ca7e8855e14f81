"""ColBERTAttRetriever as LlamaIndex code would use it."""

import asyncio
import time

import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from colbert_att_assistant.retriever import ColBERTAttRetriever
from colbert_att_assistant.retriever.llama_retriever import RAW_SCORE_KEY


@pytest.fixture(scope="module")
def nodes(passages):
    return [
        TextNode(id_=p["id"], text=p["text"], metadata={"audience": "public" if i % 4 else "internal"})
        for i, p in enumerate(passages[:80])
    ]


@pytest.fixture(scope="module")
def retriever(nodes, cached_encoder):
    return ColBERTAttRetriever.from_defaults(nodes=nodes, encoder=cached_encoder, similarity_top_k=5)


def test_retrieve_returns_nodes_with_normalised_and_raw_scores(retriever, nodes):
    query = " ".join(nodes[3].text.split()[:10])
    results = retriever.retrieve(query)
    assert len(results) == 5 and all(isinstance(r, NodeWithScore) for r in results)
    assert results[0].node.node_id == nodes[3].node_id
    assert all(0.0 <= r.score <= 1.0 for r in results)
    raws = [r.node.metadata[RAW_SCORE_KEY] for r in results]
    assert raws == sorted(raws, reverse=True)
    # Raw scores are for tracing, not for the LLM prompt.
    assert RAW_SCORE_KEY not in results[0].node.get_content(metadata_mode="llm")


def test_filters_and_scoring_mode(nodes, retriever):
    public_only = ColBERTAttRetriever(
        retriever.index,
        similarity_top_k=10,
        filters=MetadataFilters(filters=[MetadataFilter(key="audience", value="public")]),
        scoring="maxsim",
    )
    results = public_only.retrieve(QueryBundle(nodes[0].text[:100]))  # node 0 is internal
    assert nodes[0].node_id not in {r.node.node_id for r in results}
    assert {r.node.metadata["audience"] for r in results} == {"public"}
    assert {r.node.metadata["colbert_att_scoring"] for r in results} == {"maxsim"}


async def test_aretrieve_does_not_block_the_event_loop(retriever):
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    results = await asyncio.gather(*(retriever.aretrieve(f"cell biology question {i}") for i in range(4)))
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    assert all(len(r) == 5 for r in results)
    # The loop kept running while the retrievals ran (a blocking call would leave ticks near zero).
    assert ticks >= max(3, int(elapsed / 0.01))


def test_persist_insert_delete_round_trip(nodes, cached_encoder, tmp_path):
    retriever = ColBERTAttRetriever.from_defaults(nodes=nodes[:30], encoder=cached_encoder, similarity_top_k=3)
    retriever.persist(tmp_path / "r")
    loaded = ColBERTAttRetriever.from_persist_dir(tmp_path / "r", encoder=cached_encoder, similarity_top_k=3)
    query = nodes[10].text[:120]
    assert [r.node.node_id for r in loaded.retrieve(query)] == [r.node.node_id for r in retriever.retrieve(query)]

    loaded.insert_nodes([nodes[50]])
    assert loaded.retrieve(nodes[50].text[:120])[0].node.node_id == nodes[50].node_id
    loaded.delete_nodes([nodes[10].node_id])
    assert nodes[10].node_id not in {r.node.node_id for r in loaded.retrieve(query)}
    also = ColBERTAttRetriever.from_defaults(persist_dir=tmp_path / "r", encoder=cached_encoder)
    assert len(also.index) == 30


def test_constructor_arguments_are_checked(retriever):
    with pytest.raises(ValueError, match="exactly one of nodes"):
        ColBERTAttRetriever.from_defaults()
    with pytest.raises(ValueError, match="similarity_top_k"):
        ColBERTAttRetriever(retriever.index, similarity_top_k=0)
    with pytest.raises(ValueError):
        ColBERTAttRetriever(retriever.index, scoring="cosine")
