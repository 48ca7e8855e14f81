"""Compressed storage and attention-based pruning on SciFact: bytes per token against nDCG@10.

    python benchmarks/compression_scifact.py --index-dir indexes/scifact --dataset ../shared/datasets/scifact

Every variant is made from the existing bfloat16 index (`MultiVectorIndex.copy_with_storage`: same encoded tokens, no
re-encoding), so the rows differ only in how tokens are stored. The centroid lists' nprobe is chosen on SciFact
train (809 queries) for the 48-byte codes; test numbers are reported for every variant with that nprobe.
Bytes per token count every file of the persisted index divided by the tokens of the unpruned collection, and
separately the token-vector storage alone (codes + centroid ids, or bfloat16 vectors).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from ranx import Qrels, Run, evaluate
from rich.progress import track

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.retriever.settings import CandidateSettings, EncoderSettings, StorageSettings

VECTOR_FILES = {"bfloat16": ("vectors",), "residual_pq": ("codes", "centroid_ids")}


def ndcg_at_10(index: MultiVectorIndex, data: BeirDataset, encoded: dict, mode: str) -> float:
    runs = {}
    for query_id, query in encoded.items():
        runs[query_id] = {hit.id: hit.score for hit in index.search(query, top_k=10, mode=mode)}
    qrels = Qrels({q: data.qrels[q] for q in encoded})
    return round(100 * float(evaluate(qrels, Run(runs), "ndcg@10")), 2)


def main(
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/scifact"),
    dataset: Annotated[Path, typer.Option()] = Path("../shared/datasets/scifact"),
    nprobes: Annotated[str, typer.Option(help="Centroid nprobe values tried on train.")] = "2,4,8",
    prune_fractions: Annotated[str, typer.Option()] = "0.1,0.25,0.4,0.5",
    threads: Annotated[int, typer.Option()] = 2,
) -> None:
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=threads))
    source = MultiVectorIndex.load(index_dir, encoder=encoder)
    full_tokens = source.token_count
    splits = {split: BeirDataset.load(dataset, split) for split in ("train", "test")}
    encoded = {
        split: dict(zip(data.queries, encoder.encode_queries(list(data.queries.values())), strict=True))
        for split, data in splits.items()
    }

    def size_of(index: MultiVectorIndex, codec: str) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as directory:
            manifest = index.persist(directory)
        total = sum(entry.bytes for entry in manifest.files.values())
        vectors = sum(manifest.files[key].bytes for key in VECTOR_FILES[codec])
        return round(total / full_tokens, 1), round(vectors / full_tokens, 1)

    # nprobe for the compressed index, chosen on train.
    compressed = source.copy_with_storage(StorageSettings(vector_format="residual_pq"))
    choice_rows = []
    for nprobe in [int(n) for n in nprobes.split(",")]:
        compressed.settings.candidates = CandidateSettings(centroid_nprobe=nprobe)
        choice_rows.append((nprobe, ndcg_at_10(compressed, splits["train"], encoded["train"], "colbert_att")))
    chosen_nprobe = max(choice_rows, key=lambda row: row[1])[0]
    candidates = CandidateSettings(centroid_nprobe=chosen_nprobe)

    variants = [("bfloat16", 0.0, source), ("residual_pq", 0.0, compressed)]
    for fraction in [float(f) for f in prune_fractions.split(",")]:
        for codec in ("bfloat16", "residual_pq"):
            variants.append((codec, fraction, None))
    rows = []
    for codec, fraction, index in track(variants, description="variants"):
        if index is None:
            index = source.copy_with_storage(StorageSettings(vector_format=codec, prune_fraction=fraction))
        index.settings.candidates = candidates
        total_bytes, vector_bytes = size_of(index, codec)
        rows.append(
            {
                "codec": codec,
                "prune_fraction": fraction,
                "tokens_kept": index.token_count,
                "bytes_per_token": total_bytes,
                "vector_bytes_per_token": vector_bytes,
                "test_colbert_att": ndcg_at_10(index, splits["test"], encoded["test"], "colbert_att"),
                "test_maxsim": ndcg_at_10(index, splits["test"], encoded["test"], "maxsim"),
            }
        )
    baseline = rows[0]["test_colbert_att"]
    result = {
        **run_header(),
        "tokens": full_tokens,
        "nprobe_choice_on_train": choice_rows,
        "chosen_nprobe": chosen_nprobe,
        "rows": rows,
    }
    table = [
        "",
        "| storage | pruned | tokens kept | bytes/token (all files) | vector bytes/token | ColBERT-Att nDCG@10 "
        "| Δ vs bfloat16 | MaxSim nDCG@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        table.append(
            f"| {row['codec']} | {row['prune_fraction']:.0%} | {row['tokens_kept']} | {row['bytes_per_token']} "
            f"| {row['vector_bytes_per_token']} | {row['test_colbert_att']} "
            f"| {row['test_colbert_att'] - baseline:+.2f} | {row['test_maxsim']} |"
        )
    record_run(
        "compression-scifact",
        "compressed storage and pruning: scifact test",
        result,
        [
            f"- {full_tokens} tokens (unpruned); residual_pq = 2-byte centroid id + 48-byte PQ residual code; "
            f"centroid nprobe chosen on train: {chosen_nprobe} (train nDCG@10 by nprobe: {choice_rows})",
            "- every variant converted from the same bfloat16 index (no re-encoding); bytes per token divide by the "
            "unpruned token count; candidates: FAISS for bfloat16, centroid lists for residual_pq, re-rank depth 64",
            *table,
        ],
    )


if __name__ == "__main__":
    typer.run(main)
