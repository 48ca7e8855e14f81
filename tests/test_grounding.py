"""The grounding judge with the real bundled encoder on passages of the knowledge base's care guides: supported
sentences pass; a changed figure, product name or negation makes them contradicted; sentences with nothing to check
(about the sources, a restated question) are never supported."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from colbert_att_assistant.evals.perturb import change_number, swap_name, toggle_negation
from colbert_att_assistant.grounding import (
    Calibration,
    EvidenceScope,
    GroundingJudge,
    SentenceKind,
    Verdict,
    abstention_correct,
    is_abstention,
    load_calibration,
    restates_question,
    split_sentences,
    states_no_claim,
)
from colbert_att_assistant.grounding.calibration import DEFAULT_CALIBRATION_PATH
from colbert_att_assistant.grounding.numbers import extract_quantities, missing_quantities

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
        ("When fully wound, the Corvane 1911 runs for 52 hours off the wrist.", "number '52 hours'"),
        ("When fully wound, the Corvane 1911 runs for forty-two days off the wrist.", "number '42 days'"),
        ("When fully wound, the Corvane Métro runs for 42 hours off the wrist.", "name 'Corvane Métro'"),
        ("When fully wound, the Corvane 1911 does not run for 42 hours off the wrist.", "negated"),
    ],
)
def test_an_edited_figure_name_or_negation_flips_the_verdict(judge, power_reserve, edited, reason):
    claim = verdict(judge, edited, power_reserve)
    assert not claim.supported and claim.contradicted and claim.verdict is Verdict.CONTRADICTED
    assert claim.support_cited < judge.calibration.threshold
    assert any(reason in r for r in claim.reasons), claim.reasons
    # The reason quotes what the passage says instead.
    assert any("42 hours off the wrist" in r for r in claim.reasons), claim.reasons


def test_removing_a_negation_flips_the_verdict(judge, winding):
    negated = "You cannot overwind the Corvane 1911, because a slipping clutch protects the mainspring."
    assert verdict(judge, negated, winding).verdict is Verdict.SUPPORTED
    affirmed = verdict(judge, negated.replace("cannot", "can"), winding)
    assert affirmed.verdict is Verdict.CONTRADICTED and any("affirmed" in r for r in affirmed.reasons)


def test_a_figure_the_passage_does_not_give_is_unsupported_not_contradicted(judge, power_reserve):
    service = section("care-mechanical-watches", "Servicing")
    price = "A full service of the Corvane 1911 costs €480."
    assert verdict(judge, price, service).verdict is Verdict.SUPPORTED
    changed = verdict(judge, price.replace("480", "520"), service)
    assert changed.verdict is Verdict.CONTRADICTED and any("'480 EUR'" in r for r in changed.reasons), changed.reasons
    # The power-reserve section prices nothing: the figure is missing there, not contradicted.
    elsewhere = verdict(judge, price, power_reserve)
    assert elsewhere.verdict is Verdict.UNSUPPORTED and not elsewhere.contradicted
    assert any("'480' is not in the passage" in r for r in elsewhere.reasons), elsewhere.reasons


# Supported sentences of the care guides, each edited the way `python -m
# colbert_att_assistant.evals.grounding_wixqa` edits WixQA
# claims: every edit must make the sentence contradicted, not merely unsupported. (The servicing table names its
# product in the header row only: read with its headers, the matching row names "Corvane 1911".)
# (Sentences with an auxiliary or an imperative, which `toggle_negation` can negate grammatically.)
PERTURBED = [
    ("Power reserve", "When fully wound, the Corvane 1911 will run for 42 hours off the wrist.", Verdict.CONTRADICTED),
    ("Winding by hand", "Turn the crown clockwise about 30 to 40 times.", None),
    ("Servicing", "The Corvane 1911 should have a full service every 5 to 7 years.", Verdict.CONTRADICTED),
    ("Magnetism", "Keep your Corvane 1911 at least 5 cm away from loudspeakers.", Verdict.CONTRADICTED),
]


@pytest.mark.parametrize(("header", "sentence", "swapped_name"), PERTURBED)
def test_perturbations_flip_supported_to_contradicted(judge, header, sentence, swapped_name):
    passage = section("care-mechanical-watches", header)
    assert verdict(judge, sentence, passage).verdict is Verdict.SUPPORTED
    edits = {
        "number": (change_number(sentence), Verdict.CONTRADICTED),
        "negation": (toggle_negation(sentence), Verdict.CONTRADICTED),
        "name": (swap_name(sentence, "Corvane Métro"), swapped_name),
    }
    for kind, (edited, expected) in edits.items():
        if edited is None:  # the sentence has no name to swap
            assert expected is None
            continue
        claim = verdict(judge, edited, passage)
        assert not claim.supported and claim.support < judge.calibration.threshold, (kind, edited)
        assert claim.verdict is expected, (kind, edited, claim.reasons)


def test_figures_in_a_table_are_read_with_their_column_headers(judge):
    text = (CARE.parent / "faq" / "faq-delivery-tracking.md").read_text(encoding="utf-8")
    table = re.search(r"^## What delivery options.*?(?=^## )", text, re.S | re.M).group(0)
    # The price sits in the row "| Express | 1–2 business days | €25 |" under "| Method | Delivery time | Price |".
    assert verdict(judge, "Express delivery costs €25.", table).verdict is Verdict.SUPPORTED
    changed = verdict(judge, "Express delivery costs €30.", table)
    assert changed.verdict is Verdict.CONTRADICTED and any("'25 EUR'" in r for r in changed.reasons), changed.reasons
    assert verdict(judge, "Express delivery takes 3 to 4 business days.", table).verdict is Verdict.CONTRADICTED


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


LEATHER = (
    "Leather Goods Care > Cleaning\n\nWipe smooth leather with a soft, dry cloth after each use. Once a month, apply "
    "a colourless leather conditioner with a cotton pad, in small circles, and let it dry for 20 minutes. Never use "
    "baby wipes or household cleaners on leather."
)


@pytest.mark.parametrize(
    "sentence",
    [
        "Our care guide covers leather care.",
        "The guide discusses how to clean and condition leather.",
        "For more details, see our leather care guide.",
        "You can find more information about leather care in our guide.",
        "Here is some information about caring for leather.",
        "Would you like to know more about leather care?",
    ],
)
def test_sentences_about_the_sources_are_no_claim_and_never_supported(judge, sentence):
    assert states_no_claim(sentence)
    report = judge.judge(f"{sentence} [1]", {1: LEATHER})
    assert report.claims == [] and [s.verdict for s in report.no_claims] == [Verdict.NO_CLAIM]
    assert report.no_claims[0].cited_numbers == [1]
    assert not report.supported and not report.strictly_supported and report.answer_support is None
    # Beside a real claim, it neither counts as one nor drags the answer down.
    mixed = judge.judge(f"{sentence} [1] Wipe smooth leather with a soft, dry cloth after each use [1].", {1: LEATHER})
    assert len(mixed.claims) == 1 and mixed.claims[0].supported and len(mixed.no_claims) == 1
    assert mixed.supported and mixed.unsupported_rate == 0.0


@pytest.mark.parametrize(
    "sentence",
    [
        "The guide explains that you should never use baby wipes on leather.",  # reports what the source says
        "Our care guide covers conditioning: apply a colourless conditioner once a month.",
        "Click Forgot Email?",  # a button label, not a question
        "Wipe smooth leather with a soft, dry cloth after each use.",
        "The returns policy covers purchases for 30 days.",
    ],
)
def test_sentences_that_state_something_stay_claims(sentence):
    assert not states_no_claim(sentence)
    assert [s.kind for s in split_sentences(sentence)] == [SentenceKind.CLAIM]


def test_a_restated_question_is_no_claim(judge, power_reserve):
    question = "How long does my Corvane 1911 keep running off the wrist once it is fully wound?"
    restated = "Once fully wound, the Corvane 1911 keeps running off the wrist [1]."
    # Without the question the judge has no way to tell: the sentence is made of the passage's words.
    assert judge.judge(restated, {1: power_reserve}).claims[0].supported
    report = judge.judge(restated, {1: power_reserve}, question=question)
    assert report.claims == [] and report.no_claims[0].reason == "restates the question"
    assert not report.supported
    answered = judge.judge(f"{restated} It runs for 42 hours [1].", {1: power_reserve}, question=question)
    assert [c.text for c in answered.claims] == ["It runs for 42 hours."] and answered.supported


def test_restating_a_yes_no_question_is_an_answer():
    assert not restates_question("You cannot overwind the Corvane 1911.", "Can I overwind my Corvane 1911?")
    assert not restates_question("You can overwind it.", "Can I overwind my Corvane 1911?")
    assert not restates_question("Keep it rolled up.", "Should I keep my scarf on a hanger or rolled up?")
    assert not restates_question("Yes, it is too late.", "I already checked out, is it too late?")
    assert restates_question(
        "The heel tips on Rivoli oxfords need replacing.", "When do the heel tips on my Rivoli oxfords need replacing?"
    )
    assert not restates_question("The heel tips need replacing every 2 years.", "When do my heel tips need replacing?")


def test_cited_sentences_are_judged_against_their_own_citations_in_own_citations_scope(judge, power_reserve, winding):
    answer = "When fully wound, the Corvane 1911 runs for 42 hours off the wrist [2]. You cannot overwind it [2]."
    anywhere = judge.judge(answer, {1: power_reserve, 2: winding}, retrieved=[power_reserve, winding])
    assert all(c.supported for c in anywhere.claims)  # [1] supports the first sentence, so ANY accepts it
    own = judge.judge(answer, {1: power_reserve, 2: winding}, retrieved=[power_reserve, winding], scope="own_citations")
    first, second = own.claims
    assert own.scope is EvidenceScope.OWN_CITATIONS
    assert not first.supported and first.verdict is Verdict.UNSUPPORTED and first.support_any >= first.support
    assert second.supported
    # A sentence citing nothing may rest on any shown source.
    uncited = judge.judge(
        "When fully wound, the Corvane 1911 runs for 42 hours off the wrist.", {}, [winding, power_reserve],
        scope=EvidenceScope.OWN_CITATIONS,
    )  # fmt: skip
    assert uncited.claims[0].supported and uncited.claims[0].best_retrieved == 1


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
    with pytest.raises(ValueError, match="question must be a string"):
        judge.judge(SUPPORTED, {1: power_reserve}, question=["How long?"])
    with pytest.raises(ValueError, match="claim must be a string"):
        judge.score_pair(None, power_reserve)
    with pytest.raises(FileNotFoundError, match="--fit"):
        GroundingJudge.load(Path("/nonexistent/calibration.json"))


def test_a_list_under_a_dont_heading_contradicts_its_positive_restatement(judge):
    passage = (
        "Caring for Your Cashmere Knitwear > Moths and long-term storage > Don't\n\n"
        "- Store cashmere in sealed plastic for months: trapped moisture encourages mildew and yellowing.\n"
        "- Store it in a warm loft or damp cellar."
    )
    report = judge.judge("Store cashmere sweaters in sealed plastic for months [1].", {1: passage})
    assert not report.claims[0].supported
