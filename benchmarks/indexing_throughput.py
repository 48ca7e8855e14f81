"""Indexing throughput of the whole pipeline (tokenise, encode, read A, store, FAISS add) against the bare encoder
forward pass on the same texts and batches, plus bytes per indexed token on disk.

    python benchmarks/indexing_throughput.py --dataset ../shared/datasets/scifact --documents 600
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated

import colbert_att_assistant  # noqa: F401  before torch: the package sets libgomp's spin count, read as torch loads

# isort: split

import torch
import typer

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import iter_corpus
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import DocumentInput, MultiVectorIndex
from colbert_att_assistant.retriever.settings import EncoderSettings, IndexSettings


@torch.no_grad()
def bare_forward_seconds(encoder: ColBERTAttEncoder, texts: list[str]) -> tuple[float, int]:
    """The encoder alone: tokenise, length-sorted batches, forward pass; no attention weights, no index."""
    started = time.perf_counter()
    tokens = 0
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    size = encoder.settings.batch_size
    for start in range(0, len(order), size):
        batch = [texts[i] for i in order[start : start + size]]
        inputs = encoder.tokenizer(
            batch, truncation=True, max_length=encoder.settings.document_max_tokens, padding=True, return_tensors="pt"
        )
        encoder.backbone(**inputs)
        tokens += int(inputs["attention_mask"].sum())
    return time.perf_counter() - started, tokens


def main(
    dataset: Annotated[Path, typer.Option()] = Path("../shared/datasets/scifact"),
    documents: Annotated[int, typer.Option()] = 600,
) -> None:
    corpus = [d for _, d in zip(range(documents), iter_corpus(dataset / "corpus.jsonl"), strict=False)]
    texts = [d.full_text for d in corpus]
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=2))
    bare_forward_seconds(encoder, texts[:32])  # warm-up
    bare_seconds, bare_tokens = bare_forward_seconds(encoder, texts)
    index = MultiVectorIndex(encoder, IndexSettings(encoder=encoder.settings))
    started = time.perf_counter()
    index.add([DocumentInput(id=d.id, text=t) for d, t in zip(corpus, texts, strict=True)])
    pipeline_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as directory:
        manifest = index.persist(directory)
        disk_bytes = sum(entry.bytes for entry in manifest.files.values())
    result = {
        **run_header(),
        "documents": len(texts),
        "bare_docs_per_s": round(len(texts) / bare_seconds, 2),
        "bare_tokens_per_s": round(bare_tokens / bare_seconds),
        "pipeline_docs_per_s": round(len(texts) / pipeline_seconds, 2),
        "pipeline_tokens_per_s": round(bare_tokens / pipeline_seconds),
        "pipeline_share_of_bare_rate": round(bare_seconds / pipeline_seconds, 3),
        "indexed_tokens": index.token_count,
        "faiss": index.faiss_kind,
        "disk_bytes_per_indexed_token": round(disk_bytes / index.token_count, 1),
    }
    body = [
        f"- bare encoder forward: {result['bare_docs_per_s']} docs/s, {result['bare_tokens_per_s']} tokens/s",
        f"- whole pipeline: {result['pipeline_docs_per_s']} docs/s, {result['pipeline_tokens_per_s']} tokens/s "
        f"= {result['pipeline_share_of_bare_rate'] * 100:.1f}% of the bare rate",
        f"- on disk: {result['disk_bytes_per_indexed_token']} bytes per indexed token "
        f"({result['indexed_tokens']} tokens, FAISS {result['faiss']})",
    ]
    record_run("indexing-throughput", f"indexing throughput ({len(texts)} SciFact documents)", result, body)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
