"""The knowledge base: its documents, their chunks, and incremental ingestion into a real index on disk."""

from __future__ import annotations

import pytest

from colbert_att_assistant.knowledge_base.chunking import chunk_document
from colbert_att_assistant.knowledge_base.documents_io import (
    DOCUMENTS_DIR,
    KnowledgeBaseError,
    load_documents,
    parse_document,
)
from colbert_att_assistant.knowledge_base.ingest import ingest
from colbert_att_assistant.retriever import MultiVectorIndex

GOOD = """---
id: care-test-{n}
title: Test Guide {n}
category: leather-care
audience: {audience}
products: [Miro wallet]
materials: [calfskin]
last_reviewed: 2026-09-15
---

# Test Guide {n}

## Drying a wet wallet

Blot the calfskin wallet with a soft cloth and let it dry at room temperature, never on a radiator.

## Conditioning

Apply the balm once every three months.
"""


def tokenize_with(encoder):
    return lambda text: encoder.tokenizer.encode(text, add_special_tokens=False)


def test_the_corpus_is_valid_and_covers_every_audience():
    documents = load_documents()
    assert len(documents) >= 60
    assert {d.audience for d in documents} == {"public", "internal"}
    assert len([d for d in documents if d.audience == "internal"]) >= 6
    assert {d.id for d in documents} >= {
        "care-calfskin",
        "care-lambskin",
        "faq-returns-exchanges",
        "internal-discount-authority",
    }


def test_faq_questions_become_one_chunk_each(encoder):
    faq = parse_document(DOCUMENTS_DIR / "faq" / "faq-returns-exchanges.md", DOCUMENTS_DIR)
    questions = [line[3:] for line in faq.body.splitlines() if line.startswith("## ")]
    chunks = chunk_document(faq, tokenize_with(encoder))
    assert [c.metadata["header_path"] for c in chunks] == questions
    assert all(c.text.startswith(faq.title) for c in chunks)
    assert {c.metadata["audience"] for c in chunks} == {"public"}


def test_chunks_fit_the_encoder_and_ids_are_stable(encoder):
    guide = parse_document(DOCUMENTS_DIR / "care" / "care-calfskin.md", DOCUMENTS_DIR)
    tokenize = tokenize_with(encoder)
    first = chunk_document(guide, tokenize, max_tokens=120)
    again = chunk_document(guide, tokenize, max_tokens=120)
    assert [c.node_id for c in first] == [c.node_id for c in again]
    assert len({c.node_id for c in first}) == len(first)
    assert all(len(tokenize(c.text)) <= 120 for c in first)
    assert any("wet" in c.metadata["header_path"].lower() for c in first)
    for key in ("document_id", "title", "header_path", "audience", "category", "source_path"):
        assert key in first[0].metadata


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("no front matter here", r"broken.md, line 1: expected '---'"),
        ("---\nid: x\n", r"never closed"),
        ("---\nid: [unclosed\n---\nbody", r"broken.md, line \d+: front matter is not valid YAML"),
        (GOOD.format(n=1, audience="everyone"), r"audience: Input should be 'public' or 'internal'"),
        (GOOD.format(n=1, audience="public").replace("title: Test Guide 1\n", ""), r"title: Field required"),
        ("", r"the file is empty"),
        ("---\nid: care-x\ntitle: X\ncategory: c\naudience: public\nlast_reviewed: 2026-01-01\n---\n  \n", r"no text"),
    ],
)
def test_bad_documents_name_the_file(tmp_path, content, message):
    (tmp_path / "broken.md").write_text(content)
    with pytest.raises(KnowledgeBaseError, match=message):
        parse_document(tmp_path / "broken.md", tmp_path)


def test_non_utf8_and_duplicate_ids_are_reported(tmp_path):
    (tmp_path / "latin.md").write_bytes(GOOD.format(n=1, audience="public").encode() + "\ncaf\xe9".encode("latin-1"))
    with pytest.raises(KnowledgeBaseError, match=r"latin.md, line 21: not UTF-8"):
        parse_document(tmp_path / "latin.md", tmp_path)
    (tmp_path / "latin.md").unlink()
    (tmp_path / "a.md").write_text(GOOD.format(n=1, audience="public"))
    (tmp_path / "b.md").write_text(GOOD.format(n=1, audience="public"))
    with pytest.raises(KnowledgeBaseError, match=r"b.md: id 'care-test-1' is already used by a.md"):
        load_documents(tmp_path)


def test_ingest_is_incremental(tmp_path, cached_encoder):
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    docs.mkdir()
    for n in range(3):
        (docs / f"guide{n}.md").write_text(GOOD.format(n=n, audience="public"))
    first = ingest(docs, index_dir, encoder=cached_encoder)
    assert (first.added, first.removed) == (6, 0)
    generation = (index_dir / "manifest.json").read_text()

    # An unchanged folder does nothing, not even a write.
    again = ingest(docs, index_dir, encoder=cached_encoder)
    assert (again.added, again.removed, again.unchanged) == (0, 0, 6)
    assert (index_dir / "manifest.json").read_text() == generation

    # One changed section re-encodes one chunk; a deleted file leaves; an audience flip updates metadata only.
    (docs / "guide0.md").write_text(GOOD.format(n=0, audience="public").replace("three months", "six months"))
    (docs / "guide1.md").unlink()
    (docs / "guide2.md").write_text(GOOD.format(n=2, audience="internal"))
    changed = ingest(docs, index_dir, encoder=cached_encoder)
    assert (changed.added, changed.removed, changed.metadata_updated) == (1, 3, 2)
    index = MultiVectorIndex.load(index_dir, encoder=cached_encoder)
    assert len(index) == 4
    assert {index.get(i).metadata["audience"] for i in index.document_ids() if "care-test-2" in i} == {"internal"}
    assert any("six months" in index.get(i).text for i in index.document_ids())


def test_a_broken_file_loses_nothing_else(tmp_path, cached_encoder):
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    docs.mkdir()
    (docs / "good.md").write_text(GOOD.format(n=1, audience="public"))
    (docs / "later-broken.md").write_text(GOOD.format(n=2, audience="public"))
    ingest(docs, index_dir, encoder=cached_encoder)
    before = sorted(MultiVectorIndex.load(index_dir, encoder=cached_encoder).document_ids())

    (docs / "later-broken.md").write_text(GOOD.format(n=2, audience="nobody"))
    (docs / "new.md").write_text(GOOD.format(n=3, audience="public"))
    report = ingest(docs, index_dir, encoder=cached_encoder)
    assert len(report.errors) == 1 and "later-broken.md" in report.errors[0]
    after = MultiVectorIndex.load(index_dir, encoder=cached_encoder).document_ids()
    # The broken file's chunks are kept as they were, and the new file still got in.
    assert set(before) <= set(after) and len(after) == len(before) + 2


def test_labelled_questions_are_a_valid_beir_set():
    from colbert_att_assistant.knowledge_base.eval_set import EVAL_DIR, corpus_records, load_questions
    from colbert_att_assistant.retriever.beir import BeirDataset

    questions = load_questions()
    types = [q["metadata"]["type"] for q in questions]
    assert len(questions) >= 150
    assert types.count("unanswerable") >= 30 and types.count("internal") >= 20
    assert {"paraphrase", "typo", "multi_part", "follow_up"} <= set(types)
    assert all(q["metadata"]["previous_turn"] for q in questions if q["metadata"]["type"] == "follow_up")

    data = BeirDataset.load(EVAL_DIR, "test")  # checks every judged chunk id exists in corpus.jsonl
    judged = set(data.qrels)
    assert {q["_id"] for q in questions if q["metadata"]["answerable"]} == judged
    # Answers to internal questions live only in internal chunks, and public answers only in public chunks.
    audience = {record["_id"]: record["metadata"]["audience"] for record in corpus_records()}
    for question in questions:
        for chunk_id in data.qrels.get(question["_id"], {}):
            assert audience[chunk_id] == question["metadata"]["audience"], (question["_id"], chunk_id)
    # corpus.jsonl is what the chunker makes of today's documents (regenerate: python -m
    # colbert_att_assistant.knowledge_base.eval_set).
    assert sorted(audience) == sorted(data.corpus), "knowledge_base/eval/corpus.jsonl is stale"


def test_ingest_rebuilds_an_index_made_with_other_encoder_settings(tmp_path, cached_encoder):
    from colbert_att_assistant.retriever import ColBERTAttEncoder, EncoderSettings
    from colbert_att_assistant.retriever.settings import AttentionStrategy

    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    docs.mkdir()
    (docs / "guide.md").write_text(GOOD.format(n=1, audience="public"))
    older = ColBERTAttEncoder(
        EncoderSettings(attention_strategy=AttentionStrategy.RECEIVED_LAST), checkpoint=cached_encoder.checkpoint
    )
    ingest(docs, index_dir, encoder=older)
    report = ingest(docs, index_dir, encoder=cached_encoder)
    assert report.added == 2  # everything re-encoded with today's settings
    rebuilt = MultiVectorIndex.load(index_dir, encoder=cached_encoder)
    assert rebuilt.settings.encoder.attention_strategy == cached_encoder.settings.attention_strategy
