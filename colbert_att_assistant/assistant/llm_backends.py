"""Build the LLM from settings, always as one of LlamaIndex's own LLM classes.

- llama_cpp: `LlamaCPP` over a GGUF file (a bundled one by default), prompts in ChatML (Qwen2.5 and SmolLM2).
- openai_like: `OpenAILike`, any OpenAI-compatible server by base URL, model name and key.
- ollama: `Ollama`.
- llama_server: llama.cpp's own server with parallel slots, started by `ChatModel.from_settings` on a loopback
  port and reached through `OpenAILike`; the ChatModel owns it and stops it on `close()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpx
import numpy as np
import openai
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms import LLM

from colbert_att_assistant.assistant.bundled_models import bundled_model_path
from colbert_att_assistant.assistant.errors import AssistantError, LLMBackendError, ModelFileError
from colbert_att_assistant.assistant.llm_server import LLMServerSettings, ManagedServer, start_llm_server
from colbert_att_assistant.assistant.settings import LLMBackend, LLMSettings

logger = logging.getLogger(__name__)

CHATML_STOP = ["<|im_end|>", "<|im_start|>", "<|endoftext|>"]
REMOTE_TOP_LOGPROBS = 20


def messages_to_chatml(messages: Sequence[ChatMessage]) -> str:
    parts = [f"<|im_start|>{message.role.value}\n{message.content}<|im_end|>\n" for message in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


def completion_to_chatml(completion: str) -> str:
    return f"<|im_start|>user\n{completion}<|im_end|>\n<|im_start|>assistant\n"


def _llama_cpp(settings: LLMSettings) -> LLM:
    try:
        from llama_index.llms.llama_cpp import LlamaCPP
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise LLMBackendError(
            "The llama_cpp backend needs llama-cpp-python and llama-index-llms-llama-cpp: pip install -e ."
        ) from exc
    if settings.gguf_path:
        path = os.path.expanduser(settings.gguf_path)
        if not os.path.isfile(path):
            raise ModelFileError(f"llm.gguf_path={settings.gguf_path} is not a file; give the path to a .gguf model.")
    else:
        path = str(bundled_model_path(settings.bundled_model))
    threads = settings.threads or os.cpu_count() or 1
    return LlamaCPP(
        model_path=path,
        temperature=settings.temperature,
        max_new_tokens=settings.max_new_tokens,
        context_window=settings.context_window,
        generate_kwargs={"stop": CHATML_STOP, "top_k": 1 if settings.temperature == 0 else 40},
        model_kwargs={"n_threads": threads, "n_threads_batch": threads, "n_batch": 512},
        messages_to_prompt=messages_to_chatml,
        completion_to_prompt=completion_to_chatml,
        verbose=False,
    )


def _api_key(settings: LLMSettings) -> str:
    # Local servers (llama.cpp, vLLM) accept any key, but the OpenAI client refuses to start without one.
    return settings.api_key.get_secret_value() if settings.api_key else os.environ.get("OPENAI_API_KEY", "not-needed")


def _openai_like(settings: LLMSettings, http_client: httpx.Client | None = None) -> LLM:
    from llama_index.llms.openai_like import OpenAILike

    if not settings.base_url or not settings.model:
        raise LLMBackendError(
            "The openai_like backend needs llm.base_url (e.g. http://localhost:8000/v1) and llm.model; set "
            "ASSISTANT_LLM__BASE_URL and ASSISTANT_LLM__MODEL or put them in the config file."
        )
    return OpenAILike(
        model=settings.model,
        api_base=settings.base_url,
        api_key=_api_key(settings),
        is_chat_model=True,
        context_window=settings.context_window,
        max_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        timeout=settings.request_timeout_s,
        max_retries=1,
        http_client=http_client,
    )


def _ollama(settings: LLMSettings) -> LLM:
    from llama_index.llms.ollama import Ollama

    if not settings.model:
        raise LLMBackendError("The ollama backend needs llm.model (e.g. qwen2.5:0.5b); set ASSISTANT_LLM__MODEL.")
    return Ollama(
        model=settings.model,
        base_url=settings.base_url or "http://localhost:11434",
        request_timeout=settings.request_timeout_s,
        context_window=settings.context_window,
        temperature=settings.temperature,
        additional_kwargs={"num_predict": settings.max_new_tokens},
    )


class GenerationCancelled(AssistantError):
    """A generation was stopped before its end: the client went away, its deadline passed or the app is stopping."""

    def __init__(self, reason: str):
        super().__init__(f"The generation was stopped ({reason}).")
        self.reason = reason


class Cancellation:
    """Whoever waits for a generation sets this (client gone, shutdown); a deadline sets it by itself. The model
    checks it while waiting for its lock and between tokens, so a stopped request frees the model within a token."""

    def __init__(self, deadline_s: float | None = None):
        self._event = threading.Event()
        self.deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self.reason: str | None = None

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        if not self._event.is_set() and self.deadline is not None and time.monotonic() >= self.deadline:
            self.cancel("deadline")
        return self._event.is_set()

    def check(self) -> None:
        if self.cancelled:
            raise GenerationCancelled(self.reason or "cancelled")

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds or until cancelled; True when cancelled."""
        if self.deadline is not None:
            timeout = max(0.0, min(timeout, self.deadline - time.monotonic()))
        self._event.wait(timeout)
        return self.cancelled


_current_cancellation: ContextVar[Cancellation | None] = ContextVar("current_cancellation", default=None)


@contextmanager
def cancellation_scope(cancellation: Cancellation) -> Iterator[Cancellation]:
    """Every `ChatModel` call made inside this block (in this thread or task) stops when `cancellation` is set,
    also those a caller makes deep inside the assistant without passing `cancel=` along."""
    token = _current_cancellation.set(cancellation)
    try:
        yield cancellation
    finally:
        _current_cancellation.reset(token)


class _AbortFlag:
    """Lets a cancellation stop llama.cpp inside a forward pass, the prompt's included (reading a long prompt takes
    seconds on a small CPU, and no token boundary comes until it is done).

    llama.cpp polls an abort callback after every node of the compute graph, hundreds of times per token, from its
    own threads. A Python callback would need the GIL each time and slow generation whenever another thread runs
    Python; instead the callback is C's `strlen` over a two-byte buffer: "\0\0" reads as 0 (go on), "x\0" as 1
    (abort), with no Python involved. `available` is False where the C library cannot be found."""

    def __init__(self, llama: object):
        self._buffer = ctypes.create_string_buffer(2)
        self.available = False
        try:
            import llama_cpp

            libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
            self._callback = ctypes.cast(libc.strlen, llama_cpp.ggml_abort_callback)
            llama_cpp.llama_set_abort_callback(
                llama._ctx.ctx,  # type: ignore[attr-defined]
                self._callback,
                ctypes.cast(self._buffer, ctypes.c_void_p),
            )
            self.available = True
        except (AttributeError, ImportError, OSError):
            logger.info("llama.cpp abort callback unavailable: a cancellation waits for the current forward pass.")

    def set(self, abort: bool) -> None:
        self._buffer[0] = b"x" if abort else b"\0"


def _abort_flag_of(model: object) -> _AbortFlag:
    """The one abort flag of a llama.cpp model. llama.cpp reads the flag's buffer by address: a second ChatModel over
    the same model must share it, or the buffer of a collected ChatModel would be read after it is freed."""
    flag = getattr(model, "_colbert_att_abort_flag", None)
    if flag is None:
        flag = _AbortFlag(model)
        model._colbert_att_abort_flag = flag  # type: ignore[attr-defined]
    return flag


class _Watcher:
    """For one generation: a thread that calls `on_cancel` once, as soon as `cancel` is set or its deadline passes."""

    def __init__(self, cancel: Cancellation, on_cancel: Callable[[], None]):
        self._on_cancel = on_cancel
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cancel,), name="generation-watch", daemon=True)
        self._thread.start()

    def _run(self, cancel: Cancellation) -> None:
        while not self._finished.is_set():
            if cancel.wait(0.05):
                self._on_cancel()
                return

    def stop(self) -> None:
        """End the watch; once this returns `on_cancel` can no longer be called."""
        self._finished.set()
        self._thread.join()


class _Slots:
    """How many generations a backend admits at once: 1 for an embedded llama.cpp context, a server's parallel
    slots for a remote one. Waiting is done in short steps so that a cancellation also ends the wait."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._free = threading.Semaphore(capacity)
        self._count_lock = threading.Lock()
        self.active = 0

    def acquire(self, cancel: Cancellation | None) -> None:
        if cancel is None:
            self._free.acquire()
        else:
            while not self._free.acquire(timeout=0.05):
                cancel.check()
        with self._count_lock:
            self.active += 1

    def release(self) -> None:
        with self._count_lock:
            self.active -= 1
        self._free.release()


def _slots_of(model: object) -> _Slots:
    """The one slot of a llama.cpp model: every ChatModel over the same model waits on it, since one context cannot
    run two generations at once."""
    slots = getattr(model, "_colbert_att_slots", None)
    if slots is None:
        slots = _Slots(1)
        model._colbert_att_slots = slots  # type: ignore[attr-defined]
    return slots


class _HungUp(openai.OpenAIError):
    """A request of a cancelled generation, stopped before it is sent. An OpenAIError, so the client does not retry."""


def _hang_up(sock: socket.socket) -> None:
    # shutdown, not close: it wakes a thread blocked reading the socket, and the server sees the client leave.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Connection:
    """The socket of one generation's request to a remote model, so that a cancellation can hang up at once, even
    while the server still reads the prompt and no token has come to check between. llama-server then frees the
    slot. The socket is reported by httpcore's `trace` request extension as the connection opens."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._hung_up = False

    def on_request(self, request: httpx.Request) -> None:
        if self._hung_up:
            raise _HungUp("the generation was cancelled")
        request.extensions["trace"] = self._trace

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        sock = info["return_value"].get_extra_info("socket")
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            hung_up = self._hung_up
        if hung_up:
            _hang_up(sock)

    def hang_up(self) -> None:
        with self._lock:
            self._hung_up = True
            sockets = list(self._sockets)
        for sock in sockets:
            _hang_up(sock)


def server_settings(settings: LLMSettings) -> LLMServerSettings:
    """The managed llama-server for the llama_server backend: its model, threads and slots, each slot holding
    `context_window` tokens."""
    return LLMServerSettings(
        binary=settings.server_binary,
        bundled_model=settings.bundled_model,
        gguf_path=settings.gguf_path,
        parallel_slots=settings.parallel_slots,
        threads=settings.threads,
        ctx_per_slot=settings.context_window,
        startup_timeout_s=settings.server_startup_timeout_s,
    )


class ChatModel:
    """The LlamaIndex LLM plus what the assistant needs around it: a token counter for the context budget and
    the number of generations the backend admits at once (`capacity`). An embedded llama.cpp context runs one
    generation at a time; a server (openai_like, ollama, llama_server) runs up to `parallel_slots`.

    With the llama_server backend this object owns the server it started: `close()` (or leaving a `with` block)
    stops it, and it is stopped at interpreter exit as well."""

    def __init__(self, llm: LLM, settings: LLMSettings, server: ManagedServer | None = None):
        self.llm = llm
        self.settings = settings
        self.server = server
        model = getattr(llm, "_model", None)
        embedded = model is not None and hasattr(model, "_ctx")
        self._abort = _abort_flag_of(model) if embedded else None
        self._slots = _slots_of(model) if embedded else _Slots(settings.parallel_slots)

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> ChatModel:
        if settings.backend is LLMBackend.LLAMA_SERVER:
            return cls._with_server(settings)
        builders = {LLMBackend.LLAMA_CPP: _llama_cpp, LLMBackend.OPENAI_LIKE: _openai_like, LLMBackend.OLLAMA: _ollama}
        return cls(builders[settings.backend](settings), settings)

    @classmethod
    def _with_server(cls, settings: LLMSettings) -> ChatModel:
        """Start llama-server on a free loopback port, wait until it is healthy, and talk to it as openai_like."""
        server = start_llm_server(server_settings(settings))
        try:
            remote = server.llm_settings(settings)
            return cls(_openai_like(remote), remote, server=server)
        except BaseException:
            server.stop()
            raise

    def close(self) -> None:
        """Stop the llama-server this model started, if any (idempotent)."""
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> ChatModel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        if self.server is not None:
            server = self.server.settings
            return f"llama_server:{server.gguf_path or server.bundled_model} ({server.parallel_slots} slots)"
        if self.settings.backend is LLMBackend.LLAMA_CPP:
            return self.settings.gguf_path or self.settings.bundled_model
        return f"{self.settings.backend.value}:{self.settings.model}"

    @property
    def context_window(self) -> int:
        return self.llm.metadata.context_window

    @property
    def capacity(self) -> int:
        """Generations admitted at once."""
        return self._slots.capacity

    @property
    def active(self) -> int:
        """Generations running now."""
        return self._slots.active

    @property
    def busy(self) -> bool:
        """True while every slot holds a generation (a further one would wait)."""
        return self._slots.active >= self._slots.capacity

    def count_tokens(self, text: str) -> int:
        model = getattr(self.llm, "_model", None)
        if model is not None and hasattr(model, "tokenize"):
            return len(model.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=True))
        # Remote models: about 3.5 characters per token for English, rounded up to stay inside the window.
        return len(text) * 2 // 7 + 1

    def stream(self, messages: Sequence[ChatMessage], cancel: Cancellation | None = None) -> Iterator[str]:
        """Text deltas of the reply; a slot of the model is held for the whole generation.

        `cancel` (or the one of an enclosing `cancellation_scope`) stops the generation with `GenerationCancelled`:
        between tokens, inside a forward pass for the embedded model, and by hanging up the HTTP request for an
        OpenAI-compatible server (which frees the server's slot). Closing this generator stops it too. Either way
        the slot is released at once."""
        cancel = cancel or _current_cancellation.get()
        self._slots.acquire(cancel)
        try:
            yield from self._generate(messages, cancel)
        finally:
            self._slots.release()

    def _generate(self, messages: Sequence[ChatMessage], cancel: Cancellation | None) -> Iterator[str]:
        llm, on_cancel, finish = self._generation_llm()
        watcher = _Watcher(cancel, on_cancel) if cancel is not None and on_cancel is not None else None
        try:
            if cancel is not None:
                cancel.check()
            chunks = llm.stream_chat(list(messages))
            try:
                for chunk in chunks:
                    if cancel is not None:
                        cancel.check()
                    if chunk.delta:
                        yield chunk.delta
            except GenerationCancelled:
                raise
            except Exception:
                # llama.cpp reports an aborted forward pass as "llama_decode returned 2"; a hung-up request ends
                # in a connection error.
                if cancel is not None and cancel.cancelled:
                    raise GenerationCancelled(cancel.reason or "cancelled") from None
                raise
            finally:
                # Stops llama.cpp (or closes the HTTP stream of a remote model) when we leave early.
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        finally:
            if watcher is not None:
                watcher.stop()
            finish()

    def _generation_llm(self) -> tuple[LLM, Callable[[], None] | None, Callable[[], None]]:
        """The LLM for one generation, what stops it from another thread, and what to do once it is over."""
        if self._abort is not None:
            flag = self._abort
            flag.set(False)
            return self.llm, lambda: flag.set(True), lambda: flag.set(False)
        if self.settings.backend is LLMBackend.OPENAI_LIKE:
            # A client of its own per generation, so that hanging up closes this request's connection only.
            connection = _Connection()
            client = httpx.Client(event_hooks={"request": [connection.on_request]})
            return _openai_like(self.settings, http_client=client), connection.hang_up, client.close
        return self.llm, None, lambda: None

    def complete(self, messages: Sequence[ChatMessage], cancel: Cancellation | None = None) -> str:
        return "".join(self.stream(messages, cancel=cancel))

    def next_token_logprobs(self, messages: Sequence[ChatMessage], words: Sequence[str]) -> dict[str, float]:
        """The log-probability that the reply to `messages` starts with each of `words` (its first token), read
        from the model's next-token distribution; nothing is generated. A slot is held meanwhile.

        The embedded model scores every word exactly and reuses the evaluated prefix shared with the previous
        call. An OpenAI-compatible server is asked for its `top_logprobs` (20); a word outside them gets the
        lowest of those, an upper bound. Ollama's API returns no log-probabilities: `LLMBackendError`."""
        if not words:
            return {}
        # A client that went away (or a deadline) stops the judging between prompts, as it stops a generation.
        cancel = _current_cancellation.get()
        self._slots.acquire(cancel)
        try:
            if cancel is not None:
                cancel.check()
            model = getattr(self.llm, "_model", None)
            if model is not None and hasattr(model, "_ctx"):
                return _embedded_logprobs(model, messages_to_chatml(messages), words)
            if self.settings.backend is LLMBackend.OPENAI_LIKE:
                return self._remote_logprobs(messages, words)
            raise LLMBackendError(
                f"The {self.settings.backend.value} backend returns no token log-probabilities, which the judged "
                "answer style reads; use llama_cpp, llama_server or openai_like."
            )
        finally:
            self._slots.release()

    def _remote_logprobs(self, messages: Sequence[ChatMessage], words: Sequence[str]) -> dict[str, float]:
        settings = self.settings
        client = openai.OpenAI(
            base_url=settings.base_url, api_key=_api_key(settings), timeout=settings.request_timeout_s, max_retries=1
        )
        try:
            reply = client.chat.completions.create(
                model=settings.model or "",
                messages=[{"role": m.role.value, "content": m.content or ""} for m in messages],  # type: ignore[misc]
                max_tokens=1,
                temperature=0.0,
                logprobs=True,
                top_logprobs=REMOTE_TOP_LOGPROBS,
            )
        except openai.OpenAIError as exc:
            raise LLMBackendError(f"The model server at {settings.base_url} failed to score a reply: {exc}") from exc
        finally:
            client.close()
        content = reply.choices[0].logprobs.content if reply.choices and reply.choices[0].logprobs else None
        if not content:
            raise LLMBackendError(
                f"The model server at {settings.base_url} returned no log-probabilities; it must support the "
                "`logprobs` and `top_logprobs` fields of the chat completions API."
            )
        # Exact token strings: " Yes" is another token than "Yes", with its own (usually far lower) probability.
        top = {alternative.token: alternative.logprob for alternative in content[0].top_logprobs}
        floor = min(top.values(), default=-100.0)
        return {word: top.get(word, floor) for word in words}


def _embedded_logprobs(model: Any, prompt: str, words: Sequence[str]) -> dict[str, float]:
    """Evaluate `prompt` on a llama-cpp-python `Llama` (keeping the prefix its KV cache already holds) and return
    the log-softmax of its last logits at the first token of each word."""
    tokens = model.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    if len(tokens) >= model.n_ctx():
        raise LLMBackendError(
            f"A scoring prompt of {len(tokens)} tokens does not fit the {model.n_ctx()}-token context."
        )
    cached = list(model.input_ids[: model.n_tokens])
    shared = 0
    while shared < min(len(cached), len(tokens) - 1) and cached[shared] == tokens[shared]:
        shared += 1
    model.n_tokens = shared
    model.eval(tokens[shared:])
    logits = np.ctypeslib.as_array(model._ctx.get_logits(), shape=(model.n_vocab(),)).astype(np.float64)
    log_softmax = logits - np.logaddexp.reduce(logits)
    first = {word: model.tokenize(word.encode("utf-8"), add_bos=False, special=False)[0] for word in words}
    return {word: float(log_softmax[token]) for word, token in first.items()}
