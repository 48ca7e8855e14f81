"""Query encoding speed: the ways to run the 32/64-piece MiniLM query pass on this CPU, interleaved in one run.

    .venv/bin/python benchmarks/query_encoding.py --index-dir indexes/scifact

Every variant is a `ColBERTAttEncoder` sharing one checkpoint, differing only in `query_backend` and threads
(plus the reference under `torch.inference_mode`). The SciFact test queries are timed one at a time through
`encode_query` (tokenisation and post-processing included), in blocks of `--block` queries; within each block
every variant runs once, in an order that rotates between blocks, so that the load of this shared machine falls
on all of them alike. Each variant's token vectors and weights A are compared with the reference (torch, 2
threads) over all queries, and when the SciFact index exists each variant's encodings are searched (ColBERT-Att,
top 10) for nDCG@10. A variant holds the tolerance when max |vector difference| <= 1e-5, min token cosine
>= 0.9999, max |A difference| <= 1e-6 and nDCG@10 within 0.2 of the reference.
Appends to benchmarks/RESULTS.md (with the load average) and writes benchmarks/results/<stamp>-query-encoding.json.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import colbert_att_assistant  # noqa: F401  before torch: the package sets libgomp's spin count, read as torch loads

# isort: split

import numpy as np
import torch
import typer

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder, EncodedText
from colbert_att_assistant.retriever.settings import CandidateSettings, EncoderSettings

MAX_VECTOR_DIFFERENCE = 1e-5
MIN_COSINE = 0.9999
MAX_WEIGHT_DIFFERENCE = 1e-6
MAX_NDCG_DIFFERENCE = 0.2
REFERENCE = "torch t2"
# Timed end to end (encode + search, top 10) on the index, interleaved the same way.
END_TO_END = ("torch t2", "torch t1", "onnxruntime t1", "onnxruntime t2")


@dataclass
class Variant:
    name: str
    backend: str
    threads: int
    inference_mode: bool = False
    compiled: bool = False  # torch.compile of the graph, measured here only (not an encoder setting)
    encoder: ColBERTAttEncoder | None = None
    latencies: dict[int, list[float]] = field(default_factory=dict)  # per query length
    encodings: dict[int, list[EncodedText]] = field(default_factory=dict)


VARIANTS = [
    Variant(REFERENCE, "torch", 2),
    Variant("torch t1", "torch", 1),
    Variant("torch t1 inference_mode", "torch", 1, inference_mode=True),
    Variant("torch_graph t1", "torch_graph", 1),
    Variant("torch_traced t1", "torch_traced", 1),
    Variant("torch_traced t2", "torch_traced", 2),
    Variant("torch_compiled t1", "torch_graph", 1, compiled=True),
    Variant("onnxruntime t1", "onnxruntime", 1),
    Variant("onnxruntime t2", "onnxruntime", 2),
    Variant("onnxruntime_int8 t1", "onnxruntime_int8", 1),
]


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def compile_runner(encoder: ColBERTAttEncoder) -> None:
    """Swap the encoder's torch_graph runner for torch.compile of the same graph (dynamic shapes)."""
    from colbert_att_assistant.retriever.query_graph import QueryGraph

    graph = QueryGraph(encoder.backbone, encoder.projection, encoder.settings.attention_strategy).eval()
    compiled = torch.compile(graph, dynamic=True)

    def run(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return compiled(input_ids, attention_mask)

    encoder._query_runner = run


def encode(variant: Variant, text: str) -> EncodedText:
    assert variant.encoder is not None
    if variant.inference_mode:
        with torch.inference_mode():
            return variant.encoder.encode_query(text)
    return variant.encoder.encode_query(text)


def compare(reference: list[EncodedText], candidate: list[EncodedText]) -> dict[str, float]:
    vector, weight, min_cosine, cosines = 0.0, 0.0, 1.0, []
    for ref, got in zip(reference, candidate, strict=True):
        if not np.array_equal(ref.token_ids, got.token_ids):
            return {"same_tokens": 0.0}
        vector = max(vector, float(np.abs(ref.vectors - got.vectors).max()))
        weight = max(weight, float(np.abs(ref.weights - got.weights).max()))
        token_cosines = (ref.vectors * got.vectors).sum(axis=1)
        min_cosine = min(min_cosine, float(token_cosines.min()))
        cosines.append(token_cosines)
    return {
        "same_tokens": 1.0,
        "max_vector_difference": vector,
        "min_cosine": min_cosine,
        "mean_cosine": float(np.concatenate(cosines).mean()),
        "max_weight_difference": weight,
    }


def main(
    dataset: Annotated[Path, typer.Option()] = Path("../shared/datasets/scifact"),
    split: Annotated[str, typer.Option()] = "test",
    index_dir: Annotated[Path | None, typer.Option(help="SciFact index for nDCG@10; skipped if absent.")] = Path(
        "indexes/scifact"
    ),
    lengths: Annotated[list[int], typer.Option("--length", help="query_max_tokens to time.")] = [32, 64],  # noqa: B006
    block: Annotated[int, typer.Option(help="Queries per interleaved block.")] = 25,
    limit_queries: Annotated[int | None, typer.Option()] = None,
    only: Annotated[list[str] | None, typer.Option(help="Run only these variants (and the reference).")] = None,
    record: Annotated[bool, typer.Option(help="Append to RESULTS.md.")] = True,
) -> None:
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(
        logging.ERROR
    )  # SciFact claims longer than 32 pieces
    data = BeirDataset.load(dataset, split)
    queries = dict(list(data.queries.items())[:limit_queries]) if limit_queries else dict(data.queries)
    texts = list(queries.values())
    variants = [v for v in VARIANTS if not only or v.name == REFERENCE or v.name in only]
    loads: dict[str, list[float]] = {"start": load_average()}
    reference_encoder = ColBERTAttEncoder(EncoderSettings())
    checkpoint = reference_encoder.checkpoint

    compile_s: dict[int, float] = {}
    timing_started = time.perf_counter()
    for length in lengths:
        for variant in variants:
            settings = EncoderSettings(
                query_max_tokens=length, query_backend=variant.backend, query_threads=variant.threads
            )
            variant.encoder = ColBERTAttEncoder(settings, checkpoint=checkpoint)
            torch.set_num_threads(variant.threads)
            if variant.compiled:
                compile_started = time.perf_counter()
                compile_runner(variant.encoder)
                encode(variant, texts[0])
                compile_s[length] = round(time.perf_counter() - compile_started, 1)
            for text in texts[:3]:  # warm-up: builds the runner (ONNX export on first use), first-call costs
                encode(variant, text)
            variant.latencies[length], variant.encodings[length] = [], []
        for number, start in enumerate(range(0, len(texts), block)):
            shift = number % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                torch.set_num_threads(variant.threads)
                for text in texts[start : start + block]:
                    started = time.perf_counter()
                    encoded = encode(variant, text)
                    variant.latencies[length].append(time.perf_counter() - started)
                    variant.encodings[length].append(encoded)
        loads[f"after_length_{length}"] = load_average()
    timing_s = time.perf_counter() - timing_started

    ndcg: dict[str, dict[int, float]] = {}
    end_to_end: dict[str, dict[str, float]] = {}
    if index_dir is not None and (index_dir / "manifest.json").is_file():
        from ranx import Qrels, Run, evaluate

        from colbert_att_assistant.retriever.index import MultiVectorIndex

        torch.set_num_threads(2)
        index = MultiVectorIndex.load(index_dir, encoder=reference_encoder, candidate_settings=CandidateSettings())
        qrels = Qrels({qid: data.qrels[qid] for qid in queries})
        for variant in variants:
            ndcg[variant.name] = {}
            for length in lengths:
                run = {
                    qid: {hit.id: hit.score for hit in index.search(encoded, top_k=10)}
                    for qid, encoded in zip(queries, variant.encodings[length], strict=True)
                }
                ndcg[variant.name][length] = round(float(evaluate(qrels, Run(run), "ndcg@10")) * 100, 2)
        loads["after_ndcg"] = load_average()
        # The variant's thread count holds for the search half too (torch threads), as it would in one process.
        timed = [v for v in variants if v.name in END_TO_END]
        searched: dict[str, list[float]] = {v.name: [] for v in timed}
        for number, start in enumerate(range(0, len(texts), block)):
            shift = number % len(timed)
            for variant in timed[shift:] + timed[:shift]:
                assert variant.encoder is not None
                torch.set_num_threads(variant.threads)
                for text in texts[start : start + block]:
                    started = time.perf_counter()
                    index.search(encode(variant, text), top_k=10)
                    searched[variant.name].append(time.perf_counter() - started)
        for name, latencies in searched.items():
            end_to_end[name] = {
                "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
                "p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 2),
                "queries_per_s": round(len(latencies) / sum(latencies), 2),
            }
        loads["after_end_to_end"] = load_average()
    loads["end"] = load_average()

    reference = next(v for v in variants if v.name == REFERENCE)
    rows = []
    for length in lengths:
        reference_p50 = float(np.percentile(reference.latencies[length], 50))
        for variant in variants:
            latencies = np.array(variant.latencies[length])
            closeness = compare(reference.encodings[length], variant.encodings[length])
            row = {
                "variant": variant.name,
                "length": length,
                "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
                "p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 2),
                "mean_ms": round(float(latencies.mean()) * 1000, 2),
                "speedup_p50": round(reference_p50 / float(np.percentile(latencies, 50)), 2),
                **closeness,
            }
            if variant.name in ndcg:
                row["ndcg@10"] = ndcg[variant.name][length]
                row["ndcg@10_difference"] = round(ndcg[variant.name][length] - ndcg[REFERENCE][length], 2)
            row["within_tolerance"] = bool(
                closeness["same_tokens"]
                and closeness["max_vector_difference"] <= MAX_VECTOR_DIFFERENCE
                and closeness["min_cosine"] >= MIN_COSINE
                and closeness["max_weight_difference"] <= MAX_WEIGHT_DIFFERENCE
                and abs(row.get("ndcg@10_difference", 0.0)) <= MAX_NDCG_DIFFERENCE
            )
            rows.append(row)

    pieces = [len(e.token_ids) for e in reference.encodings[max(lengths)]]
    result = {
        **run_header(),
        "dataset": str(dataset),
        "split": split,
        "queries": len(texts),
        "block": block,
        "query_pieces": {"p50": float(np.median(pieces)), "max": int(max(pieces))},
        "load_average": loads,
        "timing_s": round(timing_s, 1),
        "torch_compile_s": compile_s,
        "torch": torch.__version__,
        "tolerance": {
            "max_vector_difference": MAX_VECTOR_DIFFERENCE,
            "min_cosine": MIN_COSINE,
            "max_weight_difference": MAX_WEIGHT_DIFFERENCE,
            "max_ndcg@10_difference": MAX_NDCG_DIFFERENCE,
        },
        "rows": rows,
        "end_to_end": end_to_end,
    }
    for row in rows:
        print(row)
    for name, timing in end_to_end.items():
        print({"end_to_end": name, **timing})
    if not record:
        return
    body = [
        f"- {len(texts)} SciFact {split} queries, one at a time through `encode_query` (tokenisation and "
        f"post-processing included), {block}-query blocks with every variant once per block in rotating order; "
        f"3 warm-up queries per variant not counted; query pieces with special tokens p50 "
        f"{result['query_pieces']['p50']:g}, max {result['query_pieces']['max']} (so 64 truncates nothing)",
        f"- load average (1/5/15 min): {loads}; a loaded shared machine, so absolute numbers are high; the "
        "ratios between variants are what the interleaving makes comparable",
        f"- torch_compiled: torch.compile(QueryGraph, dynamic=True), measured here only; first call (compilation) "
        f"took {compile_s} s per query length",
        f"- reference: {REFERENCE} (query_backend torch, the reference path, 2 torch threads); tnN: N threads (torch "
        "intra-op for torch backends, ONNX Runtime intra-op, for onnxruntime: its workers spin within a pass and stop "
        f"when it returns); libgomp spin count (torch, faiss) {os.environ.get('GOMP_SPINCOUNT', 'libgomp default')}",
        f"- tolerance: max |vector diff| <= {MAX_VECTOR_DIFFERENCE:g}, min token cosine >= {MIN_COSINE}, "
        f"max |A diff| <= {MAX_WEIGHT_DIFFERENCE:g}, nDCG@10 (ColBERT-Att, top 10, index {index_dir}) within "
        f"{MAX_NDCG_DIFFERENCE} of the reference" + ("" if ndcg else " (index absent: nDCG@10 not measured)"),
        "",
        "| length | variant | p50 ms | p95 ms | mean ms | p50 speed-up | max abs vector diff | min cosine | "
        "max abs A diff | nDCG@10 | within tolerance |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['length']} | {r['variant']} | {r['p50_ms']} | {r['p95_ms']} | {r['mean_ms']} | "
            f"{r['speedup_p50']}x | {r.get('max_vector_difference', float('nan')):.1e} | "
            f"{r.get('min_cosine', float('nan')):.6f} | {r.get('max_weight_difference', float('nan')):.1e} | "
            f"{r.get('ndcg@10', '-')} | {'yes' if r['within_tolerance'] else 'no'} |"
            for r in rows
        ),
    ]
    if end_to_end:
        body += [
            "",
            f"End to end (encode_query + index.search, ColBERT-Att top 10, query_max_tokens {lengths[-1]}, the "
            "variant's threads for both halves), interleaved the same way:",
            "",
            "| variant | p50 ms | p95 ms | queries/s |",
            "|---|---|---|---|",
            *(f"| {n} | {e['p50_ms']} | {e['p95_ms']} | {e['queries_per_s']} |" for n, e in end_to_end.items()),
        ]
    path = record_run("query-encoding", f"query encoding: backends and threads ({dataset.name} {split})", result, body)
    print(f"recorded {path}")


if __name__ == "__main__":
    typer.run(main)
