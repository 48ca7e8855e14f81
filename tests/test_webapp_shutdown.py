"""`python app.py` as its own process: SIGTERM in the middle of an answer ends the answer with a "restarting"
event and the process exits, instead of waiting for the generation (it used to ignore SIGTERM for 90 s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from tests.conftest import REPO, _free_port


def test_sigterm_mid_answer_stops_the_app(knowledge_base_copy, knowledge_base_index, tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "ASSISTANT_RETRIEVAL__INDEX_DIR": str(knowledge_base_index),
        "ASSISTANT_RETRIEVAL__DOCUMENTS_DIR": str(knowledge_base_copy),
        "ASSISTANT_LLM__THREADS": "2",
        # A drafted answer takes seconds: the signal arrives while it is being written (a quote would be done).
        "ASSISTANT_RETRIEVAL__ANSWER_STYLE": "generated",
        "APP_PORT": str(port),
        "APP_STAFF_PASSWORD": "correct horse",
        "APP_LOG_PATH": str(tmp_path / "log.sqlite3"),
        "APP_SESSIONS_PATH": str(tmp_path / "sessions.sqlite3"),
    }
    log = (tmp_path / "app.log").open("wb")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert process.poll() is None, (tmp_path / "app.log").read_text(errors="replace")[-2000:]

        events: list[tuple[str, dict | list | str]] = []
        with httpx.stream(
            "POST", f"{base}/api/chat/stream", json={"message": "How do I care for cashmere?"}, timeout=120
        ) as stream:
            name = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((name, json.loads(line.removeprefix("data: "))))
                    if name == "sources":
                        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "error" and "done" not in names
    assert "restarting" in events[-1][1]["detail"]
    # uvicorn re-raises the signal once it has shut down cleanly; the app turns it into exit status 128 + 15, as a
    # shell reports a process ended by SIGTERM, after stopping anything it started.
    assert exit_code in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
