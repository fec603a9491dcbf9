#!/usr/bin/env bash
# The official Qdrant REST JS client (@qdrant/js-client-rest, tests/emulator/js-rest) runs the same
# scenario against qdrant-emulator's REST port directly and through the built qpoold's REST front
# door (rest.max_connections 2): the answers must be identical, and the emulator must have seen at
# most 2 REST connections from qpoold. NOT RUN (exit 77) without node or the npm package.
# Usage: js_rest_client_through_qpoold.sh QPOOLD EMULATOR WORKDIR
set -euo pipefail
QPOOLD=$1 EMULATOR=$2 WORK=$3
JS_DIR="$(cd "$(dirname "$0")/../emulator/js-rest" && pwd)"
mkdir -p "$WORK"
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
require_js_client "$JS_DIR"

start_emulator_rest "$EMULATOR"
node "$JS_DIR/run.mjs" --url "http://$REST" --out "$WORK/direct.json"
curl -sf -X POST "http://$CTL/counters/reset" >/dev/null

printf 'rest:\n  max_connections: 2\n' >"$WORK/qpool.yaml"
start_qpoold "$QPOOLD" --config "$WORK/qpool.yaml" --upstream "$EMU" --rest-upstream "$REST" \
  --max-connections 2
QP_REST=$(qpoold_rest_address)
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
