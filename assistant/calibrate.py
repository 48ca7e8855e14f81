"""Calibrate the retrieval-evidence abstention threshold on the calibration half of the labelled questions.

    python -m assistant.calibrate

For each question the top normalised ColBERT-Att score is read in the question's own mode (customer for public
questions, staff for internal ones); a follow-up is searched together with the turn before it. The threshold
that best separates answerable from unanswerable questions is written to assistant/abstention_calibration.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from llama_index.core.schema import QueryBundle
from rich.console import Console
from rich.progress import track

from assistant.abstention import CALIBRATION_FILE, AbstentionCalibration, choose_threshold
from assistant.engine import PUBLIC_ONLY
from assistant.labelled_questions import LabelledQuestion, load_questions
from assistant.settings import Mode
from knowledge_base.documents_io import DOCUMENTS_DIR
from knowledge_base.ingest import DEFAULT_INDEX_DIR, ingest
from retriever.encoder import ColBERTAttEncoder
from retriever.index import MultiVectorIndex
from retriever.llama_retriever import ColBERTAttRetriever
from retriever.scoring import ScoringMode

console = Console(stderr=True)


def retrieval_query(question: LabelledQuestion) -> str:
    return f"{question.previous_turn} {question.text}" if question.previous_turn else question.text


def top_scores(index: MultiVectorIndex, questions: list[LabelledQuestion], scoring: ScoringMode) -> list[float]:
    scores = []
    for question in track(questions, description="Retrieving", console=console):
        filters = PUBLIC_ONLY if question.mode is Mode.CUSTOMER else None
        hits = ColBERTAttRetriever(index, similarity_top_k=1, filters=filters, scoring=scoring).retrieve(
            QueryBundle(retrieval_query(question))
        )
        scores.append(float(hits[0].score) if hits else 0.0)
    return scores


def main(
    index_dir: Annotated[Path, typer.Option(help="Knowledge-base index (built or updated first).")] = DEFAULT_INDEX_DIR,
    scoring: Annotated[
        ScoringMode, typer.Option(help="Scoring the assistant retrieves with.")
    ] = ScoringMode.COLBERT_ATT,
    output: Annotated[Path, typer.Option(help="Where the calibration is written.")] = CALIBRATION_FILE,
    min_answer_rate: Annotated[
        float, typer.Option(help="Share of answerable questions the gate must let through.")
    ] = 0.95,
) -> None:
    encoder = ColBERTAttEncoder()
    ingest(DOCUMENTS_DIR, index_dir, encoder=encoder, show_progress=True)
    index = MultiVectorIndex.load(index_dir, encoder=encoder)
    questions = load_questions("calibration")
    scores = top_scores(index, questions, scoring)
    answerable = [s for s, q in zip(scores, questions, strict=True) if q.answerable]
    unanswerable = [s for s, q in zip(scores, questions, strict=True) if not q.answerable]
    threshold = choose_threshold(answerable, unanswerable, min_answer_rate)
    calibration = AbstentionCalibration(
        min_score_to_answer=round(threshold, 4),
        scoring=scoring.value,
        fitted_on="knowledge_base/eval/queries.jsonl, calibration half (sha256(id)[0] even)",
        min_answer_rate=min_answer_rate,
        n_answerable=len(answerable),
        n_unanswerable=len(unanswerable),
        answer_rate_fit=sum(s >= threshold for s in answerable) / len(answerable),
        abstain_rate_fit=sum(s < threshold for s in unanswerable) / len(unanswerable),
    )
    calibration.save(output)
    console.print(calibration.model_dump_json(indent=2))


if __name__ == "__main__":
    typer.run(main)
