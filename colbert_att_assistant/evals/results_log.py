"""Recording benchmark and evaluation runs: a JSON file per run in benchmarks/results/ and a dated section
appended to benchmarks/RESULTS.md, each naming the date, machine, commit and command."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from colbert_att_assistant.paths import BENCHMARKS_DIR


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=BENCHMARKS_DIR, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_header(command: str | None = None) -> dict[str, str]:
    """date, machine, commit and command of the current run."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "commit": _commit(),
        "command": command or " ".join(sys.argv),
    }


def record_run(name: str, title: str, result: dict, body: list[str], directory: Path = BENCHMARKS_DIR) -> Path:
    """Write `result` (which starts with `run_header()`) as JSON and append a RESULTS.md section."""
    stamp = datetime.fromisoformat(result["date"]).strftime("%Y%m%dT%H%M%SZ")
    (directory / "results").mkdir(parents=True, exist_ok=True)
    path = directory / "results" / f"{stamp}-{name}.json"
    path.write_text(json.dumps(result, indent=2))
    lines = [
        f"\n## {result['date']} {title}",
        f"- machine: {result['machine']}; commit {result['commit']}",
        f"- command: `{result['command']}`",
        *body,
    ]
    with (directory / "RESULTS.md").open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
