"""The collections every retrieval method is judged on, side by side in one table: SciFact test, WixQA, the
knowledge base's held-out half and MS MARCO DL19 5K.

The shared datasets are read in place (their licences allow evaluation, not redistribution); each collection keeps
its ColBERT index in its own folder under `indexes/`, built once and reused while it matches the corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from colbert_att_assistant.evals.labelled_questions import load_questions
from colbert_att_assistant.paths import KNOWLEDGE_BASE_DIR, PROJECT_ROOT
from colbert_att_assistant.retriever.beir import BeirDataset, query_texts

SHARED_DATASETS_DIR = PROJECT_ROOT.parent / "shared" / "datasets"
INDEXES_DIR = PROJECT_ROOT / "indexes"
KB_EVAL_DIR = KNOWLEDGE_BASE_DIR / "eval"


class Collection(BaseModel):
    """One BEIR-format collection as the evaluation reads it."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(description="Short name for --collections and file names.")
    name: str = Field(description="How the results table names it.")
    dataset: Path
    split: str = "test"
    use_title: bool = Field(default=True, description="Prefix each document with its title.")
    index_dir: Path | None = Field(default=None, description="Where its ColBERT index is kept; None: in memory.")
    labelled_half: Literal["calibration", "held_out"] | None = Field(
        default=None, description="Knowledge-base labelled questions: only those of this half."
    )


def standard_collections(
    shared_datasets: Path = SHARED_DATASETS_DIR, indexes: Path = INDEXES_DIR, kb_dataset: Path = KB_EVAL_DIR
) -> list[Collection]:
    return [
        Collection(
            key="scifact", name="SciFact test", dataset=shared_datasets / "scifact", index_dir=indexes / "scifact"
        ),
        Collection(key="wixqa", name="WixQA", dataset=shared_datasets / "wixqa", index_dir=indexes / "wixqa"),
        # Chunks already begin with their title line, so no title is prefixed.
        Collection(
            key="kb_held_out",
            name="knowledge base, held-out half",
            dataset=kb_dataset,
            use_title=False,
            index_dir=indexes / "kb_eval",
            labelled_half="held_out",
        ),
        Collection(
            key="msmarco_dl19_5k",
            name="MS MARCO DL19 5K",
            dataset=shared_datasets / "msmarco-dl19-5k",
            index_dir=indexes / "msmarco-dl19-5k",
        ),
    ]


def collection_queries(collection: Collection, data: BeirDataset, limit: int | None = None) -> dict[str, str]:
    """The judged queries to search, follow-ups joined with their previous turn, restricted to the labelled half
    when the collection has one; the first `limit` when capped."""
    queries = query_texts(collection.dataset, data.queries)
    if collection.labelled_half is not None:
        half = {q.id for q in load_questions(collection.labelled_half, collection.dataset / "queries.jsonl")}
        queries = {qid: text for qid, text in queries.items() if qid in half}
    if limit is not None:
        queries = dict(list(queries.items())[:limit])
    return queries
