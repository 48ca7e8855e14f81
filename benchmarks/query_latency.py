"""The shipped query path on SciFact, one query at a time: encode with the default query encoder, search the index
with the default candidate settings, top 10; beside it, other candidate settings in the same process.

    python benchmarks/query_latency.py [--index-dir indexes/scifact] [--compare 64,64] [--rounds 3] [--no-record]

Each --compare is "neighbours per query token,re-rank depth" (another setting searched over the same loaded files).
Settings take turns in 25-query blocks, in rotating order, for --rounds passes over the test queries, so that a
slower minute of a shared machine falls on all of them; p50 / p95 are per round. nDCG@10 of each setting is
computed from its hits of the first round. Only the shipped path runs here: no other encoder, no torch reference,
whose own thread pools would share the two cores with the timed path.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import colbert_att_assistant  # noqa: F401  before torch: the package sets libgomp's spin count, read as torch loads

# isort: split

import numpy as np
import typer
from ranx import Qrels, Run, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.query_encoding import load_average
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.retriever.settings import CandidateSettings, EncoderSettings

BLOCK = 25
WARM_UP = 20
SHIPPED = "shipped"


def parse_setting(text: str) -> CandidateSettings:
    try:
        neighbours, depth = (int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give 'neighbours,depth', two whole numbers, e.g. 64,64") from None
    return CandidateSettings(tokens_per_query_token=neighbours, rerank_depth=depth)


def main(
    dataset: Annotated[Path, typer.Option()] = Path("../shared/datasets/scifact"),
    split: Annotated[str, typer.Option()] = "test",
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/scifact"),
    compare: Annotated[list[str] | None, typer.Option(help="neighbours,depth of another setting")] = None,
    rounds: Annotated[int, typer.Option(min=1, max=10)] = 3,
    record: Annotated[bool, typer.Option(help="append the result to benchmarks/RESULTS.md")] = True,
) -> None:
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(logging.ERROR)  # long claims are cut
    data = BeirDataset.load(dataset, split)
    query_ids = list(data.queries)
    texts = [data.queries[qid] for qid in query_ids]
    encoder = ColBERTAttEncoder(EncoderSettings())
    settings = {SHIPPED: CandidateSettings(), **{text: parse_setting(text) for text in compare or []}}
    indexes = {
        name: MultiVectorIndex.load(index_dir, encoder=encoder, candidate_settings=candidates)
        for name, candidates in settings.items()
    }
    for text in texts[:WARM_UP]:
        for index in indexes.values():
            index.search(encoder.encode_query(text), top_k=10)
    loads = {"start": load_average()}
    started = time.perf_counter()
    per_round: list[dict[str, dict[str, float]]] = []
    hits: dict[str, dict[str, dict[str, float]]] = {name: {} for name in indexes}
    for number in range(rounds):
        latencies: dict[str, list[float]] = {name: [] for name in indexes}
        names = list(indexes)
        for block, start in enumerate(range(0, len(texts), BLOCK)):
            shift = block % len(names)
            for name in names[shift:] + names[:shift]:
                for qid, text in zip(query_ids[start : start + BLOCK], texts[start : start + BLOCK], strict=True):
                    began = time.perf_counter()
                    found = indexes[name].search(encoder.encode_query(text), top_k=10)
                    latencies[name].append(time.perf_counter() - began)
                    if number == 0:
                        hits[name][qid] = {hit.id: hit.score for hit in found}
        per_round.append(
            {
                name: {
                    "p50_ms": round(float(np.percentile(values, 50)) * 1000, 2),
                    "p95_ms": round(float(np.percentile(values, 95)) * 1000, 2),
                    "queries_per_s": round(len(values) / sum(values), 1),
                }
                for name, values in latencies.items()
            }
        )
        loads[f"after_round_{number + 1}"] = load_average()
    qrels = Qrels({qid: data.qrels[qid] for qid in query_ids if qid in data.qrels})
    ndcg = {name: round(float(evaluate(qrels, Run(found), "ndcg@10")) * 100, 2) for name, found in hits.items()}
    result = {
        **run_header(),
        "queries": len(texts),
        "rounds": rounds,
        "settings": {name: candidates.model_dump() for name, candidates in settings.items()},
        "per_round": per_round,
        "ndcg@10": ndcg,
        "load_average": loads,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    shipped = settings[SHIPPED]
    shipped_label = f"{shipped.tokens_per_query_token},{shipped.depth_for(compressed=False)}"
    body = [
        f"- {len(texts)} {dataset.name} {split} queries, one at a time, encode_query (query_backend "
        f"{encoder.settings.query_backend}) + index.search top 10 on {index_dir}; {rounds} rounds, {BLOCK}-query "
        f"blocks in rotating order; {WARM_UP} warm-up queries per setting",
        f"- shipped (neighbours per query token, re-rank depth): {shipped_label}",
        f"- load average (1/5/15 min): {loads}",
        "",
        "| setting | nDCG@10 | " + " | ".join(f"round {n + 1} p50 / p95 ms" for n in range(rounds)) + " |",
        "|---|---|" + "---|" * rounds,
    ]
    for name in indexes:
        cells = " | ".join(f"{r[name]['p50_ms']} / {r[name]['p95_ms']}" for r in per_round)
        label = f"{shipped_label} (shipped)" if name == SHIPPED else name
        body.append(f"| {label} | {ndcg[name]} | {cells} |")
    print("\n".join(body))
    if record:
        record_run("query-latency", f"query latency, the shipped path ({dataset.name} {split})", result, body)


if __name__ == "__main__":
    typer.run(main)
