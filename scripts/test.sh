#!/usr/bin/env bash
# One command: set up Bastion with its test extras in .venv, run the lint and type gates (ruff, mypy)
# and the whole test suite (unit tests and doctests on fakes, integration tests on the real model,
# LanceDB, PostgreSQL and MariaDB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# the tune extra's torch: the CPU build (an unpinned torch would pull several GB of CUDA libraries)
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,tune]"
# Debian packages the tests start for real (scripts/test-packages.txt: Chromium for the web UI
# tests, and the servers the integrations are tested against); nothing is downloaded by Playwright
missing=""
while read -r pkg || [ -n "$pkg" ]; do
  case "$pkg" in ''|'#'*) continue ;; esac
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done < scripts/test-packages.txt
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages for the tests: $missing" >&2
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
# the OpenID Connect provider the SSO tests start (tests/oidc, pinned by its package-lock.json)
[ -d tests/oidc/node_modules ] || npm ci --prefix tests/oidc --no-audit --no-fund
# the lint and type gates (configured in pyproject.toml), then the tests
.venv/bin/python -m ruff check src tests bench
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest -q "$@"
