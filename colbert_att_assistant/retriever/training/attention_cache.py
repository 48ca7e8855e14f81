"""Encode a collection once with the encoder frozen and keep what learning a reading of A needs.

For every token kept (as the index keeps it): its per-layer, per-head attention features
(`retriever.attention.attention_features`), the text's attended length (for length scaling) and word count (for
delta); for every text the mean of its unit token vectors (a free dense embedding). For every query, candidate
documents (top-k by MaxSim, which does not depend on A; optionally the judged positives too) and, per query token,
which document token wins its MaxSim and with what cosine. The winner does not depend on A either, so any reading
of A re-scores these pairs exactly as Eq. 2 would, without the encoder.

Caches are plain .npz files under a folder of the caller's choosing (never the repository).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from colbert_att_assistant.retriever.attention import attention_features, supports_recomputed_attention
from colbert_att_assistant.retriever.beir import BeirDataset, query_texts
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder

CACHE_VERSION = 1


@dataclass
class Collection:
    """Texts to encode and judgements: what any BEIR set, the knowledge base or a pool of training pairs gives."""

    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass
class EncodedSet:
    """Kept tokens of several texts, concatenated: offsets (n + 1,), features (T, F) float16, token_ids (T,),
    attended (n,) tokens the encoder attended to, n_words (n,), pooled (n, dim) float32 unit vectors."""

    offsets: np.ndarray
    features: np.ndarray
    token_ids: np.ndarray
    attended: np.ndarray
    n_words: np.ndarray
    pooled: np.ndarray


@dataclass
class CachedCollection:
    """A collection ready for re-scoring. Pairs are (query, candidate document) with, per query token i (padded to
    the longest query, -1 / 0 beyond), best_row: the winning document token (row of docs.features) and best_cos.
    is_candidate: the pair is among the query's top-k by MaxSim (False: a positive added for training only)."""

    name: str
    query_ids: list[str]
    doc_ids: list[str]
    qrels: dict[str, dict[str, int]]
    queries: EncodedSet
    docs: EncodedSet
    pair_query: np.ndarray
    pair_doc: np.ndarray
    best_row: np.ndarray
    best_cos: np.ndarray
    maxsim: np.ndarray
    is_candidate: np.ndarray
    layers: int
    heads: int


# ---- collections ---------------------------------------------------------------------------------------------


def beir_collection(folder: Path, split: str, use_title: bool, name: str | None = None) -> Collection:
    data = BeirDataset.load(folder, split)
    documents = list(data.corpus.values())
    return Collection(
        name=name or f"{folder.resolve().name}-{split}",
        doc_ids=[d.id for d in documents],
        doc_texts=[d.full_text if use_title else d.text for d in documents],
        queries=query_texts(folder, data.queries),
        qrels=data.qrels,
    )


def pooled_subcorpus(collection: Collection, keep_queries: Sequence[str], pool_depth: int, name: str) -> Collection:
    """The documents BM25 (stemmed) ranks in the top `pool_depth` for any of `keep_queries`, those queries only.

    Encoding a whole 5,000-abstract corpus with every attention feature takes most of an hour on a shared 2-core
    machine; this keeps each query's likely candidates and lets the other queries' pools act as distractors. The
    queries' judged documents are not added, so a missed positive stays missed for every method alike.
    """
    from colbert_att_assistant.retriever.bm25 import BM25Baseline

    bm25 = BM25Baseline(collection.doc_ids, collection.doc_texts, stemming=True)
    chosen: set[str] = set()
    for qid in keep_queries:
        chosen |= set(bm25.search(collection.queries[qid], pool_depth))
    kept = [i for i, doc_id in enumerate(collection.doc_ids) if doc_id in chosen]
    return Collection(
        name,
        [collection.doc_ids[i] for i in kept],
        [collection.doc_texts[i] for i in kept],
        {qid: collection.queries[qid] for qid in keep_queries},
        {qid: {d: r for d, r in collection.qrels[qid].items() if d in chosen} for qid in keep_queries},
    )


def labelled_half(question_id: str) -> str:
    """The knowledge base's calibration / held-out split (`evals.labelled_questions`): a hash of the id."""
    return "calibration" if hashlib.sha256(question_id.encode()).digest()[0] % 2 == 0 else "held_out"


def merge_splits(folder: Path, splits: Sequence[str], use_title: bool, name: str) -> tuple[Collection, dict[str, str]]:
    """One corpus, the queries of several splits (encoded once); returns the split of every query too."""
    parts = [beir_collection(folder, split, use_title) for split in splits]
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    split_of: dict[str, str] = {}
    for split, part in zip(splits, parts, strict=True):
        queries |= part.queries
        qrels |= part.qrels
        split_of |= dict.fromkeys(part.queries, split)
    return Collection(name, parts[0].doc_ids, parts[0].doc_texts, queries, qrels), split_of


def pairs_collection(name: str, rows: Sequence[tuple[str, str, list[str]]], max_chars: int = 2000) -> Collection:
    """(query, positive, negatives) rows as one small corpus: every row's passages, deduplicated; the other rows'
    passages are the easy negatives, the row's own negatives the hard ones."""
    doc_index: dict[str, int] = {}
    qrels: dict[str, dict[str, int]] = {}
    queries: dict[str, str] = {}
    for number, (query, positive, negatives) in enumerate(rows):
        ids = []
        for text in (positive, *negatives):
            text = text[:max_chars]
            if text.strip():
                ids.append(doc_index.setdefault(text, len(doc_index)))
        if not ids or not query.strip():
            continue
        qid = f"{name}-{number}"
        queries[qid] = query
        qrels[qid] = {f"{name}-d{ids[0]}": 1}
    texts = list(doc_index)
    return Collection(name, [f"{name}-d{i}" for i in range(len(texts))], texts, queries, qrels)


def shared_rows(source: str, training_dir: Path, count: int, seed: int) -> list[tuple[str, str, list[str]]]:
    """`count` rows of a shared training source, a seeded sample of its first 20,000."""
    from colbert_att_assistant.retriever.training.data import (
        shared_source,  # the training package's readers and parsers
    )

    spec = shared_source(source, training_dir, 1.0, 1.0)
    rows = []
    for row in spec.read():
        rows.append(row)
        if len(rows) >= 20_000:
            break
    random.Random(seed).shuffle(rows)
    return [spec.parse(row) for row in rows[:count]]


# ---- encoding ------------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_with_features(
    encoder: ColBERTAttEncoder, texts: Sequence[str], is_query: bool, label: str = ""
) -> tuple[EncodedSet, list[np.ndarray]]:
    """Kept tokens' features (and, returned apart, their unit vectors per text), the way the encoder keeps them."""
    settings = encoder.settings
    max_tokens = settings.query_max_tokens if is_query else settings.document_max_tokens
    marker = encoder._query_marker_id if is_query else encoder._document_marker_id
    items = encoder._tokenize(texts, max_tokens, marker, is_query)
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    vectors: list[np.ndarray | None] = [None] * len(items)
    features: list[np.ndarray | None] = [None] * len(items)
    token_ids: list[np.ndarray | None] = [None] * len(items)
    attended = np.zeros(len(items), dtype=np.int32)
    eager = not supports_recomputed_attention(encoder.backbone)
    started = time.perf_counter()
    for start in range(0, len(order), settings.batch_size):
        batch_ids = order[start : start + settings.batch_size]
        input_ids, attention_mask, keep = encoder._batch_tensors([items[i] for i in batch_ids], is_query)
        output = encoder.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
            output_hidden_states=True,
            output_attentions=eager,
        )
        hidden = output.last_hidden_state
        if encoder.projection is not None:
            hidden = encoder.projection(hidden)
        unit = torch.nn.functional.normalize(hidden.float(), p=2, dim=-1)
        feats = attention_features(encoder.backbone, output.hidden_states, attention_mask, output.attentions)
        for row, i in enumerate(batch_ids):
            mask = keep[row]
            vectors[i] = unit[row][mask].numpy()
            features[i] = feats[row][mask].numpy().astype(np.float16)
            token_ids[i] = input_ids[row][mask].numpy().astype(np.int32)
            attended[i] = int(attention_mask[row].sum())
        if label and (start // settings.batch_size) % 10 == 0:
            done = min(start + settings.batch_size, len(order))
            print(f"\r{label}: {done}/{len(order)} ({time.perf_counter() - started:.0f} s)", end="", file=sys.stderr)
    if label:
        print(file=sys.stderr)
    lengths = np.array([len(v) for v in vectors], dtype=np.int64)
    pooled = np.stack([v.mean(axis=0) for v in vectors]).astype(np.float32)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True).clip(min=1e-12)
    encoded = EncodedSet(
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        features=np.concatenate(features),
        token_ids=np.concatenate(token_ids),
        attended=attended,
        n_words=np.array([item.n_words for item in items], dtype=np.int32),
        pooled=pooled,
    )
    return encoded, [v for v in vectors if v is not None]


# ---- candidates and winners ----------------------------------------------------------------------------------


def _winners(query: np.ndarray, doc_vectors: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per document and query token: the winning token (local index) and its cosine; (B, Lq) each."""
    lengths = torch.tensor([len(d) for d in doc_vectors])
    stacked = torch.from_numpy(np.concatenate(doc_vectors))
    similarity = torch.from_numpy(query) @ stacked.T  # (Lq, T)
    starts = torch.cumsum(lengths, 0) - lengths
    positions = torch.arange(int(lengths.max()))
    valid = positions[None, :] < lengths[:, None]
    columns = (starts[:, None] + positions[None, :]).clamp(max=stacked.shape[0] - 1)
    padded = similarity[:, columns].masked_fill(~valid[None], float("-inf"))  # (Lq, B, Lmax)
    best, index = padded.max(dim=2)
    return index.T.numpy(), best.T.numpy()


def build_cache(
    encoder: ColBERTAttEncoder,
    collection: Collection,
    path: Path,
    top_k: int,
    add_positives: Callable[[str], bool],
    prefilter: int = 1000,
) -> CachedCollection:
    """Encode, find candidates and winners, save to `path` (.npz); loads it instead when it exists.

    add_positives(query id): also keep that query's judged documents outside its top-k (for training only)."""
    if path.is_file():
        return load_cache(path)
    docs, doc_vectors = encode_with_features(
        encoder, collection.doc_texts, is_query=False, label=f"{collection.name} docs"
    )
    query_ids = list(collection.queries)
    queries, query_vectors = encode_with_features(
        encoder, [collection.queries[q] for q in query_ids], is_query=True, label=f"{collection.name} queries"
    )
    doc_position = {doc_id: i for i, doc_id in enumerate(collection.doc_ids)}
    longest = max(len(v) for v in query_vectors)
    pair_query, pair_doc, best_rows, best_coss, maxsims, candidate = [], [], [], [], [], []
    started = time.perf_counter()
    for qi, (qid, qvec) in enumerate(zip(query_ids, query_vectors, strict=True)):
        # A pooled-cosine prefilter keeps the exact MaxSim pass affordable on large corpora.
        pool = np.arange(len(doc_vectors))
        if len(pool) > prefilter:
            pooled_query = qvec.mean(axis=0)
            pool = np.argsort(-(docs.pooled @ pooled_query))[:prefilter]
        _, cos = _winners(qvec, [doc_vectors[i] for i in pool])
        scores = cos.sum(axis=1)
        chosen = list(pool[np.argsort(-scores, kind="stable")[:top_k]])
        flags = [True] * len(chosen)
        if add_positives(qid):
            for doc_id, relevance in collection.qrels.get(qid, {}).items():
                if relevance > 0 and doc_position[doc_id] not in chosen:
                    chosen.append(doc_position[doc_id])
                    flags.append(False)
        chosen_local, chosen_cos = _winners(qvec, [doc_vectors[i] for i in chosen])
        rows = np.full((len(chosen), longest), -1, dtype=np.int64)
        rows[:, : len(qvec)] = chosen_local + docs.offsets[np.array(chosen)][:, None]
        coss = np.zeros((len(chosen), longest), dtype=np.float32)
        coss[:, : len(qvec)] = chosen_cos
        pair_query += [qi] * len(chosen)
        pair_doc += chosen
        best_rows.append(rows)
        best_coss.append(coss)
        maxsims.append(chosen_cos.sum(axis=1))
        candidate += flags
        if qi % 50 == 0:
            print(
                f"\r{collection.name} candidates: {qi}/{len(query_ids)} ({time.perf_counter() - started:.0f} s)",
                end="",
                file=sys.stderr,
            )
    print(file=sys.stderr)
    layers, heads = _layers_heads(encoder)
    cached = CachedCollection(
        name=collection.name,
        query_ids=query_ids,
        doc_ids=collection.doc_ids,
        qrels=collection.qrels,
        queries=queries,
        docs=docs,
        pair_query=np.array(pair_query, dtype=np.int64),
        pair_doc=np.array(pair_doc, dtype=np.int64),
        best_row=np.concatenate(best_rows),
        best_cos=np.concatenate(best_coss),
        maxsim=np.concatenate(maxsims).astype(np.float32),
        is_candidate=np.array(candidate, dtype=bool),
        layers=layers,
        heads=heads,
    )
    save_cache(cached, path)
    return cached


def _layers_heads(encoder: ColBERTAttEncoder) -> tuple[int, int]:
    config = encoder.backbone.config
    return int(config.num_hidden_layers), int(config.num_attention_heads)


def save_cache(cached: CachedCollection, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"queries_{k}": v for k, v in vars(cached.queries).items()}
    arrays |= {f"docs_{k}": v for k, v in vars(cached.docs).items()}
    meta = {
        "version": CACHE_VERSION,
        "name": cached.name,
        "query_ids": cached.query_ids,
        "doc_ids": cached.doc_ids,
        "qrels": cached.qrels,
        "layers": cached.layers,
        "heads": cached.heads,
    }
    temporary = path.with_suffix(".partial.npz")
    np.savez(
        temporary,
        meta=np.array(json.dumps(meta)),
        pair_query=cached.pair_query,
        pair_doc=cached.pair_doc,
        best_row=cached.best_row,
        best_cos=cached.best_cos,
        maxsim=cached.maxsim,
        is_candidate=cached.is_candidate,
        **arrays,
    )
    temporary.replace(path)


def load_cache(path: Path) -> CachedCollection:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        if meta["version"] != CACHE_VERSION:
            raise ValueError(f"{path}: cache version {meta['version']}, expected {CACHE_VERSION}; delete it.")
        fields = ("offsets", "features", "token_ids", "attended", "n_words", "pooled")
        return CachedCollection(
            name=meta["name"],
            query_ids=meta["query_ids"],
            doc_ids=meta["doc_ids"],
            qrels=meta["qrels"],
            queries=EncodedSet(**{f: data[f"queries_{f}"] for f in fields}),
            docs=EncodedSet(**{f: data[f"docs_{f}"] for f in fields}),
            pair_query=data["pair_query"],
            pair_doc=data["pair_doc"],
            best_row=data["best_row"],
            best_cos=data["best_cos"],
            maxsim=data["maxsim"],
            is_candidate=data["is_candidate"],
            layers=int(meta["layers"]),
            heads=int(meta["heads"]),
        )
