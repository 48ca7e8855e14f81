"""The app on llama.cpp's own server (the llama_server backend), over real HTTP on 127.0.0.1: the real llama-server
binary with the bundled Qwen GGUF and two slots, the real encoder and index. Two customers are answered at once, a
cancelled or abandoned answer frees its server slot, the line in front of the model admits as many answers as the
backend has slots, and stopping `app.py` leaves no llama-server behind. The embedded model still takes one at a
time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from llama_index.core.base.llms.types import ChatMessage

from colbert_att_assistant.assistant import Assistant
from colbert_att_assistant.assistant.llama_server_build import build_llama_server, cached_binary_path
from colbert_att_assistant.assistant.llm_backends import Cancellation, ChatModel, GenerationCancelled
from colbert_att_assistant.assistant.settings import LLMSettings
from colbert_att_assistant.webapp.services import generation_slots
from colbert_att_assistant.webapp.settings import AppSettings

BUILD_ENV = "COLBERT_ATT_BUILD_LLAMA_SERVER"
REPO = Path(__file__).resolve().parent.parent
QUESTIONS = ("How do I care for cashmere?", "How should I store my pearls?")


@pytest.fixture(scope="module")
def binary() -> str:
    # As in test_llm_server.py: the build takes about 16 CPU-minutes, so these run where it is built.
    if not cached_binary_path().is_file() and os.environ.get(BUILD_ENV) != "1":
        pytest.skip(
            "llama-server is not built; run `python -m colbert_att_assistant.assistant.llama_server_build` "
            f"or set {BUILD_ENV}=1"
        )
    return str(build_llama_server())


@pytest.fixture(scope="module")
def server_model(binary):
    settings = LLMSettings(backend="llama_server", server_binary=binary, parallel_slots=2, threads=2)
    with ChatModel.from_settings(settings) as model:
        yield model
    assert not model.server.running


@pytest.fixture(scope="module")
def server_app(server_model, kb_assistant, assistant_settings, start_app, tmp_path_factory):
    assistant = Assistant(kb_assistant.index, server_model, assistant_settings)
    base, app, server, thread = start_app(assistant, tmp_path_factory.mktemp("server-app"), rate_limit_messages=1000)
    yield base, app
    server.should_exit = True
    thread.join(timeout=30)


def processing_slots(model: ChatModel) -> int:
    slots = httpx.get(f"{model.server.root_url}/slots", timeout=10).json()
    return sum(bool(slot["is_processing"]) for slot in slots)


class SlotWatch:
    """Polls llama-server's /slots in a thread and keeps the most slots seen processing at once."""

    def __init__(self, model: ChatModel):
        self.model = model
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.most = max(self.most, processing_slots(self.model))

    def __enter__(self) -> SlotWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# ---- the backend ---------------------------------------------------------------------------------------------------


def test_the_backend_admits_as_many_generations_as_slots(server_model, chat_model):
    assert server_model.capacity == 2 and not server_model.busy
    assert "llama_server" in server_model.name and "2 slots" in server_model.name
    assert server_model.settings.backend.value == "openai_like"
    assert server_model.settings.base_url == server_model.server.base_url
    # The embedded model takes one at a time, and every ChatModel over the same llama.cpp model shares that slot.
    assert chat_model.capacity == 1
    assert ChatModel(chat_model.llm, chat_model.settings)._slots is chat_model._slots


def test_a_cancelled_generation_hangs_up_and_frees_the_server_slot(server_model):
    cancel = Cancellation()
    messages = [ChatMessage(role="user", content="Count from 1 to 300 in digits, separated by commas.")]
    model = ChatModel(server_model.llm, server_model.settings.model_copy(update={"max_new_tokens": 600}))
    received = []
    with pytest.raises(GenerationCancelled):
        for delta in model.stream(messages, cancel=cancel):
            received.append(delta)
            if len(received) == 3:
                assert processing_slots(server_model) == 1
                cancel.cancel("disconnected")
    assert model.active == 0
    # Without the hang-up the server would go on writing up to 600 tokens for nobody.
    assert wait_until(lambda: processing_slots(server_model) == 0, timeout=10)
    assert server_model.complete([ChatMessage(role="user", content="Name one colour.")]).strip()


def test_a_cancellation_while_the_server_reads_the_prompt_frees_the_app_at_once(server_model):
    cancel = Cancellation()
    long_prompt = "Summarise this care guide. " + "Store silk folded, never hung, away from light. " * 100
    threading.Timer(0.3, cancel.cancel, args=("disconnected",)).start()
    started = time.monotonic()
    with pytest.raises(GenerationCancelled):
        list(server_model.stream([ChatMessage(role="user", content=long_prompt)], cancel=cancel))
    # No token has come yet to check between: the hang-up ends the wait.
    assert time.monotonic() - started < 5
    assert server_model.active == 0
    # llama-server itself notices the closed connection only once the prompt is read (its own limit), then frees
    # the slot instead of writing an answer.
    assert wait_until(lambda: processing_slots(server_model) == 0, timeout=180)


# ---- the app on it -----------------------------------------------------------------------------------------------


def test_two_customers_are_answered_at_once(server_app, server_model):
    base, app = server_app
    assert app.state.services.generation.slots == 2
    replies: dict[str, httpx.Response] = {}

    def ask(question: str) -> None:
        replies[question] = httpx.post(f"{base}/api/chat", json={"message": question}, timeout=300)

    threads = [threading.Thread(target=ask, args=(q,)) for q in QUESTIONS]
    with SlotWatch(server_model) as watch:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    for question in QUESTIONS:
        assert replies[question].status_code == 200, replies[question].text
        assert replies[question].json()["answer"].strip()
    # Both generations ran on the server at the same moment; behind one lock this would be 1.
    assert watch.most == 2
    assert server_model.active == 0


def test_an_abandoned_stream_frees_its_slot_and_the_next_customer_is_answered(server_app, server_model):
    base, app = server_app
    generation = app.state.services.generation
    stopped = generation.stats()["stopped"]
    with httpx.stream("POST", f"{base}/api/chat/stream", json={"message": QUESTIONS[0]}, timeout=300) as stream:
        for line in stream.iter_lines():
            # The first token: the server is writing the answer when the client hangs up.
            if line == "event: token":
                break
    assert wait_until(lambda: generation.stats()["stopped"] == stopped + 1, timeout=10)
    assert server_model.active == 0
    assert wait_until(lambda: processing_slots(server_model) == 0, timeout=10)
    reply = httpx.post(f"{base}/api/chat", json={"message": QUESTIONS[1]}, timeout=300)
    assert reply.status_code == 200 and reply.json()["answer"].strip()


def test_the_line_admits_two_answers_then_queues_then_refuses(server_model, kb_assistant, assistant_settings,
                                                              start_app, tmp_path):  # fmt: skip
    assistant = Assistant(kb_assistant.index, server_model, assistant_settings)
    base, app, server, thread = start_app(assistant, tmp_path, rate_limit_messages=1000, queue_size=1)
    try:
        generation = app.state.services.generation
        release = threading.Event()

        def held(cancellation):
            while not release.wait(0.05):
                cancellation.check()

        # Two stand-ins hold both slots, so that the test does not depend on how long the model takes.
        generation.submit(held, lambda event: None)
        generation.submit(held, lambda event: None)
        assert wait_until(lambda: generation.stats()["running"] == 2, timeout=10)
        with httpx.stream("POST", f"{base}/api/chat/stream", json={"message": QUESTIONS[1]}, timeout=300) as waiting:
            lines = waiting.iter_lines()
            assert next(lines) == "event: queued" and '"position": 1' in next(lines)
            full = httpx.post(f"{base}/api/chat", json={"message": QUESTIONS[0]}, timeout=60)
            assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1
            release.set()
            assert "event: done" in list(lines)
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=30)


def test_the_embedded_model_still_takes_one_answer_at_a_time(kb_assistant, start_app, tmp_path):
    assert generation_slots(AppSettings(), 1) == 1 and generation_slots(AppSettings(generation_slots=8), 2) == 2
    assert generation_slots(AppSettings(generation_slots=1), 4) == 1
    base, app, server, thread = start_app(kb_assistant, tmp_path, rate_limit_messages=1000, queue_size=1)
    try:
        generation = app.state.services.generation
        assert generation.slots == 1
        release = threading.Event()

        def held(cancellation):
            while not release.wait(0.05):
                cancellation.check()

        generation.submit(held, lambda event: None)
        with httpx.stream("POST", f"{base}/api/chat/stream", json={"message": QUESTIONS[1]}, timeout=300) as waiting:
            lines = waiting.iter_lines()
            assert next(lines) == "event: queued" and '"position": 1' in next(lines)
            full = httpx.post(f"{base}/api/chat", json={"message": QUESTIONS[0]}, timeout=60)
            assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1
            release.set()
            assert "event: done" in list(lines)
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=30)


# ---- app.py owns its llama-server ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == pid:
            found.append((int(entry.name), name))
    return found


def _gone(pid: int) -> bool:
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def test_app_starts_its_llama_server_and_stops_it_on_sigterm(binary, knowledge_base_index, knowledge_base_copy,
                                                             tmp_path):  # fmt: skip
    port = _free_port()
    environment = {
        **os.environ,
        "ASSISTANT_LLM__BACKEND": "llama_server",
        "ASSISTANT_LLM__SERVER_BINARY": binary,
        "ASSISTANT_LLM__PARALLEL_SLOTS": "2",
        "ASSISTANT_LLM__THREADS": "2",
        "ASSISTANT_RETRIEVAL__INDEX_DIR": str(knowledge_base_index),
        "ASSISTANT_RETRIEVAL__DOCUMENTS_DIR": str(knowledge_base_copy),
        "APP_PORT": str(port),
        "APP_STAFF_PASSWORD": "correct horse",
        "APP_LOG_PATH": str(tmp_path / "log.sqlite3"),
        "APP_SESSIONS_PATH": str(tmp_path / "sessions.sqlite3"),
    }
    log = (tmp_path / "app.log").open("wb")
    app = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
    try:

        def healthy() -> bool:
            assert app.poll() is None, (tmp_path / "app.log").read_text(errors="replace")[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(healthy, timeout=600)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        assert "llama_server" in health["model"] and health["generation"]["slots"] == 2
        servers = [pid for pid, name in _children(app.pid) if name.startswith("llama-server")]
        assert len(servers) == 1
        reply = httpx.post(f"http://127.0.0.1:{port}/api/chat", json={"message": QUESTIONS[1]}, timeout=300)
        assert reply.status_code == 200 and reply.json()["answer"].strip()
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=90)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(timeout=30)
        log.close()
    assert _gone(servers[0]), "app.py left its llama-server running"
    output = (tmp_path / "app.log").read_text(errors="replace")
    assert "Traceback" not in output, output[-3000:]


def test_app_without_a_llama_server_binary_says_how_to_build_it(tmp_path):
    environment = {
        **os.environ,
        "ASSISTANT_LLM__BACKEND": "llama_server",
        "COLBERT_ATT_CACHE_DIR": str(tmp_path),
        "PATH": str(tmp_path),
    }
    environment.pop("ASSISTANT_LLM__SERVER_BINARY", None)
    done = subprocess.run(
        [sys.executable, "app.py"], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert (
        "python -m colbert_att_assistant.assistant.llama_server_build" in errors[0] and "Traceback" not in done.stderr
    )
