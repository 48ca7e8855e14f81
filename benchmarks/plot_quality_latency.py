"""Plot nDCG@10 against single-query p50 latency for every method of the newest evaluation and engine runs of a
dataset, from the JSON files in benchmarks/results/.

    python benchmarks/plot_quality_latency.py --dataset scifact --split test
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import matplotlib
import typer

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent


def newest(pattern: str) -> dict | None:
    files = sorted((ROOT / "results").glob(pattern))
    return json.loads(files[-1].read_text()) if files else None


def main(
    dataset: Annotated[str, typer.Option()] = "scifact",
    split: Annotated[str, typer.Option()] = "test",
) -> None:
    points: dict[str, tuple[float, float]] = {}
    # Oldest first, so that each method keeps its newest measurement.
    for path in sorted((ROOT / "results").glob(f"*-eval-{dataset}-{split}.json")):
        evaluation = json.loads(path.read_text())
        for method, scores in evaluation["scores"].items():
            if method in evaluation.get("query_p50_ms", {}):
                points[method] = (evaluation["query_p50_ms"][method], scores["ndcg@10"])
    engine = newest(f"*-engine-{dataset}-{split}.json")
    if engine:
        # The evaluation command already gives the candidate path; the engine run adds exhaustive scoring.
        for method, row in engine["results"].items():
            if "exhaustive" not in method:
                continue
            latency = row.get("top100_p50_ms", row.get("p50_ms"))
            points[method] = (latency, row["ndcg@10"])
    if not points:
        raise typer.BadParameter(f"No results for {dataset} {split} in {ROOT / 'results'}.")
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, (latency, ndcg) in points.items():
        axes.scatter(latency, ndcg)
        axes.annotate(name, (latency, ndcg), textcoords="offset points", xytext=(5, 3), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("query p50 latency, ms (log scale; encoding included, one query at a time)")
    axes.set_ylabel("nDCG@10")
    axes.set_title(f"{dataset} {split}: quality vs latency")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    out = ROOT / f"quality_latency_{dataset}_{split}.png"
    figure.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    typer.run(main)
