#!/usr/bin/env bash
# Quick start: set up a virtualenv (first run only) and run a local 3-node pyraft quorum until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import pyraft, trio, hypercorn" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e .
fi
exec .venv/bin/python -m pyraft.localcluster --nodes 3 "$@"
