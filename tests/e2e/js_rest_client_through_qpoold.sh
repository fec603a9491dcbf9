#!/usr/bin/env bash
# The official Qdrant REST JS client (@qdrant/js-client-rest, tests/emulator/js-rest) runs the same
# scenario against qdrant-emulator's REST port directly and through the built qpoold's REST front
# door (rest.max_connections 2): the answers must be identical, and the emulator must have seen at
# most 2 REST connections from qpoold. NOT RUN (exit 77) without node or the npm package.
# Usage: js_rest_client_through_qpoold.sh QPOOLD EMULATOR WORKDIR
set -euo pipefail
QPOOLD=$1 EMULATOR=$2 WORK=$3
JS_DIR="$(cd "$(dirname "$0")/../emulator/js-rest" && pwd)"
if ! command -v node >/dev/null 2>&1; then
  echo "NOT RUN: node is not installed (scripts/install-deps installs it)" >&2
  exit 77
fi
if [ ! -d "$JS_DIR/node_modules/@qdrant" ]; then
  echo "NOT RUN: $JS_DIR/node_modules is missing (run scripts/install-deps)" >&2
  exit 77
fi
mkdir -p "$WORK"
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"

start_emulator_rest "$EMULATOR"
node "$JS_DIR/run.mjs" --url "http://$REST" --out "$WORK/direct.json"
curl -sf -X POST "http://$CTL/counters/reset" >/dev/null

printf 'rest:\n  max_connections: 2\n' >"$WORK/qpool.yaml"
start_qpoold "$QPOOLD" --config "$WORK/qpool.yaml" --upstream "$EMU" --rest-upstream "$REST" \
  --max-connections 2
QP_REST=$(wait_for_line "$WORK/qpoold.log" 'REST front door at' '.*REST front door at http:..([0-9.:]+).*')
node "$JS_DIR/run.mjs" --url "http://$QP_REST" --out "$WORK/through_qpoold.json"

if ! diff -u "$WORK/direct.json" "$WORK/through_qpoold.json"; then
  echo "FAILED: REST answers through qpoold differ from the emulator's own" >&2
  exit 1
fi
peak=$(curl -sf "http://$CTL/counters" | jq '.rest_connections_peak // 0')
if [ "$peak" -gt 2 ]; then
  echo "FAILED: the emulator saw $peak REST connections at once through qpoold (bound 2)" >&2
  exit 1
fi
echo "ok: $(grep -c . "$WORK/direct.json") lines of REST answers identical, direct and through" \
  "qpoold; at most $peak REST connection(s) to the emulator"
