"""The OpenAI-compatible backend against a real server on localhost: llama-cpp-python's own OpenAI-compatible
server on the bundled Qwen GGUF, started by the test."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest
from llama_index.core.llms import ChatMessage, MessageRole

from colbert_att_assistant.assistant import Assistant, AssistantSettings
from colbert_att_assistant.assistant.bundled_models import QWEN_CODER_05B, bundled_model_path
from colbert_att_assistant.assistant.errors import LLMBackendError
from colbert_att_assistant.assistant.llm_backends import ChatModel
from colbert_att_assistant.assistant.settings import LLMSettings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory):
    port = _free_port()
    # llama.cpp logs a lot: a pipe nobody reads would fill and block the server, so log to a file.
    log = tmp_path_factory.mktemp("server") / "server.log"
    log_handle = log.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(bundled_model_path(QWEN_CODER_05B.name)),
            "--model_alias",
            "qwen-local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "4096",
            "--n_threads",
            "2",
            "--chat_format",
            "chatml",
        ],
        stdout=log_handle,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        process.kill()
        raise RuntimeError("llama_cpp.server did not start within 120 s")
    yield base_url
    process.terminate()
    process.wait(timeout=30)
    log_handle.close()


def test_the_assistant_answers_through_an_openai_compatible_server(openai_server, assistant_settings, kb_assistant):
    settings = AssistantSettings.load(
        retrieval=assistant_settings.retrieval.model_dump(),
        llm={"backend": "openai_like", "base_url": openai_server, "model": "qwen-local", "api_key": "test-key"},
    )
    remote = ChatModel.from_settings(settings.llm)
    assistant = Assistant(kb_assistant.index, remote, settings)
    tokens = list(remote.stream([ChatMessage(role=MessageRole.USER, content="Count from one to ten in words.")]))
    assert len(tokens) > 1  # the server streams token by token over server-sent events
    stream = assistant.stream("How much does express delivery cost?")
    assert "".join(stream)
    answer = stream.answer
    assert "25" in answer.text and not answer.abstained
    assert "faq-delivery-tracking" in [c.document_id for c in answer.citations]


def test_openai_like_without_a_url_says_what_to_set():
    with pytest.raises(LLMBackendError, match="ASSISTANT_LLM__BASE_URL"):
        ChatModel.from_settings(LLMSettings(backend="openai_like"))


def test_a_line_is_judged_through_the_server_as_by_the_embedded_model(openai_server, chat_model):
    from colbert_att_assistant.assistant.evidence import EvidenceUnit
    from colbert_att_assistant.assistant.line_judge import LineJudge

    remote = ChatModel.from_settings(
        LLMSettings(backend="openai_like", base_url=openai_server, model="qwen-local", api_key="test-key")
    )
    line = EvidenceUnit(1, 0, "Delivery > Costs", "Express delivery costs €25 and arrives in 1-2 business days.", 0.6)
    question = "How much does express delivery cost?"
    # The same GGUF on both sides: the server's top log-probabilities give the embedded model's judgement.
    assert LineJudge(remote).log_odds(question, line) == pytest.approx(
        LineJudge(chat_model).log_odds(question, line), abs=0.25
    )
