"""search_batch on real indexes on disk with the real encoder: the hits of many queries at once equal those of
`search` one query at a time, with filters, mixed inputs and bad input; and the places that run many queries (the
LlamaIndex retriever, the untimed evaluation) through it.

Given the same query encodings, the hits are the same ids in the same order with scores within 1e-6 (in fact
equal). Strings are encoded together, in one batched forward pass, whose query vectors differ from one-at-a-time
encoding in the last float bits (about 4e-7); the MaxSim winner is picked on bfloat16 similarities, so such a
difference can pick another of two near-tied document tokens and move a score by up to about 1e-3 of its size
(benchmarks/batch_throughput.py: 2 of the 300 SciFact test queries, ids and order all unchanged).
"""

from __future__ import annotations

import pytest
from llama_index.core.schema import QueryBundle
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from colbert_att_assistant.evals.retrieval import searched_in_batches
from colbert_att_assistant.retriever import ColBERTAttRetriever, InvalidQueryError, MultiVectorIndex
from colbert_att_assistant.retriever.index import DocumentInput, SearchHit
from colbert_att_assistant.retriever.scoring import ScoringMode
from colbert_att_assistant.retriever.settings import CandidateSettings, IndexSettings, StorageSettings

# (absolute, relative) score tolerances.
SAME_ENCODINGS = (1e-6, 0.0)
ENCODED_IN_A_BATCH = (0.0, 1e-3)


def close(score: float, reference: float, tolerance: tuple[float, float]) -> bool:
    absolute, relative = tolerance
    return abs(score - reference) <= absolute + relative * abs(reference)


# Small pools of FAISS neighbours and a shallow re-rank depth, so that candidate generation (not scoring every
# document) decides what is found; IVF as on the real collections.
CANDIDATES = {"exact_below_documents": 0, "tokens_per_query_token": 8, "rerank_depth": 16}
STORAGE = {
    "ivf": IndexSettings(candidates=CandidateSettings(faiss_kind="ivf", ivf_nlist=64, ivf_nprobe=4, **CANDIDATES)),
    "flat": IndexSettings(candidates=CandidateSettings(faiss_kind="flat", **CANDIDATES)),
    # Compressed storage has no batched candidate path: the base class's per-query one.
    "residual_pq": IndexSettings(
        candidates=CandidateSettings(**CANDIDATES),
        storage=StorageSettings(vector_format="residual_pq", centroids=512, pq_rotation=False),
    ),
}

PUBLIC = MetadataFilters(filters=[MetadataFilter(key="audience", value="public")])
RARE = MetadataFilters(filters=[MetadataFilter(key="rare", value="yes")])
NOTHING = MetadataFilters(filters=[MetadataFilter(key="rare", value="no such value")])


def queries_for(passages) -> list[str]:
    """Questions of different lengths, opening words of indexed passages, and one long enough to be truncated."""
    return [
        "immune response of T cells to tumours",
        "effects of vitamin D on bone density",
        "gene expression in stem cells",
        "antibiotic resistance",
        *(" ".join(p["text"].split()[:12]) for p in passages[5:200:20]),
        " ".join(passages[7]["text"].split()[:80]),
    ]


def documents(passages) -> list[DocumentInput]:
    return [
        DocumentInput(
            id=p["id"],
            text=p["text"],
            metadata={"audience": "internal" if i % 3 == 0 else "public", "rare": "yes" if i % 20 == 0 else "no"},
        )
        for i, p in enumerate(passages)
    ]


@pytest.fixture(scope="module", params=list(STORAGE))
def index(request, cached_encoder, passages, tmp_path_factory) -> MultiVectorIndex:
    """A real index of the ~200 passages, persisted and loaded back from disk."""
    built = MultiVectorIndex(cached_encoder, STORAGE[request.param])
    built.add(documents(passages))
    directory = tmp_path_factory.mktemp(f"batch-{request.param}")
    built.persist(directory)
    return MultiVectorIndex.load(
        directory, encoder=cached_encoder, candidate_settings=STORAGE[request.param].candidates
    )


def assert_same_hits(
    batch: list[list[SearchHit]], one_at_a_time: list[list[SearchHit]], tolerance: tuple[float, float] = SAME_ENCODINGS
) -> None:
    assert len(batch) == len(one_at_a_time)
    for position, (got, expected) in enumerate(zip(batch, one_at_a_time, strict=True)):
        assert [h.id for h in got] == [h.id for h in expected], f"query {position}"
        for hit, reference in zip(got, expected, strict=True):
            assert close(hit.score, reference.score, tolerance), f"query {position}, {hit.id}"
            assert close(hit.normalised_score, reference.normalised_score, tolerance), f"query {position}, {hit.id}"
            assert (hit.text, hit.metadata) == (reference.text, reference.metadata)


@pytest.mark.parametrize("mode", ["colbert_att", "maxsim"])
def test_batch_hits_equal_one_at_a_time(index, passages, cached_encoder, mode):
    encoded = cached_encoder.encode_queries(queries_for(passages))
    batch = index.search_batch(encoded, top_k=10, mode=mode)
    assert all(len(hits) == 10 for hits in batch)
    assert_same_hits(batch, [index.search(q, top_k=10, mode=mode) for q in encoded])
    # A passage's opening words find it first.
    assert batch[4][0].id == passages[5]["id"]


@pytest.mark.parametrize("mode", ["colbert_att", "maxsim"])
def test_scoring_every_document_for_many_queries_equals_exhaustive_search(index, passages, cached_encoder, mode):
    encoded = cached_encoder.encode_queries(queries_for(passages))
    documents = [index.get(document_id) for document_id in index.document_ids()]
    scored = index.score_queries(encoded, documents, mode)
    assert len(scored) == len(encoded)
    for position, (query, batch) in enumerate(zip(encoded, scored, strict=True)):
        alone = index.score(query, documents, ScoringMode(mode))
        assert batch.raw.shape == (len(documents),)
        assert (batch.raw == alone.raw).all() and (batch.best_token == alone.best_token).all(), f"query {position}"
        best = [documents[i].id for i in sorted(range(len(documents)), key=lambda i: -batch.raw[i])[:10]]
        assert best == [h.id for h in index.search(query, top_k=10, mode=mode, exhaustive=True)], f"query {position}"


@pytest.mark.parametrize("mode", ["colbert_att", "maxsim"])
def test_strings_are_encoded_together_and_find_what_each_finds_alone(index, passages, cached_encoder, mode):
    texts = queries_for(passages)
    batch = index.search_batch(texts, top_k=10, mode=mode)
    assert_same_hits(batch, index.search_batch(cached_encoder.encode_queries(texts), top_k=10, mode=mode))
    assert_same_hits(batch, [index.search(text, top_k=10, mode=mode) for text in texts], ENCODED_IN_A_BATCH)


def test_a_batch_larger_than_an_encoder_batch_keeps_the_query_order(index, passages):
    texts = [" ".join(p["text"].split()[:8]) for p in passages[:70]]
    assert len(texts) > index.encoder.settings.batch_size
    batch = index.search_batch(texts, top_k=3)
    assert_same_hits(batch, [index.search(text, top_k=3) for text in texts], ENCODED_IN_A_BATCH)
    assert sum(hits[0].id == p["id"] for hits, p in zip(batch, passages, strict=False)) >= 60


@pytest.mark.parametrize(("filters", "top_k"), [(PUBLIC, 10), (RARE, 5), (NOTHING, 10)], ids=["public", "rare", "none"])
def test_filtered_batch_hits_equal_one_at_a_time(index, passages, cached_encoder, filters, top_k):
    encoded = cached_encoder.encode_queries(queries_for(passages))
    batch = index.search_batch(encoded, top_k=top_k, filters=filters)
    assert_same_hits(batch, [index.search(q, top_k=top_k, filters=filters) for q in encoded])
    if filters is NOTHING:
        assert batch == [[] for _ in encoded]
        return
    # 10 rare documents: few enough that FAISS's neighbours may name fewer than top_k and a query searches wider.
    allowed = {"public"} if filters is PUBLIC else {"yes"}
    key = "audience" if filters is PUBLIC else "rare"
    assert all(len(hits) == top_k and {h.metadata[key] for h in hits} == allowed for hits in batch)


def test_a_batch_mixing_strings_and_encoded_queries(index, passages, cached_encoder):
    texts = queries_for(passages)
    encoded = cached_encoder.encode_queries(texts)
    mixed = [text if i % 2 == 0 else encoded[i] for i, text in enumerate(texts)]
    batch = index.search_batch(mixed, top_k=10, filters=PUBLIC)
    # The encodings are used as given, the strings encoded: the same hits as either alone.
    assert_same_hits(batch[1::2], [index.search(q, top_k=10, filters=PUBLIC) for q in encoded[1::2]])
    assert_same_hits(batch[::2], index.search_batch(texts[::2], top_k=10, filters=PUBLIC))
    assert_same_hits(batch, [index.search(q, top_k=10, filters=PUBLIC) for q in mixed], ENCODED_IN_A_BATCH)


def test_empty_batches_and_an_empty_index(index, cached_encoder):
    assert index.search_batch([]) == []
    assert index.search_batch((), filters=PUBLIC) == []
    assert MultiVectorIndex(cached_encoder).search_batch(["vitamin D", "stem cells"]) == [[], []]


@pytest.mark.parametrize("top_k", [0, -3, 2.5, True, "10", None])
def test_a_bad_top_k_is_the_same_clear_error_as_search(index, top_k):
    with pytest.raises(ValueError, match="top_k must be a positive integer") as alone:
        index.search("vitamin D", top_k=top_k)
    with pytest.raises(ValueError, match="top_k must be a positive integer") as batch:
        index.search_batch(["vitamin D", "stem cells"], top_k=top_k)
    assert str(batch.value) == str(alone.value)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        index.search_batch([], top_k=top_k)


def test_bad_queries_are_named_by_their_position(index):
    with pytest.raises(InvalidQueryError, match=r"Query 2 is empty or whitespace"):
        index.search_batch(["vitamin D", "stem cells", "  "])
    with pytest.raises(InvalidQueryError, match=r"Query 1 is a int, not a string or an EncodedText"):
        index.search_batch(["vitamin D", 42])
    with pytest.raises(InvalidQueryError, match="takes a list of queries; use search"):
        index.search_batch("vitamin D")
    with pytest.raises(ValueError, match="not a valid ScoringMode"):  # as search says
        index.search_batch(["vitamin D"], mode="no such mode")


def test_the_llama_index_retriever_retrieves_a_batch_as_one_at_a_time(index, passages):
    retriever = ColBERTAttRetriever(index, similarity_top_k=5, filters=PUBLIC)
    queries = queries_for(passages)[:6]
    batch = retriever.retrieve_batch([queries[0], QueryBundle(queries[1]), *queries[2:]])
    alone = [retriever.retrieve(q) for q in queries]
    assert [[n.node.node_id for n in nodes] for nodes in batch] == [[n.node.node_id for n in nodes] for nodes in alone]
    scores = zip([n.score for nodes in batch for n in nodes], [n.score for nodes in alone for n in nodes], strict=True)
    assert all(close(score, reference, ENCODED_IN_A_BATCH) for score, reference in scores)
    assert all(n.node.metadata["audience"] == "public" for nodes in batch for n in nodes)
    with pytest.raises(InvalidQueryError, match="use retrieve"):
        retriever.retrieve_batch("vitamin D")


def test_the_untimed_evaluation_searches_in_batches_with_the_same_run(index, passages):
    queries = {f"q{i}": text for i, text in enumerate(queries_for(passages))}
    run = searched_in_batches(index, queries, k=10, mode="colbert_att", batch_size=4)
    assert list(run) == list(queries)
    for qid, text in queries.items():
        alone = index.search(text, top_k=10)
        assert list(run[qid]) == [h.id for h in alone]
        assert all(close(s, h.score, ENCODED_IN_A_BATCH) for s, h in zip(run[qid].values(), alone, strict=True))
