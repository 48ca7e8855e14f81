"""Learn how to read A: a query-side and a document-side mix over the encoder's per-layer, per-head attention.

    python -m colbert_att_assistant.retriever.training.attention_mix cache  --cache-dir /tmp/attention-mix   # encode
    once (frozen encoder)
    python -m colbert_att_assistant.retriever.training.attention_mix train  --cache-dir /tmp/attention-mix --out
    runs/attention-mix.json
    python -m colbert_att_assistant.retriever.training.attention_mix evaluate --cache-dir /tmp/attention-mix --mix
    runs/attention-mix.json

The mix is trained with the ColBERT-Att score itself (Eq. 2) as the ranking function and a contrastive loss over
each query's candidates (top-k by MaxSim plus its positives), on SciFact train and samples of the shared training
pairs: never a test split, never the knowledge base's held-out half. Evaluation re-ranks each query's top 100 by
MaxSim with zero-shot and learned A from the same cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from colbert_att_assistant.paths import PROJECT_ROOT
from colbert_att_assistant.retriever.beir import BeirDataset
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.settings import AttentionStrategy, EncoderSettings
from colbert_att_assistant.retriever.training.attention_cache import (
    CachedCollection,
    beir_collection,
    build_cache,
    labelled_half,
    load_cache,
    merge_splits,
    pairs_collection,
    pooled_subcorpus,
    shared_rows,
)
from colbert_att_assistant.retriever.training.data import find_training_dir
from colbert_att_assistant.retriever.training.mix_scoring import MixWeights, PairSet, pair_set
from colbert_att_assistant.retriever.training.mix_training import MixTrainingSettings, train_mix

app = typer.Typer(help="Learn a reading of A from cached attention features (encoder frozen).")
REPO = PROJECT_ROOT
DATASETS = REPO.parent / "shared" / "datasets"
KB_EVAL = REPO / "knowledge_base" / "eval"
# Rows sampled from each shared source for the training pool (passages: the row's positive and its negatives).
PAIR_SOURCES = {"squad": 60, "nq": 60, "medquad": 40, "covid_qa": 30, "covid_faq": 30}
# SciFact queries per split and their BM25 pool depth: the sub-corpus is the union of the pools (see
# attention_cache.pooled_subcorpus); the full corpus would take most of an hour to encode here.
SCIFACT_QUERIES = {"train": 120, "test": 120}
SCIFACT_POOL_DEPTH = 8
COLLECTIONS = ("kb", "wixqa", "scifact", "pairs")
TRAINING_COLLECTIONS = ("scifact", "pairs")


@app.callback()
def main() -> None:
    """Cache features once, then train and evaluate mixes in seconds."""


def _stable_order(query_id: str) -> bytes:
    """A fixed pseudo-random order of query ids (the sample does not depend on file order)."""
    return hashlib.sha256(query_id.encode()).digest()


def cache_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / f"{name}.npz"


def build_named_cache(name: str, cache_dir: Path, encoder: ColBERTAttEncoder, top_k: int) -> CachedCollection:
    path = cache_path(cache_dir, name)
    if name == "kb":
        collection = beir_collection(KB_EVAL, "test", use_title=False, name="kb")
        return build_cache(encoder, collection, path, top_k, lambda qid: labelled_half(qid) == "calibration")
    if name == "wixqa":
        collection = beir_collection(DATASETS / "wixqa", "test", use_title=True, name="wixqa")
        return build_cache(encoder, collection, path, top_k, lambda qid: False)
    if name == "scifact":
        collection, split_of = merge_splits(DATASETS / "scifact", ("train", "test"), use_title=True, name="scifact")
        picked = [
            qid
            for split, count in SCIFACT_QUERIES.items()
            for qid in sorted((q for q in collection.queries if split_of[q] == split), key=_stable_order)[:count]
        ]
        collection = pooled_subcorpus(collection, picked, SCIFACT_POOL_DEPTH, "scifact")
        return build_cache(encoder, collection, path, top_k, lambda qid: split_of[qid] == "train")
    if name == "pairs":
        training_dir = find_training_dir(None)
        rows = [row for source, count in PAIR_SOURCES.items() for row in shared_rows(source, training_dir, count, 0)]
        collection = pairs_collection("pairs", rows)
        return build_cache(encoder, collection, path, top_k, lambda qid: True)
    raise typer.BadParameter(f"Unknown collection {name!r}; choose from {', '.join(COLLECTIONS)}.")


@app.command()
def cache(
    cache_dir: Annotated[Path, typer.Option(help="Where the .npz caches go (outside the repository).")] = Path(
        "/tmp/attention-mix"
    ),
    collections: Annotated[str, typer.Option(help=f"Comma-separated, from {', '.join(COLLECTIONS)}.")] = ",".join(
        COLLECTIONS
    ),
    top_k: Annotated[int, typer.Option(help="Candidates per query, by MaxSim.")] = 100,
    threads: Annotated[int | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option(help="Checkpoint folder; default the bundled MiniLM.")] = None,
) -> None:
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(logging.ERROR)
    encoder = ColBERTAttEncoder(EncoderSettings(model_path=model, num_threads=threads))
    for name in [c.strip() for c in collections.split(",") if c.strip()]:
        cached = build_named_cache(name, cache_dir, encoder, top_k)
        typer.echo(
            f"{name}: {len(cached.query_ids)} queries, {len(cached.doc_ids)} documents, "
            f"{len(cached.docs.token_ids)} tokens, {len(cached.pair_query)} pairs"
        )


def _held_back(query_id: str) -> bool:
    """A fixed fifth of each training collection's queries validates (chooses the step), the rest trains."""
    return hashlib.sha256(f"validation:{query_id}".encode()).digest()[0] % 5 == 0


def training_sets(
    cache_dir: Path, zero_special: bool, depth: int, with_kb_calibration: bool = False
) -> tuple[list[PairSet], list[PairSet]]:
    """SciFact train queries and the shared pairs (and the knowledge base's calibration half, if asked), each split
    into training and validation queries. Never a test split, never the held-out half."""
    train, validation = [], []
    for name in (*TRAINING_COLLECTIONS, *(("kb",) if with_kb_calibration else ())):
        cached = load_cache(cache_path(cache_dir, name))
        if name == "kb":
            ids = [q for q in cached.query_ids if labelled_half(q) == "calibration"]
        else:
            split_of = _scifact_split_of() if name == "scifact" else None
            ids = [q for q in cached.query_ids if split_of is None or split_of.get(q) == "train"]
        fit = [q for q in ids if not _held_back(q)]
        check = [q for q in ids if _held_back(q)]
        train.append(pair_set(cached, fit, candidates_only=False, depth=depth, zero_special=zero_special))
        held = pair_set(cached, check, candidates_only=True, zero_special=zero_special)
        held.name = f"{name}-validation"
        validation.append(held)
    return train, validation


def _scifact_split_of() -> dict[str, str]:
    return {q: split for split in ("train", "test") for q in BeirDataset.load(DATASETS / "scifact", split).queries}


def evaluation_sets(cache_dir: Path, zero_special: bool) -> dict[str, PairSet]:
    """Every query set results are reported on: test splits and the knowledge base's halves (top 100 by MaxSim)."""
    sets: dict[str, PairSet] = {}
    scifact = load_cache(cache_path(cache_dir, "scifact"))
    split_of = _scifact_split_of()
    for split in ("train", "test"):
        ids = [q for q in scifact.query_ids if split_of[q] == split]
        sets[f"scifact-{split}"] = pair_set(scifact, ids, candidates_only=True, zero_special=zero_special)
    wixqa = load_cache(cache_path(cache_dir, "wixqa"))
    sets["wixqa-test"] = pair_set(wixqa, wixqa.query_ids, candidates_only=True, zero_special=zero_special)
    kb = load_cache(cache_path(cache_dir, "kb"))
    for half in ("calibration", "held_out"):
        ids = [q for q in kb.query_ids if labelled_half(q) == half]
        sets[f"kb-{half}"] = pair_set(kb, ids, candidates_only=True, zero_special=zero_special)
    sets["kb-all"] = pair_set(kb, kb.query_ids, candidates_only=True, zero_special=zero_special)
    pairs = load_cache(cache_path(cache_dir, "pairs"))
    sets["pairs"] = pair_set(pairs, pairs.query_ids, candidates_only=True, zero_special=zero_special)
    return sets


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="The learned mix, as JSON (AttentionMix).")],
    cache_dir: Annotated[Path, typer.Option()] = Path("/tmp/attention-mix"),
    zero_special: Annotated[bool, typer.Option(help="Train with A = 0 at [CLS] / [SEP].")] = False,
    steps: Annotated[int, typer.Option()] = 200,
    learning_rate: Annotated[float, typer.Option()] = 0.05,
    depth: Annotated[int, typer.Option(help="Candidates per training query (plus its positives).")] = 50,
    with_kb_calibration: Annotated[
        bool, typer.Option(help="Also learn from the knowledge base's calibration half (never its held-out half).")
    ] = False,
) -> None:
    train_sets, validation = training_sets(cache_dir, zero_special, depth, with_kb_calibration)
    log: list[dict] = []
    settings = MixTrainingSettings(steps=steps, learning_rate=learning_rate, evaluate_every=10)
    start = MixWeights.fixed(AttentionStrategy.CLS_ALL, *_layers_heads(cache_dir))
    learned = train_mix(train_sets, validation, start, settings, log)
    note = (
        f"learned on {', '.join(s.name for s in train_sets)} ({sum(len(s.query_ids) for s in train_sets)} queries), "
        f"{'[CLS]/[SEP] zeroed, ' if zero_special else ''}{steps} steps, lr {learning_rate}"
    )
    mix = learned.to_mix(*_layers_heads(cache_dir), note=note)
    out.parent.mkdir(parents=True, exist_ok=True)
    mix.save(out)
    out.with_suffix(".log.json").write_text(json.dumps(log, indent=1))
    for entry in log:
        typer.echo(json.dumps(entry))
    typer.echo(f"saved {out}")


def _layers_heads(cache_dir: Path) -> tuple[int, int]:
    cached = load_cache(cache_path(cache_dir, "kb"))
    return cached.layers, cached.heads


if __name__ == "__main__":
    app()
