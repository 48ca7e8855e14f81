#!/usr/bin/env bash
# The main job. Until the chat app lands (issue 6): build or update (incrementally) the index of the bundled
# knowledge base, then answer a customer's retrieval query from its public chunks. Pass your own question.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
VENV="${VENV:-.venv}"
"$VENV/bin/python" -m knowledge_base.ingest --index-dir indexes/knowledge_base
query="${*:-How do I care for my calfskin wallet after it gets wet?}"
"$VENV/bin/python" -m retriever search --index-dir indexes/knowledge_base --top-k 5 --filter audience=public "$query"
