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
# Each read takes the node 300 ms, so the kill finds every client's call in flight there (10 at
# once). Each loses its connection and needs a policy retry, more at once than the
# retries-in-flight floor (3); over REST some are retried instead as sent on a stale connection
# (transparent). Without the latency the kill usually finds no call in flight and proves less.
curl -sf --max-time 5 -X PUT "http://$CTL/faults" \
  -d '{"methods":{"List":{"latency_ms":300}}}' >/dev/null
# qpoold at its defaults: the pool reconnects within upstream.connect_backoff_max (1 s) of the
# node's return, calls without a deadline wait for it (retry.unreachable_wait, 10 s), and the calls
# in flight at the kill (up to 10, more than the retries-in-flight floor of 3) wait for a place in
# the retry budget rather than fail (docs/retries.md, "Storm control").
start_qpoold "$QPOOLD" --upstream "$EMU" --rest-upstream "$REST"
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
# What the retry budget did (qpool_retries_refused_total by reason), for the record.
curl -sf --max-time 5 "http://$QP_ADMIN/metrics" | grep -E '^qpool_retries_(refused_)?total' || true
if [ "$status" -ne 0 ]; then
  echo "FAILED: calls failed across a 2 s restart of the only node ($MODE)" >&2
  grep -E 'tried|unreachable|cannot connect' "$WORK/qpoold.log" | head -5 >&2 || true
  exit 1
fi
echo "ok: no call failed across a 2 s restart of the only node ($MODE)"
