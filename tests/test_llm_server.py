"""The managed llama-server: real binary, bundled Qwen GGUF, two slots, loopback HTTP through the openai_like
backend. The first run on a machine builds llama-server (several minutes, then cached)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from llama_index.core.base.llms.types import ChatMessage

from colbert_att_assistant.assistant.errors import ModelFileError
from colbert_att_assistant.assistant.llama_server_build import build_llama_server, cached_binary_path
from colbert_att_assistant.assistant.llm_backends import ChatModel
from colbert_att_assistant.assistant.llm_server import LLMServerError, LLMServerSettings, start_llm_server
from colbert_att_assistant.assistant.settings import LLMSettings

BUILD_ENV = "COLBERT_ATT_BUILD_LLAMA_SERVER"


@pytest.fixture(scope="module")
def binary() -> str:
    # Building llama-server from source takes about 16 CPU-minutes, more than half of CI's 30-minute budget on
    # 2 cores: the tests run where it is built (`python -m colbert_att_assistant.assistant.llama_server_build`) or when
    # asked to build it.
    if not cached_binary_path().is_file() and os.environ.get(BUILD_ENV) != "1":
        pytest.skip(
            "llama-server is not built; run `python -m colbert_att_assistant.assistant.llama_server_build` "
            f"or set {BUILD_ENV}=1"
        )
    return str(build_llama_server())


@pytest.fixture(scope="module")
def two_slot_server(binary):
    with start_llm_server(LLMServerSettings(binary=binary, parallel_slots=2, threads=2, ctx_per_slot=2048)) as server:
        yield server


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_two_concurrent_chats_are_decoded_together(two_slot_server):
    settings = two_slot_server.llm_settings(LLMSettings(max_new_tokens=80))
    assert settings.backend.value == "openai_like" and settings.base_url == two_slot_server.base_url
    questions = {
        "long": "List ten ways to care for a leather handbag, one sentence each.",
        "short": "Name one colour.",
    }
    first_token: dict[str, float] = {}
    finished: dict[str, float] = {}
    answers: dict[str, str] = {}
    errors: list[BaseException] = []
    start_long = threading.Event()

    def ask(name: str) -> None:
        try:
            # One backend object per request, as two app requests would have.
            model = ChatModel.from_settings(settings)
            parts = []
            for chunk in model.llm.stream_chat([ChatMessage(role="user", content=questions[name])]):
                if chunk.delta:
                    first_token.setdefault(name, time.monotonic())
                    start_long.set()
                    parts.append(chunk.delta)
            answers[name] = "".join(parts)
            finished[name] = time.monotonic()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    long_thread = threading.Thread(target=ask, args=("long",))
    long_thread.start()
    # The short question is sent once the long answer is streaming: with two slots it is not queued behind it.
    assert start_long.wait(timeout=300)
    short_thread = threading.Thread(target=ask, args=("short",))
    short_thread.start()
    long_thread.join(timeout=300)
    short_thread.join(timeout=300)

    assert not errors, errors
    assert answers["long"].strip() and answers["short"].strip()
    assert first_token["short"] < finished["long"], "the second request waited for the first to finish"
    slots = httpx.get(f"{two_slot_server.root_url}/slots", timeout=10).json()
    assert len(slots) == 2


def test_stop_frees_the_port_and_a_second_stop_is_harmless(binary):
    server = start_llm_server(LLMServerSettings(binary=binary, parallel_slots=1, threads=1, ctx_per_slot=1024))
    port = server.port
    assert httpx.get(f"{server.root_url}/health", timeout=10).status_code == 200
    assert not _port_is_free(port)
    server.stop()
    server.stop()
    assert not server.running
    assert _port_is_free(port)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.root_url}/health", timeout=5)


def test_a_port_in_use_is_refused_before_starting(binary):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LLMServerError, match=f"Port {port}.*in use"):
            start_llm_server(LLMServerSettings(binary=binary, port=port))


def test_a_missing_model_file_says_which(tmp_path, binary):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelFileError, match=r"nope\.gguf is not a file"):
        start_llm_server(LLMServerSettings(binary=binary, gguf_path=str(missing)))


def test_a_file_that_is_not_a_model_fails_with_the_server_log(tmp_path, binary):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file" * 100)
    with pytest.raises(LLMServerError, match="exited with code"):
        start_llm_server(LLMServerSettings(binary=binary, gguf_path=str(broken), startup_timeout_s=60))


def test_a_wrong_binary_path_is_named(tmp_path):
    with pytest.raises(LLMServerError, match="not an executable"):
        start_llm_server(LLMServerSettings(binary=str(tmp_path / "llama-server")))


def test_no_binary_anywhere_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("COLBERT_ATT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LLMServerError, match=r"python -m colbert_att_assistant.assistant\.llama_server_build"):
        start_llm_server(LLMServerSettings())


def test_the_server_dies_with_the_process_that_started_it(binary):
    script = (
        "import sys, time\n"
        "from colbert_att_assistant.assistant.llm_server import LLMServerSettings, start_llm_server\n"
        f"server = start_llm_server(LLMServerSettings(binary={binary!r}, parallel_slots=1, threads=1, "
        "ctx_per_slot=1024))\n"
        "print(server.process.pid, server.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child_pid, port = (int(field) for field in parent.stdout.readline().split())
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    finally:
        parent.kill()  # SIGKILL: no atexit, no clean-up in the parent
        parent.wait(timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (_exited(child_pid) and _port_is_free(port)):
        time.sleep(0.2)
    assert _exited(child_pid), "the orphaned llama-server is still running"
    assert _port_is_free(port)


def _exited(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "zombie" in status


def test_threads_sleep_unless_spinning_is_asked_for(tmp_path):
    from colbert_att_assistant.assistant.llm_server import server_command, server_environment

    quiet = LLMServerSettings(parallel_slots=3, ctx_per_slot=1024)
    command = server_command(tmp_path / "llama-server", tmp_path / "m.gguf", quiet, 8080)
    assert command[command.index("--poll") + 1] == "0"
    assert command[command.index("--parallel") + 1] == "3"
    assert command[command.index("--ctx-size") + 1] == str(3 * 1024)
    assert server_environment(quiet)["OMP_WAIT_POLICY"] == "PASSIVE"
    spinning = LLMServerSettings(spin_wait=True)
    assert "--poll" not in server_command(tmp_path / "llama-server", tmp_path / "m.gguf", spinning, 8080)


def test_the_package_spin_count_does_not_reach_a_quiet_server(monkeypatch):
    from colbert_att_assistant.assistant.llm_server import server_environment

    # A spin count overrides OMP_WAIT_POLICY in libgomp: the one this package sets for its own searches must not
    # make the server's threads spin.
    monkeypatch.setenv("GOMP_SPINCOUNT", "30000")
    assert "GOMP_SPINCOUNT" not in server_environment(LLMServerSettings())
    assert server_environment(LLMServerSettings(spin_wait=True))["GOMP_SPINCOUNT"] == "30000"


def test_the_server_judges_a_line_like_the_embedded_model(two_slot_server, chat_model):
    from colbert_att_assistant.assistant.evidence import EvidenceUnit
    from colbert_att_assistant.assistant.line_judge import LineJudge

    remote = ChatModel.from_settings(two_slot_server.llm_settings(LLMSettings()))
    line = EvidenceUnit(1, 0, "Delivery > Costs", "Express delivery costs €25 and arrives in 1-2 business days.", 0.6)
    question = "How much does express delivery cost?"
    # Same GGUF, same llama.cpp: the server's top log-probabilities give the embedded model's judgement.
    assert LineJudge(remote).log_odds(question, line) == pytest.approx(
        LineJudge(chat_model).log_odds(question, line), abs=0.25
    )
