#!/usr/bin/env bash
# The official Qdrant JS client (@qdrant/js-client-grpc), cleartext and without a key, reaches a
# qdrant-emulator that serves gRPC only over TLS and requires an API key, through the built qpoold
# (upstream.tls with the test CA, upstream.api_key_file). Its answers must equal those of the same
# scenario run directly against a plain emulator. Certificates come from tls/make_certs.sh; without
# the openssl command the test exits 77 (ctest: not run).
# Usage: js_client_tls_through_qpoold.sh QPOOLD EMULATOR WORKDIR
set -euo pipefail
QPOOLD=$1 EMULATOR=$2 WORK=$3
JS_DIR="$(cd "$(dirname "$0")/../emulator/js" && pwd)"
command -v openssl >/dev/null || { echo "openssl not found: not run"; exit 77; }
rm -rf "$WORK"; mkdir -p "$WORK"
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
"$(dirname "$0")/tls/make_certs.sh" "$WORK/certs"

# The reference: a plain emulator, no TLS, no key.
start_emulator "$EMULATOR"
PLAIN=$EMU
# The secure one: gRPC over TLS with the test CA's certificate, and an API key.
printf 'js-tls-key-%s\n' "$$" >"$WORK/api-key"
"$EMULATOR" --listen 127.0.0.1:0 --control-listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 \
  --tls-cert "$WORK/certs/server.pem" --tls-key "$WORK/certs/server.key" \
  --api-key "$(cat "$WORK/api-key")" >"$WORK/secure-emulator.out" 2>&1 &
pids+=($!)
TLS=$(wait_for_line "$WORK/secure-emulator.out" 'listening grpc=' '.*tls=([0-9.:]+).*')
cat >"$WORK/qpool.yaml" <<YAML
admin: {listen: "127.0.0.1:0"}
upstream:
  nodes: ["$TLS"]
  max_connections: 2
  tls: {enabled: true, ca_file: "$WORK/certs/ca.pem"}
  api_key_file: "$WORK/api-key"
YAML
start_qpoold "$QPOOLD" --config "$WORK/qpool.yaml"

node "$JS_DIR/run.mjs" --target "$PLAIN" --out "$WORK/direct.json"
node "$JS_DIR/run.mjs" --target "$QP" --out "$WORK/through_qpoold_tls.json"
if ! diff -u "$WORK/direct.json" "$WORK/through_qpoold_tls.json"; then
  echo "FAILED: answers through qpoold over TLS differ from a plain emulator's" >&2
  exit 1
fi
echo "ok: $(grep -c . "$WORK/direct.json") lines of answers identical, plain and through qpoold over TLS with its key"
