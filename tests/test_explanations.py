"""Why a passage was found: worked out by the assistant in staff mode (the real encoder and the real index of the
whole knowledge base), carried on each source of its answer, and rendered as HTML by the staff page."""

from __future__ import annotations

import html
import math
import re

import pytest

from colbert_att_assistant.assistant import Audience
from colbert_att_assistant.retriever.scoring import ScoringMode
from colbert_att_assistant.webapp.staff_explain import explanation_html

QUESTION = "What is the maximum discount a boutique manager can approve?"


@pytest.fixture(scope="module")
def staff_sources(kb_assistant):
    query = kb_assistant.index.encoder.encode_query(QUESTION)
    return kb_assistant.retrieve(query, Audience.STAFF)


def test_staff_sources_say_why_they_were_found_and_customer_sources_do_not(kb_assistant, staff_sources):
    query = kb_assistant.index.encoder.encode_query(QUESTION)
    customer = kb_assistant.retrieve(query, Audience.CUSTOMER)
    assert customer and all(source.explanation is None for source in customer)
    assert len(staff_sources) == kb_assistant.settings.retrieval.top_k
    assert all(source.explanation is not None for source in staff_sources)
    assert staff_sources[0].document_id == "internal-discount-authority"


def test_matched_words_are_whole_words_of_the_passage_text(staff_sources):
    source = staff_sources[0]
    explanation = source.explanation
    words = explanation.matched_words
    assert len(words) > 3
    assert [w.start for w in words] == sorted(w.start for w in words)
    for word in words:
        text = source.text[word.start : word.end]
        assert re.fullmatch(r"\w+", text), text  # a whole word: "##" pieces were widened to it
        assert word.start == 0 or not re.match(r"\w", source.text[word.start - 1])
        assert word.end == len(source.text) or not re.match(r"\w", source.text[word.end])
        assert word.queries and all(q.query_word for q in word.queries)
    matched = {source.text[w.start : w.end].lower() for w in words}
    assert any(word.startswith("discount") for word in matched), matched
    # The rows name the same passage words (as they read in the text, not as word pieces).
    assert {row.passage_word.lower() for row in explanation.matches} >= matched
    assert not any(row.passage_word.startswith("##") for row in explanation.matches)


def test_contributions_add_up_to_no_more_than_the_score_and_the_reason_names_the_words(staff_sources):
    for source in staff_sources:
        explanation = source.explanation
        total = sum(row.contribution for row in explanation.matches)
        # The score also counts the question's [CLS] / [SEP] tokens, which the explanation leaves out.
        assert 0 < total <= explanation.score + 1e-6
        assert 0 < source.score <= 1.0 < explanation.score  # normalised vs raw
        weights = [row.passage_attention for row in explanation.matches]
        assert max(weights) > min(weights) > 0  # relative to the passage's mean: differences show
    why = staff_sources[0].explanation.why
    assert "found closely" in why and "discount" in why


def test_plain_maxsim_explains_with_the_cosine_alone(kb_assistant):
    query = kb_assistant.index.encoder.encode_query(QUESTION)
    sources = kb_assistant.retrieve(query, Audience.STAFF, ScoringMode.MAXSIM)
    for row in sources[0].explanation.matches:
        assert math.isclose(row.contribution, row.cosine, rel_tol=1e-6)


def test_the_staff_page_renders_the_explanation_it_is_given(staff_sources):
    source = staff_sources[0]
    page = explanation_html(source, source.explanation)
    marks = re.findall(r"<mark class='match' data-level='(\d)' title='[^']*'>([^<]*)</mark>", page)
    assert len(marks) == len(source.explanation.matched_words)
    assert {level for level, _ in marks} > {"4"}  # darker for larger contributions, not all alike
    assert all(word in source.text for _, word in marks)
    assert "internal" in page and html.escape(source.explanation.why) in page
    assert f"score {source.explanation.score:.2f}" in page and "<table class='matches'>" in page
    # The heading the chunker put in front of the text is shown apart from the body.
    assert "class='indexed-heading'" in page
