"""Where the project's data folders live: beside the package in a source checkout."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KNOWLEDGE_BASE_DIR = PROJECT_ROOT / "knowledge_base"
BRANDS_DIR = PROJECT_ROOT / "brands"
BENCHMARKS_DIR = PROJECT_ROOT / "benchmarks"
