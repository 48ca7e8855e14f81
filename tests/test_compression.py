"""Compressed token storage (residual_pq), attention-based pruning, memory-mapped loading from a fresh process,
and the bounded-memory streaming build that resumes after an interruption."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from pydantic import ValidationError

from colbert_att_assistant.retriever import EncoderSettings
from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.index import DocumentInput, MultiVectorIndex
from colbert_att_assistant.retriever.index.compression import ResidualCodec, default_centroid_count, prune_by_attention
from colbert_att_assistant.retriever.index.streaming_build import (
    WORK_DIRECTORY,
    build_compressed_index,
    centroid_lists_from_pairs,
)
from colbert_att_assistant.retriever.settings import IndexSettings, StorageSettings
from tests.conftest import MemoisingEncoder

QUERIES = [
    "vitamin D deficiency and bone fractures",
    "statins lower the risk of cancer",
    "gene expression in stem cells",
    "antibiotic resistance in bacteria",
]


def compressed_settings(encoder, **storage) -> IndexSettings:
    # 512 centroids and no rotation keep the ~46K test tokens quick (the defaults are for whole collections); the
    # rotation has its own tests below.
    return IndexSettings(
        encoder=encoder.settings,
        storage=StorageSettings(vector_format="residual_pq", **{"centroids": 512, "pq_rotation": False, **storage}),
    )


@pytest.fixture(scope="module")
def token_vectors(cached_encoder, passages) -> np.ndarray:
    encoded = cached_encoder.encode_documents([p["text"] for p in passages])
    return np.concatenate([item.vectors for item in encoded])


@pytest.fixture(scope="module")
def compressed_index(cached_encoder, passages) -> MultiVectorIndex:
    index = MultiVectorIndex(cached_encoder, compressed_settings(cached_encoder))
    index.add(passages)
    return index


def test_residual_codes_take_50_bytes_and_decode_close_to_the_original(token_vectors):
    train, held_out = token_vectors[: len(token_vectors) // 2], token_vectors[len(token_vectors) // 2 :]
    codec = ResidualCodec.train(train, n_centroids=256, pq_subvectors=48)
    codes = codec.encode(held_out)
    assert codec.bytes_per_token == 50  # 2-byte centroid id + 48 one-byte sub-vector codes: 15x under bfloat16
    assert codes.codes.shape == (len(held_out), 48) and codes.codes.dtype == np.uint8
    decoded = codec.decode(codes.centroid_ids, codes.codes)
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=1), 1.0, atol=1e-5)
    cosines = (decoded * held_out).sum(axis=1)
    # Measured on these vectors (256 centroids learnt from 23K tokens): mean 0.85 on unseen tokens; with 2,048
    # centroids learnt from 262K SciFact tokens it is 0.92.
    assert cosines.mean() > 0.8
    assert np.percentile(cosines, 1) > 0.6
    # The residual code is what buys the accuracy: centroids alone are much further away.
    centroid_only = (codec.centroids[codes.centroid_ids] * held_out).sum(axis=1)
    assert cosines.mean() > centroid_only.mean() + 0.1


def test_an_opq_rotation_brings_decoded_vectors_closer_at_the_same_size(token_vectors):
    train, held_out = token_vectors[: len(token_vectors) // 2], token_vectors[len(token_vectors) // 2 :]
    plain = ResidualCodec.train(train, n_centroids=256, pq_subvectors=48)
    rotated = ResidualCodec.train(train, n_centroids=256, pq_subvectors=48, rotate=True)
    assert rotated.bytes_per_token == plain.bytes_per_token == 50
    assert rotated.rotation is not None
    np.testing.assert_allclose(rotated.rotation @ rotated.rotation.T, np.eye(384), atol=1e-4)  # orthogonal

    def mean_cosine(codec: ResidualCodec) -> float:
        codes = codec.encode(held_out)
        return float((codec.decode(codes.centroid_ids, codes.codes) * held_out).sum(axis=1).mean())

    assert mean_cosine(rotated) > mean_cosine(plain)
    # Search scores in the rotated space (query rotated once) give the cosines of the vectors decoded back.
    codes = rotated.encode(held_out[:500])
    queries = train[:20]
    in_code_space = rotated.to_code_space(queries) @ rotated.decode_in_code_space(codes.centroid_ids, codes.codes).T
    np.testing.assert_allclose(in_code_space, queries @ rotated.decode(codes.centroid_ids, codes.codes).T, atol=1e-5)
    # The lists a query token probes are chosen in the encoder's space, whatever the rotation.
    np.testing.assert_allclose(rotated.centroid_similarity(queries), queries @ rotated.centroids.T, atol=1e-5)


def test_a_rotated_codec_persists_and_gives_the_same_results_after_loading(cached_encoder, passages, tmp_path):
    index = MultiVectorIndex(
        cached_encoder, compressed_settings(cached_encoder, pq_rotation=True, pq_rotation_iterations=5)
    )
    index.add(passages)
    manifest = index.persist(tmp_path / "index")
    assert "codec_rotation" in manifest.files
    reloaded = MultiVectorIndex.load(tmp_path / "index", encoder=cached_encoder)
    for query in QUERIES:
        expected, found = index.search(query, top_k=5), reloaded.search(query, top_k=5)
        assert [h.id for h in found] == [h.id for h in expected]
        assert [h.score for h in found] == pytest.approx([h.score for h in expected], rel=1e-6)


def test_codec_refuses_too_few_tokens_with_a_clear_error(token_vectors):
    with pytest.raises(ColBERTAttError, match="bfloat16"):
        ResidualCodec.train(token_vectors[:100], n_centroids=64, pq_subvectors=48)


def test_pruning_keeps_the_tokens_with_the_highest_attention_weight():
    weights = np.array([0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.05, 0.6, 0.4, 0.5])
    kept = prune_by_attention(weights, 0.3)
    assert kept.tolist() == [1, 2, 3, 5, 7, 8, 9]  # 7 of 10, in document order
    assert weights[kept].min() > np.delete(weights, kept).max()
    assert prune_by_attention(weights, 0.0).tolist() == list(range(10))
    assert len(prune_by_attention(np.array([0.2]), 0.9)) == 1  # never an empty document


def test_pruned_index_stores_fewer_tokens_and_still_finds_the_passage(cached_encoder, passages):
    full = MultiVectorIndex(cached_encoder, compressed_settings(cached_encoder))
    full.add(passages[:60])
    pruned = MultiVectorIndex(cached_encoder, compressed_settings(cached_encoder, prune_fraction=0.3))
    pruned.add(passages[:60])
    assert 0.68 < pruned.token_count / full.token_count < 0.73
    document = pruned.get(passages[5]["id"])
    original = cached_encoder.encode_documents([passages[5]["text"]])[0]
    assert set(document.token_ids.tolist()) <= set(original.token_ids.tolist())
    title = passages[5]["text"].split(".")[0]
    assert pruned.search(title, top_k=1)[0].id == passages[5]["id"]


def test_compressed_search_matches_uncompressed_ranking(cached_encoder, passages, compressed_index):
    exact = MultiVectorIndex(cached_encoder, IndexSettings(encoder=cached_encoder.settings))
    exact.add(passages)
    for query in QUERIES:
        compressed_hits = compressed_index.search(query, top_k=5)
        compressed_top = [h.id for h in compressed_hits]
        exact_top = [h.id for h in exact.search(query, top_k=5)]
        # The exact first hit is first, or behind a near tie that the lossy codes may order either way (in one run
        # "gene expression in stem cells" scored 7.381 and 7.375 compressed, 7.322 and 7.444 exact).
        compressed_score = {h.id: h.score for h in compressed_hits}
        assert exact_top[0] in compressed_score
        assert compressed_score[exact_top[0]] >= 0.99 * compressed_hits[0].score
        assert len(set(compressed_top) & set(exact_top)) >= 3


def test_candidates_agree_with_exhaustive_scoring_of_the_decoded_vectors(compressed_index):
    # 200 passages: below exact_below_documents by default, so force candidate generation.
    compressed_index.settings.candidates.exact_below_documents = 0
    compressed_index.settings.candidates.rerank_depth = 32
    try:
        for query in QUERIES:
            candidates = compressed_index.search(query, top_k=3)
            exhaustive = compressed_index.search(query, top_k=3, exhaustive=True)
            assert [h.id for h in candidates] == [h.id for h in exhaustive]
            assert [h.score for h in candidates] == pytest.approx([h.score for h in exhaustive])
    finally:
        compressed_index.settings.candidates.exact_below_documents = 512
        compressed_index.settings.candidates.rerank_depth = 64


def test_memory_mapped_index_gives_the_same_results_in_a_fresh_process(compressed_index, tmp_path):
    manifest = compressed_index.persist(tmp_path / "index")
    assert manifest.vector_dtype == "residual_pq"
    vector_bytes = sum(manifest.files[k].bytes for k in ("codes", "centroid_ids"))
    assert vector_bytes / manifest.token_count < 51  # plus the .npy headers
    expected = {q: [[h.id, h.score] for h in compressed_index.search(q, top_k=5)] for q in QUERIES}
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings
        from colbert_att_assistant.retriever.index import MultiVectorIndex
        index = MultiVectorIndex.load({str(tmp_path / "index")!r}, encoder=ColBERTAttEncoder(EncoderSettings()))
        document = index.get(index.document_ids()[0])
        assert isinstance(document.compressed.codes, np.memmap), type(document.compressed.codes)
        queries = json.loads(sys.argv[1])
        print(json.dumps({{q: [[h.id, h.score] for h in index.search(q, top_k=5)] for q in queries}}))
        """
    )
    output = subprocess.run(
        [sys.executable, "-c", script, json.dumps(QUERIES)], capture_output=True, text=True, check=True, timeout=300
    )
    found = json.loads(output.stdout.strip().splitlines()[-1])
    for query in QUERIES:
        assert [i for i, _ in found[query]] == [i for i, _ in expected[query]]
        assert [s for _, s in found[query]] == pytest.approx([s for _, s in expected[query]], rel=1e-6)


def test_compressed_index_updates_in_place_after_loading(compressed_index, cached_encoder, tmp_path):
    compressed_index.persist(tmp_path / "index")
    index = MultiVectorIndex.load(tmp_path / "index", encoder=cached_encoder)
    new = DocumentInput(id="care-1", text="Wipe a wet calfskin wallet with a dry cloth and let it dry away from heat.")
    index.upsert([new])
    index.delete([compressed_index.document_ids()[0]])
    assert index.search("how do I dry a wet calfskin wallet", top_k=1)[0].id == "care-1"
    index.persist(tmp_path / "index")
    reloaded = MultiVectorIndex.load(tmp_path / "index", encoder=cached_encoder)
    assert len(reloaded) == len(compressed_index)
    assert compressed_index.document_ids()[0] not in reloaded
    assert reloaded.search("how do I dry a wet calfskin wallet", top_k=1)[0].id == "care-1"


def test_centroid_lists_from_pairs_matches_a_plain_sort():
    rng = np.random.default_rng(0)
    centroids = rng.integers(0, 50, 2000)
    slots = np.sort(rng.integers(0, 300, 2000))
    offsets, listed = centroid_lists_from_pairs(np.stack([centroids, slots], axis=1).astype(np.int32), 50)
    order = np.lexsort((slots, centroids))
    np.testing.assert_array_equal(listed, slots[order])
    np.testing.assert_array_equal(np.diff(offsets), np.bincount(centroids, minlength=50))


class Interrupted(RuntimeError):
    pass


def documents_then_crash(documents: list[dict], crash_after: int):
    for position, document in enumerate(documents):
        if position == crash_after:
            raise Interrupted("simulated crash")
        yield DocumentInput(**document)


def test_streaming_build_resumes_after_an_interruption(cached_encoder, passages, tmp_path):
    settings = compressed_settings(cached_encoder, training_tokens=8192, centroids=128)
    documents = passages[:120]
    reference = build_compressed_index(
        (DocumentInput(**d) for d in documents), tmp_path / "reference", cached_encoder, settings, batch_documents=25
    )
    with pytest.raises(Interrupted):
        build_compressed_index(
            documents_then_crash(documents, 80), tmp_path / "resumed", cached_encoder, settings, batch_documents=25
        )
    assert not (tmp_path / "resumed" / "manifest.json").exists()  # nothing half-written looks like an index
    state = json.loads((tmp_path / "resumed" / WORK_DIRECTORY / "state.json").read_text())
    assert state["documents_done"] == 75  # three whole batches were durable before the crash
    # Resuming with other threads does not change the stored tokens' settings, so it is allowed.
    other_threads = MemoisingEncoder(
        cached_encoder.settings.model_copy(update={"num_threads": 1}), checkpoint=cached_encoder.checkpoint
    )
    resumed = build_compressed_index(
        (DocumentInput(**d) for d in documents), tmp_path / "resumed", other_threads, settings, batch_documents=25
    )
    assert not (tmp_path / "resumed" / WORK_DIRECTORY).exists()
    assert (resumed.document_count, resumed.token_count) == (reference.document_count, reference.token_count)
    first = MultiVectorIndex.load(tmp_path / "reference", encoder=cached_encoder)
    second = MultiVectorIndex.load(tmp_path / "resumed", encoder=cached_encoder)
    assert first.document_ids() == second.document_ids()
    for query in QUERIES:
        expected, found = first.search(query, top_k=5), second.search(query, top_k=5)
        assert [h.id for h in found] == [h.id for h in expected]
        assert [h.score for h in found] == pytest.approx([h.score for h in expected], rel=1e-3)


def test_streaming_build_refuses_to_resume_with_other_settings(cached_encoder, passages, tmp_path):
    settings = compressed_settings(cached_encoder, training_tokens=8192, centroids=128)
    with pytest.raises(Interrupted):
        build_compressed_index(
            documents_then_crash(passages[:60], 40), tmp_path / "index", cached_encoder, settings, batch_documents=20
        )
    other = compressed_settings(cached_encoder, training_tokens=8192, centroids=128, prune_fraction=0.5)
    with pytest.raises(ColBERTAttError, match="interrupted build with other settings"):
        build_compressed_index(
            (DocumentInput(**d) for d in passages[:60]), tmp_path / "index", cached_encoder, other, batch_documents=20
        )


def test_default_centroid_count_grows_with_the_collection_and_stays_fed():
    assert default_centroid_count(1_215_069) == 8192  # SciFact, the size chosen on its train split
    assert default_centroid_count(40_000) == 2048
    assert default_centroid_count(12_000_000) == 8192  # capped: 262,144 training tokens / 32
    assert default_centroid_count(12_000_000, training_tokens=2_097_152) == 32768
    assert default_centroid_count(10) == 64


def test_old_bfloat16_settings_still_load(cached_encoder):
    # Manifests written before storage settings existed validate with the bfloat16 default.
    settings = IndexSettings.model_validate({"encoder": EncoderSettings().model_dump()})
    assert settings.storage.vector_format == "bfloat16"


def test_an_index_whose_manifest_names_the_vector_format_codec_still_loads(compressed_index, cached_encoder, tmp_path):
    compressed_index.persist(tmp_path / "index")
    manifest_path = tmp_path / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    storage = manifest["settings"]["storage"]
    storage["codec"] = storage.pop("vector_format")  # as indexes written before the rename have it
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    reloaded = MultiVectorIndex.load(tmp_path / "index", encoder=cached_encoder)
    assert reloaded.settings.storage.vector_format == "residual_pq"
    query = QUERIES[0]
    expected, found = compressed_index.search(query, top_k=5), reloaded.search(query, top_k=5)
    assert [h.id for h in found] == [h.id for h in expected]


def test_an_unknown_vector_format_is_refused_with_the_formats_there_are():
    with pytest.raises(ValidationError, match="vector_format(.|\n)*'bfloat16' or 'residual_pq'"):
        StorageSettings(vector_format="float8")
    with pytest.raises(ValidationError, match="codec(.|\n)*'bfloat16' or 'residual_pq'"):
        StorageSettings.model_validate({"codec": "float8"})
