"""Evidence: passage lines found by the ColBERT-Att token alignment, on the real knowledge-base index."""

from __future__ import annotations

import pytest

from colbert_att_assistant.assistant.chat import quoted_lines
from colbert_att_assistant.assistant.evidence import (
    EvidenceUnit,
    evidence_for,
    select_evidence,
    split_passage,
    with_context,
)
from colbert_att_assistant.retriever.index import MultiVectorIndex

TABLE_PASSAGE = """Caring for Belts > Overfilling

Leather stretches. It does not shrink back.

| Piece | Designed capacity |
|---|---|
| Miro wallet (long) | 12 cards; up to 20 notes |

- Keep **one card** per slot.
1. Empty the wallet every few weeks."""


def test_a_passage_splits_into_quotable_units():
    heading, units = split_passage(TABLE_PASSAGE)
    assert heading == "Caring for Belts > Overfilling"
    assert [u.kind for u in units] == ["sentence", "sentence", "table_row", "list_item", "list_item"]
    # A table row keeps its column names; Markdown emphasis and list markers are gone.
    assert units[2].text == "Piece: Miro wallet (long); Designed capacity: 12 cards; up to 20 notes"
    assert units[3].text == "Keep one card per slot."
    assert units[4].text == "Empty the wallet every few weeks."
    for unit in units:
        assert TABLE_PASSAGE[unit.start : unit.end].strip()
    # The paragraph, the table and the list are three blocks (the list's two markers are one list).
    assert [u.block for u in units] == [0, 0, 1, 2, 2]


def test_a_quoted_line_comes_with_its_neighbours_from_the_same_block_as_one_excerpt():
    heading, units = split_passage(TABLE_PASSAGE)
    best = EvidenceUnit(source_number=2, position=1, heading=heading, text=units[1].text, score=0.7)
    widened = with_context([best], {2: TABLE_PASSAGE}, reach=1)
    # Its paragraph's first sentence joins it; the table row after it is another block and does not.
    assert [(u.position, u.text) for u in widened] == [(0, "Leather stretches."), (1, "It does not shrink back.")]
    assert with_context([best], {2: TABLE_PASSAGE}, reach=0) == [best]
    quote = quoted_lines(widened, "Here is what our guides say:")
    assert quote == "Here is what our guides say:\n- Leather stretches. It does not shrink back [2]."
    # Lines apart in a passage, or from two passages, stay separate excerpts, each cited.
    row = EvidenceUnit(source_number=2, position=3, heading=heading, text=units[3].text, score=0.5)
    other = EvidenceUnit(source_number=1, position=0, heading="Other", text="Store flat", score=0.4)
    assert quoted_lines([best, row, other], "Lead:").splitlines() == [
        "Lead:",
        "- Store flat [1].",
        "- It does not shrink back [2].",
        "- Keep one card per slot [2].",
    ]


def test_stored_tokens_map_back_to_their_words(knowledge_base_index, encoder):
    index = MultiVectorIndex.load(knowledge_base_index, encoder=encoder)
    document = index.get(index.document_ids()[0])
    spans = encoder.document_token_spans(document.text)
    assert len(spans) == len(document.token_ids)
    words = [document.text[start:end].lower() for start, end in spans if end > 0]
    pieces = [t.removeprefix("##") for t in encoder.token_strings(document.token_ids) if t not in ("[CLS]", "[SEP]")]
    assert len(words) == len(pieces)
    # The uncased tokenizer strips accents ("orée" is "oree"); every ASCII word comes back exactly.
    assert all(word == piece for word, piece in zip(words, pieces, strict=True) if word.isascii())


@pytest.fixture(scope="module")
def kb_index(knowledge_base_index, encoder) -> MultiVectorIndex:
    return MultiVectorIndex.load(knowledge_base_index, encoder=encoder)


def test_the_table_row_that_answers_is_chosen(kb_index):
    question = "How many cards fit in the long Miro wallet?"
    hits = kb_index.search(question, top_k=3)
    evidence = evidence_for(kb_index, question, [(n, h.id, h.text) for n, h in enumerate(hits, start=1)])
    best = max(evidence.units, key=lambda unit: unit.score)
    assert "12 cards" in best.text and "Miro wallet (long)" in best.text
    assert len(evidence.units) <= 4
    # Evidence is a few lines, far shorter than the three passages it was taken from.
    assert sum(len(u.text) for u in evidence.units) < 0.5 * sum(len(h.text) for h in hits)


def test_evidence_for_an_unrelated_question_scores_lower(kb_index):
    def best(question: str) -> float:
        hits = kb_index.search(question, top_k=3)
        return evidence_for(kb_index, question, [(n, h.id, h.text) for n, h in enumerate(hits, start=1)]).best_score

    assert best("How should I store my pearls?") > best("Can I bring my car in for an oil change?")


LEAD_IN_PASSAGE = """Watch care > After the sea

Rinse the case with fresh water after every swim.
For a Corvane 1911 after swimming in the sea or a chlorinated pool:
- Rinse under a lukewarm tap for one minute.
- Dry with a soft cloth.
- Do not press the pushers while wet.
Our boutiques test water resistance for free."""


def test_a_chosen_lead_in_brings_the_lines_it_introduces(encoder):
    query = encoder.encode_query("What should I do with my Corvane 1911 after swimming in a chlorinated pool?")
    document = encoder.encode_documents([LEAD_IN_PASSAGE])[0]
    similarities = query.vectors @ document.vectors.T
    alone = select_evidence(encoder, query, [(1, LEAD_IN_PASSAGE, similarities)], max_units=1, follow_lead_ins=False)
    assert [unit.text for unit in alone.units] == [
        "For a Corvane 1911 after swimming in the sea or a chlorinated pool:"
    ]
    followed = select_evidence(encoder, query, [(1, LEAD_IN_PASSAGE, similarities)], max_units=1)
    assert [unit.text for unit in followed.by_source()[1]] == [
        "For a Corvane 1911 after swimming in the sea or a chlorinated pool:",
        "Rinse under a lukewarm tap for one minute.",
        "Dry with a soft cloth.",
        "Do not press the pushers while wet.",
    ]


def test_a_line_under_a_prohibition_keeps_it():
    passage = (
        "Caring for Your Cashmere Knitwear > Moths and long-term storage > Don't\n\n"
        "- Store cashmere in sealed plastic for months: trapped moisture encourages mildew.\n"
        "- Pack it tightly.\n\n"
        "### If you find moth damage\n"
        "1. Isolate the garment immediately.\n\n"
        "Never do any of the following:\n"
        "- Iron over the moth holes."
    )
    _, units = split_passage(passage)
    assert [unit.text for unit in units] == [
        "Don't: Store cashmere in sealed plastic for months: trapped moisture encourages mildew.",
        "Don't: Pack it tightly.",
        "Isolate the garment immediately.",
        "Never do any of the following:",
        "Never do any of the following: Iron over the moth holes.",
    ]
