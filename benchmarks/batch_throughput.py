"""Batch throughput: many queries at once (`search_batch`) against one at a time (`search`), on SciFact test.

    nice -n 10 .venv/bin/python benchmarks/batch_throughput.py --index-dir indexes/scifact

Every query is encoded and searched (ColBERT-Att, top 10) by each way: one at a time (`encode_query` then
`search`), and in batches of 8 and 32 (`encode_queries` then `search_batch` of the encodings; `search_batch` of
the strings does exactly these two steps). The queries go in blocks of the largest batch size; within each block
every way runs once, in an order that rotates between blocks, and the whole set is run `--rounds` times, so that
the load of this shared machine falls on all of them alike. One untimed batched pass first reads the candidate
documents' pages of the memory-mapped index into memory for all of them.

The hits of every batched way are compared with one at a time (ids and order; scores to 1e-6 of their size), and
so is nDCG@10. Appends to benchmarks/RESULTS.md (with the load average) and writes
benchmarks/results/<stamp>-batch-throughput.json.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Annotated

import colbert_att_assistant  # noqa: F401  before torch: the package sets libgomp's spin count, read as torch loads

# isort: split

import torch
import typer
from ranx import Qrels, Run, evaluate

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import MultiVectorIndex, SearchHit
from colbert_att_assistant.retriever.settings import CandidateSettings, EncoderSettings

TOP_K = 10
ONE_AT_A_TIME = 1
SCORE_TOLERANCE = 1e-6  # of the score's size: a raw score near 10 is a float32 sum, its last bit worth about 1e-6


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def run_way(index: MultiVectorIndex, texts: list[str], batch: int) -> tuple[list[list[SearchHit]], float, float]:
    """(hits per query, seconds encoding, seconds searching) of `texts` in batches of `batch` (1: one at a time)."""
    encoder = index.encoder
    hits: list[list[SearchHit]] = []
    encode_s = search_s = 0.0
    for start in range(0, len(texts), batch):
        part = texts[start : start + batch]
        started = time.perf_counter()
        encoded = [encoder.encode_query(part[0])] if batch == ONE_AT_A_TIME else encoder.encode_queries(part)
        encoded_at = time.perf_counter()
        if batch == ONE_AT_A_TIME:
            hits.append(index.search(encoded[0], top_k=TOP_K))
        else:
            hits.extend(index.search_batch(encoded, top_k=TOP_K))
        encode_s += encoded_at - started
        search_s += time.perf_counter() - encoded_at
    return hits, encode_s, search_s


def agreement(reference: list[list[SearchHit]], hits: list[list[SearchHit]]) -> dict[str, float | int]:
    """Against one at a time: queries whose ids or order differ, queries with a score off by more than 1e-6 of its
    size, and the largest score differences."""
    other_hits, moved, absolute, relative = 0, 0, 0.0, 0.0
    for expected, got in zip(reference, hits, strict=True):
        if [h.id for h in got] != [h.id for h in expected]:
            other_hits += 1
            continue
        pairs = [(hit.score, ref.score) for hit, ref in zip(got, expected, strict=True)]
        differences = [abs(score - ref) / max(1.0, abs(ref)) for score, ref in pairs]
        moved += any(d > SCORE_TOLERANCE for d in differences)
        absolute = max([absolute, *(abs(score - ref) for score, ref in pairs)])
        relative = max([relative, *differences])
    return {
        "queries_with_other_ids_or_order": other_hits,
        "queries_with_a_score_moved": moved,
        "max_abs_score_diff": absolute,
        "max_rel_score_diff": relative,
    }


def main(
    dataset: Annotated[Path, typer.Option()] = Path("../shared/datasets/scifact"),
    split: Annotated[str, typer.Option()] = "test",
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/scifact"),
    batches: Annotated[list[int], typer.Option("--batch", help="Batch sizes to time against one at a time.")] = [  # noqa: B006
        8,
        32,
    ],
    rounds: Annotated[int, typer.Option(help="Timed passes over every query.")] = 2,
    threads: Annotated[int, typer.Option(help="torch threads (encoder and scoring).")] = 2,
    limit_queries: Annotated[int | None, typer.Option()] = None,
    record: Annotated[bool, typer.Option(help="Append to RESULTS.md.")] = True,
) -> None:
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(logging.ERROR)  # long claims truncate
    loads: dict[str, list[float]] = {"start": load_average()}
    data = BeirDataset.load(dataset, split)
    queries = dict(list(data.queries.items())[:limit_queries]) if limit_queries else dict(data.queries)
    texts = list(queries.values())
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=threads))
    torch.set_num_threads(threads)
    index = MultiVectorIndex.load(index_dir, encoder=encoder, candidate_settings=CandidateSettings())
    ways = [ONE_AT_A_TIME, *sorted(set(batches) - {ONE_AT_A_TIME})]
    block = max(ways)

    run_way(index, texts, block)  # warm-up, not counted
    loads["after_warm_up"] = load_average()
    seconds = {way: {"encode": 0.0, "search": 0.0} for way in ways}
    per_round: dict[int, list[float]] = {way: [] for way in ways}
    hits: dict[int, list[list[SearchHit]]] = {way: [] for way in ways}
    for number in range(rounds):
        round_seconds = dict.fromkeys(ways, 0.0)
        for block_number, start in enumerate(range(0, len(texts), block)):
            shift = (number + block_number) % len(ways)
            for way in ways[shift:] + ways[:shift]:
                found, encode_s, search_s = run_way(index, texts[start : start + block], way)
                seconds[way]["encode"] += encode_s
                seconds[way]["search"] += search_s
                round_seconds[way] += encode_s + search_s
                if number == 0:
                    hits[way].extend(found)
        for way in ways:
            per_round[way].append(round(len(texts) / round_seconds[way], 2))
        loads[f"after_round_{number + 1}"] = load_average()
    loads["end"] = load_average()

    qrels = Qrels({qid: data.qrels[qid] for qid in queries})
    rows = []
    for way in ways:
        run = Run({qid: {h.id: h.score for h in found} for qid, found in zip(queries, hits[way], strict=True)})
        total = seconds[way]["encode"] + seconds[way]["search"]
        count = len(texts) * rounds
        rows.append(
            {
                "way": "one at a time" if way == ONE_AT_A_TIME else f"batch {way}",
                "batch": way,
                "queries_per_s": round(count / total, 2),
                "ms_per_query": round(total / count * 1000, 2),
                "encode_ms_per_query": round(seconds[way]["encode"] / count * 1000, 2),
                "search_ms_per_query": round(seconds[way]["search"] / count * 1000, 2),
                "queries_per_s_by_round": per_round[way],
                "ndcg@10": float(evaluate(qrels, run, "ndcg@10")),
                **agreement(hits[ONE_AT_A_TIME], hits[way]),
            }
        )
    reference = rows[0]
    for row in rows:
        row["speed_up"] = round(row["queries_per_s"] / reference["queries_per_s"], 2)
        row["ndcg@10_identical"] = row["ndcg@10"] == reference["ndcg@10"]
        row["same_ids_and_order"] = row["queries_with_other_ids_or_order"] == 0
        print(row)

    result = {
        **run_header(),
        "dataset": str(dataset),
        "split": split,
        "index_dir": str(index_dir),
        "documents": len(index),
        "faiss_kind": index.faiss_kind,
        "queries": len(texts),
        "rounds": rounds,
        "block": block,
        "threads": threads,
        "torch": torch.__version__,
        "load_average": loads,
        "rows": rows,
    }
    if not record:
        return
    highest = max(max(values) for values in loads.values())
    machine = (
        f"a shared machine under load from other jobs (load average up to {highest:.2f} on "
        f"{os.cpu_count()} cores), so absolute numbers are low; the ratios are what the interleaving makes "
        "comparable"
        if highest > 1
        else f"load average at most {highest:.2f}"
    )
    body = [
        f"- {len(texts)} SciFact {split} queries, {len(index)} documents ({index.faiss_kind} candidates, index "
        f"{index_dir}), ColBERT-Att top {TOP_K}, encode + search, {threads} torch threads; one at a time "
        f"(`encode_query` + `search`) against batches (`encode_queries` + `search_batch`); {rounds} timed rounds "
        f"over every query in {block}-query blocks, every way once per block in rotating order, after one untimed "
        "batched pass",
        f"- load average (1/5/15 min): {loads}; {machine}",
        "- against one at a time: queries whose hits are other ids or in another order; queries with a score moved "
        "by more than 1e-6 of its size, and the largest move. Batched encoding rounds query vectors differently in "
        "the last float bits (about 4e-7), which can pick another of two near-tied document tokens in the bfloat16 "
        "MaxSim; given the same encodings, `search_batch` and `search` give equal scores",
        "",
        "| way | queries/s | ms per query | encode ms | search ms | speed-up | queries/s by round | nDCG@10 | "
        "nDCG@10 identical | queries with other ids or order | queries with a score moved | max abs score diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['way']} | {r['queries_per_s']} | {r['ms_per_query']} | {r['encode_ms_per_query']} | "
            f"{r['search_ms_per_query']} | {r['speed_up']}x | {' / '.join(map(str, r['queries_per_s_by_round']))} | "
            f"{r['ndcg@10'] * 100:.2f} | {'yes' if r['ndcg@10_identical'] else 'no'} | "
            f"{r['queries_with_other_ids_or_order']} | {r['queries_with_a_score_moved']} | "
            f"{r['max_abs_score_diff']:.1e} |"
            for r in rows
        ),
    ]
    path = record_run(
        "batch-throughput", f"batch throughput: search_batch against one at a time ({split})", result, body
    )
    print(f"recorded {path}")


if __name__ == "__main__":
    typer.run(main)
