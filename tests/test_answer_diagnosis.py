"""The per-question diagnosis benchmark's bookkeeping: a row per answer, the summary table, the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.answer_diagnosis import aims, diagnose, markdown_body, read_checkpoint, select, summarise
from colbert_att_assistant.assistant.chat import AssistantAnswer, Citation
from colbert_att_assistant.assistant.settings import Audience
from colbert_att_assistant.evals.labelled_questions import load_questions

CUSTOMER = Audience.CUSTOMER


def _citation(number: int, document_id: str, audience: str = "public") -> Citation:
    return Citation(
        number=number,
        node_id=f"{document_id}#0",
        document_id=document_id,
        title=document_id,
        section="",
        source_path=f"{document_id}.md",
        audience=audience,
        score=1.0,
        text="",
    )


def _answer(
    text: str, audience: Audience, *, abstained=False, cited=(), shown=(), timings=None, **extra
) -> AssistantAnswer:
    return AssistantAnswer(
        text=text,
        abstained=abstained,
        citations=list(cited),
        sources=list(shown),
        question="",
        standalone_question="",
        audience=audience,
        timings_ms=timings or {},
        **extra,
    )


def test_rows_summary_and_report() -> None:
    questions = {q.id: q for q in load_questions()}
    belts = _citation(1, "care-belts-small-leather-goods")
    calfskin = _citation(2, "care-calfskin")
    payment = _citation(1, "faq-payment")
    discounts = _citation(2, "internal-discount-authority", audience="internal")
    timings = {"first_token": 800.0, "total": 3000.0}
    rows = [
        diagnose(
            questions["care-001"],
            _answer("It holds 12 cards [1].", CUSTOMER, cited=[belts], shown=[belts, calfskin], timings=timings),
            "It holds 12 cards [1].",
            {"care-belts-small-leather-goods#c5a86c110642"},
        ),
        diagnose(
            questions["care-002"],
            _answer("I don't know.", CUSTOMER, abstained=True, abstain_reason="model_declined", shown=[calfskin]),
            "I'm sorry, I don't know.",
            {"care-calfskin#1224b27da20a"},
        ),
        diagnose(
            questions["faq-013"],
            _answer("Klarna, in 3 instalments [1][2].", CUSTOMER, cited=[payment, discounts], shown=[payment]),
            "Klarna, in 3 instalments [1][2].",
            {"faq-payment#07c41c2220f1"},
        ),
        diagnose(questions["faq-059"], _answer("Yes, apple leather [1].", CUSTOMER, cited=[payment]), "", set()),
    ]
    assert [r["outcome"] for r in rows] == ["correct", "declined_with_evidence", "leak", "invented"]
    # Engines that do not say how an answer was made leave the path out; one that does is counted by path.
    for row in rows:
        row["answer_path"] = None
    rows[0]["answer_path"] = "extractive"
    assert rows[1]["streamed_text"] == "I'm sorry, I don't know."
    assert rows[2]["leaked_documents"] == ["internal-discount-authority"]

    summary = summarise(rows)
    assert summary["answerable_correct"] == {"hits": 1, "n": 3, "rate": 0.3333}
    assert summary["declined_with_evidence"]["hits"] == 1
    assert summary["unanswerable_invented"] == {"hits": 1, "n": 1, "rate": 1.0}
    assert summary["internal_leaks"]["hits"] == 1
    assert summary["gold_shown"] == {"hits": 3, "n": 3, "rate": 1.0}
    assert summary["answer_paths"] == {"extractive": 1}
    assert summary["latency_ms"]["answered"]["first_token"]["p50"] == 800.0
    met = aims(summary)
    assert met["answerable_correct"] is False and met["internal_leaks"] is False and met["first_token_p50"] is True

    result = {
        "split": "calibration",
        "types": [],
        "llm": "test",
        "resumed": 0,
        "load_average_start": [1.0, 1.0, 1.0],
        "load_average_end": [1.0, 1.0, 1.0],
        "wall_seconds": 60.0,
        "peak_rss_mib": 1.0,
        "summary": summary,
        "aims": met,
        "rows": rows,
    }
    report = "\n".join(markdown_body(result))
    assert "| answerable answered correctly (facts + a gold document cited) | 1 / 3 | 33.3 % | ≥ 85% | **no** |" in (
        report
    )
    assert "| care-002 | paraphrase | declined_with_evidence (model_declined) | care-calfskin | – | – |" in report


def test_select_by_type_and_limit() -> None:
    questions = load_questions("all")
    chosen = select(questions, ["follow_up,internal"], 3)
    assert len(chosen) == 3 and {q.type for q in chosen} <= {"follow_up", "internal"}
    assert all(q.type == "typo" for q in select(questions, ["typo"], None))


def test_checkpoint_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text(json.dumps({"id": "care-001", "outcome": "correct"}) + "\n" + '{"id": "care-0')
    assert read_checkpoint(path) == {"care-001": {"id": "care-001", "outcome": "correct"}}
    assert read_checkpoint(tmp_path / "absent.jsonl") == {}
