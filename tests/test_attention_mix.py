"""The learned reading of A: it reproduces a fixed strategy when its mix is that strategy, it is saved and loaded
with the index (and an index built with another reading refuses to load), it changes scores, and the cached
re-scoring used to learn it gives the index's own Eq. 2 scores. Also: [CLS]/[SEP] zeroing and the dense fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings
from colbert_att_assistant.retriever.errors import IndexMismatchError
from colbert_att_assistant.retriever.index import DocumentInput, MultiVectorIndex
from colbert_att_assistant.retriever.scoring import CandidateBatch, ScoringMode, score_batch
from colbert_att_assistant.retriever.settings import AttentionMix, AttentionStrategy, IndexSettings
from colbert_att_assistant.retriever.training.attention_cache import Collection, build_cache
from colbert_att_assistant.retriever.training.mix_scoring import (
    MixWeights,
    pair_scores,
    pair_set,
    reciprocal_rank_fusion,
)

QUERIES = ["How do I care for my calfskin wallet after it gets wet?", "Do statins lower the risk of cancer?"]


def _with(encoder: ColBERTAttEncoder, **settings) -> ColBERTAttEncoder:
    return ColBERTAttEncoder(EncoderSettings(num_threads=2, **settings), checkpoint=encoder.checkpoint)


def _layers_heads(encoder: ColBERTAttEncoder) -> tuple[int, int]:
    config = encoder.backbone.config
    return config.num_hidden_layers, config.num_attention_heads


def _skewed_mix(encoder: ColBERTAttEncoder) -> AttentionMix:
    """A mix unlike any fixed strategy: received attention of layer 2, queries and documents read differently."""
    layers, heads = _layers_heads(encoder)
    size = 2 * layers * heads
    query = np.zeros(size)
    query[layers * heads + 2 * heads : layers * heads + 3 * heads] = 1.0 / heads
    document = np.zeros(size)
    document[:heads] = 1.0 / heads
    return AttentionMix(
        layers=layers, heads=heads, query=tuple(query), document=tuple(document), temperature=0.05, note="test"
    )


@pytest.mark.parametrize("strategy", [AttentionStrategy.CLS_ALL, AttentionStrategy.RECEIVED_LAST])
def test_learned_mix_set_to_a_fixed_strategy_reproduces_it(encoder, passages, strategy):
    layers, heads = _layers_heads(encoder)
    fixed = _with(encoder, attention_strategy=strategy)
    learned = _with(
        encoder,
        attention_strategy=AttentionStrategy.LEARNED,
        attention_mix=AttentionMix.from_strategy(strategy, layers, heads),
    )
    texts = [p["text"] for p in passages[:6]]
    for mine, theirs in zip(learned.encode_documents(texts), fixed.encode_documents(texts), strict=True):
        np.testing.assert_allclose(mine.weights, theirs.weights, atol=1e-6)
        assert np.abs(theirs.weights).max() > 0.01  # the comparison is not between zeros
    for mine, theirs in zip(learned.encode_queries(QUERIES), fixed.encode_queries(QUERIES), strict=True):
        np.testing.assert_allclose(mine.weights, theirs.weights, atol=1e-6)


def test_learned_without_mix_or_with_wrong_size_is_refused(encoder):
    with pytest.raises(ValueError, match="needs attention_mix"):
        EncoderSettings(attention_strategy=AttentionStrategy.LEARNED)
    with pytest.raises(ValueError, match="expected 2 x layers x heads"):
        AttentionMix(layers=2, heads=2, query=(1.0,) * 8, document=(1.0,) * 7)
    with pytest.raises(Exception, match="fixed strategies only"):
        _with(
            encoder,
            attention_strategy=AttentionStrategy.LEARNED,
            attention_mix=_skewed_mix(encoder),
            query_backend="torch_graph",
        )


def test_learned_mix_round_trips_through_json_and_the_index_and_changes_scores(encoder, passages, tmp_path):
    mix = _skewed_mix(encoder)
    mix.save(tmp_path / "attention_mix.json")
    assert AttentionMix.load(tmp_path / "attention_mix.json") == mix

    learned = _with(encoder, attention_strategy=AttentionStrategy.LEARNED, attention_mix=mix)
    documents = [DocumentInput(id=p["id"], text=p["text"]) for p in passages[:12]]
    index = MultiVectorIndex(learned, IndexSettings(encoder=learned.settings))
    index.add(documents)
    before = index.search(QUERIES[1], top_k=5)
    index.persist(tmp_path / "index")

    reloaded = MultiVectorIndex.load(tmp_path / "index")
    assert reloaded.encoder.settings.attention_mix == mix
    after = reloaded.search(QUERIES[1], top_k=5)
    assert [(h.id, round(h.score, 5)) for h in after] == [(h.id, round(h.score, 5)) for h in before]

    default = MultiVectorIndex(encoder, IndexSettings(encoder=encoder.settings))
    default.add(documents)
    default_scores = {h.id: h.score for h in default.search(QUERIES[1], top_k=12)}
    learned_scores = {h.id: h.score for h in reloaded.search(QUERIES[1], top_k=12)}
    assert max(abs(learned_scores[i] - default_scores[i]) for i in default_scores) > 1e-3

    with pytest.raises(IndexMismatchError, match="attention_strategy"):
        MultiVectorIndex.load(tmp_path / "index", encoder=encoder)
    other_mix = _with(
        encoder,
        attention_strategy=AttentionStrategy.LEARNED,
        attention_mix=AttentionMix.from_strategy(AttentionStrategy.CLS_ALL, *_layers_heads(encoder)),
    )
    with pytest.raises(IndexMismatchError, match="attention_mix"):
        MultiVectorIndex.load(tmp_path / "index", encoder=other_mix)


def test_zeroed_special_tokens_have_no_weight(encoder, passages):
    zeroed = _with(encoder, special_token_attention="zero")
    kept = encoder.encode_documents([passages[0]["text"]])[0]
    mine = zeroed.encode_documents([passages[0]["text"]])[0]
    special = np.isin(mine.token_ids, [encoder.tokenizer.cls_token_id, encoder.tokenizer.sep_token_id])
    assert special.sum() == 2
    assert np.all(mine.weights[special] == 0.0) and np.all(kept.weights[special] > 0.0)
    np.testing.assert_allclose(mine.weights[~special], kept.weights[~special], atol=1e-7)
    query = zeroed.encode_query(QUERIES[0])
    assert query.weights[0] == 0.0 and query.weights[-1] == 0.0


def test_cached_rescoring_gives_the_index_score(encoder, passages, tmp_path):
    """The cache keeps winners and features; Eq. 2 from them equals score_batch on freshly encoded tokens."""
    texts = [p["text"] for p in passages[:8]]
    ids = [p["id"] for p in passages[:8]]
    collection = Collection("tiny", ids, texts, {"q0": QUERIES[1]}, {"q0": {ids[0]: 1}})
    cached = build_cache(encoder, collection, tmp_path / "tiny.npz", top_k=8, add_positives=lambda q: False)
    pairs = pair_set(cached, ["q0"], candidates_only=True)
    layers, heads = _layers_heads(encoder)
    mix = _skewed_mix(encoder)
    mine = pair_scores(pairs, MixWeights.from_mix(mix)).numpy()

    learned = _with(encoder, attention_strategy=AttentionStrategy.LEARNED, attention_mix=mix)
    query = learned.encode_query(QUERIES[1])
    docs = learned.encode_documents(texts)
    batch = CandidateBatch(
        vectors=np.concatenate([d.vectors for d in docs]),
        weights=np.concatenate([d.weights for d in docs]),
        lengths=np.array([len(d.weights) for d in docs]),
        n_words=np.array([d.n_words for d in docs]),
    )
    reference = score_batch(query.vectors, query.weights, batch, ScoringMode.COLBERT_ATT).raw
    reference = reference / np.exp(query.weights.astype(np.float64)).sum()
    order = pairs.pair_doc.numpy()
    np.testing.assert_allclose(mine, reference[order], rtol=2e-3)
    assert len(set(np.round(mine, 4))) > 1
    fixed = pair_scores(pairs, MixWeights.fixed(AttentionStrategy.CLS_ALL, layers, heads)).numpy()
    assert np.abs(fixed - mine).max() > 1e-3


def test_fused_score_adds_the_pooled_cosine(encoder, passages):
    texts = [p["text"] for p in passages[:10]]
    query = encoder.encode_query(QUERIES[1])
    docs = encoder.encode_documents(texts)
    batch = CandidateBatch(
        vectors=np.concatenate([d.vectors for d in docs]),
        weights=np.concatenate([d.weights for d in docs]),
        lengths=np.array([len(d.weights) for d in docs]),
        n_words=np.array([d.n_words for d in docs]),
    )
    plain = score_batch(query.vectors, query.weights, batch, ScoringMode.COLBERT_ATT)
    fused = score_batch(query.vectors, query.weights, batch, ScoringMode.COLBERT_ATT, pooled_weight=0.5)
    pooled_query = query.vectors.mean(axis=0)
    pooled_query /= np.linalg.norm(pooled_query)
    cosines = []
    for d in docs:
        pooled = d.vectors.mean(axis=0)
        cosines.append(float(pooled @ pooled_query / np.linalg.norm(pooled)))
    query_mass = np.exp(query.weights.astype(np.float64)).sum()
    np.testing.assert_allclose(fused.raw, plain.raw + 0.5 * query_mass * np.array(cosines), rtol=1e-5)
    assert np.all((fused.normalised >= 0) & (fused.normalised <= 1))
    assert not np.allclose(fused.raw, plain.raw)


def test_reciprocal_rank_fusion_ranks_within_each_query():
    from types import SimpleNamespace

    pairs = SimpleNamespace(pair_query=torch.tensor([0, 0, 0, 1, 1]))
    first = np.array([3.0, 2.0, 1.0, 5.0, 6.0])
    second = np.array([1.0, 2.0, 3.0, 5.0, 6.0])
    fused = reciprocal_rank_fusion(pairs, first, second, k=1)
    np.testing.assert_allclose(fused, [1 / 2 + 1 / 4, 2 / 3, 1 / 4 + 1 / 2, 2 / 3, 1.0])
