"""llama.cpp's own OpenAI-compatible server (`llama-server`) as a managed child process with parallel slots.

One embedded llama.cpp context answers one customer at a time. `llama-server` decodes the requests of all its
slots in one batch (continuous batching), so N customers share the cores instead of queueing behind a lock.
The assistant talks to it through the ordinary `openai_like` backend; the `llama_server` backend
(`ChatModel.from_settings(LLMSettings(backend="llama_server", parallel_slots=4))`) does all of this itself:

    with start_llm_server(LLMServerSettings(parallel_slots=4)) as server:
        llm_settings = server.llm_settings(settings.llm)   # backend=openai_like, base_url, model
        chat_model = ChatModel.from_settings(llm_settings)

The server listens on 127.0.0.1 only (it has no authentication), on a free port unless one is given; it is
stopped by `stop()`, by leaving the `with` block, or at interpreter exit. The binary is found in this order:
`binary` setting, the cached build of `python -m colbert_att_assistant.assistant.llama_server_build`, `llama-server` on
PATH.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import httpx
from pydantic import BaseModel, ConfigDict, Field

from colbert_att_assistant.assistant.bundled_models import bundled_model_path
from colbert_att_assistant.assistant.errors import AssistantError, ModelFileError
from colbert_att_assistant.assistant.llama_server_build import BINARY_NAME, BUILD_COMMAND, cached_binary_path

if TYPE_CHECKING:  # settings.py may import LLMServerSettings from here, so the import is deferred
    from colbert_att_assistant.assistant.settings import LLMSettings

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class LLMServerError(AssistantError):
    """The managed llama-server cannot be found, started or reached."""


class LLMServerSettings(BaseModel):
    """How to run the local LLM server. The app fills it from its LLM settings (`ASSISTANT_LLM__BACKEND=llama_server`,
    `ASSISTANT_LLM__PARALLEL_SLOTS=4`, …; see `colbert_att_assistant.assistant.llm_backends.server_settings`)."""

    model_config = ConfigDict(extra="forbid")

    binary: str | None = Field(default=None, description="Path to llama-server; None = cached build, then PATH.")
    bundled_model: str = "qwen2.5-coder-0.5b-instruct"
    gguf_path: str | None = Field(default=None, description="Any GGUF file; wins over bundled_model.")
    model_alias: str = Field(default="local", min_length=1, description="The model name clients send.")
    parallel_slots: int = Field(default=4, ge=1, le=64, description="Requests decoded together in one batch.")
    threads: int | None = Field(default=None, ge=1, description="Compute threads; None = all cores.")
    ctx_per_slot: int = Field(default=4096, ge=512, description="Context (prompt + answer) each slot can hold.")
    port: int | None = Field(default=None, ge=1, le=65535, description="None = a free port on 127.0.0.1.")
    spin_wait: bool = Field(
        default=False,
        description="Let idle compute threads spin (llama.cpp's default). Off: they sleep, which on a busy "
        "machine made decoding 10x faster here (benchmarks/RESULTS.md); on a machine doing nothing else, "
        "spinning can save a little latency.",
    )
    startup_timeout_s: float = Field(default=120.0, gt=0)
    log_path: str | None = Field(default=None, description="Server log file; None = a temporary file.")


def find_binary(settings: LLMServerSettings) -> Path:
    if settings.binary:
        path = Path(os.path.expanduser(settings.binary))
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LLMServerError(f"The llama-server binary {settings.binary} is not an executable file.")
        return path
    cached = cached_binary_path()
    if cached.is_file():
        return cached
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        return Path(on_path)
    raise LLMServerError(
        f"No {BINARY_NAME} binary: build llama.cpp's server once with `{BUILD_COMMAND}` (several minutes; it "
        f"lands in {cached.parent}), put {BINARY_NAME} on PATH, or give its path (ASSISTANT_LLM__SERVER_BINARY)."
    )


def model_path(settings: LLMServerSettings) -> Path:
    if settings.gguf_path:
        path = Path(os.path.expanduser(settings.gguf_path))
        if not path.is_file():
            raise ModelFileError(f"The model file {settings.gguf_path} is not a file; give a .gguf model.")
        return path
    return bundled_model_path(settings.bundled_model)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, ask the kernel to SIGTERM the server when the process that started it dies, so that a killed
    app (kill -9, OOM) does not leave an orphan holding the port and the model's memory.

    The kernel ties this to the starting *thread*, so it is only used from the main thread: a server started
    from a pool thread would otherwise be killed whenever that thread retires."""
    if not hasattr(os, "fork") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_parent_death_signal() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return set_parent_death_signal


def server_command(binary: Path, model: Path, settings: LLMServerSettings, port: int) -> list[str]:
    threads = settings.threads or os.cpu_count() or 1
    return [
        str(binary),
        "--model", str(model),
        "--alias", settings.model_alias,
        "--host", LOOPBACK,
        "--port", str(port),
        "--parallel", str(settings.parallel_slots),
        "--cont-batching",
        # The context is divided evenly between the slots.
        "--ctx-size", str(settings.ctx_per_slot * settings.parallel_slots),
        "--no-kv-unified",
        "--threads", str(threads),
        "--threads-batch", str(threads),
        "--no-webui",
        # CPU only: skip the device-memory fitting pass, which only matters for GPUs.
        "--fit", "off",
        *([] if settings.spin_wait else ["--poll", "0"]),
    ]  # fmt: skip


def server_environment(settings: LLMServerSettings) -> dict[str, str]:
    environment = dict(os.environ)
    if not settings.spin_wait:
        # OpenMP threads otherwise spin between operations; when another process holds a core, each spinning
        # wait costs a whole time slice, dozens of times per token.
        environment["OMP_WAIT_POLICY"] = "PASSIVE"
        # A spin count overrides the policy in libgomp; this package sets one for its own process, not the server's.
        environment.pop("GOMP_SPINCOUNT", None)
    return environment


class ManagedServer:
    """A running llama-server child process; `base_url` ends in /v1, ready for the openai_like backend."""

    def __init__(self, process: subprocess.Popen, port: int, settings: LLMServerSettings, log_path: Path,
                 log_handle: IO[bytes], temporary_log: bool):  # fmt: skip
        self.process = process
        self.port = port
        self.settings = settings
        self.log_path = log_path
        self._log_handle = log_handle
        self._temporary_log = temporary_log
        self._stopped = False
        self._stop_lock = threading.Lock()
        atexit.register(self.stop)

    @property
    def root_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def model(self) -> str:
        return self.settings.model_alias

    @property
    def running(self) -> bool:
        return not self._stopped and self.process.poll() is None

    def llm_settings(self, base: LLMSettings | None = None) -> LLMSettings:
        """`base` (generation limits, timeout) pointed at this server through the openai_like backend."""
        from colbert_att_assistant.assistant.settings import LLMBackend, LLMSettings

        base = base or LLMSettings()
        return base.model_copy(
            update={"backend": LLMBackend.OPENAI_LIKE, "base_url": self.base_url, "model": self.model}
        )

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_until_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LLMServerError(
                    f"{BINARY_NAME} exited with code {self.process.returncode} while starting; its log "
                    f"({self.log_path}) ends:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                # 503 while the model loads, 200 once every slot can take a request.
                if httpx.get(f"{self.root_url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise LLMServerError(
            f"{BINARY_NAME} did not become healthy within {timeout_s:.0f} s; its log ends:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; idempotent and safe from atexit."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s; killing it", BINARY_NAME, timeout_s)
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        self._log_handle.close()
        if self._temporary_log:
            self.log_path.unlink(missing_ok=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> ManagedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_llm_server(settings: LLMServerSettings | None = None) -> ManagedServer:
    """Start llama-server and return once it answers /health (raises `LLMServerError` with its log otherwise)."""
    settings = settings or LLMServerSettings()
    binary = find_binary(settings)
    model = model_path(settings)
    if settings.port is not None and not _port_is_free(settings.port):
        raise LLMServerError(f"Port {settings.port} on {LOOPBACK} is in use; choose another or leave port unset.")
    port = settings.port or free_port()
    if settings.log_path:
        log_path, temporary = Path(settings.log_path), False
        log_path.parent.mkdir(parents=True, exist_ok=True)
    else:
        descriptor, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        os.close(descriptor)
        log_path, temporary = Path(name), True
    # llama-server logs every request: a pipe nobody reads would fill and block it, so it writes to a file.
    log_handle = log_path.open("ab")
    command = server_command(binary, model, settings, port)
    logger.info("starting %s", " ".join(command))
    try:
        process = subprocess.Popen(
            command,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_environment(settings),
            preexec_fn=_die_with_parent(),  # only a prctl call between fork and exec
        )
    except OSError as exc:
        log_handle.close()
        raise LLMServerError(f"Could not run {binary}: {exc}") from exc
    server = ManagedServer(process, port, settings, log_path, log_handle, temporary)
    try:
        server.wait_until_healthy(settings.startup_timeout_s)
    except BaseException:
        server.stop()
        raise
    logger.info("%s ready at %s with %d slots", BINARY_NAME, server.base_url, settings.parallel_slots)
    return server
