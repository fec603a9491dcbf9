#!/usr/bin/env bash
# The official REST JS client (@qdrant/js-client-rest), cleartext and without a key, reaches a
# qdrant-emulator whose REST API is served only over TLS and wants an API key, through the built
# qpoold's REST front door (upstream.tls with the test CA, upstream.api_key_file and
# read_only_api_key_file). Its answers must equal those of the same scenario run directly against
# a plain emulator; the emulator must have counted reads under the read-only key and writes under
# the full key, and nothing refused. Certificates come from tls/make_certs.sh. NOT RUN (exit 77)
# without node, the npm package or the openssl command.
# Usage: js_rest_client_tls_through_qpoold.sh QPOOLD EMULATOR WORKDIR
set -euo pipefail
QPOOLD=$1 EMULATOR=$2 WORK=$3
JS_DIR="$(cd "$(dirname "$0")/../emulator/js-rest" && pwd)"
rm -rf "$WORK"; mkdir -p "$WORK"
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
require_js_client "$JS_DIR"
command -v openssl >/dev/null || { echo "NOT RUN: openssl not found" >&2; exit 77; }
"$(dirname "$0")/tls/make_certs.sh" "$WORK/certs" >/dev/null

# The reference: a plain emulator, no TLS, no key.
start_emulator_rest "$EMULATOR"
node "$JS_DIR/run.mjs" --url "http://$REST" --out "$WORK/direct.json"

# The secure one: REST (and gRPC) only over TLS, with a full and a read-only key.
printf 'js-rest-full-%s\n' "$$" >"$WORK/api-key"
printf 'js-rest-read-%s\n' "$$" >"$WORK/read-key"
"$EMULATOR" --listen 127.0.0.1:0 --control-listen 127.0.0.1:0 --rest-listen 127.0.0.1:0 \
  --tls-cert "$WORK/certs/server.pem" --tls-key "$WORK/certs/server.key" \
  --api-key "$(cat "$WORK/api-key")" --read-only-api-key "$(cat "$WORK/read-key")" \
  >"$WORK/secure-emulator.out" 2>&1 &
pids+=($!)
GRPC_TLS=$(wait_for_line "$WORK/secure-emulator.out" 'listening grpc=' '.* tls=([0-9.:]+).*')
REST_TLS=$(wait_for_line "$WORK/secure-emulator.out" 'listening grpc=' '.*rest_tls=([0-9.:]+).*')
SECURE_CTL=$(wait_for_line "$WORK/secure-emulator.out" 'listening grpc=' '.*control=([0-9.:]+).*')
cat >"$WORK/qpool.yaml" <<YAML
admin: {listen: "127.0.0.1:0"}
upstream:
  nodes: ["$GRPC_TLS"]
  rest_nodes: ["$REST_TLS"]
  tls: {enabled: true, ca_file: "$WORK/certs/ca.pem"}
  api_key_file: "$WORK/api-key"
  read_only_api_key_file: "$WORK/read-key"
rest: {max_connections: 2}
YAML
start_qpoold "$QPOOLD" --config "$WORK/qpool.yaml"
QP_REST=$(qpoold_rest_address)
curl -sf -X POST "http://$SECURE_CTL/counters/reset" >/dev/null
node "$JS_DIR/run.mjs" --url "http://$QP_REST" --out "$WORK/through_qpoold_tls.json"

if ! diff -u "$WORK/direct.json" "$WORK/through_qpoold_tls.json"; then
  echo "FAILED: REST answers through qpoold over TLS differ from a plain emulator's" >&2
  exit 1
fi
counters=$(curl -sf "http://$SECURE_CTL/counters")
full=$(jq '.calls_by_key.full // 0' <<<"$counters")
read_only=$(jq '.calls_by_key.read_only // 0' <<<"$counters")
refused=$(jq '.calls_by_key.refused // 0' <<<"$counters")
if [ "$full" -lt 1 ] || [ "$read_only" -lt 1 ] || [ "$refused" -ne 0 ]; then
  echo "FAILED: calls by key full=$full read_only=$read_only refused=$refused" \
    "(want writes under the full key, reads under the read-only one, none refused)" >&2
  exit 1
fi
echo "ok: $(grep -c . "$WORK/direct.json") lines of REST answers identical, plain and through" \
  "qpoold over TLS; $read_only requests under the read-only key, $full under the full key"
