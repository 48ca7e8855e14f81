"""How often the evidence the model is shown holds the answer: for each answerable labelled question, are all its
labelled facts inside the chosen evidence units (and inside the two best, which an extractive answer quotes)?

    python benchmarks/evidence_recall.py [--split calibration|held_out] [--units 6,8] [--no-record]

No LLM: retrieval and evidence selection exactly as the assistant runs them (follow-ups joined with their previous
turn, customer questions searched in public passages only, top 3 passages), then
`colbert_att_assistant.assistant.evidence` under each
setting compared. Choose on the calibration half (the default); report on the held-out half.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from llama_index.core.base.llms.types import ChatMessage, MessageRole

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from colbert_att_assistant.assistant.chat import PUBLIC_ONLY
from colbert_att_assistant.assistant.evidence import Evidence, select_evidence
from colbert_att_assistant.assistant.follow_up import standalone_question
from colbert_att_assistant.assistant.settings import AssistantSettings, Audience
from colbert_att_assistant.evals.answer_scoring import missing_facts
from colbert_att_assistant.evals.labelled_questions import load_questions
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.knowledge_base.ingest import load_or_rebuild
from colbert_att_assistant.retriever.encoder import ColBERTAttEncoder
from colbert_att_assistant.retriever.settings import EncoderSettings


def _text(units) -> str:
    return "\n".join(unit.text for unit in units)


def _holds(facts: list[list[str]], units) -> bool:
    return not missing_facts(facts, _text(units))


def main(
    split: Annotated[str, typer.Option(help="calibration or held_out")] = "calibration",
    units: Annotated[str, typer.Option(help="comma-separated numbers of evidence units to compare")] = "4,6,8",
    record: Annotated[bool, typer.Option(help="append the result to benchmarks/RESULTS.md")] = True,
) -> None:
    settings = AssistantSettings.load()
    brand = settings.brand()
    encoder = ColBERTAttEncoder(EncoderSettings(query_max_tokens=settings.retrieval.query_max_tokens))
    index, _ = load_or_rebuild(settings.documents_path(brand), settings.index_dir(brand), encoder=encoder)
    questions = [q for q in load_questions(split) if q.answerable and q.facts]
    load_start = os.getloadavg()
    started = time.perf_counter()
    unit_counts = [int(n) for n in units.split(",")]
    variants = {f"{n} units, lead-ins {'followed' if follow else 'alone'}, ±{reach} neighbours": (n, follow, reach)
                for n in unit_counts for follow in (False, True) for reach in (0, 1)}  # fmt: skip
    in_passages = 0
    holds = {name: 0 for name in variants}
    holds_top2 = {name: 0 for name in variants}
    chars: dict[str, list[int]] = {name: [] for name in variants}
    for question in questions:
        history = [ChatMessage(role=MessageRole.USER, content=question.previous_turn)] if question.previous_turn else []
        query = encoder.encode_query(standalone_question(question.text, history))
        hits = index.search(query, top_k=settings.retrieval.top_k, mode=settings.retrieval.scoring,
                            filters=PUBLIC_ONLY if question.asked_by is Audience.CUSTOMER else None)  # fmt: skip
        in_passages += not missing_facts(question.facts, "\n".join(hit.text for hit in hits))
        aligned = [(n, hit.text, index.token_similarities(query, hit.id)) for n, hit in enumerate(hits, start=1)]
        for name, (count, follow, reach) in variants.items():
            evidence: Evidence = select_evidence(
                encoder, query, aligned, max_units=count, follow_lead_ins=follow, neighbours=reach
            )
            holds[name] += _holds(question.facts, evidence.units)
            best_two = sorted(evidence.units, key=lambda unit: -unit.score)[:2]
            holds_top2[name] += _holds(question.facts, best_two)
            chars[name].append(len(_text(evidence.units)))
    elapsed = time.perf_counter() - started
    total = len(questions)
    lines = [
        f"- {split} half: {total} answerable questions with labelled facts; all facts inside the top "
        f"{settings.retrieval.top_k} passages for {in_passages}",
        f"- {elapsed:.0f} s; load average at start {'/'.join(f'{x:.2f}' for x in load_start)}",
        "",
        "| evidence | all facts in the units | all facts in the best two | chars p50 |",
        "|---|---|---|---|",
    ]
    for name in variants:
        median = sorted(chars[name])[len(chars[name]) // 2]
        lines.append(f"| {name} | {holds[name]} / {total} | {holds_top2[name]} / {total} | {median} |")
    print("\n".join(lines))
    if record:
        result = {
            **run_header(),
            "split": split,
            "questions": total,
            "facts_in_passages": in_passages,
            "variants": {
                name: {"facts_in_units": holds[name], "facts_in_best_two": holds_top2[name]} for name in variants
            },
        }
        record_run(f"evidence-recall-{split}", f"evidence recall: facts inside the evidence units ({split} half)",
                   result, lines)  # fmt: skip


if __name__ == "__main__":
    typer.run(main)
