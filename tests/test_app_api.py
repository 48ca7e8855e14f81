"""The app's JSON API over real HTTP on localhost: the real assistant, model and knowledge-base index."""

from __future__ import annotations

import json

import httpx
import pytest

STAFF = ("staff", "correct horse")


def test_healthz(app_server):
    base, _ = app_server
    health = httpx.get(f"{base}/healthz").json()
    assert health["status"] == "ok" and health["chunks"] > 600


def test_chat_answers_with_citations_that_link_to_public_passages(app_server):
    base, app = app_server
    reply = httpx.post(f"{base}/api/chat", json={"message": "How much does express delivery cost?"}, timeout=120)
    assert reply.status_code == 200
    body = reply.json()
    assert not body["abstained"] and "25" in body["answer"]
    assert body["grounding_note"] is None, body  # a faithful answer passes the grounding judge
    assert body["weak_match"] is False  # only staff are shown weak matches
    assert body["citations"] and body["citations"][0]["url"].startswith("/passages/")
    passage = httpx.get(base + body["citations"][0]["url"])
    assert passage.status_code == 200 and body["citations"][0]["title"] in passage.text
    # Every answer is logged with the chunks retrieval returned and their scores.
    turn = app.state.conversation_log.rows("turns")[-1]
    assert turn["session_id"] == body["session_id"]
    assert all("score" in item for item in json.loads(turn["retrieved"]))


def test_streaming_sends_sources_then_tokens_then_the_final_answer(app_server):
    base, _ = app_server
    events = []
    with httpx.stream(
        "POST", f"{base}/api/chat/stream", json={"message": "How should I store my pearls?"}, timeout=120
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                events.append([line.removeprefix("event: "), None])
            elif line.startswith("data: "):
                events[-1][1] = json.loads(line.removeprefix("data: "))
    names = [name for name, _ in events]
    # Text arrives as the engine releases it (checked sentences, not necessarily single tokens).
    assert names[0] == "sources" and names[-1] == "done" and names.count("token") >= 1
    assert events[0][1] and "Pearls" in events[0][1][0]["label"]
    assert events[-1][1]["citations"]


def test_internal_passages_are_not_served_publicly(app_server, kb_assistant):
    base, _ = app_server
    internal = next(i for i in kb_assistant.index.document_ids() if i.startswith("internal-"))
    assert httpx.get(f"{base}/passages/{internal.replace('#', '%23')}").status_code == 404


def test_staff_mode_needs_the_staff_login(app_server):
    base, app = app_server
    question = {"message": "What is the maximum discount a boutique manager can approve?", "mode": "staff"}
    assert httpx.post(f"{base}/api/chat", json=question, timeout=120).status_code == 401
    assert httpx.post(f"{base}/api/chat", json=question, auth=("staff", "wrong"), timeout=120).status_code == 401
    assert httpx.post(f"{base}/api/chat", json=question, auth=STAFF, timeout=120).status_code == 200
    retrieved = json.loads(app.state.conversation_log.rows("turns")[-1]["retrieved"])
    assert any(item["document_id"] == "internal-discount-authority" for item in retrieved)


@pytest.mark.parametrize(
    "message",
    [
        "",
        "x" * 20_000,
        "<script>alert('x')</script><img src=x onerror=alert(1)>",
        "¿Cómo cuido mi bolso? 👜🧵 — 日本語 — עברית — \u200b\u202e",
        42,
        ["a", "list"],
        None,
    ],
)
def test_bad_input_gets_a_clear_reply_and_no_crash(app_server, message):
    base, _ = app_server
    reply = httpx.post(f"{base}/api/chat", json={"message": message}, timeout=120)
    assert reply.status_code == 200
    body = reply.json()
    assert body["answer"]
    assert all(not c["document_id"].startswith("internal-") for c in body["citations"])
    assert "<script>" not in body["answer"]


def test_a_customer_question_about_internal_policy_leaks_nothing(app_server):
    base, app = app_server
    body = httpx.post(
        f"{base}/api/chat", json={"message": "What discount can a boutique manager approve for a VIC?"}, timeout=120
    ).json()
    retrieved = json.loads(app.state.conversation_log.rows("turns")[-1]["retrieved"])
    assert retrieved and all(not item["document_id"].startswith("internal-") for item in retrieved)
    assert "Discount Authority" not in body["answer"]


def test_many_messages_in_quick_succession_are_rate_limited(kb_assistant, tmp_path, start_app):
    base, _, server, thread = start_app(kb_assistant, tmp_path, rate_limit_messages=2, rate_limit_window_s=600)
    try:
        statuses = [httpx.post(f"{base}/api/chat", json={"message": ""}, timeout=60).status_code for _ in range(4)]
        assert statuses == [200, 200, 429, 429]
        limited = httpx.post(f"{base}/api/chat", json={"message": "hello"}, timeout=60)
        assert "wait" in limited.json()["detail"] and int(limited.headers["retry-after"]) > 0
    finally:
        server.should_exit = True
        thread.join(timeout=10)
