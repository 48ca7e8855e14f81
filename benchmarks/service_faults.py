"""Fault probes against the chat service, over loopback only: each finding of the robustness review, tried as a
client or an attacker would, with bounded waits. Starts `app.py` from a source tree (this one, or an older export
to show the "before"), runs the probes, stops it with SIGTERM mid-answer, and appends a table to RESULTS.md.

    .venv/bin/python benchmarks/service_faults.py --label after
    git archive 0da3964 | tar -x -C /tmp/before && \\
        .venv/bin/python benchmarks/service_faults.py --tree /tmp/before --index-dir /tmp/before-index --label before

Every probe reports `held` (the service behaved) and what was seen. The probes run in an order that keeps one from
spoiling the next (the rate-limit probe last, since it leaves this client limited).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
QUESTION = "How do I care for cashmere?"
STAFF_PASSWORD = "fault-probe-password"
# A short rate-limit window, waited out before each probe, so that one probe's requests do not limit the next.
RATE_LIMIT = 8
RATE_WINDOW_S = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(tree: Path, index_dir: Path, work: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "ASSISTANT_RETRIEVAL__INDEX_DIR": str(index_dir),
        "ASSISTANT_RETRIEVAL__DOCUMENTS_DIR": str(REPO / "knowledge_base" / "documents"),
        "ASSISTANT_LLM__THREADS": "2",
        "APP_PORT": str(port),
        "APP_STAFF_PASSWORD": STAFF_PASSWORD,
        "APP_RATE_LIMIT_MESSAGES": str(RATE_LIMIT),
        "APP_RATE_LIMIT_WINDOW_S": str(RATE_WINDOW_S),
        "APP_LOG_PATH": str(work / "log.sqlite3"),
        "APP_SESSIONS_PATH": str(work / "sessions.sqlite3"),
        "PYTHONPATH": str(tree),
    }
    log = (work / "app.log").open("wb")
    return subprocess.Popen([sys.executable, "app.py"], cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(base: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited with {process.returncode} before answering /healthz")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"the app did not answer /healthz within {timeout_s:.0f} s")


def sse(response: httpx.Response):
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield name, json.loads(line.removeprefix("data: "))


def chat(base: str, body: dict, timeout: float = 180, **kwargs) -> httpx.Response:
    return httpx.post(f"{base}/api/chat", json=body, timeout=timeout, **kwargs)


# ---- the probes --------------------------------------------------------------------------------------------------


def abandoned_stream(base: str) -> dict[str, Any]:
    """Hang up on a streamed answer after its first event, then ask normally."""
    with httpx.stream("POST", f"{base}/api/chat/stream", json={"message": QUESTION}, timeout=120) as stream:
        first = next(sse(stream))[0]
    started = time.perf_counter()
    try:
        reply = chat(base, {"message": "How should I store my pearls?"}, timeout=240)
        seconds, status = time.perf_counter() - started, reply.status_code
    except httpx.TimeoutException:
        seconds, status = time.perf_counter() - started, None
    return {"held": status == 200, "seen": f"first event {first}; next /api/chat: {status} after {seconds:.1f} s"}


def session_crossing(base: str) -> dict[str, Any]:
    """A staff turn, then an unauthenticated customer turn naming the staff session id."""
    staff = chat(
        base,
        {"message": "What is the maximum discount a boutique manager can approve?", "mode": "staff"},
        auth=("staff", STAFF_PASSWORD),
    ).json()
    customer = chat(base, {"message": "And for a VIC?", "session_id": staff["session_id"]}).json()
    crossed = customer.get("session_id") == staff["session_id"]
    return {"held": not crossed, "seen": "customer continued the staff session" if crossed else "new session issued"}


def malformed_bodies(base: str) -> dict[str, Any]:
    bodies = {
        "binary": bytes(range(256)) * 4,
        "invalid UTF-8": b'{"message": "caf\xe9 \xff"}',
        "lone surrogate": b'{"message": "\\ud800"}',
        "session_id 5": b'{"message": "hi", "session_id": 5}',
        "300 KB": json.dumps({"message": "x" * 300_000}).encode(),
    }
    statuses = {}
    for name, body in bodies.items():
        reply = httpx.post(f"{base}/api/chat", content=body, headers={"content-type": "application/json"}, timeout=120)
        statuses[name] = reply.status_code
    held = all(400 <= status < 500 for name, status in statuses.items() if name != "300 KB")
    held = held and statuses["300 KB"] in (200, 413)
    return {"held": held, "seen": ", ".join(f"{name}: {status}" for name, status in statuses.items())}


def feedback_link(base: str) -> dict[str, Any]:
    body = chat(base, {"message": "How should I store my pearls?"}).json()
    turn_id = body.get("turn_id")
    if turn_id is None:
        return {"held": False, "seen": "the answer carries no turn id; feedback cannot name it"}
    stored = httpx.post(
        f"{base}/api/feedback", json={"session_id": body["session_id"], "turn_id": turn_id, "helpful": True}
    )
    return {"held": stored.status_code == 200, "seen": f"turn_id {turn_id}, feedback {stored.status_code}"}


def login_guessing(base: str) -> dict[str, Any]:
    """Wrong passwords on the staff page's login form (not rate limited), then the right one on the API."""
    started = time.perf_counter()
    statuses = []
    for n in range(30):
        reply = httpx.post(f"{base}/staff/login", data={"username": "staff", "password": f"guess-{n}"}, timeout=60)
        statuses.append(reply.status_code)
    seconds = time.perf_counter() - started
    locked_at = statuses.index(429) + 1 if 429 in statuses else None
    right = chat(base, {"message": "", "mode": "staff"}, timeout=60, auth=("staff", STAFF_PASSWORD)).status_code
    seen = f"30 guesses in {seconds:.1f} s; " + (f"locked out at guess {locked_at}" if locked_at else "never locked")
    return {"held": locked_at is not None and right == 429, "seen": f"{seen}; then the right password: {right}"}


def forwarded_for(base: str) -> dict[str, Any]:
    """More messages than the rate limit allows, each claiming a different X-Forwarded-For."""
    statuses = [
        chat(base, {"message": ""}, timeout=60, headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
        for n in range(RATE_LIMIT + 4)
    ]
    limited = statuses.count(429)
    return {
        "held": limited > 0,
        "seen": f"{limited} of {len(statuses)} limited ({RATE_LIMIT} allowed per {RATE_WINDOW_S} s)",
    }


def sigterm_mid_answer(base: str, process: subprocess.Popen) -> dict[str, Any]:
    """SIGTERM while an answer streams; how long until the process is gone, and how the answer ended."""
    last = None
    signalled = None
    try:
        with httpx.stream("POST", f"{base}/api/chat/stream", json={"message": QUESTION}, timeout=120) as stream:
            for name, data in sse(stream):
                last = (name, data)
                if signalled is None:
                    process.send_signal(signal.SIGTERM)
                    signalled = time.perf_counter()
    except httpx.HTTPError:
        pass
    try:
        process.wait(timeout=120)
        seconds = f"{time.perf_counter() - signalled:.1f} s" if signalled else "?"
    except subprocess.TimeoutExpired:
        process.kill()
        seconds = "more than 120 s (killed)"
    ended = last[0] if last else "nothing"
    return {
        "held": process.returncode is not None and "killed" not in seconds,
        "seen": f"exit after {seconds}; the answer ended with `{ended}`",
    }


# The wedge of finding 1 (if present) stops every later answer, so it comes after the probes that need answers.
PROBES: list[tuple[str, str, Callable[[str], dict[str, Any]]]] = [
    ("2", "customer names a staff session id", session_crossing),
    ("5", "malformed and oversized bodies", malformed_bodies),
    ("7", "feedback linked to its turn", feedback_link),
    ("3", "staff password guessing", login_guessing),
    ("1", "abandoned stream, then a normal request", abandoned_stream),
    ("3", "X-Forwarded-For against the rate limit", forwarded_for),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=REPO, help="source tree whose app.py is started")
    parser.add_argument("--index-dir", type=Path, default=Path("/tmp/service-faults/index"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/service-faults/work"))
    parser.add_argument("--label", default="after")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    work = args.work / args.label
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("log.sqlite3", "sessions.sqlite3"):
        (work / stale).unlink(missing_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    load_start = os.getloadavg()
    process = start_app(args.tree.resolve(), args.index_dir, work, port)
    rows = []
    try:
        wait_healthy(base, process, timeout_s=1200)
        for finding, name, probe in PROBES:
            time.sleep(RATE_WINDOW_S + 1)
            started = time.perf_counter()
            try:
                result = probe(base)
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                result = {"held": False, "seen": f"{type(exc).__name__}: {exc}"[:200]}
            rows.append((finding, name, result, time.perf_counter() - started))
            print(finding, name, result, flush=True)
        time.sleep(RATE_WINDOW_S + 1)
        result = sigterm_mid_answer(base, process)
        rows.append(("1", "SIGTERM mid-answer", result, 0.0))
        print("1 SIGTERM mid-answer", result, flush=True)
    finally:
        if process.poll() is None:
            process.kill()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.tree, capture_output=True, text=True)
    lines = [
        f"\n## {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} service fault probes ({args.label})",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}; "
        f"tree {args.tree} (commit {commit.stdout.strip() or 'exported'})",
        f"- command: `benchmarks/service_faults.py --tree {args.tree} --label {args.label}`",
        f"- load average (1/5/15 min) at start {[round(x, 2) for x in load_start]}, at end "
        f"{[round(x, 2) for x in os.getloadavg()]}",
        "",
        "| finding | probe | held | seen |",
        "|---|---|---|---|",
        *[f"| {finding} | {name} | {'yes' if r['held'] else 'NO'} | {r['seen']} |" for finding, name, r, _ in rows],
    ]
    with args.results.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
