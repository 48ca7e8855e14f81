"""How many dimensions the stored token vectors really use: the PCA spectrum of an index's bfloat16 vectors.

    python benchmarks/token_spectrum.py --index-dir indexes/scifact

Explains how much a fixed code size can keep: the share of variance kept by the top k principal
components, and the mean cosine between a held-out token and its projection onto them (no quantisation at all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.index.storage import read_manifest

SAMPLE_TOKENS = 160_000
HELD_OUT = 40_000


def main(
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/scifact"),
    dimensions: Annotated[str, typer.Option()] = "32,64,96,128,192,256",
) -> None:
    manifest = read_manifest(index_dir)
    if manifest.vector_dtype != "bfloat16":
        raise typer.BadParameter(f"{index_dir} stores {manifest.vector_dtype} vectors; give a bfloat16 index.")
    stored = np.load(index_dir / manifest.files["vectors"].name, mmap_mode="r")
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(stored), min(SAMPLE_TOKENS, len(stored)), replace=False))
    vectors = torch.from_numpy(np.ascontiguousarray(stored[rows])).view(torch.bfloat16).float().numpy()
    order = rng.permutation(len(vectors))
    fit, held_out = vectors[order[HELD_OUT:]], vectors[order[:HELD_OUT]]
    mean = fit.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov((fit - mean).T))
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    table = []
    for k in [int(d) for d in dimensions.split(",")]:
        basis = eigenvectors[:, :k]
        projected = (held_out - mean) @ basis @ basis.T + mean
        projected /= np.linalg.norm(projected, axis=1, keepdims=True)
        table.append(
            {
                "dimensions": k,
                "variance_kept": round(float(eigenvalues[:k].sum() / eigenvalues.sum()), 4),
                "mean_cosine": round(float((projected * held_out).sum(axis=1).mean()), 4),
            }
        )
    result = {**run_header(), "index": str(index_dir), "tokens": len(vectors), "rows": table}
    record_run(
        "token-spectrum",
        f"PCA spectrum of stored token vectors ({manifest.model.name}, {index_dir.name})",
        result,
        [
            f"- {len(fit)} tokens fit, {len(held_out)} held out, drawn at random from {manifest.token_count}",
            "",
            "| PCA dimensions | variance kept | mean cosine of a held-out token to its projection |",
            "|---|---|---|",
            *(f"| {r['dimensions']} | {r['variance_kept']} | {r['mean_cosine']} |" for r in table),
        ],
    )


if __name__ == "__main__":
    typer.run(main)
