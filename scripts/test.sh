#!/usr/bin/env bash
# Set up a virtualenv with the test tools (first run only), then lint, type-check and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import pyraft, pytest_trio, httpx, hdrh, pysyncobj, playwright, prometheus_client, rich" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test,bench]"
fi
# The dashboard test drives Debian's chromium (never a downloaded browser); CI runs as root.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed: the dashboard browser test will be skipped" >&2
fi
.venv/bin/ruff check pyraft tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
