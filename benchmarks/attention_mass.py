"""Where the zero-shot A (cls_all) puts its mass on the knowledge base: [CLS], [SEP], the "Title > Section" heading
each chunk begins with, the body; for the questions of the calibration half only: [CLS], [SEP], punctuation, words.
Also which kind of document token wins the query tokens' MaxSim among each calibration question's top 100.

    python -m colbert_att_assistant.retriever.training.attention_mix cache --collections kb   # once
    python benchmarks/attention_mass.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.settings import AttentionMix, AttentionStrategy, EncoderSettings
from colbert_att_assistant.retriever.training.attention_cache import labelled_half, load_cache
from colbert_att_assistant.retriever.training.attention_mix import KB_EVAL, cache_path


def main(
    cache_dir: Annotated[Path, typer.Option()] = Path("/tmp/attention-mix"),
    record: Annotated[bool, typer.Option()] = True,
) -> None:
    cached = load_cache(cache_path(cache_dir, "kb"))
    encoder = ColBERTAttEncoder(EncoderSettings(num_threads=1))
    corpus = BeirDataset.load(KB_EVAL, "test").corpus
    mix = AttentionMix.from_strategy(AttentionStrategy.CLS_ALL, cached.layers, cached.heads)
    doc_a = cached.docs.features.astype(np.float32) @ np.array(mix.document)
    kinds = np.empty(len(doc_a), dtype=object)
    cls_id, sep_id = encoder.tokenizer.cls_token_id, encoder.tokenizer.sep_token_id
    for i, doc_id in enumerate(cached.doc_ids):
        text = corpus[doc_id].text
        first_line = text.split("\n", 1)[0]
        heading_end = len(first_line) if " > " in first_line else -1
        start = cached.docs.offsets[i]
        for k, (begin, _) in enumerate(encoder.document_token_spans(text)):
            token = cached.docs.token_ids[start + k]
            kinds[start + k] = (
                "[CLS]"
                if token == cls_id
                else "[SEP]"
                if token == sep_id
                else "heading"
                if begin < heading_end
                else "body"
            )

    q = cached.queries
    calibration = [i for i, qid in enumerate(cached.query_ids) if labelled_half(qid) == "calibration"]
    rows = np.concatenate([np.arange(q.offsets[i], q.offsets[i + 1]) for i in calibration])
    query_a = q.features[rows].astype(np.float32) @ np.array(mix.query)
    punctuation = np.isin(q.token_ids[rows], list(encoder._punctuation_ids))
    query_kinds = np.where(
        q.token_ids[rows] == cls_id,
        "[CLS]",
        np.where(q.token_ids[rows] == sep_id, "[SEP]", np.where(punctuation, "punctuation", "word")),
    )
    pairs = np.isin(cached.pair_query, calibration) & cached.is_candidate
    winners = cached.best_row[pairs]
    winner_kinds = kinds[winners[winners >= 0]]

    def summary(values: np.ndarray, labels: np.ndarray, names: list[str]) -> list[dict]:
        total = values.sum()
        return [
            {
                "kind": name,
                "tokens %": round(100 * float((labels == name).mean()), 1),
                "A mass %": round(100 * float(values[labels == name].sum() / total), 1),
                "mean A": round(float(values[labels == name].mean()), 4),
                "mean exp(A)": round(float(np.exp(values[labels == name]).mean()), 3),
            }
            for name in names
        ]

    documents = summary(doc_a, kinds, ["[CLS]", "[SEP]", "heading", "body"])
    questions = summary(query_a, query_kinds, ["[CLS]", "[SEP]", "punctuation", "word"])
    won = {name: round(100 * float((winner_kinds == name).mean()), 1) for name in ["[CLS]", "[SEP]", "heading", "body"]}

    def table(entries: list[dict]) -> list[str]:
        keys = list(entries[0])
        return ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"] + [
            "| " + " | ".join(str(e[k]) for k in keys) + " |" for e in entries
        ]

    lines = [
        "documents (624 chunks):",
        *table(documents),
        "",
        f"calibration questions ({len(calibration)}):",
        *table(questions),
        "",
        "document tokens that win a query token's MaxSim (calibration questions, top 100 each), %: "
        + ", ".join(f"{k} {v}" for k, v in won.items()),
    ]
    print("\n".join(lines))
    if not record:
        return
    result = {
        **run_header("python benchmarks/attention_mass.py " + " ".join(sys.argv[1:])),
        "load_average": os.getloadavg(),
        "documents": documents,
        "questions": questions,
        "winners": won,
    }
    body = [f"- load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; zero-shot A = cls_all, raw", "", *lines]
    record_run("attention-mass-kb", "attention mass on the knowledge base (zero-shot cls_all)", result, body)


if __name__ == "__main__":
    typer.run(main)
