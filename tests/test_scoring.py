"""The vectorised scores against a naive loop that follows Eq. 2 of arXiv 2603.25248 literally."""

import math

import numpy as np
import pytest

from colbert_att_assistant.retriever.scoring import CandidateBatch, ScoringMode, score_batch


def naive_score(q, qw, docs, mode: ScoringMode, length_words=150.0, fixed_delta=False):
    scores = []
    for vectors, weights, n_words in docs:
        delta = 1.0 if fixed_delta else min(1.0, n_words / length_words)
        total = 0.0
        for i in range(len(q)):
            sims = [float(np.dot(q[i], vectors[j])) for j in range(len(vectors))]
            winner = int(np.argmax(sims))
            query_factor = math.exp(qw[i]) if mode in (ScoringMode.COLBERT_ATT, ScoringMode.QUERY_WEIGHTED) else 1.0
            doc_factor = (
                math.exp(weights[winner]) ** delta
                if mode in (ScoringMode.COLBERT_ATT, ScoringMode.DOCUMENT_WEIGHTED)
                else 1.0
            )
            total += query_factor * sims[winner] * doc_factor
        scores.append(total)
    return np.array(scores)


def random_unit(rng, n, dim):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("mode", list(ScoringMode))
@pytest.mark.parametrize("fixed_delta", [False, True])
def test_vectorised_scores_equal_naive_loop(mode, fixed_delta):
    rng = np.random.default_rng(7)
    q = random_unit(rng, 9, 16)
    qw = rng.uniform(0, 0.5, size=9).astype(np.float32)
    docs = []
    for _ in range(13):
        n = int(rng.integers(1, 40))
        docs.append(
            (
                random_unit(rng, n, 16),
                rng.uniform(0, 0.8, size=n).astype(np.float32),
                int(rng.integers(1, 400)),
            )
        )
    batch = CandidateBatch(
        vectors=np.concatenate([d[0] for d in docs]),
        weights=np.concatenate([d[1] for d in docs]),
        lengths=np.array([len(d[0]) for d in docs]),
        n_words=np.array([d[2] for d in docs]),
    )
    scored = score_batch(q, qw, batch, mode, length_words=150.0, fixed_delta=fixed_delta)
    expected = naive_score(q, qw, docs, mode, fixed_delta=fixed_delta)
    np.testing.assert_allclose(scored.raw, expected, rtol=1e-5, atol=1e-5)
    assert np.all((scored.normalised >= 0) & (scored.normalised <= 1))
    # The winning token is the plain argmax of cosine similarity.
    for d, (vectors, _, _) in enumerate(docs):
        np.testing.assert_array_equal(scored.best_token[d], np.argmax(q @ vectors.T, axis=1))


def test_zero_attention_turns_colbert_att_into_maxsim():
    rng = np.random.default_rng(3)
    q = random_unit(rng, 5, 8)
    vectors = random_unit(rng, 30, 8)
    batch = CandidateBatch(vectors, np.zeros(30, np.float32), np.array([10, 20]), np.array([50, 500]))
    att = score_batch(q, np.zeros(5, np.float32), batch, ScoringMode.COLBERT_ATT)
    plain = score_batch(q, np.zeros(5, np.float32), batch, ScoringMode.MAXSIM)
    np.testing.assert_allclose(att.raw, plain.raw, rtol=1e-6)


def test_delta_grows_with_document_length_until_l():
    q = np.array([[1.0, 0.0]], np.float32)
    vectors = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    weights = np.array([1.0, 1.0], np.float32)
    batch = CandidateBatch(vectors, weights, np.array([1, 1]), np.array([75, 300]))
    scored = score_batch(q, np.zeros(1, np.float32), batch, ScoringMode.DOCUMENT_WEIGHTED, length_words=150)
    # delta = 0.5 for 75 words, capped at 1 for 300 words.
    np.testing.assert_allclose(scored.raw, [math.exp(0.5), math.exp(1.0)], rtol=1e-6)


def test_empty_batch_scores_nothing():
    scored = score_batch(
        np.ones((2, 4), np.float32) / 2,
        np.zeros(2, np.float32),
        CandidateBatch(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int), np.zeros(0, int)),
        ScoringMode.COLBERT_ATT,
    )
    assert scored.raw.shape == (0,)


def test_bfloat16_storage_scores_like_float32():
    """The index keeps vectors in bfloat16; the winners' cosines are recomputed in float32."""
    import torch

    rng = np.random.default_rng(5)
    q = random_unit(rng, 12, 64)
    vectors = random_unit(rng, 400, 64)
    lengths = np.array([100, 150, 50, 100])
    batch32 = CandidateBatch(vectors, np.zeros(400, np.float32), lengths, np.full(4, 200))
    batch16 = CandidateBatch(torch.from_numpy(vectors).bfloat16(), np.zeros(400, np.float32), lengths, np.full(4, 200))
    exact = score_batch(q, np.zeros(12, np.float32), batch32, ScoringMode.MAXSIM)
    stored = score_batch(q, np.zeros(12, np.float32), batch16, ScoringMode.MAXSIM)
    np.testing.assert_allclose(stored.raw, exact.raw, rtol=5e-3)
    assert (stored.best_token == exact.best_token).mean() > 0.9


def test_large_attention_weights_do_not_overflow():
    """Length-scaled A reaches ~180 on SciFact; exp(180) is inf in float32 and used to scramble rankings."""
    rng = np.random.default_rng(9)
    q = random_unit(rng, 4, 8)
    vectors = random_unit(rng, 20, 8)
    weights = np.linspace(100.0, 180.0, 20).astype(np.float32)
    batch = CandidateBatch(vectors, weights, np.array([10, 10]), np.array([400, 400]))
    scored = score_batch(q, np.full(4, 5.0, np.float32), batch, ScoringMode.COLBERT_ATT)
    assert np.all(np.isfinite(scored.raw)) and np.all(np.isfinite(scored.normalised))
    docs = [(vectors[:10], weights[:10], 400), (vectors[10:], weights[10:], 400)]
    np.testing.assert_allclose(scored.raw, naive_score(q, np.full(4, 5.0), docs, ScoringMode.COLBERT_ATT), rtol=1e-4)
