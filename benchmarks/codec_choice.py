"""Where the residual_pq codec loses quality, and which variant to use: chosen on SciFact train.

    python benchmarks/codec_choice.py --index-dir indexes/scifact --dataset ../shared/datasets/scifact \
        --variants 2048,2048+opq,8192,8192+opq

Every variant is converted from the same bfloat16 index (no re-encoding). For each it reports how close the decoded
token vectors are to the stored ones (cosine, on 100,000 tokens drawn at random), how often the decoded vectors
change which document token wins a query token's MaxSim (d_w), and ColBERT-Att / MaxSim nDCG@10 on the train
queries on the centroid-list candidate path (nprobe 4, depth 64). The variant with the best train ColBERT-Att
nDCG@10 within 64 code bytes per token is then measured once on test, beside the first variant given.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from ranx import Qrels, Run, evaluate

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.retriever.settings import EncoderSettings, StorageSettings

ERROR_SAMPLE_TOKENS = 100_000


def parse_variant(text: str) -> StorageSettings:
    """'8192+opq', '2048', '4096+opq+b10': centroids, OPQ rotation on/off, bits per sub-vector."""
    parts = text.split("+")
    bits = next((int(p[1:]) for p in parts[1:] if p.startswith("b")), 8)
    return StorageSettings(
        vector_format="residual_pq", centroids=int(parts[0]), pq_rotation="opq" in parts[1:], pq_bits=bits
    )


def ndcg_at_10(index: MultiVectorIndex, data: BeirDataset, encoded: dict, mode: str) -> float:
    runs = {q: {hit.id: hit.score for hit in index.search(query, top_k=10, mode=mode)} for q, query in encoded.items()}
    qrels = Qrels({q: data.qrels[q] for q in encoded})
    return round(100 * float(evaluate(qrels, Run(runs), "ndcg@10")), 2)


def reconstruction(source: MultiVectorIndex, compressed: MultiVectorIndex, encoded_queries: list) -> dict[str, float]:
    """Cosine of decoded to stored vectors, and how often the MaxSim winner d_w changes, on sampled documents."""
    rng = np.random.default_rng(7)
    ids = source.document_ids()
    cosines, winner_kept, total = [], 0, 0
    tokens = 0
    for position in rng.permutation(len(ids)):
        exact = source.get(ids[position])
        packed = compressed.get(ids[position]).compressed
        assert exact.vectors is not None and packed is not None
        original = exact.vectors.float().numpy()
        decoded = compressed.token_storage.codec.decode(packed.centroid_ids, packed.codes)
        cosines.append(np.sum(original * decoded, axis=1))
        query = encoded_queries[position % len(encoded_queries)].vectors
        winner_kept += int(np.sum(np.argmax(query @ original.T, axis=1) == np.argmax(query @ decoded.T, axis=1)))
        total += len(query)
        tokens += len(original)
        if tokens >= ERROR_SAMPLE_TOKENS:
            break
    cos = np.concatenate(cosines)
    return {
        "mean_cosine": round(float(cos.mean()), 4),
        "p5_cosine": round(float(np.percentile(cos, 5)), 4),
        "winner_unchanged": round(winner_kept / total, 4),
    }


def main(
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/scifact"),
    dataset: Annotated[Path, typer.Option()] = Path("../shared/datasets/scifact"),
    variants: Annotated[str, typer.Option(help="Comma-separated: centroids[+opq][+bN].")] = "2048,2048+opq,8192+opq",
    threads: Annotated[int, typer.Option()] = 2,
    limit: Annotated[int | None, typer.Option(help="Only the first N train queries.")] = None,
) -> None:
    torch.set_num_threads(threads)
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=threads))
    source = MultiVectorIndex.load(index_dir, encoder=encoder)
    train = BeirDataset.load(dataset, "train")
    test = BeirDataset.load(dataset, "test")
    train_ids = list(train.queries)[:limit] if limit else list(train.queries)
    encoded_train = dict(zip(train_ids, encoder.encode_queries([train.queries[q] for q in train_ids]), strict=True))
    encoded_test = dict(zip(test.queries, encoder.encode_queries(list(test.queries.values())), strict=True))

    rows = [
        {
            "variant": "bfloat16",
            "code_bytes": 768,
            "train_colbert_att": ndcg_at_10(source, train, encoded_train, "colbert_att"),
            "train_maxsim": ndcg_at_10(source, train, encoded_train, "maxsim"),
        }
    ]
    built = {}
    for name in variants.split(","):
        storage = parse_variant(name)
        started = time.perf_counter()
        compressed = source.copy_with_storage(storage)
        seconds = time.perf_counter() - started
        codec = compressed.token_storage.codec
        assert codec is not None
        built[name] = compressed
        row = {
            "variant": name,
            "centroids": codec.n_centroids,
            "code_bytes": codec.bytes_per_token,
            "convert_s": round(seconds, 1),
            **reconstruction(source, compressed, list(encoded_train.values())),
            "train_colbert_att": ndcg_at_10(compressed, train, encoded_train, "colbert_att"),
            "train_maxsim": ndcg_at_10(compressed, train, encoded_train, "maxsim"),
        }
        rows.append(row)
        print(row, flush=True)
    eligible = [row for row in rows[1:] if row["code_bytes"] <= 64]
    chosen = max(eligible, key=lambda row: row["train_colbert_att"])
    test_rows = {"bfloat16": ndcg_at_10(source, test, encoded_test, "colbert_att")}
    for name in {rows[1]["variant"], chosen["variant"]}:
        test_rows[name] = ndcg_at_10(built[name], test, encoded_test, "colbert_att")
    result = {
        **run_header(),
        "train_queries": len(encoded_train),
        "rows": rows,
        "chosen": chosen["variant"],
        "test_colbert_att": test_rows,
    }
    table = [
        "",
        "| variant | code bytes/token | mean cos | p5 cos | d_w unchanged | train ColBERT-Att | train MaxSim "
        "| convert s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        table.append(
            f"| {row['variant']} | {row['code_bytes']} | {row.get('mean_cosine', 1.0)} | {row.get('p5_cosine', 1.0)} "
            f"| {row.get('winner_unchanged', 1.0)} | {row['train_colbert_att']} | {row['train_maxsim']} "
            f"| {row.get('convert_s', '')} |"
        )
    record_run(
        "codec-choice",
        f"residual codec variants: scifact train ({len(encoded_train)} queries), chosen one on test",
        result,
        [
            f"- chosen on train (best ColBERT-Att nDCG@10 within 64 code bytes): {chosen['variant']}; "
            f"SciFact test ColBERT-Att nDCG@10: {test_rows}",
            "- variant = centroids[+opq rotation][+bits per sub-vector, default 8]; 48 sub-vectors; candidates from "
            "the centroid lists (nprobe 4, depth 64); cosines over 100,000 tokens of randomly drawn documents",
            *table,
        ],
    )


if __name__ == "__main__":
    typer.run(main)
