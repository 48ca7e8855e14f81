"""The labelled questions about the knowledge base, as a BEIR dataset in `knowledge_base/eval/`.

    queries.jsonl   _id, text, metadata {type, answerable, audience, previous_turn, note, facts}
    qrels/test.tsv  relevant chunk ids of every answerable question
    corpus.jsonl    the chunks themselves, regenerated from the documents with
                    `python -m colbert_att_assistant.knowledge_base.eval_set` whenever a document changes (a test
                    checks it is current)

Types: paraphrase, typo, multi_part, follow_up (with the earlier turn it depends on), unanswerable (no qrels:
the knowledge base does not answer it), internal (only internal staff documents answer it).

`note` says in prose what a correct answer holds; `facts` says it so a program can check it: a list of 1-3 facts
(one per part of a two-part question), each a list of acceptable wordings, one of which a correct answer must
contain, e.g. [["12"]] or [["rhodium"], ["12-18", "re-plat"]]. The first wording of each fact, and every number
in any wording, is taken from the question's qrels chunks (a test checks it); no wording occurs in the question
itself, so an answer that repeats the question proves nothing. Unanswerable questions have no facts. Matching
rules (case, dashes, number words, ranges, numbers as numbers): `colbert_att_assistant/evals/answer_scoring.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from colbert_att_assistant.knowledge_base.chunking import chunk_document
from colbert_att_assistant.knowledge_base.documents_io import DOCUMENTS_DIR, load_documents
from colbert_att_assistant.paths import KNOWLEDGE_BASE_DIR
from colbert_att_assistant.retriever.checkpoint import bundled_model_path

EVAL_DIR = KNOWLEDGE_BASE_DIR / "eval"


def corpus_records(documents_dir: Path = DOCUMENTS_DIR) -> list[dict]:
    """Every chunk of the knowledge base as a BEIR corpus record (chunked for the bundled encoder)."""
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path())

    def tokenize(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    return [
        # The title is already the first line of every chunk: BEIR title left empty so it is not doubled.
        {"_id": node.node_id, "title": "", "text": node.get_content(), "metadata": node.metadata}
        for document in load_documents(documents_dir)
        for node in chunk_document(document, tokenize)
    ]


def write_corpus(path: Path = EVAL_DIR / "corpus.jsonl") -> int:
    records = corpus_records()
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return len(records)


def load_questions(path: Path = EVAL_DIR / "queries.jsonl") -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


if __name__ == "__main__":
    print(f"{write_corpus()} chunks written to {EVAL_DIR / 'corpus.jsonl'}")
