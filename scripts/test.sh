#!/usr/bin/env bash
# Install everything the tests need into ./.venv (from scratch on a fresh machine) and run
# the checks: ruff, mypy, then the whole pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"
ruff check trtllm_builder predict.py scripts bench tests
echo "== mypy"
mypy
echo "== pytest"
python -m pytest "$@"
