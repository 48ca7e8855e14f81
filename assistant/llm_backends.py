"""Build the LLM from settings, always as one of LlamaIndex's own LLM classes.

- llama_cpp: `LlamaCPP` over a GGUF file (a bundled one by default), prompts in ChatML (Qwen2.5 and SmolLM2).
- openai_like: `OpenAILike`, any OpenAI-compatible server by base URL, model name and key.
- ollama: `Ollama`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms import LLM

from assistant.bundled_models import bundled_model_path
from assistant.errors import LLMBackendError, ModelFileError
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


class ChatModel:
    """The LlamaIndex LLM plus what the assistant needs around it: a token counter for the context budget and
    a lock, because one llama.cpp context cannot serve two generations at once."""

    def __init__(self, llm: LLM, settings: LLMSettings):
        self.llm = llm
        self.settings = settings
        self._lock = threading.Lock()

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

    def count_tokens(self, text: str) -> int:
        model = getattr(self.llm, "_model", None)
        if model is not None and hasattr(model, "tokenize"):
            return len(model.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        # Remote models: about 3.5 characters per token for English, rounded up to stay inside the window.
        return len(text) * 2 // 7 + 1

    def stream(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        """Text deltas of the reply; the model is held for the whole generation."""
        with self._lock:
            for chunk in self.llm.stream_chat(list(messages)):
                if chunk.delta:
                    yield chunk.delta

    def complete(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(self.stream(messages))
