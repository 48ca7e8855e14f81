"""LlamaIndex's FaithfulnessEvaluator beside the offline judge: the agreement statistics (pure), and the evaluator's
wiring (which passages it sees, what it is asked) with LlamaIndex's own MockLLM taught to answer YES/NO by a rule, so
that the test is fast and deterministic. The real local LLM is exercised by
`python -m colbert_att_assistant.evals.grounding_report --faithfulness` (see grounding/README.md), not here: one
evaluation on this CPU takes longer than a test should."""

from __future__ import annotations

import re
from typing import Any

import pytest
from llama_index.core.base.llms.types import CompletionResponse
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import Field

from colbert_att_assistant.assistant.chat import AssistantAnswer, Citation
from colbert_att_assistant.assistant.settings import Audience
from colbert_att_assistant.evals.faithfulness import (
    AgreementStats,
    FaithfulnessCheck,
    agreement_stats,
    strip_citations,
)
from colbert_att_assistant.evals.grounding_report import faithfulness_for
from colbert_att_assistant.evals.grounding_summary import faithfulness_markdown, faithfulness_totals

POWER_RESERVE = "Power reserve\n\nWhen fully wound, the CV-28 runs for 42 hours off the wrist."
WINDING = "Winding by hand\n\nTurn the crown clockwise about 30 to 40 times. You cannot overwind it."


class RuleLLM(MockLLM):
    """MockLLM that answers the evaluator's question like a strict reader: YES when every number of the
    "Information" also appears in the "Context", else NO. It keeps the prompts it was given."""

    prompts: list[str] = Field(default_factory=list)
    fail: bool = False

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self.fail:
            raise ConnectionError("backend unreachable")
        self.prompts.append(prompt)
        information = prompt.rsplit("Information:", 1)[1].split("Context:", 1)[0]
        context = prompt.rsplit("Context:", 1)[1]
        supported = set(re.findall(r"\d+", information)) <= set(re.findall(r"\d+", context))
        return CompletionResponse(text="YES" if supported else "NO")


def test_agreement_stats_counts_the_confusion_table_and_kappa():
    pairs = [(True, True)] * 3 + [(True, False), (False, True), (False, False), (None, True), (True, None)]
    stats = agreement_stats(pairs)
    assert (stats.both_supported, stats.judge_only, stats.llm_only, stats.neither) == (3, 1, 1, 1)
    assert stats.n == 6 and stats.skipped == 2
    assert stats.agreement == pytest.approx(4 / 6, abs=1e-4)
    # Both say "supported" 4 times in 6: chance agreement (4/6)^2 + (2/6)^2 = 5/9, kappa (2/3 - 5/9) / (4/9) = 0.25.
    assert stats.cohen_kappa == pytest.approx(0.25, abs=1e-4)
    assert stats.judge_supported_rate == pytest.approx(4 / 6, abs=1e-4)


def test_agreement_stats_edge_cases():
    assert agreement_stats([]).agreement is None and agreement_stats([]).n == 0
    assert agreement_stats([(None, None)]).skipped == 1
    unanimous = agreement_stats([(True, True), (True, True)])
    assert unanimous.agreement == 1.0 and unanimous.cohen_kappa is None  # chance agreement is 1: kappa undefined
    opposite = agreement_stats([(True, False), (False, True)])
    assert opposite.agreement == 0.0 and opposite.cohen_kappa == pytest.approx(-1.0)


def test_strip_citations():
    assert strip_citations("It runs for 42 hours [1]. You cannot overwind it [1, 2][Source 3].") == (
        "It runs for 42 hours. You cannot overwind it."
    )


def test_the_evaluator_sees_the_answer_without_markers_and_its_contexts():
    llm = RuleLLM()
    check = FaithfulnessCheck(llm)
    supported = check.evaluate("When fully wound, it runs for 42 hours off the wrist [1].", [POWER_RESERVE])
    assert supported.passing is True and supported.feedback == "YES" and supported.error is None
    assert "runs for 42 hours off the wrist" in llm.prompts[-1] and "[1]" not in llm.prompts[-1]
    changed = check.evaluate("When fully wound, it runs for 52 hours off the wrist [1].", [POWER_RESERVE])
    assert changed.passing is False and changed.feedback == "NO"


def test_evaluator_failures_are_recorded_not_raised():
    failing = RuleLLM()
    failing.fail = True
    check = FaithfulnessCheck(failing)
    verdict = check.evaluate("It runs for 42 hours [1].", [POWER_RESERVE])
    assert verdict.passing is None and verdict.error.startswith("ConnectionError")
    assert FaithfulnessCheck(RuleLLM()).evaluate("It runs for 42 hours.", []).error == "no cited passage"


def _citation(number: int, text: str) -> Citation:
    return Citation(
        number=number, node_id=f"n{number}", document_id="care-mechanical-watches", title="Mechanical watch care",
        section="", source_path="", audience="public", score=0.5, text=text,
    )  # fmt: skip


def test_the_report_gives_the_evaluator_the_cited_passages_only():
    llm = RuleLLM()
    answer = AssistantAnswer(
        text="Turn the crown clockwise about 30 to 40 times [2].",
        abstained=False,
        citations=[_citation(2, WINDING)],
        sources=[_citation(1, POWER_RESERVE), _citation(2, WINDING)],
        question="How do I wind it?",
        standalone_question="How do I wind it?",
        audience=Audience.CUSTOMER,
    )
    verdict = faithfulness_for(FaithfulnessCheck(llm), answer)
    assert verdict.passing is True
    assert "Turn the crown" in llm.prompts[-1] and "42 hours" not in llm.prompts[-1]  # [1] was shown, not cited
    assert faithfulness_for(None, answer) is None  # --faithfulness not given


def test_report_totals_and_markdown_compare_the_verdicts():
    def row(id_: str, supported: bool, own: bool, passing: bool | None) -> dict:
        return {
            "id": id_, "abstained": False, "supported": supported, "supported_own": own, "answer_support": 0.6,
            "faithfulness": {"passing": passing, "feedback": "YES" if passing else "NO", "seconds": 4.0, "error": None},
        }  # fmt: skip

    rows = [row("a", True, True, True), row("b", True, False, True), row("c", False, False, False)]
    rows.append({"id": "d", "abstained": True, "faithfulness": None})
    totals = faithfulness_totals(rows)
    assert totals["n_answers"] == 3 and totals["n_errors"] == 0 and totals["mean_seconds"] == 4.0
    own = AgreementStats.model_validate(totals["vs_judge_own_citations"])
    anywhere = AgreementStats.model_validate(totals["vs_judge_any_source"])
    assert (own.both_supported, own.llm_only, own.neither) == (1, 1, 1) and own.agreement == pytest.approx(2 / 3, 1e-3)
    assert anywhere.agreement == 1.0
    text = "\n".join(faithfulness_markdown(totals, "qwen", rows))
    assert "| judge: supported | 1 | 0 |" in text and "| judge: not supported | 1 | 1 |" in text
    assert "| b | 0.600 | not supported | supported | YES | YES |" in text
    assert faithfulness_totals([{"id": "x", "abstained": False, "faithfulness": None}]) is None
