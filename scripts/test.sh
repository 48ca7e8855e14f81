#!/usr/bin/env bash
# The test command: set up the environment (Python packages, and chromium for the browser test), lint, run the
# whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/system_packages.sh
VENV="${VENV:-.venv}"
"$VENV/bin/ruff" check .
set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  # pytest's "no tests collected": a selection (-k, a path) matched nothing. Say so, do not fail CI for it.
  echo "test.sh: no tests were collected for: ${*:-the default test paths}" >&2
  exit 0
fi
exit "$status"
