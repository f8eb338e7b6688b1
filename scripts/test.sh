#!/usr/bin/env bash
# One command: set up Bastion with its test extras in .venv and run the whole test suite
# (unit tests on fakes, integration tests on the real model, LanceDB, PostgreSQL and MariaDB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
exec .venv/bin/python -m pytest -q "$@"
