#!/usr/bin/env bash
# The official Qdrant JS client (@qdrant/js-client-grpc, tests/emulator/js) runs the same scenario
# against qdrant-emulator directly and through the built qpoold; the answers must be identical.
# Usage: js_client_through_qpoold.sh QPOOLD EMULATOR WORKDIR
set -euo pipefail
QPOOLD=$1 EMULATOR=$2 WORK=$3
JS_DIR="$(cd "$(dirname "$0")/../emulator/js" && pwd)"
mkdir -p "$WORK"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# Waits up to 10 s for a line matching $2 in file $1 and prints the first capture of sed regex $3.
wait_for_line() {
  for _ in $(seq 1 200); do
    if grep -qE "$2" "$1" 2>/dev/null; then sed -nE "s/$3/\1/p" "$1" | head -1; return 0; fi
    sleep 0.05
  done
  echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1
}

"$EMULATOR" --listen 127.0.0.1:0 --control-listen 127.0.0.1:0 >"$WORK/emulator.out" 2>&1 &
pids+=($!)
EMU=$(wait_for_line "$WORK/emulator.out" 'listening grpc=' '.*grpc=([0-9.:]+).*')

"$QPOOLD" --listen 127.0.0.1:0 --upstream "$EMU" --max-connections 2 2>"$WORK/qpoold.log" &
pids+=($!)
QP=$(wait_for_line "$WORK/qpoold.log" 'listening on' '.*listening on ([0-9.:]+).*')

node "$JS_DIR/run.mjs" --target "$EMU" --out "$WORK/direct.json"
node "$JS_DIR/run.mjs" --target "$QP" --out "$WORK/through_qpoold.json"
if ! diff -u "$WORK/direct.json" "$WORK/through_qpoold.json"; then
  echo "FAILED: answers through qpoold differ from the emulator's own" >&2
  exit 1
fi
echo "ok: $(grep -c . "$WORK/direct.json") lines of answers identical, direct and through qpoold"
