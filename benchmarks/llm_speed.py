"""How fast the bundled GGUF models answer on this machine: is a first token within 1 s reachable, and with what prompt?

    python benchmarks/llm_speed.py                      # every installed bundled model
    python benchmarks/llm_speed.py --models qwen2.5-coder-0.5b-instruct --repeats 5 --max-load 1.0

llama-cpp-python is used directly, as the app's llama_cpp backend builds it (n_ctx 4096, 2 threads for prompt and
generation, n_batch 512). Prompts are the assistant's real answer prompt (`assistant.prompts.answer_messages` in
ChatML, default brand profile): the system rules and the worked example, which never change (the "fixed prefix"),
then evidence lines from knowledge-base sections and a question, cut to about the asked length. Per model:

- prompt evaluation tokens/s: `Llama.eval` of the first 300 and 800 prompt tokens with an empty KV cache;
- time to first token, `create_completion(stream=True)` (greedy, the app's stop strings) until its first chunk:
  - cold: nothing in the KV cache;
  - warm: the previous call on the same `Llama` was another answer prompt (other passages and question).
    `Llama.generate` keeps the longest common token prefix of its KV cache (`kv_cache_seq_rm` past it) and
    evaluates only the rest; the number of reused tokens is read from `Llama.n_tokens`/`input_ids` before the call
    and checked against llama.cpp's own count of prompt tokens it evaluated (`llama_perf_context`);
- `LlamaRAMCache` (800 tokens): the previous call was a turn for the other brand profile
  (`brands/wix-help-centre.yaml`), whose system prompt departs from ours after 10 tokens, so the live KV cache holds
  nothing useful (without a cache that turn is cold); the cache saved the state after each completion and restores
  the one with the longest common prefix (here the turn before, same brand, other question). Also: bytes per saved
  state (KV cache and the logits buffer llama-cpp-python copies with it), save and restore time where
  create_completion calls them;
- generation tokens/s: 64 greedy tokens after an 800-token prompt (EOS ignored), first token excluded.

Every time is measured twice: wall clock, and the CPU seconds of all the process's threads over the thread count.
On an idle machine the two are close for prompt evaluation; on a shared one the wall clock is mostly waiting for a
core and the CPU figure estimates the idle-machine time (run with OMP_WAIT_POLICY=PASSIVE so that threads waiting
at a barrier sleep instead of spinning and adding CPU time). Each timing is the median of `--repeats` runs, after one
warm-up call per model. "New tokens in 1 s" is a straight-line fit through the two lengths' first-token times,
t = fixed + new_tokens / rate (warm: the tokens after the reused prefix; cold: the whole prompt).
Results: benchmarks/results/*-llm-speed.json and a section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import resource
import statistics
import sys
import time

import llama_cpp
from llama_cpp import Llama, LlamaRAMCache
from llama_cpp.llama import LlamaState

from colbert_att_assistant.assistant.brand import BRANDS_DIR, BrandProfile
from colbert_att_assistant.assistant.bundled_models import BUNDLED_MODELS, BundledGGUF, bundled_model_path
from colbert_att_assistant.assistant.llm_backends import CHATML_STOP, messages_to_chatml
from colbert_att_assistant.assistant.prompts import PromptSource, answer_messages
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.knowledge_base.documents_io import load_documents

N_CTX = 4096
THREADS = 2
N_BATCH = 512
PROMPT_LENGTHS = (300, 800)
GENERATED_TOKENS = 64
OTHER_BRAND = BRANDS_DIR / "wix-help-centre.yaml"
QUESTIONS = (
    "How do I care for my calfskin wallet after it gets wet?",
    "Can I wash my cashmere jumper in the machine, and how do I get rid of moths?",
)


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def wait_for_quiet(max_load: float | None, max_wait_s: float) -> list[float]:
    """Wait until the 1-minute load average is below max_load (or max_wait_s passed); returns the load then."""
    deadline = time.monotonic() + max_wait_s
    while max_load is not None and os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        print(f"load average {load_average()}: waiting for < {max_load}", file=sys.stderr, flush=True)
        time.sleep(15)
    return load_average()


def installed(model: BundledGGUF) -> bool:
    return all(importlib.util.find_spec(package) is not None for package, _ in model.parts)


def passages() -> list[tuple[str, list[str]]]:
    """Public knowledge-base sections as evidence: ('Title > Section', its sentences and list items)."""
    sections = []
    for document in load_documents():
        if document.audience != "public":
            continue
        for block in document.body.split("\n## ")[1:]:
            heading, _, text = block.partition("\n")
            lines = [
                sentence
                for line in text.splitlines()
                for sentence in re.split(r"(?<=[.!?])\s+", line.strip().removeprefix("- "))
                if sentence
            ]
            if lines:
                sections.append((f"{document.title} > {heading.strip()}", lines))
    return sections


class Prompts:
    """The assistant's answer prompts, of about a given token length, for one model's tokenizer."""

    def __init__(self, llm: Llama) -> None:
        self.llm = llm
        self.sections = passages()
        self.brand = BrandProfile.load()
        self.other_brand = BrandProfile.load(OTHER_BRAND)
        empty = messages_to_chatml(answer_messages("?", [], self.brand))
        # The fixed prefix ends where this turn's user message begins.
        self.prefix_text = empty[: empty.rindex("<|im_start|>user\n")]
        self.prefix_tokens = len(self.tokens(self.prefix_text))

    def tokens(self, text: str) -> list[int]:
        # As create_completion tokenizes a prompt: special tokens parsed, no BOS added for Qwen/SmolLM2.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def answer(self, target_tokens: int, question: str, first_section: int, brand: BrandProfile | None = None) -> str:
        """Evidence from whole sections from `first_section` on, lines of the last one dropped to fit the length."""
        brand = brand or self.brand
        chosen: list[tuple[str, list[str]]] = []
        position = first_section
        while True:
            chosen.append(self.sections[position % len(self.sections)])
            position += 1
            if len(self.tokens(self._render(question, chosen, brand))) >= target_tokens:
                break
        heading, lines = chosen[-1]
        for keep in range(len(lines), 0, -1):
            text = self._render(question, [*chosen[:-1], (heading, lines[:keep])], brand)
            if len(self.tokens(text)) <= target_tokens:
                return text
        return self._render(question, [*chosen[:-1], (heading, lines[:1])], brand)

    @staticmethod
    def _render(question: str, sections: list[tuple[str, list[str]]], brand: BrandProfile) -> str:
        sources = [PromptSource(n, heading, tuple(lines)) for n, (heading, lines) in enumerate(sections, start=1)]
        return messages_to_chatml(answer_messages(question, sources, brand))

    def unrelated(self) -> str:
        """A turn for the other brand: its system prompt departs from ours after a few tokens."""
        return self.answer(300, QUESTIONS[1], 20, brand=self.other_brand)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def prompt_evaluated(llm: Llama) -> tuple[int, float]:
    """Prompt tokens llama.cpp decoded in batches since its counters were reset, and its own time for them (ms).

    llama.cpp adds queued tokens to its counters only when it synchronises, so callers synchronise first."""
    llama_cpp.llama_synchronize(llm.ctx)
    data = llama_cpp.llama_perf_context(llm.ctx)
    return int(data.n_p_eval), float(data.t_p_eval_ms)


def first_token(llm: Llama, prompt: str) -> dict:
    """Seconds to the first streamed chunk, the prefix reusable from the KV cache, tokens llama.cpp evaluated."""
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    reusable = Llama.longest_token_prefix(llm._input_ids.tolist(), tokens)
    llama_cpp.llama_synchronize(llm.ctx)
    llama_cpp.llama_perf_context_reset(llm.ctx)
    start, start_cpu = time.perf_counter(), time.process_time()
    stream = llm.create_completion(prompt, max_tokens=4, temperature=0.0, top_k=1, stop=CHATML_STOP, stream=True)
    next(iter(stream))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    evaluated, llama_ms = prompt_evaluated(llm)
    for _ in stream:  # finish the completion (and the cache save) outside the timing
        pass
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "prompt_tokens": len(tokens),
        "reusable": reusable,
        "evaluated": evaluated,
        "llama_p_eval_ms": llama_ms,
    }


def clear(llm: Llama) -> None:
    llm.reset()
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)


def summarise(runs: list[dict]) -> dict:
    return {
        "ttft_s": median([run["seconds"] for run in runs]),
        "ttft_s_all": [round(run["seconds"], 3) for run in runs],
        # CPU seconds of all threads over the thread count: what the wall time would be on an idle machine if the
        # work split evenly (it does for prompt batches; sampling is serial, so this is a lower bound).
        "ttft_cpu_per_thread_s": median([run["cpu_seconds"] / THREADS for run in runs]),
        "prompt_tokens": runs[0]["prompt_tokens"],
        # At the first chunk llama.cpp has decoded exactly the prompt tokens it did not reuse.
        "reused_tokens": sorted({run["prompt_tokens"] - run["evaluated"] for run in runs}),
        "reusable_tokens": sorted({run["reusable"] for run in runs}),
        "evaluated_tokens": sorted({run["evaluated"] for run in runs}),
        # llama.cpp's own prompt-evaluation time for the tokens it evaluated, without Python and sampling.
        "llama_prompt_tokens_per_s": round(
            1000 * statistics.median(run["evaluated"] / run["llama_p_eval_ms"] for run in runs), 1
        ),
    }


def fit(ttft: dict, kind: str, measure: str = "ttft_s") -> dict:
    """Straight line t = fixed + new_tokens / rate through the two prompt lengths; the new tokens that fit in 1 s."""
    (n1, t1), (n2, t2) = (
        (ttft[str(n)][kind]["prompt_tokens"] - ttft[str(n)][kind]["reused_tokens"][0], ttft[str(n)][kind][measure])
        for n in PROMPT_LENGTHS
    )
    if t2 <= t1 or n2 <= n1:
        return {"fixed_s": None, "new_tokens_per_s": None, "new_tokens_within_1s": None}
    rate = (n2 - n1) / (t2 - t1)
    fixed = t1 - n1 / rate
    within = int((1 - fixed) * rate)
    return {"fixed_s": round(fixed, 3), "new_tokens_per_s": round(rate, 1), "new_tokens_within_1s": within}


def progress(model: str, phase: str, started: float) -> None:
    elapsed = time.perf_counter() - started
    print(f"{model}: {phase} at {elapsed:.0f} s, load {load_average()}", file=sys.stderr, flush=True)


def prompt_eval_speed(llm: Llama, tokens: list[int], repeats: int) -> dict:
    def evaluate() -> None:
        clear(llm)
        llm.eval(tokens)
        llama_cpp.llama_synchronize(llm.ctx)  # llama_decode may return before the backend has finished

    times, cpu_times = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        evaluate()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    return {
        "tokens": len(tokens),
        "seconds": median(times),
        "tokens_per_s": round(len(tokens) / median(times), 1),
        "cpu_seconds": median(cpu_times),
        "tokens_per_cpu_per_thread_s": round(len(tokens) * THREADS / median(cpu_times), 1),
    }


def first_token_cold_and_warm(llm: Llama, first: str, other: str, repeats: int) -> dict:
    cold, warm = [], []
    for _ in range(repeats):
        clear(llm)
        cold.append(first_token(llm, first))
        warm.append(first_token(llm, other))  # the previous call was `first`: same fixed prefix, other evidence
    return {"cold": summarise(cold), "warm": summarise(warm)}


class StateTimer:
    """Times `save_state`/`load_state` where create_completion calls them (a save after every completion, a
    restore before one), by wrapping them on this one `Llama` object. Timed apart from create_completion, a
    restore looks cheaper: its 300 MB logits copy lands in memory that is already paged in."""

    def __init__(self, llm: Llama) -> None:
        self.llm, self.saves, self.restores = llm, [], []
        self.save, self.restore = llm.save_state, llm.load_state
        self.sizes: tuple[int, int] = (0, 0)

    def __enter__(self) -> StateTimer:
        def save() -> LlamaState:
            start = time.perf_counter()
            state = self.save()
            self.saves.append(time.perf_counter() - start)
            self.sizes = (state.llama_state_size, state.scores.nbytes)
            return state

        def restore(state: LlamaState) -> None:
            start = time.perf_counter()
            self.restore(state)
            self.restores.append(time.perf_counter() - start)

        self.llm.save_state, self.llm.load_state = save, restore
        return self

    def __exit__(self, *_: object) -> None:
        del self.llm.save_state, self.llm.load_state  # the class's methods again


def ram_cache_costs(llm: Llama, first: str, other: str, unrelated: str, repeats: int) -> dict:
    """TTFT for `other` right after another brand's turn, its prefix restored from the state saved after `first`."""
    runs = []
    with StateTimer(llm) as timer:
        for _ in range(repeats):
            # A fresh cache per run, so that the state restored for `other` is the one of `first` (other question).
            cache = LlamaRAMCache(capacity_bytes=2 << 30)
            llm.set_cache(cache)
            first_token(llm, first)
            first_token(llm, unrelated)
            runs.append(first_token(llm, other))
        entries, cache_mb = len(cache.cache_state), round(cache.cache_size / 2**20, 1)
        llm.set_cache(None)
    return {
        "after_other_brand": summarise(runs),
        "state_mb": round(timer.sizes[0] / 2**20, 1),
        "scores_mb": round(timer.sizes[1] / 2**20, 1),
        "save_s": median(timer.saves),
        "restore_s": median(timer.restores),
        "saves": len(timer.saves),
        "restores": len(timer.restores),
        "entries_after_three_calls": entries,
        "cache_mb_after_three_calls": cache_mb,
    }


def generation_speed(llm: Llama, first: str, other: str, repeats: int) -> dict:
    """Greedy tokens/s after `other` (its prefix warm from `first`), EOS ignored, the first token not counted."""
    rates, cpu_rates = [], []
    for _ in range(repeats):
        first_token(llm, first)
        stamps = []
        for _token in llm.generate(llm.tokenize(other.encode(), add_bos=False, special=True), top_k=1, temp=0.0):
            stamps.append((time.perf_counter(), time.process_time()))
            if len(stamps) == GENERATED_TOKENS:
                break
        rates.append((len(stamps) - 1) / (stamps[-1][0] - stamps[0][0]))
        cpu_rates.append((len(stamps) - 1) * THREADS / (stamps[-1][1] - stamps[0][1]))
    return {
        "tokens_per_s": round(statistics.median(rates), 1),
        # Tokens per CPU second times the thread count: an upper bound for an idle machine (one token's work
        # splits less evenly over threads than a prompt batch).
        "tokens_per_cpu_per_thread_s": round(statistics.median(cpu_rates), 1),
    }


def measure_model(model: BundledGGUF, repeats: int) -> dict:
    started = time.perf_counter()
    path = bundled_model_path(model.name)
    llm = Llama(
        model_path=str(path), n_ctx=N_CTX, n_threads=THREADS, n_threads_batch=THREADS, n_batch=N_BATCH, verbose=False
    )
    result: dict = {"model": model.name, "file": str(path), "load_s": round(time.perf_counter() - started, 2)}
    prompts = Prompts(llm)
    result["fixed_prefix_tokens"] = prompts.prefix_tokens
    answers = {
        length: (prompts.answer(length, QUESTIONS[0], 0), prompts.answer(length, QUESTIONS[1], 7))
        for length in PROMPT_LENGTHS
    }
    longest = answers[PROMPT_LENGTHS[-1]]
    first_token(llm, longest[1])  # warm-up: the weights paged in, buffers allocated

    progress(model.name, "prompt evaluation", started)
    result["prompt_eval"] = {
        str(n): prompt_eval_speed(llm, prompts.tokens(answers[n][0])[:n], repeats) for n in PROMPT_LENGTHS
    }
    progress(model.name, "first token", started)
    result["ttft"] = {str(n): first_token_cold_and_warm(llm, *answers[n], repeats) for n in PROMPT_LENGTHS}
    progress(model.name, "LlamaRAMCache", started)
    result["ram_cache"] = ram_cache_costs(llm, *longest, prompts.unrelated(), repeats)
    progress(model.name, "generation", started)
    result["generation"] = generation_speed(llm, *longest, repeats)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["one_second_budget"] = {kind: fit(result["ttft"], kind) for kind in ("cold", "warm")}
    result["one_second_budget_cpu_per_thread"] = {
        kind: fit(result["ttft"], kind, "ttft_cpu_per_thread_s") for kind in ("cold", "warm")
    }
    progress(model.name, "done", started)
    return result


def table(results: list[dict]) -> list[str]:
    """Two rows per model: wall clock as measured, and CPU seconds over the thread count (an idle-machine estimate)."""
    a, b = (str(n) for n in PROMPT_LENGTHS)
    lines = [
        "",
        f"| model | measure | prompt eval tok/s ({a} / {b} tokens) | TTFT cold {a} / {b} s "
        f"| TTFT warm prefix {a} / {b} s | TTFT after another brand, RAM cache, {b} s | gen tok/s "
        "| new tokens in 1 s (warm prefix) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        pe, tt, cache = r["prompt_eval"], r["ttft"], r["ram_cache"]["after_other_brand"]
        for label, rate, ttft, gen, budget in (
            ("wall clock", "tokens_per_s", "ttft_s", "tokens_per_s", "one_second_budget"),
            (
                f"CPU s / {THREADS} threads",
                "tokens_per_cpu_per_thread_s",
                "ttft_cpu_per_thread_s",
                "tokens_per_cpu_per_thread_s",
                "one_second_budget_cpu_per_thread",
            ),
        ):
            lines.append(
                f"| {r['model']} | {label} | {pe[a][rate]} / {pe[b][rate]} "
                f"| {tt[a]['cold'][ttft]} / {tt[b]['cold'][ttft]} | {tt[a]['warm'][ttft]} / {tt[b]['warm'][ttft]} "
                f"| {cache[ttft]} | {r['generation'][gen]} | {r[budget]['warm']['new_tokens_within_1s']} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None, help="Bundled model names (default: all installed).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-load", type=float, default=None, help="Wait for a 1-min load average below this.")
    parser.add_argument("--max-wait-s", type=float, default=600.0)
    parser.add_argument("--no-record", action="store_true", help="Print only; write nothing.")
    args = parser.parse_args()

    names = args.models or [name for name, model in BUNDLED_MODELS.items() if installed(model)]
    header = run_header("benchmarks/llm_speed.py " + " ".join(sys.argv[1:]))
    system_info = llama_cpp.llama_print_system_info().decode()
    results, loads = [], {}
    for name in names:
        loads[name] = {"before": wait_for_quiet(args.max_load, args.max_wait_s)}
        print(f"{name}: load average {loads[name]['before']}", file=sys.stderr, flush=True)
        results.append(measure_model(BUNDLED_MODELS[name], args.repeats))
        loads[name]["after"] = load_average()
        print(results[-1], file=sys.stderr, flush=True)
    lines = table(results)
    print("\n".join(lines))
    if args.no_record:
        return
    body = [
        f"- llama-cpp-python {llama_cpp.__version__}, n_ctx {N_CTX}, {THREADS} threads (prompt and generation), "
        f"n_batch {N_BATCH}, flash attention off (the app's settings); {system_info.strip()}",
        "- prompts: the assistant's answer prompt (fixed prefix = system rules + worked example: "
        + ", ".join(f"{r['model']} {r['fixed_prefix_tokens']} tokens" for r in results)
        + ") then knowledge-base evidence lines and a question, cut to 300 / 800 tokens; medians of "
        f"{args.repeats} runs after a warm-up",
        "- TTFT = create_completion(stream=True) to its first chunk. warm: previous call another answer prompt "
        "(llama.cpp kept the common prefix; reused tokens by its own count: "
        + ", ".join(f"{r['model']} {r['ttft'][str(PROMPT_LENGTHS[-1])]['warm']['reused_tokens']}" for r in results)
        + "); after another brand: previous call a turn for brands/wix-help-centre.yaml (10 tokens in common), "
        "state restored by LlamaRAMCache (reused tokens: "
        + ", ".join(f"{r['model']} {r['ram_cache']['after_other_brand']['reused_tokens']}" for r in results)
        + ")",
        "- LlamaRAMCache per saved state: "
        + "; ".join(
            f"{r['model']} {r['ram_cache']['state_mb']} MB KV + {r['ram_cache']['scores_mb']} MB logits, "
            f"save {r['ram_cache']['save_s']} s (after every completion, outside the TTFT), restore "
            f"{r['ram_cache']['restore_s']} s ({r['ram_cache']['restores']} restores in {args.repeats} runs), as "
            "create_completion calls them"
            for r in results
        ),
        "- new tokens in 1 s: straight-line fit t = fixed + new/rate through the two lengths' TTFTs (warm: tokens "
        "after the reused prefix; cold: the whole prompt): "
        + "; ".join(
            f"{r['model']} {label} warm fixed {b['warm']['fixed_s']} s, {b['warm']['new_tokens_per_s']} tokens/s, "
            f"{b['warm']['new_tokens_within_1s']} tokens in 1 s, cold {b['cold']['new_tokens_within_1s']} tokens in 1 s"
            for r in results
            for label, b in (("wall", r["one_second_budget"]), ("CPU/threads", r["one_second_budget_cpu_per_thread"]))
        ),
        "- 'CPU s / threads': CPU seconds of all the process's threads over the thread count, the wall time an idle "
        "machine would need if the work split evenly over the threads (prompt batches do; sampling and one-token "
        "decoding less so, so it is an optimistic estimate); on this shared machine the wall clock is mostly time "
        "spent waiting for a core",
        "- model load s / peak RSS MB: "
        + "; ".join(f"{r['model']} {r['load_s']} / {r['peak_rss_mb']}" for r in results),
        f"- OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}",
        "- load average (1/5/15 min) before / after each model: "
        + "; ".join(f"{name} {load['before']} / {load['after']}" for name, load in loads.items()),
        *lines,
    ]
    path = record_run(
        "llm-speed",
        "LLM speed: bundled GGUF models through llama-cpp-python",
        {
            **header,
            "llama_cpp_python": llama_cpp.__version__,
            "system_info": system_info,
            "loads": loads,
            "results": results,
        },
        body,
    )
    print(f"wrote {path} and a section of benchmarks/RESULTS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
