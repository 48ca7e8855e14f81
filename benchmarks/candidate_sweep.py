"""Choose the candidate-generation settings (FAISS nprobe, neighbours per query token, re-rank depth) on a
TRAIN split, trading nDCG@10 against single-query latency. Never run this on a test split to choose.

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
from colbert_att_assistant.retriever.index.exact_tokens import ExactTokenStore
from colbert_att_assistant.retriever.settings import CandidateSettings, EncoderSettings


def main(
    dataset: Annotated[Path, typer.Option()] = Path("../shared/datasets/scifact"),
    split: Annotated[str, typer.Option()] = "train",
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/scifact"),
    nprobes: Annotated[str, typer.Option()] = "8,16",
    tokens_per_query_token: Annotated[str, typer.Option()] = "32,64",
    rerank_depths: Annotated[str, typer.Option()] = "32,64,128",
    limit_queries: Annotated[int | None, typer.Option()] = None,
    query_precision: Annotated[str, typer.Option(help="float32 or bfloat16 query encoding.")] = "float32",
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
    rows = []
    grid = itertools.product(
        [int(x) for x in nprobes.split(",")],
        [int(x) for x in tokens_per_query_token.split(",")],
        [int(x) for x in rerank_depths.split(",")],
    )
    for nprobe, neighbours, depth in grid:
        index.settings.candidates = CandidateSettings(
            ivf_nprobe=nprobe, tokens_per_query_token=neighbours, rerank_depth=depth
        )
        assert isinstance(index.token_storage, ExactTokenStore) and index.token_storage.candidates is not None
        index.token_storage.candidates.nprobe = nprobe
        run, latencies = {}, []
        for qid, query in encoded.items():
            started = time.perf_counter()  # search only: query encoding is the same for every setting
            hits = index.search(query, top_k=10)
            latencies.append(time.perf_counter() - started)
            run[qid] = {h.id: h.score for h in hits}
        ndcg = evaluate(qrels, Run(run), "ndcg@10")
        rows.append(
            {
                "nprobe": nprobe,
                "tokens_per_query_token": neighbours,
                "rerank_depth": depth,
                "ndcg@10": round(float(ndcg) * 100, 2),
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
        "rows": rows,
    }
    body = [
        f"- query precision {query_precision}: query encoding {result['query_encoding_mean_ms']} ms mean; "
        "search latency below excludes it (identical for every setting)",
        "",
        "| nprobe | neighbours / query token | re-rank depth | nDCG@10 | search p50 ms |",
        "|---|---|---|---|---|",
        *(
            f"| {r['nprobe']} | {r['tokens_per_query_token']} | {r['rerank_depth']} | {r['ndcg@10']} | "
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
