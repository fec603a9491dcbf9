#!/usr/bin/env bash
# Issue 14 item 7, as a new user tried it: the only Qdrant node (qdrant-emulator) restarts for 2 s
# while 10 official JS clients read through qpoold, each call bounded by the client's own 5 s
# timeout, which aborts it on the client side and sends qpoold no deadline (no grpc-timeout, no
# ?timeout=). qpoold holds such calls while the node cannot be reached (retry.unreachable_wait,
# 10 s by default), so not one call fails. MODE grpc uses @qdrant/js-client-grpc against qpoold's
# gRPC port, MODE rest @qdrant/js-client-rest against its REST front door.
# NOT RUN (exit 77) without node or the npm package.
# Usage: js_client_restart_through_qpoold.sh QPOOLD EMULATOR WORKDIR grpc|rest
set -euo pipefail
QPOOLD=$1 EMULATOR=$2 WORK=$3 MODE=$4
case "$MODE" in
  grpc) JS_DIR="$(cd "$(dirname "$0")/../emulator/js" && pwd)" ;;
  rest) JS_DIR="$(cd "$(dirname "$0")/../emulator/js-rest" && pwd)" ;;
  *) echo "usage: $0 QPOOLD EMULATOR WORKDIR grpc|rest" >&2; exit 2 ;;
esac
mkdir -p "$WORK"
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
require_js_client "$JS_DIR"

start_emulator_rest "$EMULATOR"
emulator_pid=${pids[-1]}
# qpoold at its defaults but one: the pool reconnects within upstream.connect_backoff_max (1 s) of
# the node's return, and calls without a deadline wait for it (retry.unreachable_wait, 10 s). The
# calls in flight at the kill lose their connection and are retried by policy: up to 10 of them at
# once, more than the default retries-in-flight floor (3, Envoy's default too), hence
# min_retries_in_flight 10, as retry_e2e_test's node-kill test does with 8.
printf 'retry:\n  min_retries_in_flight: 10\n' >"$WORK/qpool.yaml"
start_qpoold "$QPOOLD" --config "$WORK/qpool.yaml" --upstream "$EMU" --rest-upstream "$REST"
if [ "$MODE" = grpc ]; then
  target=(--target "$QP")
else
  QP_REST=$(qpoold_rest_address)
  target=(--url "http://$QP_REST")
fi

# 8 s of reads; the restart begins once the clients have been served for a second.
node "$JS_DIR/restart.mjs" "${target[@]}" --clients 10 --seconds 8 --timeout-ms 5000 \
  >"$WORK/clients.out" 2>&1 &
clients_pid=$!
pids+=("$clients_pid")
wait_for_line "$WORK/clients.out" 'progress calls=[1-9]' '(.*)' >/dev/null

kill -9 "$emulator_pid"
wait "$emulator_pid" 2>/dev/null || true
down_at=$(date +%s%N)
sleep 2  # the outage itself, not a wait for a condition
"$EMULATOR" --listen "$EMU" --rest-listen "$REST" --control-listen 127.0.0.1:0 \
  >"$WORK/emulator2.out" 2>&1 &
pids+=($!)
wait_for_line "$WORK/emulator2.out" 'listening grpc=' '(.*)' >/dev/null
echo "node down for $(( ($(date +%s%N) - down_at) / 1000000 )) ms"

status=0
wait "$clients_pid" || status=$?
cat "$WORK/clients.out"
if [ "$status" -ne 0 ]; then
  echo "FAILED: calls failed across a 2 s restart of the only node ($MODE)" >&2
  grep -E 'tried|unreachable|cannot connect' "$WORK/qpoold.log" | head -5 >&2 || true
  exit 1
fi
echo "ok: no call failed across a 2 s restart of the only node ($MODE)"
