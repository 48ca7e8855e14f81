"""How many customers at once: the embedded model behind one lock against llama.cpp's server with parallel slots.

    python benchmarks/serving_load.py [--customers 1,5,10,20] [--slots 2,4] [--no-record]
    python benchmarks/serving_load.py --layer app [--customers 5,10,20] [--slots 2,4] [--queue-size 8]

`--layer app` measures through the whole app instead (below); the default, `--layer llm`, at the LLM layer:

Measured at the LLM layer, on loopback only: each simulated customer sends 2 messages one after the other (the
second carries the first exchange as history), every answer capped at 96 tokens. Each message is a real chat
prompt in the assistant's own format (`assistant.prompts.answer_messages`: system rules, worked example, 3
passages from knowledge_base/documents, the question), about 600 tokens. All customers of a round start
together, the worst case for waiting.

Backends, interleaved for each N so that a change in the machine's load hits all of them alike:
- `lock`: today's path, one in-process llama.cpp model (`ChatModel`, llama_cpp backend) that serves one
  generation at a time behind its lock;
- `slots=K`: `llama-server` started by `colbert_att_assistant.assistant.llm_server` with K parallel slots (continuous
batching), each
  customer streaming through the `openai_like` backend (LlamaIndex `OpenAILike`) with its own client.
Both use all cores (threads = os.cpu_count()) and greedy decoding.

Reported per backend and N: answers/s, p50 / p95 latency of a whole answer, p50 / p95 time to the first token,
errors, tokens/s, and the load average before and after. Bounded: each request has a timeout and each round a
deadline. Appends to benchmarks/RESULTS.md and writes benchmarks/results/<stamp>-serving-load.json.

Through the app (`--layer app`): one app per backend, each the real FastAPI app
(`colbert_att_assistant.webapp.create_app`) served by
uvicorn on 127.0.0.1 over the same index of knowledge_base/documents, with the app's own line in front of the
model (as many answers at once as the backend admits, `--queue-size` waiting, 503 + Retry-After beyond,
`--deadline-s` per request). Each customer sends one message to /api/chat/stream; answers capped at 64 tokens;
all customers of a round start together. Backends, interleaved for each N: `embedded` (the llama_cpp backend,
one answer at a time) and `llama_server slots=K` (the app starting llama-server itself). Reported: answered,
refused with 503, stopped by the deadline (504), other errors, answers/s, p50 / p95 of a whole answer and of the
first token for the answered ones, and the load average.
"""

from __future__ import annotations

import os

# Before llama.cpp's OpenMP runtime starts: idle threads sleep instead of spinning, in this process (the
# embedded model) and in the servers it starts (they inherit it), so that both sides wait the same way. On this
# shared machine spinning made decoding about 10x slower (RESULTS.md). OMP_WAIT_POLICY=ACTIVE measures the
# other way.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from colbert_att_assistant.assistant.brand import BrandProfile
from colbert_att_assistant.assistant.llm_backends import ChatModel
from colbert_att_assistant.assistant.llm_server import LLMServerSettings, ManagedServer, start_llm_server
from colbert_att_assistant.assistant.prompts import PromptSource, answer_messages
from colbert_att_assistant.assistant.settings import LLMSettings
from colbert_att_assistant.evals.results_log import record_run, run_header

DOCUMENTS = Path(__file__).resolve().parent.parent / "knowledge_base" / "documents"
MAX_TOKENS = 96
MESSAGES_PER_CUSTOMER = 2
REQUEST_TIMEOUT_S = 300.0
LINES_PER_SOURCE = 7  # gives prompts of about 600 tokens
# Customer questions in pairs: a first question and a follow-up on the same subject.
CONVERSATIONS = [
    ("How do I care for my calfskin wallet after it gets wet?", "And how long should it dry before I use it?"),
    ("How should I store pearls?", "Can I wear them in the shower?"),
    ("How much does express delivery cost?", "Can I track the parcel?"),
    ("How do I remove a wine stain from silk?", "What if the stain is old?"),
    ("Is my watch water resistant for swimming?", "How often should it be serviced?"),
    ("How do I clean suede shoes?", "What about rain marks?"),
    ("Can I return a gift without a receipt?", "How long does the refund take?"),
    ("How should I store a cashmere sweater for the summer?", "How do I remove pilling?"),
    ("How do I keep silver jewellery from tarnishing?", "Can I use toothpaste to polish it?"),
    ("How do I store my handbag so it keeps its shape?", "Should I keep it in the dust bag?"),
]

logger = logging.getLogger("serving_load")


@dataclass
class Section:
    document: str
    heading: str
    lines: list[str]
    words: set[str]


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3}


def load_sections(documents: Path = DOCUMENTS) -> list[Section]:
    """Each `##` section of the public documents, as evidence lines (sentences and list items)."""
    sections = []
    for path in sorted(documents.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        if "audience: internal" in text:
            continue
        title = next((line[2:] for line in text.splitlines() if line.startswith("# ")), path.stem)
        for block in re.split(r"\n## ", text)[1:]:
            heading, _, body = block.partition("\n")
            lines = []
            for raw in body.splitlines():
                line = re.sub(r"^(?:[-*]|\d+\.)\s*", "", raw.strip())
                if line and not line.startswith("|") and not line.startswith("#"):
                    lines.extend(s for s in re.split(r"(?<=[.!?])\s+", line) if s)
            if lines:
                sections.append(Section(path.stem, f"{title} > {heading.strip()}", lines, _words(block)))
    return sections


def prompt_for(question: str, sections: Sequence[Section], history: Sequence[ChatMessage] = ()) -> list[ChatMessage]:
    """The assistant's answer prompt with the 3 sections sharing most words with the question, 7 lines each."""
    wanted = _words(question)
    best = sorted(sections, key=lambda s: (-len(wanted & s.words), s.document, s.heading))[:3]
    sources = [PromptSource(n, s.heading, tuple(s.lines[:LINES_PER_SOURCE])) for n, s in enumerate(best, start=1)]
    messages = answer_messages(question, sources, BrandProfile.load())
    # The follow-up carries the first exchange, as a chat memory would, just before the new question.
    return [*messages[:-1], *history, messages[-1]]


@dataclass
class Request:
    customer: int
    message: int
    start: float
    first_token_s: float | None = None
    total_s: float | None = None
    tokens: int = 0
    error: str | None = None


Generate = Callable[[list[ChatMessage]], Iterator[str]]


def run_customer(customer: int, generate: Generate, sections: list[Section], deadline: float,
                 results: list[Request]) -> None:  # fmt: skip
    first, follow_up = CONVERSATIONS[customer % len(CONVERSATIONS)]
    history: list[ChatMessage] = []
    for number, question in enumerate((first, follow_up)[:MESSAGES_PER_CUSTOMER]):
        if time.monotonic() > deadline:
            results.append(Request(customer, number, time.monotonic(), error="round deadline passed"))
            return
        request = Request(customer, number, time.monotonic())
        results.append(request)
        text = []
        try:
            for delta in generate(prompt_for(question, sections, history)):
                if request.first_token_s is None:
                    request.first_token_s = time.monotonic() - request.start
                request.tokens += 1
                text.append(delta)
            request.total_s = time.monotonic() - request.start
        except Exception as exc:  # a failed request is counted, never fatal to the round
            request.error = f"{type(exc).__name__}: {exc}"[:300]
            return
        history = [
            ChatMessage(role=MessageRole.USER, content=question),
            ChatMessage(role=MessageRole.ASSISTANT, content="".join(text)),
        ]


@dataclass
class Round:
    backend: str
    customers: int
    wall_s: float
    answers: int
    errors: int
    answers_per_s: float
    tokens_per_s: float
    p50_s: float | None
    p95_s: float | None
    first_token_p50_s: float | None
    first_token_p95_s: float | None
    load_before: str
    load_after: str
    error_samples: list[str] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_round(backend: str, generate: Generate, customers: int, sections: list[Section], deadline_s: float) -> Round:
    load_before = _loadavg()
    results: list[Request] = []
    deadline = time.monotonic() + deadline_s
    threads = [
        threading.Thread(target=run_customer, args=(c, generate, sections, deadline, results), daemon=True)
        for c in range(customers)
    ]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline + REQUEST_TIMEOUT_S - time.monotonic()))
    wall = time.monotonic() - start
    done = [r for r in results if r.error is None and r.total_s is not None]
    failed = [r for r in results if r.error is not None]
    latencies = [r.total_s for r in done if r.total_s is not None]
    first = [r.first_token_s for r in done if r.first_token_s is not None]
    return Round(
        backend=backend,
        customers=customers,
        wall_s=round(wall, 1),
        answers=len(done),
        errors=len(failed) + sum(t.is_alive() for t in threads),
        answers_per_s=round(len(done) / wall, 3),
        tokens_per_s=round(sum(r.tokens for r in done) / wall, 1),
        p50_s=_pct(latencies, 50),
        p95_s=_pct(latencies, 95),
        first_token_p50_s=_pct(first, 50),
        first_token_p95_s=_pct(first, 95),
        load_before=load_before,
        load_after=_loadavg(),
        error_samples=sorted({r.error for r in failed if r.error})[:3],
    )


def lock_backend(threads: int) -> tuple[Generate, Callable[[list[ChatMessage]], int]]:
    model = ChatModel.from_settings(LLMSettings(max_new_tokens=MAX_TOKENS, threads=threads))

    def count(messages: list[ChatMessage]) -> int:
        return model.count_tokens("".join(m.content or "" for m in messages))

    return model.stream, count


def server_backend(server: ManagedServer) -> Generate:
    settings = server.llm_settings(LLMSettings(max_new_tokens=MAX_TOKENS, request_timeout_s=REQUEST_TIMEOUT_S))

    def generate(messages: list[ChatMessage]) -> Iterator[str]:
        # One client per customer, as separate app requests would have; the server does the queueing.
        llm = ChatModel.from_settings(settings).llm
        for chunk in llm.stream_chat(messages):
            if chunk.delta:
                yield chunk.delta

    return generate


def main(
    customers: Annotated[str, typer.Option(help="Comma-separated numbers of concurrent customers.")] = "1,5,10,20",
    slots: Annotated[str, typer.Option(help="Comma-separated parallel-slot counts for llama-server.")] = "2,4",
    round_deadline_s: Annotated[float, typer.Option(help="No new message starts after this many s.")] = 900.0,
    record: Annotated[bool, typer.Option(help="Append to RESULTS.md.")] = True,
    layer: Annotated[str, typer.Option(help="llm: the LLM layer alone; app: through the whole app.")] = "llm",
    queue_size: Annotated[int, typer.Option(help="app: requests that may wait for a slot.")] = 8,
    deadline_s: Annotated[float, typer.Option(help="app: per-request deadline (waiting plus answering).")] = 120.0,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the results
    header = run_header()
    counts = [int(n) for n in customers.split(",") if n]
    slot_counts = [int(n) for n in slots.split(",") if n]
    threads = os.cpu_count() or 1
    if layer == "app":
        app_layer(header, counts, slot_counts, threads, queue_size, deadline_s, record)
        return
    if layer != "llm":
        raise typer.BadParameter(f"--layer must be llm or app, not {layer!r}")
    sections = load_sections()

    lock_generate, count_tokens = lock_backend(threads)
    prompt_tokens = [count_tokens(prompt_for(q, sections)) for q, _ in CONVERSATIONS]
    logger.info("prompt tokens (first messages): %s", prompt_tokens)
    policy = os.environ["OMP_WAIT_POLICY"]
    spin = policy.upper() == "ACTIVE"
    servers = {
        k: start_llm_server(LLMServerSettings(parallel_slots=k, threads=threads, spin_wait=spin)) for k in slot_counts
    }
    backends: dict[str, Generate] = {"lock": lock_generate}
    backends.update({f"slots={k}": server_backend(server) for k, server in servers.items()})
    rounds: list[Round] = []
    try:
        # One warm-up answer each, not counted: the first call pays for loading pages and building caches.
        for name, generate in backends.items():
            list(generate(prompt_for(CONVERSATIONS[0][0], sections)))
            logger.info("warmed up %s", name)
        for n in counts:
            for name, generate in backends.items():
                result = run_round(name, generate, n, sections, round_deadline_s)
                logger.info("%s", asdict(result))
                rounds.append(result)
    finally:
        for server in servers.values():
            server.stop()

    body = [
        f"- {MESSAGES_PER_CUSTOMER} messages per customer, answers capped at {MAX_TOKENS} tokens, all customers "
        f"start together; OMP_WAIT_POLICY={policy} for both; prompts {min(prompt_tokens)}–{max(prompt_tokens)} "
        f"tokens (assistant prompt format, 3 knowledge-base passages); {threads} threads per backend; "
        "bundled Qwen2.5-Coder-0.5B Q4; loopback only",
        "",
        "| backend | N | answers/s | p50 s | p95 s | first token p50 s | p95 s | tokens/s | errors | wall s "
        "| load before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        body.append(
            f"| {r.backend} | {r.customers} | {r.answers_per_s} | {r.p50_s} | {r.p95_s} | {r.first_token_p50_s} "
            f"| {r.first_token_p95_s} | {r.tokens_per_s} | {r.errors} | {r.wall_s} | {r.load_before} → "
            f"{r.load_after} |"
        )
    result = {
        **header,
        "omp_wait_policy": policy,
        "prompt_tokens": prompt_tokens,
        "rounds": [asdict(r) for r in rounds],
    }
    print("\n".join(body))
    if record:
        record_run("serving-load", "serving load: one lock vs llama-server parallel slots", result, body)


# ---- through the app ------------------------------------------------------------------------------------------------

APP_MAX_TOKENS = 64


@dataclass
class AppRequest:
    customer: int
    start: float
    status: int | None = None  # 200 answered; 503 refused at the door; 504 stopped by the deadline; ...
    first_token_s: float | None = None
    total_s: float | None = None
    tokens: int = 0
    waited_at: int | None = None  # first place in the line, when the client was told one
    abstained: bool | None = None  # an answered request that handed over instead of answering
    error: str | None = None


def app_customer(base: str, customer: int, results: list[AppRequest]) -> None:
    """One customer, one message, through /api/chat/stream; every outcome is recorded, none raises."""
    question = CONVERSATIONS[customer % len(CONVERSATIONS)][0]
    request = AppRequest(customer, time.monotonic())
    results.append(request)
    try:
        with httpx.stream(
            "POST", f"{base}/api/chat/stream", json={"message": question}, timeout=REQUEST_TIMEOUT_S
        ) as response:
            request.status = response.status_code
            if response.status_code != 200:
                response.read()
                request.total_s = time.monotonic() - request.start
                return
            event = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                    continue
                if not line.startswith("data: "):
                    continue
                if event == "queued" and request.waited_at is None:
                    request.waited_at = json.loads(line.removeprefix("data: "))["position"]
                elif event == "token":
                    if request.first_token_s is None:
                        request.first_token_s = time.monotonic() - request.start
                    request.tokens += 1
                elif event in ("done", "error"):
                    data = json.loads(line.removeprefix("data: "))
                    if event == "error":
                        request.status = int(data["status"])
                    else:
                        request.abstained = bool(data["abstained"])
                    request.total_s = time.monotonic() - request.start
                    return
            request.error = "the stream ended without done or error"
    except Exception as exc:  # a failed request is counted, never fatal to the round
        request.error = f"{type(exc).__name__}: {exc}"[:300]


@dataclass
class AppRound:
    backend: str
    customers: int
    wall_s: float
    answered: int
    refused_503: int
    deadline_504: int
    errors: int
    told_their_place: int
    abstained: int
    answers_per_s: float
    tokens_per_s: float
    p50_s: float | None
    p95_s: float | None
    first_token_p50_s: float | None
    first_token_p95_s: float | None
    load_before: str
    load_after: str
    error_samples: list[str] = field(default_factory=list)


def app_round(backend: str, base: str, customers: int) -> AppRound:
    load_before = _loadavg()
    results: list[AppRequest] = []
    threads = [threading.Thread(target=app_customer, args=(base, c, results), daemon=True) for c in range(customers)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, start + REQUEST_TIMEOUT_S + 30 - time.monotonic()))
    wall = time.monotonic() - start
    answered = [r for r in results if r.status == 200 and r.error is None and r.total_s is not None]
    others = [r for r in results if r not in answered and r.status not in (503, 504)]
    latencies = [r.total_s for r in answered if r.total_s is not None]
    first = [r.first_token_s for r in answered if r.first_token_s is not None]
    return AppRound(
        backend=backend,
        customers=customers,
        wall_s=round(wall, 1),
        answered=len(answered),
        refused_503=sum(r.status == 503 for r in results),
        deadline_504=sum(r.status == 504 for r in results),
        errors=len(others) + sum(t.is_alive() for t in threads),
        told_their_place=sum(r.waited_at is not None for r in results),
        abstained=sum(bool(r.abstained) for r in answered),
        answers_per_s=round(len(answered) / wall, 3),
        tokens_per_s=round(sum(r.tokens for r in answered) / wall, 1),
        p50_s=_pct(latencies, 50),
        p95_s=_pct(latencies, 95),
        first_token_p50_s=_pct(first, 50),
        first_token_p95_s=_pct(first, 95),
        load_before=load_before,
        load_after=_loadavg(),
        error_samples=sorted({r.error or f"HTTP {r.status}" for r in others})[:3],
    )


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_app(assistant: Any, workdir: Path, queue_size: int, deadline_s: float) -> tuple[str, Any, threading.Thread]:
    """The real app on a free loopback port, in a thread: (base URL, uvicorn server, thread)."""
    from colbert_att_assistant.webapp import create_app
    from colbert_att_assistant.webapp.server import build_server
    from colbert_att_assistant.webapp.settings import AppSettings

    settings = AppSettings(
        staff_password="benchmark only",
        log_path=workdir / "log.sqlite3",
        sessions_path=workdir / "sessions.sqlite3",
        rate_limit_messages=100_000,  # every customer comes from 127.0.0.1
        queue_size=queue_size,
        request_deadline_s=deadline_s,
    )
    port = _free_port()
    server = build_server(create_app(assistant, settings), settings, host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return base, server, thread
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"the app on {base} did not come up")


def app_layer(header: dict[str, str], counts: list[int], slot_counts: list[int], threads: int, queue_size: int,
              deadline_s: float, record: bool) -> None:  # fmt: skip
    from colbert_att_assistant.assistant import Assistant, AssistantSettings
    from colbert_att_assistant.knowledge_base.ingest import index_brand_documents

    llm = LLMSettings(max_new_tokens=APP_MAX_TOKENS, threads=threads)
    settings = AssistantSettings.load(llm=llm.model_dump())
    models = {"embedded": ChatModel.from_settings(llm)}
    apps: dict[str, tuple[str, Any, threading.Thread]] = {}
    rounds: list[AppRound] = []
    try:
        for k in slot_counts:
            server_llm = LLMSettings(**{**llm.model_dump(), "backend": "llama_server", "parallel_slots": k})
            models[f"llama_server slots={k}"] = ChatModel.from_settings(server_llm)
        index, _ = index_brand_documents(settings)
        base_assistant = Assistant.from_settings(settings, chat_model=models["embedded"], index=index)
        with tempfile.TemporaryDirectory(prefix="serving-load-") as scratch:
            for name, model in models.items():
                assistant = Assistant(base_assistant.index, model, settings, brand=base_assistant.brand)
                workdir = Path(scratch) / re.sub(r"\W+", "-", name)
                workdir.mkdir()
                apps[name] = serve_app(assistant, workdir, queue_size, deadline_s)
            # One warm-up answer per app, not counted: the first call pays for loading pages and building caches.
            for name, (base, _, _) in apps.items():
                warm: list[AppRequest] = []
                app_customer(base, 0, warm)
                logger.info("warmed up %s: HTTP %s %s", name, warm[0].status, warm[0].error or "")
            for n in counts:
                for name, (base, _, _) in apps.items():
                    result = app_round(name, base, n)
                    logger.info("%s", asdict(result))
                    rounds.append(result)
            for _, server, thread in apps.values():
                server.should_exit = True
                thread.join(timeout=30)
    finally:
        for model in models.values():
            model.close()

    body = [
        f"- through the app: real FastAPI app + uvicorn on 127.0.0.1 per backend, same index "
        f"(knowledge_base/documents), /api/chat/stream, 1 message per customer, answers capped at {APP_MAX_TOKENS} "
        f"tokens, all customers start together; the app's line: as many answers at once as the backend admits, "
        f"{queue_size} waiting, 503 beyond, deadline {deadline_s:g} s; {threads} threads per backend; "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; bundled Qwen2.5-Coder-0.5B Q4; loopback only",
        "",
        "| backend | N | answered (abstained) | 503 | 504 | other errors | told place | answers/s | p50 s | p95 s "
        "| first token p50 s | p95 s | token events/s | wall s | load before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        body.append(
            f"| {r.backend} | {r.customers} | {r.answered} ({r.abstained}) | {r.refused_503} | {r.deadline_504} "
            f"| {r.errors} "
            f"| {r.told_their_place} | {r.answers_per_s} | {r.p50_s} | {r.p95_s} | {r.first_token_p50_s} "
            f"| {r.first_token_p95_s} | {r.tokens_per_s} | {r.wall_s} | {r.load_before} → {r.load_after} |"
        )
    result = {**header, "layer": "app", "rounds": [asdict(r) for r in rounds]}
    print("\n".join(body))
    if record:
        record_run("serving-load-app", "serving load through the app: embedded vs llama_server slots", result, body)


if __name__ == "__main__":
    typer.run(main)
