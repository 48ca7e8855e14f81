"""Readings of A side by side, from the attention-feature caches: MaxSim, the zero-shot default (cls_all),
cls_all with A = 0 at [CLS] / [SEP], learned mixes, and ColBERT-Att fused with the free dense signal (the cosine of
the mean token vectors), every one re-ranking the same top 100 by MaxSim per query.

    python -m colbert_att_assistant.retriever.training.attention_mix cache          # once: encodes with the encoder
    frozen
    python -m colbert_att_assistant.retriever.training.attention_mix train --out runs/attention-mix/keep.json
    python benchmarks/attention_mix.py --mix runs/attention-mix/keep.json --mix runs/attention-mix/zero.json:zero

Choices (fusion weight, which reading) are made on the train side only: SciFact train queries, the shared pairs
and the knowledge base's calibration half; test splits and the held-out half are reported, never chosen on.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.settings import AttentionMix, AttentionStrategy
from colbert_att_assistant.retriever.training.attention_mix import evaluation_sets
from colbert_att_assistant.retriever.training.mix_scoring import (
    MixWeights,
    PairSet,
    ndcg_at_10,
    pair_scores,
    reciprocal_rank_fusion,
)

CHOOSE_ON = ("scifact-train", "pairs", "kb-calibration")
REPORT_ON = ("scifact-test", "wixqa-test", "kb-held_out", "kb-all")
FUSION_WEIGHTS = (0.1, 0.25, 0.5, 1.0, 2.0)


def _scores(pairs: PairSet, weights: MixWeights | None) -> np.ndarray:
    if weights is None:  # MaxSim
        zero = MixWeights.fixed(AttentionStrategy.NONE, 1, 1)
        return pair_scores(pairs, zero, query_side=False, document_side=False).numpy()
    return pair_scores(pairs, weights).detach().numpy()


def main(
    cache_dir: Annotated[Path, typer.Option()] = Path("/tmp/attention-mix"),
    mix: Annotated[
        list[str] | None, typer.Option(help="A learned mix JSON; ':zero' after it: [CLS]/[SEP] zeroed.")
    ] = None,
    record: Annotated[bool, typer.Option()] = True,
) -> None:
    sets = {zero: evaluation_sets(cache_dir, zero_special=zero) for zero in (False, True)}
    names = list(sets[False])
    layers, heads = 6, 12
    readings: dict[str, tuple[MixWeights | None, bool]] = {
        "maxsim": (None, False),
        "cls_all (default)": (MixWeights.fixed(AttentionStrategy.CLS_ALL, layers, heads), False),
        "cls_all, [CLS]/[SEP] zeroed": (MixWeights.fixed(AttentionStrategy.CLS_ALL, layers, heads), True),
    }
    for entry in mix or []:
        path, _, flag = entry.partition(":")
        learned = AttentionMix.load(path)
        layers, heads = learned.layers, learned.heads
        readings[f"learned {Path(path).stem}"] = (MixWeights.from_mix(learned), flag == "zero")

    table: dict[str, dict[str, float]] = {}
    raw: dict[str, dict[str, np.ndarray]] = {}
    for reading, (weights, zero) in readings.items():
        raw[reading] = {name: _scores(sets[zero][name], weights) for name in names}
        table[reading] = {name: ndcg_at_10(sets[zero][name], raw[reading][name]) for name in names}

    # The free dense signal: pooled cosine alone, fused with each reading by weight (chosen on the train side) or RRF.
    pooled = {name: sets[False][name].pooled_cos.numpy() for name in names}
    table["pooled dense"] = {name: ndcg_at_10(sets[False][name], pooled[name]) for name in names}
    chosen_weights: dict[str, float] = {}
    for reading in list(readings):
        zero = readings[reading][1]
        by_weight = {
            w: {name: ndcg_at_10(sets[zero][name], raw[reading][name] + w * pooled[name]) for name in names}
            for w in FUSION_WEIGHTS
        }
        best = max(FUSION_WEIGHTS, key=lambda w: np.mean([by_weight[w][n] for n in CHOOSE_ON]))
        chosen_weights[reading] = best
        table[f"{reading} + {best} x pooled"] = by_weight[best]
        fused = {name: reciprocal_rank_fusion(sets[zero][name], raw[reading][name], pooled[name]) for name in names}
        table[f"{reading}, RRF with pooled"] = {name: ndcg_at_10(sets[zero][name], fused[name]) for name in names}

    header = "| reading | " + " | ".join(names) + " |"
    rows = [header, "|---|" + "---|" * len(names)]
    rows += [f"| {r} | " + " | ".join(f"{v[n]:.2f}" for n in names) + " |" for r, v in table.items()]
    print("\n".join(rows))
    if not record:
        return
    queries = {name: len(sets[False][name].query_ids) for name in names}
    result = {
        **run_header("python benchmarks/attention_mix.py " + " ".join(sys.argv[1:])),
        "load_average": os.getloadavg(),
        "queries": queries,
        "fusion_weights_chosen": chosen_weights,
        "ndcg@10": {r: {n: round(v, 2) for n, v in values.items()} for r, values in table.items()},
    }
    body = [
        f"- load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared, loaded machine; no timings here)",
        "- every reading re-ranks the same top 100 by MaxSim per query (exhaustive MaxSim over the collection, "
        "which does not depend on A); nDCG@10 x 100",
        f"- queries: {', '.join(f'{n} {q}' for n, q in queries.items())}",
        "- scifact-*: a sub-corpus, the union of the BM25 (stemmed) top-8 pools of 120 train and 120 test queries "
        "(1,467 abstracts), not the full 5,183 (encoding every attention feature of the full corpus takes most of "
        "an hour on this machine); pairs: 220 sampled rows of the shared training files (SQuAD, NQ, MedQuAD, "
        "COVID-QA, COVID FAQ) over their own passages",
        f"- chosen on {', '.join(CHOOSE_ON)} only; reported on {', '.join(REPORT_ON)}",
        "",
        *rows,
    ]
    record_run(
        "attention-mix", "attention readings: zero-shot, [CLS]/[SEP] zeroed, learned mixes, dense fusion", result, body
    )


if __name__ == "__main__":
    typer.run(main)
