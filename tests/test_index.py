"""The multi-vector index on real passages with the real encoder: search, in-place changes, persistence,
atomic writes, filters and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from colbert_att_assistant.retriever import (
    ColBERTAttEncoder,
    EncoderSettings,
    IndexCorruptError,
    IndexMismatchError,
    IndexSettings,
    InvalidDocumentError,
    MultiVectorIndex,
)
from colbert_att_assistant.retriever.index import DocumentInput, metadata_columns
from colbert_att_assistant.retriever.index.integrity import Verification
from colbert_att_assistant.retriever.settings import AttentionStrategy, CandidateSettings

QUERIES = [
    "immune response of T cells to tumours",
    "effects of vitamin D on bone density",
    "gene expression in stem cells",
    "antibiotic resistance in bacteria",
]


def as_documents(passages, start=0, stop=None, category_every=3):
    return [
        DocumentInput(
            id=p["id"],
            text=p["text"],
            metadata={
                "category": "even" if i % 2 == 0 else "odd",
                "audience": "internal" if i % category_every == 0 else "public",
            },
        )
        for i, p in enumerate(passages[start:stop], start=start)
    ]


def ranking(index, query, **kwargs):
    return [(hit.id, round(hit.score, 4)) for hit in index.search(query, top_k=10, **kwargs)]


@pytest.fixture(scope="module")
def small_index(cached_encoder, passages) -> MultiVectorIndex:
    index = MultiVectorIndex(cached_encoder)
    index.add(as_documents(passages, 0, 120))
    return index


def test_a_passage_is_found_by_its_own_opening_words(small_index, passages):
    for passage in passages[:5]:
        query = " ".join(passage["text"].split()[:12])
        assert small_index.search(query, top_k=3)[0].id == passage["id"]


def test_scores_are_ordered_and_normalised(small_index):
    for mode in ("colbert_att", "maxsim"):
        hits = small_index.search(QUERIES[0], top_k=10, mode=mode)
        assert len(hits) == 10
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= h.normalised_score <= 1.0 for h in hits)


def test_explanations_name_the_matched_document_tokens(small_index, cached_encoder):
    hit = small_index.search("stem cells", top_k=1, explain=True)[0]
    matched = {cached_encoder.token_strings([m.document_token_id])[0] for m in hit.matches}
    assert {"stem", "cells"} <= matched or {"stem", "cell"} <= matched
    assert all(-1.0 <= m.similarity <= 1.0 for m in hit.matches)


def test_incremental_changes_equal_a_full_rebuild(cached_encoder, passages):
    # No exhaustive shortcut for small collections: FAISS candidates must agree too.
    settings = IndexSettings(candidates=CandidateSettings(exact_below_documents=0, rerank_depth=20))
    incremental = MultiVectorIndex(cached_encoder, settings)
    incremental.add(as_documents(passages, 0, 30))
    incremental.add(as_documents(passages, 30, 45))
    incremental.delete([p["id"] for p in passages[5:12]])
    replaced = DocumentInput(
        id=passages[20]["id"], text=passages[60]["text"], metadata={"category": "even", "audience": "public"}
    )
    incremental.upsert([replaced])
    incremental.add(as_documents(passages, 45, 50))
    incremental.delete([passages[46]["id"]])

    final = [
        d for d in as_documents(passages, 0, 50) if d.id not in {p["id"] for p in passages[5:12]} | {passages[46]["id"]}
    ]
    final = [replaced if d.id == replaced.id else d for d in final]
    rebuilt = MultiVectorIndex(cached_encoder, settings)
    rebuilt.add(final)

    assert sorted(incremental.document_ids()) == sorted(rebuilt.document_ids())
    for query in [*QUERIES, passages[60]["text"][:80]]:
        for mode in ("colbert_att", "maxsim"):
            a = incremental.search(query, top_k=10, mode=mode)
            b = rebuilt.search(query, top_k=10, mode=mode)
            assert [h.id for h in a] == [h.id for h in b]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5)


def test_candidate_generation_agrees_with_exhaustive_scoring(cached_encoder, passages):
    # Force the IVF path on a small collection so that candidates really are generated.
    settings = IndexSettings(
        candidates=CandidateSettings(
            faiss_kind="ivf", ivf_nlist=64, ivf_nprobe=16, exact_below_documents=0, rerank_depth=64
        )
    )
    index = MultiVectorIndex(cached_encoder, settings)
    index.add(as_documents(passages))
    assert index.faiss_kind == "ivf"
    overlaps = []
    for query in QUERIES:
        fast = [h.id for h in index.search(query, top_k=10)]
        exact = [h.id for h in index.search(query, top_k=10, exhaustive=True)]
        assert fast[0] == exact[0]
        overlaps.append(len(set(fast) & set(exact)) / 10)
    assert np.mean(overlaps) >= 0.9


def test_persisted_index_loads_to_the_same_results(small_index, tmp_path):
    manifest = small_index.persist(tmp_path / "idx")
    assert manifest.document_count == 120 and manifest.generation == 1
    loaded = MultiVectorIndex.load(tmp_path / "idx", encoder=small_index.encoder)
    for query in QUERIES:
        assert ranking(loaded, query) == ranking(small_index, query)
    # Loading without an encoder rebuilds it from the manifest's settings.
    assert ranking(MultiVectorIndex.load(tmp_path / "idx"), QUERIES[0]) == ranking(small_index, QUERIES[0])
    # A second write is a new generation, and the old generation's files are gone.
    loaded.delete([loaded.document_ids()[0]])
    assert loaded.persist(tmp_path / "idx").generation == 2
    assert not list((tmp_path / "idx").glob("*.g000001.*"))
    assert len(MultiVectorIndex.load(tmp_path / "idx", encoder=small_index.encoder)) == 119


WRITER = textwrap.dedent(
    """
    import json, sys
    from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings, MultiVectorIndex
    directory, passages_file = sys.argv[1], sys.argv[2]
    passages = json.load(open(passages_file))
    index = MultiVectorIndex.load(directory, encoder=ColBERTAttEncoder(EncoderSettings(num_threads=1)))
    print("ready", flush=True)
    n = len(index)
    while True:  # keep writing new generations until killed
        p = passages[n % len(passages)]
        index.upsert([{"id": f"extra-{n}", "text": p["text"]}])
        index.persist(directory)
        n += 1
    """
)


def _newer_generation_files(directory: Path) -> list[str]:
    current = json.loads((directory / "manifest.json").read_text())["generation"]
    return [name for name in os.listdir(directory) if f".g{current + 1:06d}." in name]


def test_a_writer_killed_mid_write_leaves_the_last_good_state(small_index, passages, tmp_path):
    directory = tmp_path / "killed"
    small_index.persist(directory)
    (tmp_path / "passages.json").write_text(json.dumps(passages[:50]))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    killed_mid_write = 0
    for _ in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(directory), str(tmp_path / "passages.json")],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert writer.stdout is not None and writer.stdout.readline().strip() == b"ready"
        # Kill the writer as soon as the files of its next generation start to appear.
        deadline = time.monotonic() + 60
        while not _newer_generation_files(directory) and time.monotonic() < deadline:
            pass
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        killed_mid_write += bool(_newer_generation_files(directory))
        loaded = MultiVectorIndex.load(directory, encoder=small_index.encoder)
        manifest = json.loads((directory / "manifest.json").read_text())
        assert len(loaded) == manifest["document_count"] >= 120
        assert loaded.token_count == manifest["token_count"]
        assert loaded.search(QUERIES[0], top_k=3)
    assert killed_mid_write >= 1  # the test really interrupted a write, with partial files on disk
    # The next successful write cleans up the partial generation.
    loaded.persist(directory)
    generations = {name.split(".")[1] for name in os.listdir(directory) if ".g0" in name}
    assert len(generations) == 1


def test_loading_with_another_model_names_both(small_index, tmp_path):
    small_index.persist(tmp_path / "idx")
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"]["name"] = "/models/some-other-colbert"
    manifest["model"]["weights_sha256"] = "f" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="some-other-colbert.*bundled:all-MiniLM-L6-v2"):
        MultiVectorIndex.load(tmp_path / "idx", encoder=small_index.encoder)


def test_loading_with_other_encoder_settings_names_both(small_index, tmp_path):
    small_index.persist(tmp_path / "idx")
    other = ColBERTAttEncoder(
        EncoderSettings(attention_strategy=AttentionStrategy.RECEIVED_ALL),
        checkpoint=small_index.encoder.checkpoint,
    )
    with pytest.raises(IndexMismatchError, match="attention_strategy.*cls_all.*received_all"):
        MultiVectorIndex.load(tmp_path / "idx", encoder=other)


def test_a_newer_format_is_refused_with_both_versions(small_index, tmp_path):
    small_index.persist(tmp_path / "idx")
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="format 99, newer than this code's format 2"):
        MultiVectorIndex.load(tmp_path / "idx", encoder=small_index.encoder)


def test_missing_and_corrupt_directories_are_clear_errors(small_index, tmp_path, cached_encoder):
    with pytest.raises(IndexCorruptError, match="does not exist"):
        MultiVectorIndex.load(tmp_path / "nothing", encoder=cached_encoder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexCorruptError, match="no manifest.json"):
        MultiVectorIndex.load(tmp_path / "empty", encoder=cached_encoder)
    small_index.persist(tmp_path / "idx")
    (tmp_path / "idx" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptError, match="not valid JSON"):
        MultiVectorIndex.load(tmp_path / "idx", encoder=cached_encoder)
    small_index.persist(tmp_path / "idx2")
    vectors = next((tmp_path / "idx2").glob("vectors.*.npy"))
    vectors.write_bytes(vectors.read_bytes()[:1000])
    with pytest.raises(IndexCorruptError, match="bytes, the manifest says"):
        MultiVectorIndex.load(tmp_path / "idx2", encoder=cached_encoder)


def test_filtered_out_documents_are_never_returned(small_index):
    public = MetadataFilters(filters=[MetadataFilter(key="audience", value="public")])
    for query in QUERIES:
        hits = small_index.search(query, top_k=20, filters=public)
        assert len(hits) == 20
        assert all(h.metadata["audience"] == "public" for h in hits)
    either = MetadataFilters(
        filters=[
            MetadataFilter(key="category", value="even"),
            MetadataFilter(key="audience", value=["internal"], operator=FilterOperator.IN),
        ],
        condition="or",
    )
    assert all(
        h.metadata["category"] == "even" or h.metadata["audience"] == "internal"
        for h in small_index.search(QUERIES[1], top_k=30, filters=either)
    )


def test_a_selective_filter_does_not_starve_results(cached_encoder, passages):
    settings = IndexSettings(
        candidates=CandidateSettings(
            faiss_kind="ivf", ivf_nlist=64, ivf_nprobe=2, exact_below_documents=0, tokens_per_query_token=4
        )
    )
    index = MultiVectorIndex(cached_encoder, settings)
    documents = as_documents(passages)
    rare = {d.id for d in documents[::40]}
    for d in documents:
        d.metadata["rare"] = "yes" if d.id in rare else "no"
    index.add(documents)
    hits = index.search(QUERIES[2], top_k=5, filters=MetadataFilters(filters=[MetadataFilter(key="rare", value="yes")]))
    assert {h.id for h in hits} == rare  # all five allowed documents come back, none other
    assert (
        index.search(QUERIES[2], filters=MetadataFilters(filters=[MetadataFilter(key="rare", value="no such")])) == []
    )


def test_bad_documents_are_refused_and_nothing_changes(small_index, cached_encoder):
    index = MultiVectorIndex(cached_encoder)
    index.add([{"id": "a", "text": "Calfskin is sturdy."}])
    with pytest.raises(InvalidDocumentError, match="appears twice"):
        index.add([{"id": "b", "text": "x"}, {"id": "b", "text": "y"}])
    with pytest.raises(InvalidDocumentError, match="already in the index"):
        index.add([{"id": "a", "text": "again"}])
    with pytest.raises(InvalidDocumentError, match="empty text"):
        index.add([{"id": "c", "text": "ok"}, {"id": "d", "text": "   "}])
    with pytest.raises(InvalidDocumentError, match=r"Document 0 is not valid \(text: Input should be a valid string"):
        index.add([{"id": "e", "text": 12}])
    with pytest.raises(InvalidDocumentError, match="not in the index"):
        index.delete(["a", "zzz"])
    assert index.document_ids() == ["a"]
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        index.search("calfskin", top_k=0)


# ---- documents read from disk on demand -------------------------------------------------------------------------


def varied_documents(passages, start=0, stop=40):
    """Passages with metadata of every JSON kind, keys only some documents have, a key unique to each document,
    and non-ASCII text and metadata (the documents file is read by byte offset)."""
    documents = []
    for i, p in enumerate(passages[start:stop], start=start):
        metadata = {"audience": "internal" if i % 3 == 0 else "public", "n": i % 4, "title": f"Titre n° {i} — été"}
        if i % 5 == 0:
            metadata["tags"] = ["care", "leather"] if i % 10 == 0 else ["care"]
        if i % 7 == 0:
            metadata["score"] = 0.5 * i
        if i % 6 == 0:
            metadata["flag"] = True
        text = f"Café crème, 香水 {i}: {p['text']}" if i % 4 == 0 else p["text"]
        documents.append(DocumentInput(id=p["id"], text=text, metadata=metadata))
    return documents


FILTERS = [
    MetadataFilters(filters=[MetadataFilter(key="audience", value="public")]),
    MetadataFilters(filters=[MetadataFilter(key="n", value=2, operator=FilterOperator.GTE)]),
    MetadataFilters(filters=[MetadataFilter(key="n", value=1)]),
    MetadataFilters(filters=[MetadataFilter(key="flag", value=1)]),
    MetadataFilters(filters=[MetadataFilter(key="tags", value="leather", operator=FilterOperator.CONTAINS)]),
    MetadataFilters(filters=[MetadataFilter(key="score", value=None, operator=FilterOperator.IS_EMPTY)]),
    MetadataFilters(filters=[MetadataFilter(key="score", value=[0.0, 7.0], operator=FilterOperator.NIN)]),
    MetadataFilters(filters=[MetadataFilter(key="title", value="n° 1", operator=FilterOperator.TEXT_MATCH)]),
    MetadataFilters(filters=[MetadataFilter(key="nowhere", value="x", operator=FilterOperator.NE)]),
    MetadataFilters(
        filters=[
            MetadataFilter(key="audience", value="internal"),
            MetadataFilters(
                filters=[MetadataFilter(key="n", value=0), MetadataFilter(key="title", value="Titre n° 3 — été")],
                condition="or",
            ),
        ]
    ),
    MetadataFilters(filters=[MetadataFilter(key="audience", value="public")], condition="not"),
]


def hits_of(index, query, **kwargs):
    return [(h.id, round(h.score, 4), h.text, h.metadata) for h in index.search(query, top_k=40, **kwargs)]


def test_a_loaded_index_holds_no_passage_text_in_memory(cached_encoder, passages, tmp_path):
    # Long texts (the encoder reads their first 300 word pieces; the index stores and returns them whole).
    filler = " ".join(p["text"] for p in passages[100:140])
    documents = [
        DocumentInput(id=p["id"], text=f"{p['text']} {filler}", metadata={"i": i}) for i, p in enumerate(passages[:30])
    ]
    text_bytes = sum(len(d.text) for d in documents)
    index = MultiVectorIndex(cached_encoder)
    index.add(documents)
    index.persist(tmp_path / "idx")
    tracemalloc.start()
    try:
        loaded = MultiVectorIndex.load(tmp_path / "idx", encoder=cached_encoder, verification=Verification.FULL)
        held, _ = tracemalloc.get_traced_memory()
        hit = loaded.search(QUERIES[0], top_k=3)[0]
        after_search, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert text_bytes > 1_000_000
    assert held < text_bytes / 4, f"the loaded index holds {held} bytes; its texts are {text_bytes}"
    assert after_search - held < text_bytes / 4
    assert hit.text == next(d.text for d in documents if d.id == hit.id)
    assert [loaded.get(d.id).text for d in documents] == [d.text for d in documents]


def test_texts_and_metadata_come_back_after_reopening_and_after_changes(cached_encoder, passages, tmp_path):
    documents = varied_documents(passages)
    memory = MultiVectorIndex(cached_encoder)
    memory.add(documents)
    memory.persist(tmp_path / "idx")
    loaded = MultiVectorIndex.load(tmp_path / "idx", encoder=cached_encoder)
    assert loaded.document_ids() == [d.id for d in documents]
    for document in documents:
        stored = loaded.get(document.id)
        assert (stored.text, stored.metadata) == (document.text, document.metadata)
    for query in QUERIES:
        assert hits_of(loaded, query) == hits_of(memory, query)

    def change(index):
        index.upsert([DocumentInput(id=documents[3].id, text=passages[60]["text"], metadata={"audience": "public"})])
        index.delete([documents[8].id, documents[20].id])
        index.update_metadata(documents[12].id, {"audience": "internal", "n": 7, "title": "renamed"})
        index.add(varied_documents(passages, 40, 44))

    change(loaded)
    change(memory)
    assert loaded.document_ids() == memory.document_ids()
    assert loaded.get(documents[3].id).text == passages[60]["text"]
    assert loaded.get(documents[12].id).metadata == {"audience": "internal", "n": 7, "title": "renamed"}
    assert documents[8].id not in loaded and len(loaded) == 42
    for document_id in memory.document_ids():
        assert (loaded.get(document_id).text, loaded.get(document_id).metadata) == (
            memory.get(document_id).text,
            memory.get(document_id).metadata,
        )
    assert loaded.token_count == memory.token_count
    for query in QUERIES:
        assert hits_of(loaded, query) == hits_of(memory, query)
    # Written again (its texts read from the previous generation's file, deleted by this write) and reopened.
    loaded.persist(tmp_path / "idx")
    assert not list((tmp_path / "idx").glob("*.g000001.*"))
    reopened = MultiVectorIndex.load(tmp_path / "idx", encoder=cached_encoder)
    assert reopened.document_ids() == memory.document_ids()
    for query in QUERIES:
        assert hits_of(reopened, query) == hits_of(memory, query) == hits_of(loaded, query)


@pytest.mark.parametrize("values_in_memory", [4, metadata_columns.MAX_DISTINCT_VALUES])
def test_filters_on_a_loaded_index_match_the_in_memory_index(
    cached_encoder, passages, tmp_path, monkeypatch, values_in_memory
):
    # With 4 values in memory per key, "title" and "score" are read from the documents file for filtering.
    monkeypatch.setattr(metadata_columns, "MAX_DISTINCT_VALUES", values_in_memory)
    documents = varied_documents(passages)
    memory = MultiVectorIndex(cached_encoder)
    memory.add(documents)
    memory.persist(tmp_path / "idx")
    loaded = MultiVectorIndex.load(tmp_path / "idx", encoder=cached_encoder)
    assert ("title" in loaded._file.metadata.wide) == (values_in_memory == 4)
    for index in (memory, loaded):
        index.update_metadata(documents[5].id, {"audience": "public", "n": 3})
        index.delete([documents[9].id])
        index.add(varied_documents(passages, 40, 46))
    for filters in FILTERS:
        expected = hits_of(memory, QUERIES[1], filters=filters, exhaustive=True)
        assert hits_of(loaded, QUERIES[1], filters=filters, exhaustive=True) == expected
        assert hits_of(loaded, QUERIES[1], filters=filters) == hits_of(memory, QUERIES[1], filters=filters)
    selected = [i for i in memory.document_ids() if memory.get(i).metadata.get("n") == 1]
    assert 0 < len(hits_of(loaded, QUERIES[1], filters=FILTERS[2])) == len(selected) < len(memory)
