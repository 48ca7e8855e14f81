"""How should A be read from the attention maps? Every strategy x scaling x temperature x weighting side x delta,
chosen on SciFact TRAIN, then all reported on TEST.

    python benchmarks/attention_ablation.py --dataset ../shared/datasets/scifact --index-dir indexes/scifact

The documents are encoded once, reading every variant of A in the same forward pass (resumable: the variants
are cached beside the index). Candidate generation does not depend on A, so it is computed once per query and
only the exact re-ranking is repeated per variant.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from ranx import Qrels, Run, evaluate

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder, variant_key
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.retriever.scoring import ScoringMode
from colbert_att_assistant.retriever.settings import (
    AttentionScaling,
    AttentionStrategy,
    CandidateSettings,
    EncoderSettings,
)

STRATEGIES = [s for s in AttentionStrategy if s is not AttentionStrategy.NONE]
VARIANTS = [(s, c) for s in STRATEGIES for c in AttentionScaling]
# (scaling, temperature): raw A is a softmax mass; by_length makes uniform attention 1, then divided by T.
SCALINGS = [(AttentionScaling.RAW, 1.0), *((AttentionScaling.BY_LENGTH, t) for t in (1.0, 4.0, 16.0))]
WEIGHTINGS = [
    (ScoringMode.QUERY_WEIGHTED, False),
    (ScoringMode.DOCUMENT_WEIGHTED, False),
    (ScoringMode.DOCUMENT_WEIGHTED, True),
    (ScoringMode.COLBERT_ATT, False),
    (ScoringMode.COLBERT_ATT, True),
]


def _document_variants(index: MultiVectorIndex, data: BeirDataset, cache: Path) -> dict[str, np.ndarray]:
    """Every variant of A for every document token, concatenated in index slot order."""
    if cache.is_file():
        return dict(np.load(cache))
    ordered = [index.get(i) for i in index.document_ids()]
    texts = [data.corpus[d.id].full_text for d in ordered]
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        print(f"\rencoding {done[0]}/{len(texts)}", end="", file=sys.stderr, flush=True)

    encoded = index.encoder.encode_weight_variants(texts, is_query=False, variants=VARIANTS, progress=advance)
    for stored, item in zip(ordered, encoded, strict=True):
        if len(item.weights) != len(stored.weights):
            raise RuntimeError(f"{stored.id}: {len(item.weights)} tokens now, {len(stored.weights)} in the index.")
    variants = {key: np.concatenate([e.variant_weights[key] for e in encoded]) for key in encoded[0].variant_weights}
    np.savez(cache, **variants)
    return variants


def main(
    dataset: Annotated[Path, typer.Option()] = Path("../shared/datasets/scifact"),
    index_dir: Annotated[Path, typer.Option()] = Path("indexes/scifact"),
    choose_split: Annotated[str, typer.Option()] = "train",
    report_split: Annotated[str, typer.Option()] = "test",
) -> None:
    if choose_split == "test":
        raise typer.BadParameter("The default is chosen on a train split, never on test.")
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(logging.ERROR)
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=2))
    index = MultiVectorIndex.load(index_dir, encoder=encoder, candidate_settings=CandidateSettings())
    splits = {split: BeirDataset.load(dataset, split) for split in (choose_split, report_split)}
    doc_variants = _document_variants(
        index, splits[choose_split], index_dir.parent / f"{index_dir.name}-a-variants.npz"
    )
    ordered = [index.get(i) for i in index.document_ids()]
    bounds = np.cumsum([0, *(len(d.weights) for d in ordered)])

    prepared = {}
    for split, data in splits.items():
        queries = encoder.encode_weight_variants(list(data.queries.values()), is_query=True, variants=VARIANTS)
        candidates = index._candidate_slots(queries, None, 10)
        prepared[split] = (list(data.queries), queries, candidates, Qrels(data.qrels))

    def evaluate_variant(
        split: str, key: str | None, temperature: float, mode: ScoringMode, fixed_delta: bool
    ) -> float:
        if key is not None:
            for position, document in enumerate(ordered):
                document.weights = doc_variants[key][bounds[position] : bounds[position + 1]] / temperature
        index.settings.fixed_delta = fixed_delta
        ids, queries, candidates, qrels = prepared[split]
        run = {}
        for qid, query, slots in zip(ids, queries, candidates, strict=True):
            if key is not None:
                query = dataclasses.replace(query, weights=query.variant_weights[key] / temperature)
            raw = index.score(query, [by_slot[int(s)] for s in slots], mode).raw
            best = np.argsort(-raw)[:10]
            run[qid] = {ordered_ids[int(slots[i])]: float(raw[i]) for i in best}
        return float(evaluate(qrels, Run(run), "ndcg@10")) * 100

    ordered_ids = {d.slot: d.id for d in ordered}
    by_slot = {d.slot: d for d in ordered}
    rows = [
        {
            "variant": "maxsim (no weights)",
            **{split: round(evaluate_variant(split, None, 1.0, ScoringMode.MAXSIM, False), 2) for split in splits},
        }
    ]
    print(rows[-1], file=sys.stderr)
    for strategy, (scaling, temperature), (mode, fixed_delta) in itertools.product(STRATEGIES, SCALINGS, WEIGHTINGS):
        key = variant_key(strategy, scaling)
        name = f"{mode.value} {key} T={temperature:g}{' delta=1' if fixed_delta else ''}"
        row = {"variant": name, "strategy": strategy.value, "scaling": scaling.value, "temperature": temperature}
        row |= {"mode": mode.value, "fixed_delta": fixed_delta}
        for split in splits:
            row[split] = round(evaluate_variant(split, key, temperature, mode, fixed_delta), 2)
        rows.append(row)
        print(row, file=sys.stderr)

    chosen = max((r for r in rows if r.get("mode") == "colbert_att"), key=lambda r: r[choose_split])
    result = {**run_header(), "chosen_on": choose_split, "chosen": chosen, "rows": rows}
    baseline = rows[0]
    body = [
        f"- chosen (best colbert_att variant on {choose_split}): **{chosen['variant']}**: {choose_split} "
        f"{chosen[choose_split]} vs MaxSim {baseline[choose_split]}; {report_split} {chosen[report_split]} vs "
        f"MaxSim {baseline[report_split]}",
        "- same candidates for every row (FAISS, re-rank depth 64); only the exact re-ranking changes",
        "",
        f"| variant | {choose_split} | {report_split} |",
        "|---|---|---|",
        *(
            f"| {r['variant']} | {r[choose_split]} | {r[report_split]} |"
            for r in sorted(rows, key=lambda r: -r[choose_split])
        ),
    ]
    record_run(
        "attention-ablation",
        f"attention ablation: nDCG@10, chosen on {choose_split}, reported on {report_split}",
        result,
        body,
    )


if __name__ == "__main__":
    typer.run(main)
