"""FAISS candidate generation with each kind of IVF code, on 200 real passages with the real encoder: what the
codes cost, what they find, and that deletions, filters, persistence and older indexes keep working."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from colbert_att_assistant.retriever import ColBERTAttError, IndexSettings, MultiVectorIndex
from colbert_att_assistant.retriever.index import DocumentInput
from colbert_att_assistant.retriever.settings import CandidateSettings

QUERIES = [
    "immune response of T cells to tumours",
    "effects of vitamin D on bone density",
    "gene expression in stem cells",
    "antibiotic resistance in bacteria",
    "mortality after myocardial infarction",
]
# IVF forced on a small collection, and no exhaustive shortcut, so that candidates really are generated.
IVF = {"faiss_kind": "ivf", "ivf_nlist": 64, "ivf_nprobe": 16, "exact_below_documents": 0}


def documents(passages) -> list[DocumentInput]:
    return [
        DocumentInput(id=p["id"], text=p["text"], metadata={"rare": "yes" if i % 40 == 0 else "no"})
        for i, p in enumerate(passages)
    ]


def ivf_index(encoder, passages, **candidates) -> MultiVectorIndex:
    index = MultiVectorIndex(encoder, IndexSettings(candidates=CandidateSettings(**{**IVF, **candidates})))
    index.add(documents(passages))
    return index


@pytest.fixture(scope="module")
def by_codes(cached_encoder, passages) -> dict[str, MultiVectorIndex]:
    return {codes: ivf_index(cached_encoder, passages, ivf_codes=codes) for codes in ("pq4_fastscan", "sq8")}


def top_ids(index: MultiVectorIndex, query: str, **kwargs) -> list[str]:
    return [hit.id for hit in index.search(query, top_k=10, **kwargs)]


def own_token_share(index: MultiVectorIndex, document_id: str) -> float:
    """Share of a document's tokens whose nearest FAISS neighbour is a token of that document."""
    document = index.get(document_id)
    _, slots = index.token_storage.candidates.search(document.vectors.float().numpy(), 1)
    return float(np.mean(slots[:, 0] == document.slot))


def test_the_default_codes_are_4_bit_sub_vectors_an_eighth_of_the_8_bit_codes(by_codes):
    assert CandidateSettings().ivf_codes == "pq4_fastscan"
    fast = by_codes["pq4_fastscan"].token_storage.candidates
    scalar = by_codes["sq8"].token_storage.candidates
    assert (fast.codes, scalar.codes) == ("pq4_fastscan", "sq8")
    assert fast.index.pq.M == 384 // 4 and fast.index.pq.nbits == 4
    assert (fast.index.code_size, scalar.index.code_size) == (48, 384)
    assert fast.ntotal == scalar.ntotal == by_codes["sq8"].token_count


@pytest.mark.parametrize("codes", ["pq4_fastscan", "sq8"])
def test_each_code_finds_what_exhaustive_scoring_ranks_first(by_codes, codes):
    index = by_codes[codes]
    shares = []
    for query in QUERIES:
        found, exact = top_ids(index, query), top_ids(index, query, exhaustive=True)
        assert found[0] == exact[0]
        shares.append(len(set(found) & set(exact)) / 10)
    assert np.mean(shares) >= 0.9


@pytest.mark.parametrize("codes", ["pq4_fastscan", "sq8"])
def test_many_threads_searching_one_index_get_what_one_thread_gets(by_codes, codes):
    # The web app serves concurrent requests from one loaded index; FAISS scans run in each request's thread.
    index = by_codes[codes]
    queries = QUERIES * 8  # bounded: 40 searches over 8 threads
    alone = {query: [(h.id, h.score) for h in index.search(query)] for query in QUERIES}
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda query: [(h.id, h.score) for h in index.search(query)], queries))
    assert together == [alone[query] for query in queries]


def test_a_persisted_fastscan_index_reloads_with_its_codes_and_the_same_hits(by_codes, tmp_path):
    index = by_codes["pq4_fastscan"]
    index.persist(tmp_path / "index")
    loaded = MultiVectorIndex.load(tmp_path / "index", encoder=index.encoder)
    assert loaded.token_storage.candidates.codes == "pq4_fastscan"
    for query in QUERIES:
        assert [(h.id, h.score) for h in loaded.search(query)] == [(h.id, h.score) for h in index.search(query)]


def test_an_index_built_with_8_bit_codes_still_loads_and_searches_with_default_settings(by_codes, tmp_path):
    index = by_codes["sq8"]
    index.persist(tmp_path / "index")
    loaded = MultiVectorIndex.load(tmp_path / "index", encoder=index.encoder, candidate_settings=CandidateSettings())
    assert loaded.token_storage.candidates.codes == "sq8"
    assert top_ids(loaded, QUERIES[1]) == top_ids(index, QUERIES[1])


def test_deleted_documents_leave_the_fastscan_lists_and_come_back_when_added_again(cached_encoder, passages):
    index = ivf_index(cached_encoder, passages)
    target = top_ids(index, QUERIES[0])[0]
    document_tokens = len(index.get(target).weights)
    entries = index.token_storage.candidates.ntotal
    index.delete([target])
    assert target not in top_ids(index, QUERIES[0])
    assert entries - index.token_storage.candidates.ntotal == document_tokens > 0
    again = next(d for d in documents(passages) if d.id == target)
    index.add([again])
    assert top_ids(index, QUERIES[0])[0] == target
    # Its tokens, packed into the blocks the removal left, are each other's nearest neighbours again.
    assert own_token_share(index, target) >= 0.95


def test_a_document_updated_in_a_reloaded_index_is_found_by_its_tokens_after_another_reload(
    cached_encoder, passages, tmp_path
):
    # What the knowledge base does when a document changes: open the index from disk, remove, add, persist.
    ivf_index(cached_encoder, passages).persist(tmp_path / "index")
    loaded = MultiVectorIndex.load(
        tmp_path / "index", encoder=cached_encoder, candidate_settings=CandidateSettings(**IVF)
    )
    changed = documents(passages)[7]
    loaded.delete([changed.id, documents(passages)[8].id])
    loaded.add([changed])
    assert own_token_share(loaded, changed.id) >= 0.95
    loaded.persist(tmp_path / "index")
    again = MultiVectorIndex.load(
        tmp_path / "index", encoder=cached_encoder, candidate_settings=CandidateSettings(**IVF)
    )
    assert own_token_share(again, changed.id) >= 0.95


def test_a_metadata_filter_reaches_the_fastscan_scan(cached_encoder, passages):
    # Few neighbours and probes: the allowed documents must come from the filtered scan, not from a wide net.
    index = ivf_index(cached_encoder, passages, ivf_nprobe=2, tokens_per_query_token=4)
    rare = {p["id"] for i, p in enumerate(passages) if i % 40 == 0}
    hits = index.search(QUERIES[2], top_k=5, filters=MetadataFilters(filters=[MetadataFilter(key="rare", value="yes")]))
    assert {h.id for h in hits} == rare


def test_sub_vectors_that_cannot_split_the_vectors_are_refused_before_anything_is_added(cached_encoder, passages):
    with pytest.raises(ColBERTAttError, match="does not divide the vector size 384"):
        MultiVectorIndex(cached_encoder, IndexSettings(candidates=CandidateSettings(ivf_pq_subvectors=100)))
    custom = ivf_index(cached_encoder, passages, ivf_pq_subvectors=48)
    assert custom.token_storage.candidates.index.pq.M == 48


def test_the_exact_scoring_depth_follows_the_storage_unless_it_is_set(by_codes, cached_encoder):
    index = by_codes["pq4_fastscan"]
    query = cached_encoder.encode_query(QUERIES[0])
    settings = index.settings.candidates
    found = index.token_storage.candidate_slots(query, None, 10, index._next_slot, settings)
    assert settings.rerank_depth is None and len(found) == CandidateSettings.EXACT_STORAGE_RERANK_DEPTH == 48
    assert CandidateSettings().depth_for(compressed=True) == CandidateSettings.COMPRESSED_STORAGE_RERANK_DEPTH == 64
    deeper = settings.model_copy(update={"rerank_depth": 80})
    assert len(index.token_storage.candidate_slots(query, None, 10, index._next_slot, deeper)) == 80
    assert deeper.depth_for(compressed=True) == 80
