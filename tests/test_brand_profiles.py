"""Brand profiles: a bad profile is refused naming its field; the second bundled house (the Wix Help Center) builds
its own index of its own articles and answers from them with the real encoder and the real bundled LLM, in its own
words, with nothing of the first house in them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from colbert_att_assistant.assistant import Assistant, AssistantSettings
from colbert_att_assistant.assistant.brand import BRANDS_DIR, BrandProfile
from colbert_att_assistant.assistant.chat import validate_message
from colbert_att_assistant.assistant.errors import SettingsError
from colbert_att_assistant.knowledge_base.ingest import index_brand_documents
from tests.conftest import shared_datasets_dir

WIX_PROFILE = BRANDS_DIR / "wix-help-centre.yaml"
CORVANE_PROFILE = BRANDS_DIR / "maison-corvane.yaml"
# A WixQA expert question the Help Center answers from one article (the gold article of WIXQA-EXPERT-0001,
# "About Wix Payments"), asked as a client would.
WIX_QUESTION = "Can I start accepting payments on my site while my Wix Payments account is still under verification?"


def write_profile(tmp_path: Path, change) -> Path:
    """The Wix profile with `change(data)` applied, written to a temporary file."""
    data = yaml.safe_load(WIX_PROFILE.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


# ---- (a) a bad profile is refused, naming the field ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(colour_scheme="dark"), "colour_scheme"),  # an unknown key (a typo of `style`)
        (lambda d: d["strings"].pop("abstain"), "strings.abstain"),  # a required client string missing
        (lambda d: d["contacts"].update(phone=["+1", "+2"]), "contacts.phone"),  # a list where one number goes
        (lambda d: d.update(name=""), "name"),  # the house must be named
        (lambda d: d["strings"].update(examples="How do I connect a domain?"), "strings.examples"),
    ],
)
def test_a_bad_field_is_refused_naming_it(tmp_path, change, field):
    path = write_profile(tmp_path, change)
    with pytest.raises(SettingsError) as caught:
        BrandProfile.load(path)
    message = str(caught.value)
    assert field in message
    assert str(path) in message
    # The same error when the profile is chosen through the assistant settings.
    with pytest.raises(SettingsError, match=re.escape(field)):
        AssistantSettings.load(brand_profile=str(path)).brand()


def test_a_missing_or_unreadable_profile_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="wix-help-centre.yaml") as caught:
        BrandProfile.load(tmp_path / "nowhere.yaml")
    assert "does not exist" in str(caught.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="not valid YAML"):
        BrandProfile.load(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- name\n- documents\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="mapping"):
        BrandProfile.load(listed)


def test_both_bundled_profiles_load_and_differ():
    wix, corvane = BrandProfile.load(WIX_PROFILE), BrandProfile.load(CORVANE_PROFILE)
    assert wix.name != corvane.name
    assert wix.index_dir != corvane.index_dir  # one house's index never serves the other
    assert "Corvane" not in json.dumps(wix.model_dump(), ensure_ascii=False)


# ---- (c) the client-facing strings come from the profile -----------------------------------------------------------


def test_message_checks_answer_in_the_profile_words():
    wix, corvane = BrandProfile.load(WIX_PROFILE), BrandProfile.load(CORVANE_PROFILE)
    for brand in (wix, corvane):
        assert validate_message("   ", 2000, brand) == brand.strings.empty_message
        assert validate_message(42, 2000, brand) == brand.strings.not_text
        assert validate_message("x" * 30, 20, brand) == brand.strings.too_long.format(length=30, limit=20)
        assert validate_message("How do I connect a domain?", 2000, brand) is None
    assert validate_message("   ", 2000, wix) != validate_message("   ", 2000, corvane)


def test_the_handoff_is_built_from_the_profile_contacts(tmp_path):
    wix = BrandProfile.load(WIX_PROFILE)
    assert wix.handoff == "A person will be glad to help: the help centre at https://support.wix.com."
    both = BrandProfile.load(
        write_profile(tmp_path, lambda d: d["contacts"].update(phone="+1 555 0100", email="help@example.com"))
    )
    assert both.handoff == (
        "A person will be glad to help: phone +1 555 0100, email help@example.com, or the help centre at "
        "https://support.wix.com."
    )
    silent = BrandProfile.load(write_profile(tmp_path, lambda d: d.update(contacts={})))
    assert silent.handoff == ""


# ---- (b, c) the Wix Help Center, end to end ------------------------------------------------------------------------


def wixqa_dir() -> Path | None:
    datasets = shared_datasets_dir()
    folder = datasets / "wixqa" if datasets is not None else None
    return folder if folder is not None and (folder / "corpus.jsonl").is_file() else None


@pytest.fixture(scope="module")
def wix_settings(tmp_path_factory) -> AssistantSettings:
    folder = wixqa_dir()
    if folder is None:
        pytest.skip("the WixQA data set (../shared/datasets/wixqa) is not here: the Wix profile has no documents")
    index_dir = tmp_path_factory.mktemp("wix-index")
    return AssistantSettings.load(
        brand_profile=str(WIX_PROFILE),
        retrieval={
            "index_dir": str(index_dir),
            "documents_dir": str(folder / "corpus.jsonl"),
            "answer_style": "generated",
        },
        llm={"threads": 2},
    )


@pytest.fixture(scope="module")
def wix_assistant(wix_settings, encoder, chat_model) -> Assistant:
    index, _ = index_brand_documents(wix_settings, encoder)
    return Assistant.from_settings(wix_settings, chat_model=chat_model, index=index)


def wix_article_ids() -> set[str]:
    with (wixqa_dir() / "corpus.jsonl").open(encoding="utf-8") as handle:
        return {json.loads(line)["_id"] for line in handle if line.strip()}


@pytest.mark.slow
def test_the_wix_profile_builds_its_own_index(wix_settings, wix_assistant):
    brand = wix_assistant.brand
    assert brand.name == "the Wix Help Center"
    index_dir = wix_settings.index_dir(brand)
    assert (index_dir / "manifest.json").is_file()
    # Every chunk is a Wix article's; none of the first house's documents is in this index.
    documents = {wix_assistant.index.get(chunk).metadata["document_id"] for chunk in wix_assistant.index.document_ids()}
    assert documents == wix_article_ids()


@pytest.mark.slow
def test_the_wix_assistant_answers_from_a_wix_article(wix_assistant):
    answer = wix_assistant.answer(WIX_QUESTION, session_id="wix-answer")
    assert not answer.abstained, (answer.abstain_reason, answer.text)
    assert answer.answer_path in ("generated", "extractive")
    articles = wix_article_ids()
    assert answer.citations
    assert {citation.document_id for citation in answer.citations} <= articles
    assert "49d9e88fadbf11fa4e685c847590078ff9394c2fe7566094f504f53ca4aca465" in {
        source.document_id for source in answer.sources
    }
    assert "Maison Corvane" not in answer.text and "Corvane" not in answer.text
    if answer.answer_path == "extractive":
        assert answer.text.startswith(wix_assistant.brand.strings.extractive_lead)


@pytest.mark.slow
def test_the_wix_handoff_and_replies_come_from_its_profile(wix_settings, wix_assistant, chat_model):
    brand = wix_assistant.brand
    # Gates that nothing passes: the real pipeline abstains, in the Wix profile's words.
    strict = wix_settings.model_copy(
        update={"retrieval": wix_settings.retrieval.model_copy(update={"min_score_to_answer": 1.0})}
    )
    abstaining = Assistant(wix_assistant.index, chat_model, strict, brand=brand)
    answer = abstaining.answer(WIX_QUESTION, session_id="wix-abstain")
    assert answer.abstained and answer.abstain_reason == "weak_retrieval"
    assert answer.text == f"{brand.strings.abstain} {brand.handoff}"
    assert "https://support.wix.com" in answer.text
    corvane = BrandProfile.load(CORVANE_PROFILE)
    assert corvane.strings.abstain not in answer.text and "+33" not in answer.text
    empty = wix_assistant.answer("   ", session_id="wix-empty")
    assert empty.answer_path == "invalid" and empty.text == brand.strings.empty_message
