#!/usr/bin/env bash
# The main job. Until the chat app lands (issue 6): build or update the index of the bundled knowledge base,
# then answer a retrieval query from it. Pass your own question as arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
VENV="${VENV:-.venv}"
"$VENV/bin/python" -m retriever build --folder knowledge_base/documents --index-dir indexes/knowledge_base
query="${*:-How do I care for my calfskin wallet after it gets wet?}"
"$VENV/bin/python" -m retriever search --index-dir indexes/knowledge_base --top-k 5 "$query"
