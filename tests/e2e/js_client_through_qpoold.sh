#!/usr/bin/env bash
# The official Qdrant JS client (@qdrant/js-client-grpc, tests/emulator/js) runs the same scenario
# against qdrant-emulator directly and through the built qpoold; the answers must be identical.
# Usage: js_client_through_qpoold.sh QPOOLD EMULATOR WORKDIR
set -euo pipefail
QPOOLD=$1 EMULATOR=$2 WORK=$3
JS_DIR="$(cd "$(dirname "$0")/../emulator/js" && pwd)"
mkdir -p "$WORK"
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"

start_emulator "$EMULATOR"
start_qpoold "$QPOOLD" --upstream "$EMU" --max-connections 2

node "$JS_DIR/run.mjs" --target "$EMU" --out "$WORK/direct.json"
node "$JS_DIR/run.mjs" --target "$QP" --out "$WORK/through_qpoold.json"
if ! diff -u "$WORK/direct.json" "$WORK/through_qpoold.json"; then
  echo "FAILED: answers through qpoold differ from the emulator's own" >&2
  exit 1
fi
echo "ok: $(grep -c . "$WORK/direct.json") lines of answers identical, direct and through qpoold"
