#!/usr/bin/env bash
# The main job: the Maison Corvane Client Care chat on the bundled defaults. Sets up .venv, builds or updates
# (incrementally) the knowledge-base index, loads the local LLM and serves on http://127.0.0.1:7860/chat/
# (staff page: /staff/, API: /api/docs). Settings: APP_* and ASSISTANT_* environment variables (README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
VENV="${VENV:-.venv}"
exec "$VENV/bin/python" app.py
