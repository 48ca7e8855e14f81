"""Which address a request is counted under, and the login throttle's lockout."""

from __future__ import annotations

from pydantic import IPvAnyNetwork, TypeAdapter

from colbert_att_assistant.assistant.memory import SQLiteMemory
from colbert_att_assistant.webapp.client_address import client_address
from colbert_att_assistant.webapp.login_throttle import LoginThrottle
from colbert_att_assistant.webapp.sessions import SessionOwner, SessionRegistry

NETWORKS = TypeAdapter(list[IPvAnyNetwork])


def proxies(*cidrs: str):
    return NETWORKS.validate_python(list(cidrs))


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy():
    headers = {"x-forwarded-for": "203.0.113.9"}
    assert client_address("127.0.0.1", headers, []) == "127.0.0.1"
    assert client_address("198.51.100.7", headers, proxies("10.0.0.0/8")) == "198.51.100.7"
    assert client_address("10.1.2.3", headers, proxies("10.0.0.0/8")) == "203.0.113.9"


def test_the_client_is_the_rightmost_untrusted_hop():
    trusted = proxies("10.0.0.0/8", "::1/128")
    # The client wrote "1.1.1.1" itself; the proxy appended the address it saw.
    spoofed = {"x-forwarded-for": "1.1.1.1, 203.0.113.9, 10.0.0.2"}
    assert client_address("10.0.0.1", spoofed, trusted) == "203.0.113.9"
    assert client_address("::1", {"x-forwarded-for": "2001:db8::5"}, trusted) == "2001:db8::5"
    assert client_address("10.0.0.1", {"x-forwarded-for": "not-an-address"}, trusted) == "10.0.0.1"
    assert client_address("10.0.0.1", {}, trusted) == "10.0.0.1"
    assert client_address(None, spoofed, trusted) == "unknown"


def test_a_lockout_starts_after_the_allowed_failures_and_ends():
    now = [0.0]
    lockouts: list[tuple[str, int]] = []
    throttle = LoginThrottle(
        3, window_s=60, lockout_s=300, on_lockout=lambda c, n: lockouts.append((c, n)), clock=lambda: now[0]
    )
    for _ in range(2):
        throttle.failed("a")
    assert throttle.locked_for("a") is None
    throttle.succeeded("a")  # a success forgets earlier failures
    for _ in range(3):
        throttle.failed("a")
    assert throttle.locked_for("a") == 300 and lockouts == [("a", 3)]
    assert throttle.locked_for("b") is None
    now[0] = 301
    assert throttle.locked_for("a") is None


def test_failures_older_than_the_window_do_not_count():
    now = [0.0]
    throttle = LoginThrottle(2, window_s=10, lockout_s=60, clock=lambda: now[0])
    throttle.failed("a")
    now[0] = 11
    throttle.failed("a")
    assert throttle.locked_for("a") is None


def test_sessions_belong_to_one_audience_and_expire(tmp_path):
    now = [1000.0]
    memory = SQLiteMemory(tmp_path / "s.sqlite3", token_limit=100, count_tokens=len)
    registry = SessionRegistry(memory, idle_s=60, clock=lambda: now[0])
    customer, alice, bob = SessionOwner.customer(), SessionOwner.staff("alice"), SessionOwner.staff("bob")
    staff_session = registry.resolve(None, alice)
    assert staff_session.new and registry.owns(staff_session.id, alice)
    assert not registry.owns(staff_session.id, customer) and not registry.owns(staff_session.id, bob)
    taken = registry.resolve(staff_session.id, customer)
    assert taken.new and taken.id != staff_session.id
    memory.add_turn(staff_session.id, "internal?", "yes")
    now[0] += 61
    assert registry.resolve(staff_session.id, alice).new
    assert memory.turns(staff_session.id) == []  # expired sessions lose their memory
