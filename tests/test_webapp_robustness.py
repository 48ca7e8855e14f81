"""The chat service holds up, over real HTTP on 127.0.0.1 with the real assistant, index and model: an abandoned
stream frees the model, sessions cannot cross audiences and survive a restart, X-Forwarded-For is not believed,
staff logins are throttled, the line in front of the model tells clients their place or refuses with 503, and
malformed bodies get a clear 4xx."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from colbert_att_assistant.assistant import Audience

STAFF = ("staff", "correct horse")
QUESTION = "How do I care for cashmere?"


def sse_events(response: httpx.Response, stop_after: str | None = None):
    """(event, data) pairs of a server-sent event stream, stopping after the first `stop_after` event."""
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield name, json.loads(line.removeprefix("data: "))
            if name == stop_after:
                return


@pytest.fixture
def fresh_app(kb_assistant, tmp_path, start_app):
    """Start an app with its own settings; every app started is stopped at the end of the test."""
    started = []

    def start(**settings):
        base, app, server, thread = start_app(kb_assistant, tmp_path / f"app{len(started)}", **settings)
        started.append((server, thread))
        return base, app, server, thread

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=30)


# ---- an abandoned request cannot wedge the service -----------------------------------------------------------------


def test_an_abandoned_stream_stops_its_generation_and_the_next_client_is_answered(app_server):
    base, app = app_server
    generation = app.state.services.generation
    before = generation.stats()
    turns_before = len(app.state.conversation_log.rows("turns"))
    with httpx.stream("POST", f"{base}/api/chat/stream", json={"message": QUESTION}, timeout=120) as stream:
        # The sources come just before the model starts writing: hang up then, mid-answer.
        assert [name for name, _ in sse_events(stream, stop_after="sources")][-1] == "sources"
    reply = httpx.post(f"{base}/api/chat", json={"message": "How should I store my pearls?"}, timeout=180)
    assert reply.status_code == 200 and reply.json()["answer"]
    after = generation.stats()
    # The abandoned answer was stopped, not finished for nobody; only the second turn was served and logged.
    assert after["stopped"] == before["stopped"] + 1 and after["served"] == before["served"] + 1
    assert after["running"] == 0 and not app.state.services.assistant.chat_model.busy
    assert len(app.state.conversation_log.rows("turns")) == turns_before + 1


def test_a_client_that_times_out_on_the_plain_endpoint_frees_the_model_too(app_server):
    base, app = app_server
    generation = app.state.services.generation
    stopped = generation.stats()["stopped"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/api/chat", json={"message": QUESTION}, timeout=httpx.Timeout(120, read=2))
    reply = httpx.post(f"{base}/api/chat", json={"message": "How should I store my pearls?"}, timeout=180)
    assert reply.status_code == 200 and reply.json()["answer"]
    assert generation.stats()["stopped"] == stopped + 1
    assert not app.state.services.assistant.chat_model.busy


def test_a_request_past_its_deadline_is_stopped_with_504(fresh_app):
    base, app, _, _ = fresh_app(request_deadline_s=0.5)
    reply = httpx.post(f"{base}/api/chat", json={"message": QUESTION}, timeout=120)
    assert reply.status_code == 504
    assert "within 0.5 seconds" in reply.json()["detail"] and "try again" in reply.json()["detail"]
    assert not app.state.services.assistant.chat_model.busy


def test_stopping_the_server_ends_an_open_answer_at_once(fresh_app):
    base, app, server, thread = fresh_app()
    events: list[tuple[str, object]] = []
    started = threading.Event()

    def listen() -> None:
        with httpx.stream("POST", f"{base}/api/chat/stream", json={"message": QUESTION}, timeout=120) as stream:
            for event in sse_events(stream):
                events.append(event)
                if event[0] == "sources":
                    started.set()

    listener = threading.Thread(target=listen)
    listener.start()
    assert started.wait(120)
    server.should_exit = True
    thread.join(timeout=60)
    listener.join(timeout=60)
    assert not thread.is_alive() and not listener.is_alive()
    name, data = events[-1]
    assert name == "error" and data["status"] == 503 and "restarting" in data["detail"]
    assert "done" not in [n for n, _ in events]
    assert not app.state.services.assistant.chat_model.busy


# ---- sessions ------------------------------------------------------------------------------------------------------


def test_a_customer_cannot_continue_a_staff_session(app_server):
    base, app = app_server
    staff = httpx.post(
        f"{base}/api/chat",
        json={"message": "What is the maximum discount a boutique manager can approve?", "mode": "staff"},
        auth=STAFF,
        timeout=180,
    ).json()
    assert staff["new_session"]
    customer = httpx.post(
        f"{base}/api/chat", json={"message": "And for a VIC?", "session_id": staff["session_id"]}, timeout=180
    )
    assert customer.status_code == 200
    body = customer.json()
    assert body["session_id"] != staff["session_id"] and body["new_session"]
    # The customer's turn was answered without the staff conversation: no history reached its prompt.
    services = app.state.services
    assert [t.question for t in services.memory.turns(body["session_id"])] == ["And for a VIC?"]
    logged = app.state.conversation_log.rows("turns")[-1]
    assert logged["session_id"] == body["session_id"] and logged["mode"] == Audience.CUSTOMER.value
    assert all(not item["document_id"].startswith("internal-") for item in json.loads(logged["retrieved"]))
    # The staff session is still the staff's own.
    assert [t.question for t in services.memory.turns(staff["session_id"])] == [
        "What is the maximum discount a boutique manager can approve?"
    ]


def test_unknown_session_ids_start_a_new_conversation(app_server):
    base, _ = app_server
    for claimed in ["made-up-by-the-client-123456", "x", "../../etc/passwd"]:
        body = httpx.post(f"{base}/api/chat", json={"message": "", "session_id": claimed}, timeout=60).json()
        assert body["session_id"] != claimed and body["new_session"]


def test_conversations_survive_a_restart(fresh_app, tmp_path):
    sessions = tmp_path / "kept-sessions.sqlite3"
    base, _, server, thread = fresh_app(sessions_path=sessions)
    first = httpx.post(f"{base}/api/chat", json={"message": "How should I store my pearls?"}, timeout=180).json()
    server.should_exit = True
    thread.join(timeout=30)

    base, app, _, _ = fresh_app(sessions_path=sessions)
    follow_up = httpx.post(
        f"{base}/api/chat", json={"message": "And my silk tie?", "session_id": first["session_id"]}, timeout=180
    ).json()
    assert follow_up["session_id"] == first["session_id"] and not follow_up["new_session"]
    turns = app.state.services.memory.turns(first["session_id"])
    assert [t.question for t in turns] == ["How should I store my pearls?", "And my silk tie?"]


def test_undo_clear_and_feedback_over_the_api(app_server):
    base, app = app_server
    first = httpx.post(f"{base}/api/chat", json={"message": "How should I store my pearls?"}, timeout=180).json()
    session_id = first["session_id"]
    second = httpx.post(
        f"{base}/api/chat", json={"message": "And my silk tie?", "session_id": session_id}, timeout=180
    ).json()
    memory = app.state.services.memory
    assert len(memory.turns(session_id)) == 2

    feedback = httpx.post(
        f"{base}/api/feedback", json={"session_id": session_id, "turn_id": first["turn_id"], "helpful": True}
    )
    assert feedback.status_code == 200
    stored = app.state.conversation_log.rows("feedback")[-1]
    assert stored["turn_id"] == first["turn_id"] and stored["helpful"] == 1
    # Feedback on someone else's turn, or from a staff session id as a customer, is refused.
    other = httpx.post(f"{base}/api/chat", json={"message": ""}, timeout=60).json()
    refused = httpx.post(
        f"{base}/api/feedback", json={"session_id": other["session_id"], "turn_id": second["turn_id"], "helpful": False}
    )
    assert refused.status_code == 404

    assert httpx.post(f"{base}/api/session/undo", json={"session_id": session_id}).json()["forgotten"] == 1
    assert [t.question for t in memory.turns(session_id)] == ["How should I store my pearls?"]
    assert httpx.post(f"{base}/api/session/clear", json={"session_id": session_id}).status_code == 200
    assert memory.turns(session_id) == []
    again = httpx.post(f"{base}/api/chat", json={"message": "", "session_id": session_id}, timeout=60).json()
    assert again["session_id"] != session_id


# ---- abuse controls ------------------------------------------------------------------------------------------------


def test_x_forwarded_for_is_not_believed_from_an_untrusted_peer(fresh_app):
    base, _, _, _ = fresh_app(rate_limit_messages=2, rate_limit_window_s=600)
    statuses = [
        httpx.post(
            f"{base}/api/chat", json={"message": ""}, headers={"X-Forwarded-For": f"203.0.113.{n}"}, timeout=60
        ).status_code
        for n in range(4)
    ]
    assert statuses == [200, 200, 429, 429]


def test_x_forwarded_for_is_read_from_a_configured_proxy(fresh_app):
    base, _, _, _ = fresh_app(rate_limit_messages=1, rate_limit_window_s=600, trusted_proxies=["127.0.0.1/32"])
    statuses = [
        httpx.post(
            f"{base}/api/chat", json={"message": ""}, headers={"X-Forwarded-For": f"203.0.113.{n}"}, timeout=60
        ).status_code
        for n in (1, 2, 1)
    ]
    assert statuses == [200, 200, 429]


def test_staff_logins_are_throttled_with_a_lockout_that_is_logged(fresh_app):
    base, app, _, _ = fresh_app(login_max_failures=3)
    staff_question = {"message": "", "mode": "staff"}
    assert httpx.post(f"{base}/api/chat", json=staff_question, auth=("staff", "guess1"), timeout=60).status_code == 401
    assert httpx.post(f"{base}/api/chat", json=staff_question, auth=("staff", "guess2"), timeout=60).status_code == 401
    # The staff page's own login form counts too.
    form = httpx.post(f"{base}/staff/login", data={"username": "staff", "password": "guess3"}, timeout=60)
    assert form.status_code == 400
    # Locked: even the right password is refused, on both doors, with a wait.
    locked = httpx.post(f"{base}/staff/login", data={"username": "staff", "password": STAFF[1]}, timeout=60)
    assert locked.status_code == 429 and "locked" in locked.json()["detail"]
    api = httpx.post(f"{base}/api/chat", json=staff_question, auth=STAFF, timeout=60)
    assert api.status_code == 429 and int(api.headers["retry-after"]) > 0
    events = app.state.conversation_log.rows("security_events")
    assert [e["kind"] for e in events] == ["login_lockout"] and events[0]["client"] == "127.0.0.1"


# ---- honest waits ------------------------------------------------------------------------------------------------


def test_a_waiting_client_is_told_its_place_and_a_full_line_gets_503(fresh_app):
    base, app, _, _ = fresh_app(generation_slots=1, queue_size=1)
    generation = app.state.services.generation
    # Another client's answer holds the only slot until released (a stand-in, so that the test does not depend
    # on how long the model takes).
    release = threading.Event()

    def held(cancellation):
        while not release.wait(0.05):
            cancellation.check()

    generation.submit(held, lambda event: None)
    with httpx.stream(
        "POST", f"{base}/api/chat/stream", json={"message": "How should I store my pearls?"}, timeout=180
    ) as waiting:
        events = sse_events(waiting)
        name, data = next(events)
        assert name == "queued" and data["position"] == 1 and data["estimated_wait_s"] > 0
        full = httpx.post(f"{base}/api/chat", json={"message": "Do you ship to Japan?"}, timeout=60)
        assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1
        assert "try again" in full.json()["detail"]
        release.set()
        # The waiting client then gets its answer.
        rest = [name for name, _ in events]
        assert "sources" in rest and rest[-1] == "done"
    stats = generation.stats()
    assert stats["refused"] == 1 and stats["waiting"] == 0 and stats["served"] == 2


# ---- malformed input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (bytes(range(256)) * 4, "not valid JSON"),
        (b'{"message": "caf\xe9 \xff\xfe"}', "not valid JSON"),
        (b'{"message": "\\ud800"}', "lone surrogate"),
        (b'{"message": "hello", "session_id": "\\udfff"}', "lone surrogate"),
        (b'{"message": {"nested": "\\ud800"}}', "lone surrogate"),
        (b"[1, 2, 3]", "JSON object"),
        (b'"just a string"', "JSON object"),
        (b'{"message": "hi", "session_id": 5}', "session_id"),
        (b'{"message": "hi", "mode": "admin"}', "mode"),
        (b"", "body is empty"),
    ],
)
def test_malformed_bodies_get_a_clear_4xx(app_server, body, expected):
    base, _ = app_server
    for path in ("/api/chat", "/api/chat/stream"):
        reply = httpx.post(f"{base}{path}", content=body, headers={"content-type": "application/json"}, timeout=60)
        assert 400 <= reply.status_code < 500, reply.text
        assert expected in reply.json()["detail"]


def test_request_bodies_over_the_limit_get_413(app_server):
    base, app = app_server
    limit = app.state.services.settings.max_request_bytes
    big = json.dumps({"message": "x" * (limit + 10)})
    reply = httpx.post(f"{base}/api/chat", content=big, headers={"content-type": "application/json"}, timeout=60)
    assert reply.status_code == 413 and f"{limit:,}" in reply.json()["detail"]

    def chunks():
        for _ in range(limit // 1000 + 2):
            yield b"x" * 1000

    chunked = httpx.post(f"{base}/api/chat", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    upload = httpx.post(f"{base}/staff/gradio_api/upload", files={"files": ("big.bin", b"0" * (limit + 10))})
    assert upload.status_code == 413


def test_a_lying_content_length_is_refused_without_a_500(app_server):
    base, _ = app_server
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n"
        )
        status_line = raw.recv(200).split(b"\r\n", 1)[0]
    assert b" 4" in status_line
