"""Build the LLM from settings, always as one of LlamaIndex's own LLM classes.

- llama_cpp: `LlamaCPP` over a GGUF file (a bundled one by default), prompts in ChatML (Qwen2.5 and SmolLM2).
- openai_like: `OpenAILike`, any OpenAI-compatible server by base URL, model name and key.
- ollama: `Ollama`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms import LLM

from assistant.bundled_models import bundled_model_path
from assistant.errors import AssistantError, LLMBackendError, ModelFileError
from assistant.settings import LLMBackend, LLMSettings

logger = logging.getLogger(__name__)

CHATML_STOP = ["<|im_end|>", "<|im_start|>", "<|endoftext|>"]


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


def _openai_like(settings: LLMSettings) -> LLM:
    from llama_index.llms.openai_like import OpenAILike

    if not settings.base_url or not settings.model:
        raise LLMBackendError(
            "The openai_like backend needs llm.base_url (e.g. http://localhost:8000/v1) and llm.model; set "
            "ASSISTANT_LLM__BASE_URL and ASSISTANT_LLM__MODEL or put them in the config file."
        )
    key = settings.api_key.get_secret_value() if settings.api_key else os.environ.get("OPENAI_API_KEY", "not-needed")
    return OpenAILike(
        model=settings.model,
        api_base=settings.base_url,
        api_key=key,
        is_chat_model=True,
        context_window=settings.context_window,
        max_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        timeout=settings.request_timeout_s,
        max_retries=1,
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


class _AbortWatcher:
    """For one generation: a thread that raises the abort flag once `cancel` is set or its deadline passes."""

    def __init__(self, cancel: Cancellation, flag: _AbortFlag):
        self._flag = flag
        self._finished = threading.Event()
        flag.set(False)
        self._thread = threading.Thread(target=self._run, args=(cancel,), name="generation-abort", daemon=True)
        self._thread.start()

    def _run(self, cancel: Cancellation) -> None:
        while not self._finished.is_set():
            if cancel.wait(0.05):
                self._flag.set(True)
                return

    def stop(self) -> None:
        """End the watch; the flag is lowered only once the thread can no longer raise it."""
        self._finished.set()
        self._thread.join()
        self._flag.set(False)


class ChatModel:
    """The LlamaIndex LLM plus what the assistant needs around it: a token counter for the context budget and
    a lock, because one llama.cpp context cannot serve two generations at once."""

    def __init__(self, llm: LLM, settings: LLMSettings):
        self.llm = llm
        self.settings = settings
        self._lock = threading.Lock()
        model = getattr(llm, "_model", None)
        self._abort = _abort_flag_of(model) if model is not None and hasattr(model, "_ctx") else None

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> ChatModel:
        builders = {LLMBackend.LLAMA_CPP: _llama_cpp, LLMBackend.OPENAI_LIKE: _openai_like, LLMBackend.OLLAMA: _ollama}
        return cls(builders[settings.backend](settings), settings)

    @property
    def name(self) -> str:
        if self.settings.backend is LLMBackend.LLAMA_CPP:
            return self.settings.gguf_path or self.settings.bundled_model
        return f"{self.settings.backend.value}:{self.settings.model}"

    @property
    def context_window(self) -> int:
        return self.llm.metadata.context_window

    @property
    def busy(self) -> bool:
        """True while a generation holds the model."""
        return self._lock.locked()

    def count_tokens(self, text: str) -> int:
        model = getattr(self.llm, "_model", None)
        if model is not None and hasattr(model, "tokenize"):
            return len(model.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=True))
        # Remote models: about 3.5 characters per token for English, rounded up to stay inside the window.
        return len(text) * 2 // 7 + 1

    def _acquire(self, cancel: Cancellation | None) -> None:
        if cancel is None:
            self._lock.acquire()
            return
        while not self._lock.acquire(timeout=0.05):
            cancel.check()

    def stream(self, messages: Sequence[ChatMessage], cancel: Cancellation | None = None) -> Iterator[str]:
        """Text deltas of the reply; the model is held for the whole generation.

        `cancel` (or the one of an enclosing `cancellation_scope`) stops the generation with `GenerationCancelled`:
        between tokens, and for the embedded model also inside a forward pass. Closing this generator stops it
        too. Either way the model is released at once."""
        cancel = cancel or _current_cancellation.get()
        self._acquire(cancel)
        watcher = self._watch(cancel) if cancel is not None and self._abort is not None else None
        try:
            if cancel is not None:
                cancel.check()
            chunks = self.llm.stream_chat(list(messages))
            try:
                for chunk in chunks:
                    if cancel is not None:
                        cancel.check()
                    if chunk.delta:
                        yield chunk.delta
            except RuntimeError:
                # llama.cpp reports an aborted forward pass as "llama_decode returned 2".
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
            self._lock.release()

    def _watch(self, cancel: Cancellation) -> _AbortWatcher:
        assert self._abort is not None
        return _AbortWatcher(cancel, self._abort)

    def complete(self, messages: Sequence[ChatMessage], cancel: Cancellation | None = None) -> str:
        return "".join(self.stream(messages, cancel=cancel))
