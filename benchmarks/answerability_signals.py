"""How well each signal the quoted style can read without an LLM tells a question the documents answer from one they
do not: ROC AUC, answerable against unanswerable.

    python benchmarks/answerability_signals.py [--split calibration] [--wixqa/--no-wixqa] [--no-record]

Two tests:
- **labelled**: the questions of a half of knowledge_base/eval/ (answerable against unanswerable), each asked as the
  assistant asks it (spelling corrected, a follow-up after its previous turn) with the quote gates off;
- **gold left out**: each answerable first-turn question whose gold document ranks first, searched once as it is
  and once with its gold documents removed from the ranking (the passages that are left are the near misses a
  question the documents do not cover meets), on the knowledge base half and on WixQA's 160 questions.

Signals: the best evidence line's score (`assistant/evidence.py`), the spread of the top ten retrieval scores
(`assistant/answerability.py`), the evidence adjusted by the spread at the setting's weight, the top retrieval
score, and the weakest unknown word's similarity (`assistant/unknown_words.py`). The top score is a sum over the
question's word pieces, so it also measures the question's length; the length alone is reported beside it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.assistant_eval import ask, document_of, load_qrels
from benchmarks.brand_profile_eval import shared_wixqa_dir, wixqa_questions
from colbert_att_assistant.assistant.answerability import score_spread, spread_adjusted
from colbert_att_assistant.assistant.chat import PUBLIC_ONLY, Assistant, citation_of
from colbert_att_assistant.assistant.settings import AssistantSettings, Audience
from colbert_att_assistant.assistant.unknown_words import weakest_unknown_word
from colbert_att_assistant.evals.labelled_questions import load_questions
from colbert_att_assistant.evals.results_log import record_run, run_header
from colbert_att_assistant.knowledge_base.ingest import index_brand_documents
from colbert_att_assistant.retriever.encoder import EncodedText
from colbert_att_assistant.retriever.index import SearchHit
from colbert_att_assistant.retriever.progress import run_progress

console = Console(stderr=True)
UNGATED = {"answer_style": "quoted", "min_evidence_to_quote": 0.0, "min_unknown_word_similarity": 0.0}
SEARCH_DEPTH = 60  # deep enough that ten passages are left once the gold documents are taken out


@dataclass(frozen=True)
class Signals:
    evidence: float
    spread: float | None
    top_score: float
    unknown_word_similarity: float
    query_pieces: int


SIGNALS: dict[str, Callable[[Signals, float], float]] = {
    "evidence score": lambda s, _: s.evidence,
    "score spread": lambda s, _: s.spread or 0.0,
    "evidence weighed with the spread": lambda s, weight: spread_adjusted(s.evidence, s.spread, weight),
    "top retrieval score": lambda s, _: s.top_score,
    "weakest unknown word": lambda s, _: s.unknown_word_similarity,
    "question length (word pieces)": lambda s, _: float(s.query_pieces),
}


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    return float(roc_auc_score([1] * len(positives) + [0] * len(negatives), [*positives, *negatives]))


def query_pieces(query: EncodedText) -> int:
    """Word pieces of an encoded question, [CLS]/[SEP] and markers included, [MASK] padding not."""
    return int(sum(1 for token in query.token_ids if token > 0))


def signals_of(assistant: Assistant, text: str, query: EncodedText, hits: Sequence[SearchHit]) -> Signals:
    """The signals of a ranking of `text` (encoded as `query`), read as the assistant reads them: its top passages'
    alignment, its top scores."""
    index = assistant.index
    top_k = assistant.settings.retrieval.top_k
    sources = [citation_of(number, hit) for number, hit in enumerate(hits[:top_k], start=1)]
    similarities = assistant.alignments(query, sources)
    evidence = assistant.evidence(query, sources, similarities).best_score
    unknown = weakest_unknown_word(index.encoder, assistant.vocabulary(), text, query, similarities).similarity
    return Signals(
        evidence=evidence,
        spread=score_spread([h.score for h in hits]),
        top_score=hits[0].score,
        unknown_word_similarity=unknown,
        query_pieces=query_pieces(query),
    )


def gold_left_out(assistant: Assistant, questions: Sequence[tuple[str, set[str], bool]]) -> tuple[list, list]:
    """(signals as searched, signals with the gold documents taken out) for each question whose gold ranks first."""
    with_gold, without_gold = [], []
    with run_progress(console) as progress:
        task = progress.add_task("Gold left out", total=len(questions))
        for text, gold, public_only in questions:
            searched = assistant.vocabulary().correct(text)
            query = assistant.index.encoder.encode_query(searched)
            hits = assistant.index.search(query, top_k=SEARCH_DEPTH, filters=PUBLIC_ONLY if public_only else None)
            progress.advance(task)
            if not hits or hits[0].metadata.get("document_id") not in gold:
                continue
            left = [h for h in hits if h.metadata.get("document_id") not in gold]
            with_gold.append(signals_of(assistant, searched, query, hits))
            without_gold.append(signals_of(assistant, searched, query, left))
    return with_gold, without_gold


def main(
    split: Annotated[
        str, typer.Option(help="half of knowledge_base/eval/ (calibration: choose on it)")
    ] = "calibration",
    wixqa: Annotated[bool, typer.Option(help="also leave the gold out on WixQA's 160 questions")] = True,
    record: Annotated[bool, typer.Option(help="append the result to benchmarks/RESULTS.md")] = True,
) -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("colbert_att_assistant.retriever.encoder").setLevel(logging.ERROR)
    header = run_header()
    load_start, started = os.getloadavg(), time.perf_counter()
    settings = AssistantSettings.load(retrieval=UNGATED)
    weight = AssistantSettings.load().retrieval.score_spread_weight
    index, _ = index_brand_documents(settings)
    assistant = Assistant.from_settings(settings, index=index)
    questions, qrels = load_questions(split), load_qrels()

    answerable, unanswerable = [], []
    with run_progress(console) as progress:
        task = progress.add_task(f"Labelled questions ({split})", total=len(questions))
        for question in questions:
            answer, _ = ask(assistant, question)
            query = index.encoder.encode_query(answer.standalone_question)
            hits = index.search(
                query, top_k=10, filters=PUBLIC_ONLY if question.asked_by is Audience.CUSTOMER else None
            )
            signals = Signals(
                evidence=answer.evidence_score or 0.0,
                spread=answer.score_spread,
                top_score=hits[0].score if hits else 0.0,
                unknown_word_similarity=1.0
                if answer.unknown_word_similarity is None
                else answer.unknown_word_similarity,
                query_pieces=query_pieces(query),
            )
            (answerable if question.answerable else unanswerable).append(signals)
            progress.advance(task)

    kb_first_turns = [
        (q.text, {document_of(c) for c in qrels.get(q.id, set())}, q.asked_by is Audience.CUSTOMER)
        for q in questions
        if q.answerable and not q.previous_turn
    ]
    tests = {
        f"labelled, {split} half": (answerable, unanswerable),
        "gold left out, knowledge base": gold_left_out(assistant, kb_first_turns),
    }
    if wixqa:
        wix_settings = AssistantSettings.load(brand_profile="brands/wix-help-centre.yaml", retrieval=UNGATED)
        wix_index, _ = index_brand_documents(wix_settings, index.encoder)
        wix = Assistant.from_settings(wix_settings, index=wix_index)
        wix_questions = [(q["text"], set(q["gold"]), False) for q in wixqa_questions(shared_wixqa_dir(), 160)]
        tests["gold left out, WixQA"] = gold_left_out(wix, wix_questions)

    names = list(tests)
    report = [
        f"- {time.perf_counter() - started:.0f} s; load average at start {'/'.join(f'{x:.2f}' for x in load_start)}; "
        f"spread weight {weight} (the setting)",
        "- " + "; ".join(f"{name}: {len(p)} answerable against {len(n)}" for name, (p, n) in tests.items()),
        "",
        f"| signal (ROC AUC) | {' | '.join(names)} |",
        f"|---|{'---|' * len(names)}",
    ]
    for signal, read in SIGNALS.items():
        cells = [f"{auc([read(s, weight) for s in p], [read(s, weight) for s in n]):.3f}" for p, n in tests.values()]
        report.append(f"| {signal} | {' | '.join(cells)} |")
    print("\n".join(report))
    if record:
        result = {**header, "split": split, "spread_weight": weight, "report": report}
        record_run(
            f"answerability-signals-{split}", f"answerability signals without an LLM, {split} half", result, report
        )


if __name__ == "__main__":
    typer.run(main)
