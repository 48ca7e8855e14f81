"""The knowledge-gap page over real HTTP: a conversation log seeded with declined, noted, answered and 👎 turns whose
sources come from the real knowledge-base index; the real app serves the page behind the staff login, groups the
gap questions by topic with the real encoder, links each to the documents retrieved for it, and exports a CSV."""

from __future__ import annotations

import csv
import io
import re
import time

import httpx
import pytest

from colbert_att_assistant.assistant import AssistantAnswer, Audience, Citation
from colbert_att_assistant.webapp.conversation_log import ConversationLog

STAFF = ("staff", "correct horse")
CRYPTO = ["Can I pay for my order with bitcoin?", "Do you accept cryptocurrency payments?"]
PEARLS = "How should I store my pearls?"
DELIVERY = "How much does express delivery cost?"
DAY = 86_400.0


def sources(index, question: str) -> list[Citation]:
    hits = index.search(question, top_k=3)
    return [
        Citation(
            number=number,
            node_id=hit.id,
            document_id=str(hit.metadata["document_id"]),
            title=str(hit.metadata["title"]),
            section=str(hit.metadata.get("header_path", "")),
            source_path=str(hit.metadata.get("source_path", "")),
            audience=str(hit.metadata.get("audience", "")),
            score=hit.normalised_score,
            text=hit.text,
        )
        for number, hit in enumerate(hits, start=1)
    ]


def seed(log: ConversationLog, index) -> dict[str, int]:
    def turn(question: str, **fields) -> AssistantAnswer:
        found = sources(index, question) if question else []
        defaults = dict(
            text="…", abstained=False, answer_path="generated", sources=found, citations=found[:1],
            question=question, standalone_question=question, audience=Audience.CUSTOMER,
        )  # fmt: skip
        return AssistantAnswer(**{**defaults, **fields})

    declined = dict(abstained=True, abstain_reason="weak_retrieval", answer_path="abstained", citations=[])
    ids = {
        "crypto-0": log.record_turn(turn(CRYPTO[0], text="I'm sorry…", **declined), "api", "s1"),
        "crypto-1": log.record_turn(turn(CRYPTO[1], text="I'm sorry…", **declined), "api", "s2"),
        "pearls": log.record_turn(
            turn(PEARLS, text="Keep them in a box [1]."), "api", "s3", grounding_note="⚠️ Parts of this answer…"
        ),
        "delivery": log.record_turn(turn(DELIVERY, text="Express delivery costs €25 [1]."), "api", "s4"),
    }
    invalid = dict(abstained=True, abstain_reason="invalid_message", answer_path="invalid", sources=[], citations=[])
    ids["invalid"] = log.record_turn(turn("", text="Your message seems to be empty.", **invalid), "api", "s5")
    log.record_feedback("s4", False, "", turn_id=ids["delivery"])
    log.record_feedback("s4", False, "", turn_id=ids["delivery"], comment="I asked about Sunday delivery.")
    # Two days of history for the plot: the first crypto question was asked yesterday.
    with log._connection:
        log._connection.execute("UPDATE turns SET created = ? WHERE id = ?", (time.time() - DAY, ids["crypto-0"]))
    return ids


@pytest.fixture(scope="module")
def gap_app(kb_assistant, start_app, tmp_path_factory):
    folder = tmp_path_factory.mktemp("insights")
    ids = seed(ConversationLog(folder / "log.sqlite3"), kb_assistant.index)
    base, _, server, thread = start_app(kb_assistant, folder)
    yield base, ids
    server.should_exit = True
    thread.join(timeout=10)


def test_the_gap_page_needs_the_staff_login(gap_app):
    base, _ = gap_app
    anonymous = httpx.get(f"{base}/insights/")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(f"{base}/insights/", auth=("staff", "wrong")).status_code == 401
    assert httpx.get(f"{base}/insights/gaps.csv").status_code == 401
    assert httpx.get(f"{base}/insights/passages/x").status_code == 401


def test_declined_questions_are_grouped_by_topic_with_their_documents(gap_app, kb_assistant):
    base, ids = gap_app
    page = httpx.get(f"{base}/insights/", auth=STAFF, timeout=120)
    assert page.status_code == 200
    body = page.text
    topics = re.findall(r"<section class='topic' id='topic-(\d+)'>(.*?)</section>", body, re.S)
    topic_of = {
        name: next(number for number, section in topics if f"data-turn='{turn_id}'" in section)
        for name, turn_id in ids.items()
        if name in ("crypto-0", "crypto-1", "pearls")
    }
    assert topic_of["crypto-0"] == topic_of["crypto-1"] != topic_of["pearls"]
    crypto = dict(topics)[topic_of["crypto-0"]]
    assert CRYPTO[0] in crypto and "declined" in crypto and "weak_retrieval" in crypto
    assert "Grounding" not in crypto and PEARLS not in crypto
    # Each gap links to the documents retrieved for it, and the link opens the passage (internal ones too).
    links = re.findall(r"href='(/insights/passages/[^']+)'", crypto)
    expected = sources(kb_assistant.index, CRYPTO[0])[0]
    assert any(expected.node_id.replace("#", "%23") in link for link in links)
    passage = httpx.get(base + links[0], auth=STAFF)
    assert passage.status_code == 200 and "Back to the knowledge gaps" in passage.text
    # Answered questions and unreadable messages are not gaps.
    assert f"data-turn='{ids['delivery']}'" not in body and f"data-turn='{ids['invalid']}'" not in body
    assert "4 questions" in body and "2 declined" in body and "1 answered with a grounding note" in body


def test_down_votes_citations_and_the_rate_plot(gap_app, kb_assistant):
    base, _ = gap_app
    delivery = sources(kb_assistant.index, DELIVERY)[0].document_id
    body = httpx.get(f"{base}/insights/", auth=STAFF, timeout=120).text
    votes = re.search(r"<table id='down-votes'>(.*?)</table>", body, re.S).group(1)
    assert DELIVERY in votes and "I asked about Sunday delivery." in votes
    assert votes.count("<tr class='down-vote'>") == 1  # the 👎 and its comment are one answer
    most = re.search(r"<table id='most-cited'>(.*?)</table>", body, re.S).group(1)
    assert delivery in most
    never = re.search(r"<table id='never-cited'>(.*?)</table>", body, re.S).group(1)
    assert f"<td>{delivery}</td>" not in never and never.count("<tr>") > 30
    chart = re.search(r"<svg id='rate-chart'.*?</svg>", body, re.S).group(0)
    assert chart.count("<rect") >= 3  # yesterday: declined; today: answered, noted, declined


def test_the_gaps_export_as_csv(gap_app):
    base, ids = gap_app
    reply = httpx.get(f"{base}/insights/gaps.csv", auth=STAFF, timeout=120)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    by_turn = {int(row["turn_id"]): row for row in rows}
    assert set(by_turn) == {ids["crypto-0"], ids["crypto-1"], ids["pearls"]}
    assert by_turn[ids["crypto-0"]]["topic"] == by_turn[ids["crypto-1"]]["topic"]
    assert by_turn[ids["crypto-0"]]["kind"] == "declined" and by_turn[ids["pearls"]]["kind"] == "noted"
    assert by_turn[ids["pearls"]]["reason"].startswith("⚠️")
    assert all(row["retrieved_documents"] for row in rows)
