"""The faster query backends give the reference encoder's token vectors and weights, and the same top 10."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from colbert_att_assistant import OPENMP_SPIN_COUNT
from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings
from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.index.multivector_index import MultiVectorIndex
from colbert_att_assistant.retriever.settings import AttentionScaling, AttentionStrategy, IndexSettings

# The tolerance the float32 backends are held to (benchmarks/query_encoding.py states the same).
MAX_VECTOR_DIFFERENCE = 1e-5
MIN_COSINE = 0.9999
MAX_WEIGHT_DIFFERENCE = 1e-6

QUERIES = [
    "How do I care for my calfskin wallet after it gets wet?",
    "pearls",
    "Can I return a made-to-order silk scarf bought online more than thirty days ago, and who pays shipping?",
    "watch strap",
    "0-dimensional biomaterials show inductive properties.",
    "What is the warranty on a mechanical watch movement, and does it cover water damage from diving?",
]

HAS_ONNXRUNTIME = importlib.util.find_spec("onnxruntime") is not None
needs_onnxruntime = pytest.mark.skipif(not HAS_ONNXRUNTIME, reason="onnxruntime is not installed")


def assert_same_encoding(reference, candidate, max_vector=MAX_VECTOR_DIFFERENCE, min_cosine=MIN_COSINE):
    assert len(reference) == len(candidate)
    for ref, got in zip(reference, candidate, strict=True):
        np.testing.assert_array_equal(ref.token_ids, got.token_ids)
        assert ref.vectors.shape == got.vectors.shape
        assert np.abs(ref.vectors - got.vectors).max() <= max_vector
        assert (ref.vectors * got.vectors).sum(axis=1).min() >= min_cosine
        # A scaled by length runs to about 10: float32 rounding is relative there.
        assert (np.abs(ref.weights - got.weights) / np.maximum(1.0, np.abs(ref.weights))).max() <= MAX_WEIGHT_DIFFERENCE
        assert (ref.n_words, ref.truncated) == (got.n_words, got.truncated)


def encoders(encoder: ColBERTAttEncoder, backend: str, **settings) -> tuple[ColBERTAttEncoder, ColBERTAttEncoder]:
    """(the torch reference, an encoder on `backend`), both with `settings`."""
    base = encoder.settings.model_copy(update={"query_backend": "torch", **settings})
    reference = ColBERTAttEncoder(base, checkpoint=encoder.checkpoint)
    fast = ColBERTAttEncoder(base.model_copy(update={"query_backend": backend}), checkpoint=encoder.checkpoint)
    return reference, fast


@pytest.mark.parametrize("backend", ["torch_graph", "torch_traced"])
def test_torch_graph_backends_equal_the_reference(encoder, backend):
    reference, fast = encoders(encoder, backend)
    # Batched (padded) and one at a time.
    assert_same_encoding(reference.encode_queries(QUERIES), fast.encode_queries(QUERIES))
    assert_same_encoding([reference.encode_query(q) for q in QUERIES], [fast.encode_query(q) for q in QUERIES])


@pytest.mark.parametrize(
    ("strategy", "scaling", "temperature"),
    [
        (AttentionStrategy.CLS_LAST, AttentionScaling.RAW, 1.0),
        (AttentionStrategy.RECEIVED_ALL, AttentionScaling.BY_LENGTH, 1.0),
        (AttentionStrategy.RECEIVED_LAST, AttentionScaling.RAW, 0.5),
        (AttentionStrategy.CLS_ALL, AttentionScaling.BY_LENGTH, 2.0),
        (AttentionStrategy.NONE, AttentionScaling.RAW, 1.0),
    ],
)
def test_every_way_of_reading_attention_is_kept(encoder, strategy, scaling, temperature):
    settings = {"attention_strategy": strategy, "attention_scaling": scaling, "attention_temperature": temperature}
    backends = ["torch_graph"] + (["onnxruntime"] if HAS_ONNXRUNTIME else [])
    for backend in backends:
        reference, fast = encoders(encoder, backend, **settings)
        assert_same_encoding(reference.encode_queries(QUERIES), fast.encode_queries(QUERIES))
        if strategy is not AttentionStrategy.NONE:
            assert fast.encode_query(QUERIES[0]).weights.max() > 0


def test_mask_expanded_queries_are_kept(encoder):
    reference, fast = encoders(encoder, "torch_traced", query_expansion=True)
    expected, got = reference.encode_queries(QUERIES), fast.encode_queries(QUERIES)
    assert all(len(item.token_ids) == encoder.settings.query_max_tokens for item in got)
    assert_same_encoding(expected, got)


def test_queries_stay_right_while_documents_are_encoded_in_another_thread(encoder, passages):
    reference, fast = encoders(encoder, "torch_graph")
    expected = [reference.encode_query(q) for q in QUERIES]
    stop = threading.Event()

    def encode_documents() -> None:
        while not stop.is_set():
            fast.encode_documents([p["text"] for p in passages[:4]])

    worker = threading.Thread(target=encode_documents)
    worker.start()
    try:
        got = [fast.encode_query(q) for q in QUERIES * 3]
    finally:
        stop.set()
        worker.join()
    assert_same_encoding(expected * 3, got)


def test_graph_backends_refuse_bfloat16_queries(encoder):
    with pytest.raises(ColBERTAttError, match="float32"):
        ColBERTAttEncoder(
            EncoderSettings(query_backend="torch_graph", query_precision="bfloat16"), checkpoint=encoder.checkpoint
        )


@needs_onnxruntime
def test_onnxruntime_equals_the_reference_and_finds_the_same_top_10(encoder, cached_encoder, passages):
    reference, fast = encoders(encoder, "onnxruntime", query_threads=1)
    assert_same_encoding(reference.encode_queries(QUERIES), fast.encode_queries(QUERIES))
    assert_same_encoding([reference.encode_query(q) for q in QUERIES], [fast.encode_query(q) for q in QUERIES])

    index = MultiVectorIndex(cached_encoder, IndexSettings())
    index.add(passages[:80])
    questions = [*QUERIES, "cancer cells and immune response", "gene expression in mice"]
    for question in questions:
        expected = [hit.id for hit in index.search(reference.encode_query(question), top_k=10)]
        got = [hit.id for hit in index.search(fast.encode_query(question), top_k=10)]
        assert got == expected


@needs_onnxruntime
def test_auto_runs_queries_in_onnxruntime_where_that_keeps_the_vectors(encoder):
    automatic = ColBERTAttEncoder(EncoderSettings(), checkpoint=encoder.checkpoint)
    assert automatic.settings.query_backend == "auto"
    assert automatic.query_backend == "onnxruntime"
    reference, _ = encoders(encoder, "torch")
    assert_same_encoding([reference.encode_query(q) for q in QUERIES], [automatic.encode_query(q) for q in QUERIES])
    # bfloat16 queries exist only in torch: auto keeps them there instead of refusing.
    low_precision = ColBERTAttEncoder(EncoderSettings(query_precision="bfloat16"), checkpoint=encoder.checkpoint)
    assert low_precision.query_backend == "torch"
    chosen = ColBERTAttEncoder(EncoderSettings(query_backend="torch"), checkpoint=encoder.checkpoint)
    assert chosen.query_backend == "torch"


@needs_onnxruntime
def test_the_onnx_graph_is_exported_before_the_first_query_when_asked(encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fresh = ColBERTAttEncoder(EncoderSettings(query_backend="onnxruntime"), checkpoint=encoder.checkpoint)
    assert not list(tmp_path.rglob("*.onnx"))
    fresh.prepare_query_backend()
    exported = list(tmp_path.rglob("query-*-float32.onnx"))
    assert len(exported) == 1 and exported[0].stat().st_size > 10_000_000
    reference, _ = encoders(encoder, "torch")
    assert_same_encoding([reference.encode_query(QUERIES[0])], [fresh.encode_query(QUERIES[0])])


@needs_onnxruntime
def test_auto_falls_back_to_torch_when_the_onnx_graph_cannot_be_written(encoder, tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    automatic = ColBERTAttEncoder(EncoderSettings(), checkpoint=encoder.checkpoint)
    # The encoder's own logger: a benchmark run earlier in the same process may have quietened it.
    with caplog.at_level(logging.WARNING, logger="colbert_att_assistant.retriever.encoder"):
        got = [automatic.encode_query(q) for q in QUERIES]
    assert automatic.query_backend == "torch"
    assert "encoded with torch" in caplog.text
    reference, _ = encoders(encoder, "torch")
    assert_same_encoding([reference.encode_query(q) for q in QUERIES], got, max_vector=0.0, min_cosine=0.99999)
    # Asked for by name, the same failure is an error, not a silent change of backend.
    named = ColBERTAttEncoder(EncoderSettings(query_backend="onnxruntime"), checkpoint=encoder.checkpoint)
    with pytest.raises(OSError):
        named.encode_query(QUERIES[0])


@needs_onnxruntime
def test_int8_weights_stay_near_the_reference(encoder):
    reference, fast = encoders(encoder, "onnxruntime_int8", query_threads=1)
    # int8 is not held to the float32 tolerance: it is an opt-in trade (benchmarks/RESULTS.md).
    expected, got = reference.encode_queries(QUERIES), fast.encode_queries(QUERIES)
    for ref, item in zip(expected, got, strict=True):
        np.testing.assert_array_equal(ref.token_ids, item.token_ids)
        assert (ref.vectors * item.vectors).sum(axis=1).mean() >= 0.98
        assert (ref.vectors * item.vectors).sum(axis=1).min() >= 0.95


IDLE_PROBE = """
import json, os, time
from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings
encoder = ColBERTAttEncoder(EncoderSettings(query_backend="onnxruntime", query_threads=2))
for _ in range(20):
    encoder.encode_query("How do I care for my calfskin wallet after it gets wet?")
started = time.process_time()
time.sleep(0.5)
print(json.dumps({"idle_cpu_s": time.process_time() - started, "spin_count": os.environ.get("GOMP_SPINCOUNT")}))
"""


@needs_onnxruntime
def test_an_onnx_encoder_takes_no_cpu_between_queries():
    # Its workers spin between the steps of one pass (fast hand-offs) but stop when the pass returns, so that an idle
    # server leaves the cores to other processes. A fresh process: nothing else of the test session runs in it.
    environment = {key: value for key, value in os.environ.items() if key != "GOMP_SPINCOUNT"}
    probe = subprocess.run(
        [sys.executable, "-c", IDLE_PROBE], env=environment, capture_output=True, text=True, timeout=300, check=True
    )
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    # Spinning on after the pass took about 0.04 s of CPU in this half second; stopped, under 0.001 s.
    assert measured["idle_cpu_s"] < 0.015
    # The package set libgomp's spin count for the torch and faiss steps before torch loaded.
    assert measured["spin_count"] == OPENMP_SPIN_COUNT
