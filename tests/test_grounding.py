"""The grounding judge with the real bundled encoder on passages of the knowledge base's care guides: supported
sentences pass, and a changed figure, product name or negation makes them fail."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from grounding import (
    Calibration,
    GroundingJudge,
    SentenceKind,
    abstention_correct,
    is_abstention,
    load_calibration,
    split_sentences,
)
from grounding.calibration import DEFAULT_CALIBRATION_PATH
from grounding.numbers import extract_quantities, missing_quantities

CARE = Path(__file__).resolve().parent.parent / "knowledge_base" / "documents" / "care"


def section(document: str, header: str) -> str:
    """One section of a care guide, with its title and header in front as the knowledge-base chunks have them."""
    text = (CARE / f"{document}.md").read_text(encoding="utf-8")
    title = re.search(r"^title: (.+)$", text, re.M).group(1)
    body = re.search(rf"^#+ {re.escape(header)}\n(.*?)(?=^#|\Z)", text, re.S | re.M).group(1).strip()
    return f"{title} > {header}\n\n{body}"


@pytest.fixture(scope="module")
def judge(encoder) -> GroundingJudge:
    return GroundingJudge.load_default(encoder=encoder)


@pytest.fixture(scope="module")
def power_reserve() -> str:
    # "When fully wound, the CV-28 runs for **42 hours** off the wrist. ..."
    return section("care-mechanical-watches", "Power reserve")


@pytest.fixture(scope="module")
def winding() -> str:
    # "... Turn the crown clockwise about 30 to 40 times. You cannot overwind it: a slipping clutch protects ..."
    return section("care-mechanical-watches", "Winding by hand")


def verdict(judge: GroundingJudge, claim: str, passage: str):
    report = judge.judge(f"{claim} [1]", {1: passage})
    assert len(report.claims) == 1
    return report.claims[0]


SUPPORTED = "When fully wound, the Corvane 1911 runs for 42 hours off the wrist."


def test_a_sentence_of_the_care_guide_is_supported(judge, power_reserve):
    claim = verdict(judge, SUPPORTED, power_reserve)
    assert claim.supported and claim.supported_by_citations
    assert claim.support_cited >= judge.calibration.threshold
    assert claim.cited_numbers == [1] and claim.best_passage == 1 and claim.reasons == []


@pytest.mark.parametrize(
    ("edited", "reason"),
    [
        ("When fully wound, the Corvane 1911 runs for 52 hours off the wrist.", "number '52'"),
        ("When fully wound, the Corvane 1911 runs for forty-two days off the wrist.", "number"),
        ("When fully wound, the Corvane Métro runs for 42 hours off the wrist.", "name 'Corvane Métro'"),
        ("When fully wound, the Corvane 1911 does not run for 42 hours off the wrist.", "negated"),
    ],
)
def test_an_edited_figure_name_or_negation_flips_the_verdict(judge, power_reserve, edited, reason):
    claim = verdict(judge, edited, power_reserve)
    assert not claim.supported and claim.contradicted
    assert claim.support_cited < judge.calibration.threshold
    assert any(reason in r for r in claim.reasons), claim.reasons


def test_removing_a_negation_flips_the_verdict(judge, winding):
    negated = "You cannot overwind the Corvane 1911, because a slipping clutch protects the mainspring."
    assert verdict(judge, negated, winding).supported
    affirmed = verdict(judge, negated.replace("cannot", "can"), winding)
    assert not affirmed.supported and any("affirmed" in r for r in affirmed.reasons)


def test_a_range_in_the_guide_supports_the_same_range_only(judge, winding):
    assert verdict(judge, "Turn the crown clockwise about 30 to 40 times.", winding).supported
    assert not verdict(judge, "Turn the crown clockwise about 60 to 80 times.", winding).supported


def test_an_unrelated_passage_does_not_support_the_sentence(judge, power_reserve):
    pearls = section("care-pearls", "Storage: flat, separate, breathing")
    claim = verdict(judge, "A slipping clutch protects the mainspring once the watch is fully wound.", pearls)
    assert not claim.supported and not claim.contradicted  # nothing contradicts it: there is just no support
    assert (
        judge.score_pair(SUPPORTED, pearls) < judge.calibration.threshold <= judge.score_pair(SUPPORTED, power_reserve)
    )


def test_citation_recall_and_precision_with_one_wrong_citation(judge, power_reserve, winding):
    service = section("care-mechanical-watches", "Servicing")
    answer = (
        f"{SUPPORTED} [1] "  # right citation
        "A full service of the Corvane 1911 costs €480 and takes 8 to 10 weeks [2][3]."  # [2] right, [3] wrong
        " Turn the crown clockwise about 30 to 40 times [4]."  # wrong citation: the winding steps are not in [4]
    )
    cited = {1: power_reserve, 2: service, 3: power_reserve, 4: service}
    report = judge.judge(answer, cited, retrieved=[winding])
    first, second, third = report.claims
    assert first.supported_by_citations and second.supported_by_citations and not third.supported_by_citations
    assert third.supported and third.best_retrieved == 0  # supported by a retrieved passage it did not cite
    assert second.citation_support[2] >= judge.calibration.threshold > second.citation_support[3]
    assert report.citation_recall == pytest.approx(2 / 3)
    assert report.citation_precision == pytest.approx(2 / 4)  # [1] and [2] support their claims; [3], [4] do not
    assert report.unsupported_rate == 0.0 and report.contradicted_claims == 0


def test_claims_without_citations_and_boilerplate(judge, power_reserve):
    report = judge.judge(f"Thank you for contacting Corvane. {SUPPORTED} I hope this helps!", {}, [power_reserve])
    assert [s.kind for s in report.skipped] == [SentenceKind.GREETING, SentenceKind.GREETING]
    (claim,) = report.claims
    assert claim.cited_numbers == [] and claim.support_cited == 0.0 and "no citation" in claim.reasons
    assert claim.supported and report.citation_recall == 0.0 and report.citation_precision is None


def test_split_sentences_reads_citation_styles():
    sentences = split_sentences(
        "Hello! It runs for 42 hours [1]. A service costs €480, e.g. at a boutique. [1][3] It takes 8 to 10 weeks "
        "[1, 2].\nTo book a service:\n1. Bring your watch to any boutique [2]"
    )
    assert [(s.text, s.citations, s.kind) for s in sentences] == [
        ("Hello!", [], SentenceKind.GREETING),
        ("It runs for 42 hours.", [1], SentenceKind.CLAIM),
        ("A service costs €480, e.g. at a boutique.", [1, 3], SentenceKind.CLAIM),
        ("It takes 8 to 10 weeks.", [1, 2], SentenceKind.CLAIM),
        ("To book a service:", [], SentenceKind.LEAD_IN),
        ("Bring your watch to any boutique", [2], SentenceKind.CLAIM),
    ]


def test_numbers_are_normalised():
    def found(claim: str, passage: str) -> bool:
        return not missing_quantities(extract_quantities(claim), extract_quantities(passage, lone_one=True))

    assert found("Returns are accepted within thirty days.", "within 30 days of delivery")
    assert found("It takes two weeks.", "allow 14 days")
    assert found("It costs 480 euros.", "Full service price: €480")
    assert found("Store it at −18°C.", "keep it at -18 °C")
    assert found("You get a 15 per cent discount.", "a 15% discount")
    assert not found("It costs €480.", "It costs $480.")
    assert not found("Store it at 18 °C.", "keep it at -18 °C")
    assert not found("Allow 10 weeks.", "Allow 10 days.")


def test_abstention_helpers():
    assert is_abstention("I'm sorry, I couldn't find that in our care guides. Please contact Client Care.")
    assert not is_abstention(SUPPORTED)
    assert abstention_correct(True, False) is True
    assert abstention_correct(True, True) is False
    assert abstention_correct(False, True) is True
    assert abstention_correct(False, None) is None
    with pytest.raises(ValueError, match="abstained must be a bool"):
        abstention_correct("yes", True)


def test_the_shipped_calibration_loads_and_validates():
    calibration = load_calibration()
    assert calibration.feature_names[:2] == ["align_mean", "align_strong"]
    assert 0 < calibration.contradiction_cap < calibration.threshold < 1
    assert calibration.coefficients[0] > 0  # better token alignment means more support
    broken = json.loads(DEFAULT_CALIBRATION_PATH.read_text())
    broken["coefficients"] = broken["coefficients"][:-1]
    with pytest.raises(ValidationError, match="coefficients"):
        Calibration.model_validate(broken)


def test_bad_input_gives_a_clear_error(judge, power_reserve):
    with pytest.raises(ValueError, match="answer is empty"):
        judge.judge("   ", {1: power_reserve})
    with pytest.raises(ValueError, match="answer must be a string"):
        judge.judge(42, {1: power_reserve})
    with pytest.raises(ValueError, match="cited keys must be citation numbers"):
        judge.judge(SUPPORTED, {"1": power_reserve})
    with pytest.raises(ValueError, match="cited passage \\[1\\] must be a non-empty string"):
        judge.judge(SUPPORTED, {1: ""})
    with pytest.raises(ValueError, match="citations_per_claim has 2 entries"):
        judge.judge(SUPPORTED, {1: power_reserve}, citations_per_claim=[[1], [1]])
    with pytest.raises(ValueError, match="claim must be a string"):
        judge.score_pair(None, power_reserve)
    with pytest.raises(FileNotFoundError, match="--fit"):
        GroundingJudge.load(Path("/nonexistent/calibration.json"))
