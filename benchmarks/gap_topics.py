"""How well the knowledge-gap page groups questions by topic (webapp/insights.py), measured on the knowledge base's
labelled questions: two questions belong together when they share a gold document. For each way of describing a
question and each distance threshold: the number of topics, pair precision (grouped pairs that share a gold
document) and pair recall (pairs sharing one that were grouped). Appends to benchmarks/RESULTS.md.

    python benchmarks/gap_topics.py --index-dir indexes/knowledge_base

Caveat: the ways and the threshold were chosen on these same 150 questions; there is no held-out split here.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from colbert_att_assistant.retriever import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.webapp.insights import SPECIAL, cluster, gap_vectors, question_vectors, retrieved_vectors

EVAL = Path(__file__).resolve().parent.parent / "knowledge_base" / "eval"
RESULTS = Path(__file__).with_name("RESULTS.md")


def gold_documents() -> tuple[list[str], list[set[str]]]:
    corpus = {}
    with (EVAL / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            corpus[record["_id"]] = record.get("metadata", {}).get("document_id", record["_id"].split("#")[0])
    gold: dict[str, set[str]] = {}
    for path in (EVAL / "qrels").glob("*.tsv"):
        with path.open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if int(row.get("score", 1)) > 0:
                    gold.setdefault(row["query-id"], set()).add(corpus.get(row["corpus-id"], row["corpus-id"]))
    questions, documents = [], []
    with (EVAL / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["_id"] in gold:
                questions.append(record["text"])
                documents.append(gold[record["_id"]])
    return questions, documents


def mean_pooled(encoder: ColBERTAttEncoder, questions: list[str]) -> np.ndarray:
    vectors = []
    for encoded in encoder.encode_documents(questions):
        pieces = encoder.token_strings(encoded.token_ids)
        keep = [i for i, piece in enumerate(pieces) if not SPECIAL.match(piece)]
        mean = np.asarray(encoded.vectors, dtype=np.float64)[keep].mean(axis=0)
        vectors.append(mean / np.linalg.norm(mean))
    return np.asarray(vectors)


def pair_scores(labels: list[int], gold: set[tuple[int, int]]) -> tuple[float, float]:
    grouped = {(i, j) for i, j in itertools.combinations(range(len(labels)), 2) if labels[i] == labels[j]}
    hits = len(grouped & gold)
    return hits / max(1, len(grouped)), hits / max(1, len(gold))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", default="indexes/knowledge_base")
    parser.add_argument("--top-k", type=int, default=5, help="documents retrieved per question (the app logs 5)")
    args = parser.parse_args()
    encoder = ColBERTAttEncoder()
    index = MultiVectorIndex.load(args.index_dir, encoder=encoder)
    questions, documents = gold_documents()
    gold = {(i, j) for i, j in itertools.combinations(range(len(questions)), 2) if documents[i] & documents[j]}
    started = time.perf_counter()
    retrieved = [
        [(str(hit.metadata["document_id"]), hit.normalised_score) for hit in index.search(q, top_k=args.top_k)]
        for q in questions
    ]
    attention = question_vectors(encoder, questions)
    ways = {
        "question, mean-pooled": mean_pooled(encoder, questions),
        "question, attention-pooled": attention,
        "retrieved documents only": retrieved_vectors(retrieved),
        "attention-pooled question + retrieved documents (shipped)": gap_vectors(attention, retrieved),
    }
    elapsed = time.perf_counter() - started
    load = os.getloadavg()
    lines = [
        f"\n## {datetime.now(UTC).isoformat(timespec='seconds')} knowledge-gap topics (benchmarks/gap_topics.py)",
        f"- machine {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f}; "
        f"{len(questions)} labelled questions with a gold document, {len(gold)} pairs sharing one; "
        f"top {args.top_k} retrieved from `{args.index_dir}`; encoding and retrieval {elapsed:.1f} s",
        f"- command: `python benchmarks/gap_topics.py --index-dir {args.index_dir}`",
        "- chosen on these same questions (no held-out split)",
        "",
        "| description | distance < | topics | pair precision | pair recall |",
        "|---|---|---|---|---|",
    ]
    for name, vectors in ways.items():
        for distance in (0.4, 0.5, 0.6):
            labels = cluster(vectors, distance)
            precision, recall = pair_scores(labels, gold)
            lines.append(f"| {name} | {distance} | {len(set(labels))} | {precision:.2f} | {recall:.2f} |")
    text = "\n".join(lines) + "\n"
    print(re.sub(r"\n{3,}", "\n\n", text))
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
