#!/usr/bin/env bash
# Install what the browser tests need, once: Debian's Chromium and Python Playwright in .venv.
# (Playwright's own browser download is not used; the tests drive /usr/bin/chromium.)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  echo "warmlm: installing chromium (apt) ..." >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
if ! .venv/bin/python -c "import playwright.sync_api" 2>/dev/null; then
  echo "warmlm: installing playwright into .venv ..." >&2
  .venv/bin/python -m pip install --quiet playwright
fi
