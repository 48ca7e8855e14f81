#!/usr/bin/env bash
# System packages the tests need: Debian's chromium for the browser test (Playwright drives it; no browser is
# downloaded). Installed only when missing, and only where apt-get can be run (root or passwordless sudo).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "system_packages: chromium is missing and apt-get cannot be run here; install it: apt-get install chromium" >&2
  exit 0
fi
echo "system_packages: installing chromium (apt-get)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
