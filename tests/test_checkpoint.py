"""ColBERT checkpoints in the PyLate and Stanford layouts, built here from the bundled MiniLM and one shared
random projection, load to the same vectors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings
from colbert_att_assistant.retriever.checkpoint import CheckpointLayout, bundled_model_path, inspect_checkpoint
from colbert_att_assistant.retriever.errors import CheckpointError

TOKENIZER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)
QUERY = "How should a lambskin bag be stored?"
DOCUMENT = "Lambskin is softer than calfskin: keep it stuffed, in its dust bag, away from light and water."


def _copy_tokenizer_and_config(target: Path) -> None:
    target.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(bundled_model_path() / name, target / name)


@pytest.fixture(scope="module")
def projection() -> torch.Tensor:
    generator = torch.Generator().manual_seed(11)
    return torch.randn(48, 384, generator=generator) / 20


@pytest.fixture(scope="module")
def pylate_checkpoint(tmp_path_factory, projection) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "pylate"
    _copy_tokenizer_and_config(folder)
    shutil.copy(bundled_model_path() / "model.safetensors", folder / "model.safetensors")
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
            ]
        )
    )
    (folder / "1_Dense").mkdir()
    (folder / "1_Dense" / "config.json").write_text(
        json.dumps(
            {
                "in_features": 384,
                "out_features": 48,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            }
        )
    )
    save_file({"linear.weight": projection.contiguous()}, str(folder / "1_Dense" / "model.safetensors"))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "query_prefix": "[unused0]",
                "document_prefix": "[unused1]",
                "query_length": 32,
                "document_length": 180,
                "do_query_expansion": True,
                "attend_to_expansion_tokens": False,
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def stanford_checkpoint(tmp_path_factory, projection) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "stanford"
    _copy_tokenizer_and_config(folder)
    backbone = load_file(str(bundled_model_path() / "model.safetensors"))
    state = {f"bert.{key}": value.contiguous() for key, value in backbone.items()}
    state["linear.weight"] = projection.contiguous()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "artifact.metadata").write_text(
        json.dumps(
            {
                "query_token_id": "[unused0]",
                "doc_token_id": "[unused1]",
                "query_maxlen": 32,
                "doc_maxlen": 180,
            }
        )
    )
    return folder


def test_layouts_are_detected(pylate_checkpoint, stanford_checkpoint):
    assert inspect_checkpoint(pylate_checkpoint).layout is CheckpointLayout.PYLATE
    assert inspect_checkpoint(stanford_checkpoint).layout is CheckpointLayout.STANFORD
    assert inspect_checkpoint(bundled_model_path()).layout is CheckpointLayout.HUGGINGFACE


def test_pylate_and_stanford_layouts_give_the_same_vectors(pylate_checkpoint, stanford_checkpoint, projection):
    pylate = ColBERTAttEncoder(EncoderSettings(model_path=str(pylate_checkpoint)))
    stanford = ColBERTAttEncoder(EncoderSettings(model_path=str(stanford_checkpoint)))
    assert pylate.dim == stanford.dim == 48
    for encode in ("encode_queries", "encode_documents"):
        text = QUERY if encode == "encode_queries" else DOCUMENT
        a = getattr(pylate, encode)([text])[0]
        b = getattr(stanford, encode)([text])[0]
        assert a.vectors.shape[1] == 48
        np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)
        np.testing.assert_allclose(a.weights, b.weights, atol=1e-6)
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
    query = pylate.encode_query(QUERY)
    tokens = pylate.token_strings(query.token_ids)
    # Both were trained with query augmentation: marker after [CLS], [MASK] padding to 32.
    assert tokens[:2] == ["[CLS]", "[unused0]"] and tokens[-1] == "[MASK]" and len(tokens) == 32
    assert pylate.token_strings(pylate.encode_documents([DOCUMENT])[0].token_ids)[1] == "[unused1]"


def test_projection_is_applied_before_normalising(pylate_checkpoint, projection, encoder):
    pylate = ColBERTAttEncoder(EncoderSettings(model_path=str(pylate_checkpoint), query_expansion=False))
    with torch.no_grad():
        ids = torch.from_numpy(pylate.encode_query(QUERY).token_ids.astype(np.int64))[None]
        hidden = encoder.backbone(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
    expected = torch.nn.functional.normalize(hidden @ projection.T, dim=-1).numpy()
    np.testing.assert_allclose(pylate.encode_query(QUERY).vectors, expected, atol=1e-5)


def test_a_plain_huggingface_folder_loads_like_the_bundled_model(tmp_path, encoder):
    folder = tmp_path / "plain"
    shutil.copytree(bundled_model_path(), folder)
    copy = ColBERTAttEncoder(EncoderSettings(model_path=str(folder)))
    assert copy.weights_sha256 == encoder.weights_sha256
    np.testing.assert_allclose(copy.encode_query(QUERY).vectors, encoder.encode_query(QUERY).vectors, atol=1e-6)


def test_missing_or_incomplete_folders_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ColBERTAttEncoder(EncoderSettings(model_path=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        ColBERTAttEncoder(EncoderSettings(model_path=str(tmp_path / "empty")))
    _copy_tokenizer_and_config(tmp_path / "no-weights")
    with pytest.raises(CheckpointError, match="no weights"):
        ColBERTAttEncoder(EncoderSettings(model_path=str(tmp_path / "no-weights")))
