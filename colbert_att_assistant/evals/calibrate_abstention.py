"""Calibrate the assistant's evidence thresholds on the calibration half of the labelled questions.

    python -m colbert_att_assistant.evals.calibrate_abstention [--report-only]

Each question is retrieved as the assistant would (in its own mode, a follow-up joined with the turn before it), and
its evidence selected. Three thresholds are written to colbert_att_assistant/assistant/abstention_calibration.json:
- `min_score_to_answer` (normalised top retrieval score) and `min_evidence_to_answer` (best evidence unit score):
  the highest values that still let `min_answer_rate` of the answerable questions reach the model;
- `min_evidence_for_extract`: the lowest evidence score at which at most `max_extract_unanswerable` of the
  unanswerable questions would get a quoted answer, used only when the model's draft does not survive its checks.
The held-out half is never read here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from llama_index.core.schema import QueryBundle
from rich.console import Console
from rich.progress import track

from colbert_att_assistant.assistant.abstention import CALIBRATION_FILE, AbstentionCalibration, choose_threshold
from colbert_att_assistant.assistant.evidence import evidence_for
from colbert_att_assistant.assistant.settings import AssistantSettings, Audience
from colbert_att_assistant.evals.labelled_questions import LabelledQuestion, load_questions
from colbert_att_assistant.knowledge_base.ingest import ingest
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.retriever.llama_retriever import ColBERTAttRetriever
from colbert_att_assistant.retriever.scoring import ScoringMode

console = Console(stderr=True)


def retrieval_query(question: LabelledQuestion) -> str:
    return f"{question.previous_turn} {question.text}" if question.previous_turn else question.text


def question_scores(
    index: MultiVectorIndex, questions: list[LabelledQuestion], scoring: ScoringMode, top_k: int, units: int
) -> list[tuple[float, float]]:
    """(top retrieval score, best evidence score) of each question."""
    from colbert_att_assistant.assistant.chat import PUBLIC_ONLY

    scores = []
    for question in track(questions, description="Retrieving", console=console):
        filters = PUBLIC_ONLY if question.asked_by is Audience.CUSTOMER else None
        query = retrieval_query(question)
        hits = ColBERTAttRetriever(index, similarity_top_k=top_k, filters=filters, scoring=scoring).retrieve(
            QueryBundle(query)
        )
        if not hits:
            scores.append((0.0, 0.0))
            continue
        passages = [(number, hit.node.node_id, hit.node.get_content()) for number, hit in enumerate(hits, start=1)]
        evidence = evidence_for(index, query, passages, max_units=units)
        scores.append((float(hits[0].score), evidence.best_score))
    return scores


def extract_threshold(answerable: list[float], unanswerable: list[float], max_unanswerable: float) -> float:
    """The lowest threshold that lets at most `max_unanswerable` of the unanswerable questions through."""
    for candidate in sorted({*answerable, *unanswerable, 1.0}):
        if np.mean(np.asarray(unanswerable) >= candidate) <= max_unanswerable:
            return float(candidate)
    return 1.0


def main(
    min_answer_rate: Annotated[
        float, typer.Option(help="Share of answerable questions the gates must let through.")
    ] = 0.95,
    max_extract_unanswerable: Annotated[
        float, typer.Option(help="Share of unanswerable questions a quoted answer may reach (the aim: ≤ 10 %).")
    ] = 0.10,
    output: Annotated[Path, typer.Option(help="Where the calibration is written.")] = CALIBRATION_FILE,
    report_only: Annotated[bool, typer.Option(help="Print the scores and thresholds; write nothing.")] = False,
) -> None:
    settings = AssistantSettings.load()
    brand = settings.brand()
    encoder = ColBERTAttEncoder()
    index_dir = settings.index_dir(brand)
    ingest(settings.documents_path(brand), index_dir, encoder=encoder, show_progress=True)
    index = MultiVectorIndex.load(index_dir, encoder=encoder)
    questions = load_questions("calibration")
    retrieval = settings.retrieval
    scores = question_scores(index, questions, retrieval.scoring, retrieval.top_k, retrieval.evidence_units)
    answerable = [s for s, q in zip(scores, questions, strict=True) if q.answerable]
    unanswerable = [s for s, q in zip(scores, questions, strict=True) if not q.answerable]
    top = choose_threshold([a for a, _ in answerable], [u for u, _ in unanswerable], min_answer_rate)
    evidence = choose_threshold([e for _, e in answerable], [e for _, e in unanswerable], min_answer_rate)
    extract = extract_threshold([e for _, e in answerable], [e for _, e in unanswerable], max_extract_unanswerable)
    passes = [a >= top and e >= evidence for a, e in answerable]
    blocked = [a < top or e < evidence for a, e in unanswerable]
    calibration = AbstentionCalibration(
        min_score_to_answer=round(top, 4),
        min_evidence_to_answer=round(evidence, 4),
        min_evidence_for_extract=round(max(extract, evidence), 4),
        scoring=retrieval.scoring.value,
        fitted_on="knowledge_base/eval/queries.jsonl, calibration half (sha256(id)[0] even)",
        min_answer_rate=min_answer_rate,
        n_answerable=len(answerable),
        n_unanswerable=len(unanswerable),
        answer_rate_fit=float(np.mean(passes)),
        abstain_rate_fit=float(np.mean(blocked)),
    )
    for question, (top_score, evidence_score) in zip(questions, scores, strict=True):
        console.print(
            f"{question.id:10} {question.type:13} answerable={question.answerable!s:5} top={top_score:.3f} "
            f"evidence={evidence_score:.3f}",
            highlight=False,
        )
    if not report_only:
        calibration.save(output)
    console.print(calibration.model_dump_json(indent=2))


if __name__ == "__main__":
    typer.run(main)
