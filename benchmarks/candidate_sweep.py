"""Choose the candidate-generation settings (FAISS nprobe, neighbours per query token, re-rank depth) on a
TRAIN split, trading agreement with exhaustive search against single-query latency. Never run this on a test split
to choose.

Candidate generation should find the documents an exhaustive search would rank first, no more: the share of the
exhaustive top 10 that each setting returns (`--exhaustive`, minutes: every document scored for every query) is
what to choose by. A setting whose top 10 differs from exhaustive search can score a higher nDCG@10 on one split by
chance and lose it on the next (benchmarks/RESULTS.md, 2026-12-05).

    python benchmarks/candidate_sweep.py --dataset ../shared/datasets/scifact --split train --index-dir indexes/scifact
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from ranx import Qrels, Run, evaluate

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.retriever.index.candidates import TokenCandidateIndex
from colbert_att_assistant.retriever.index.exact_tokens import ExactTokenStore
from colbert_att_assistant.retriever.settings import CandidateSettings, EncoderSettings


def main(
    dataset: Annotated[Path, typer.Option()] = Path("../shared/datasets/scifact"),
    split: Annotated[str, typer.Option()] = "train",
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/scifact"),
    nprobes: Annotated[str, typer.Option()] = "8,16",
    tokens_per_query_token: Annotated[str, typer.Option()] = "32,64",
    rerank_depths: Annotated[str, typer.Option()] = "32,64,128",
    ivf_codes: Annotated[
        str | None, typer.Option(help="Rebuild the FAISS token index with each of these codes (sq8, pq4_fastscan).")
    ] = None,
    limit_queries: Annotated[int | None, typer.Option()] = None,
    query_precision: Annotated[str, typer.Option(help="float32 or bfloat16 query encoding.")] = "float32",
    exhaustive: Annotated[bool, typer.Option(help="Also score every document for each query (slow): agreement.")] = (
        True
    ),
) -> None:
    if split == "test":
        raise typer.BadParameter("Settings are chosen on a train split, never on test.")
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(
        logging.ERROR
    )  # long SciFact claims are truncated by design
    data = BeirDataset.load(dataset, split)
    queries = dict(list(data.queries.items())[:limit_queries]) if limit_queries else data.queries
    qrels = Qrels({q: data.qrels[q] for q in queries})
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=2, query_precision=query_precision))
    index = MultiVectorIndex.load(index_dir, encoder=encoder)
    encode_started = time.perf_counter()
    encoded = {qid: encoder.encode_query(text) for qid, text in queries.items()}
    encode_ms = (time.perf_counter() - encode_started) / len(queries) * 1000
    exhaustive_top = (
        {qid: [h.id for h in index.search(query, top_k=10, exhaustive=True)] for qid, query in encoded.items()}
        if exhaustive
        else {}
    )
    rows = []
    store = index.token_storage
    assert isinstance(store, ExactTokenStore) and store.candidates is not None
    built: dict[str, TokenCandidateIndex] = {store.candidates.codes: store.candidates}
    build_s: dict[str, float] = {}
    for codes in ivf_codes.split(",") if ivf_codes else []:
        if codes not in built:
            started = time.perf_counter()
            store.rebuild(index._ordered(), CandidateSettings(ivf_codes=codes))  # type: ignore[arg-type]
            build_s[codes] = round(time.perf_counter() - started, 1)
            assert store.candidates is not None
            built[codes] = store.candidates
    grid = itertools.product(
        list(built),
        [int(x) for x in nprobes.split(",")],
        [int(x) for x in tokens_per_query_token.split(",")],
        [int(x) for x in rerank_depths.split(",")],
    )
    for codes, nprobe, neighbours, depth in grid:
        index.settings.candidates = CandidateSettings(
            ivf_nprobe=nprobe, tokens_per_query_token=neighbours, rerank_depth=depth
        )
        store.candidates = built[codes]
        store.candidates.nprobe = nprobe
        run, latencies = {}, []
        for qid, query in encoded.items():
            started = time.perf_counter()  # search only: query encoding is the same for every setting
            hits = index.search(query, top_k=10)
            latencies.append(time.perf_counter() - started)
            run[qid] = {h.id: h.score for h in hits}
        ndcg = evaluate(qrels, Run(run), "ndcg@10")
        agreement = [len(set(run[qid]) & set(top)) / len(top) for qid, top in exhaustive_top.items() if top]
        rows.append(
            {
                "codes": codes,
                "nprobe": nprobe,
                "tokens_per_query_token": neighbours,
                "rerank_depth": depth,
                "ndcg@10": round(float(ndcg) * 100, 2),
                "exhaustive_top10_share": round(float(np.mean(agreement)) * 100, 2) if agreement else None,
                "search_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
            }
        )
        print(rows[-1], file=sys.stderr)
    result = {
        **run_header(),
        "split": split,
        "queries": len(queries),
        "query_precision": query_precision,
        "query_encoding_mean_ms": round(encode_ms, 1),
        "ivf_build_s": build_s,
        "rows": rows,
    }
    if exhaustive_top:
        exhaustive_run = Run({qid: {d: 10 - i for i, d in enumerate(top)} for qid, top in exhaustive_top.items()})
        result["exhaustive_ndcg@10"] = round(float(evaluate(qrels, exhaustive_run, "ndcg@10")) * 100, 2)
    body = [
        f"- query precision {query_precision}: query encoding {result['query_encoding_mean_ms']} ms mean; "
        "search latency below excludes it (identical for every setting)",
        f"- exhaustive search (every document scored): nDCG@10 {result.get('exhaustive_ndcg@10', 'not run')}; "
        "'exhaustive top 10 kept' is the mean share of its top 10 that a setting returns",
        "",
        f"- FAISS token index rebuilt in memory from the stored vectors for: {build_s or 'none'} (seconds)",
        "",
        "| IVF codes | nprobe | neighbours / query token | re-rank depth | nDCG@10 | exhaustive top 10 kept % | "
        "search p50 ms |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['codes']} | {r['nprobe']} | {r['tokens_per_query_token']} | {r['rerank_depth']} | {r['ndcg@10']} | "
            f"{r['exhaustive_top10_share'] if r['exhaustive_top10_share'] is not None else '-'} | "
            f"{r['search_p50_ms']} |"
            for r in rows
        ),
    ]
    record_run(
        f"candidate-sweep-{dataset.name}-{split}",
        f"candidate-generation sweep: {dataset.name} {split} ({len(queries)} queries)",
        result,
        body,
    )


if __name__ == "__main__":
    typer.run(main)
