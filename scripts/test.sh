#!/usr/bin/env bash
# Set up a virtualenv with the test tools (first run only), then lint, type-check and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import pyraft, pytest_trio, httpx" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
fi
.venv/bin/ruff check pyraft tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
