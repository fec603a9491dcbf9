#!/usr/bin/env bash
# Smoke test of the load tool (issues 7 and 12): the built qpool-load drives the built qpoold in
# front of the built qdrant-emulator for a few seconds, over gRPC and over REST. Asserts: zero
# errors and non-zero throughput, the JSON parses, every call qpool-load says it sent is one the
# emulator counted (GET /counters), a non-OK grpc-status is counted by its code, and a non-2xx
# REST answer by its status.
# Usage: qpool_load_smoke.sh QPOOL_LOAD QPOOLD EMULATOR WORKDIR
set -euo pipefail
LOAD=$1 QPOOLD=$2 EMULATOR=$3 WORK=$4
rm -rf "$WORK" && mkdir -p "$WORK"
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
fail() { echo "FAILED: $*" >&2; exit 1; }

start_emulator_rest "$EMULATOR"
# The emulator's call counts are compared with the tool's below: qpoold's own health probes ask
# grpc.health.v1.Health/Check (and Collections/List), never a method the tool calls.
printf 'health:\n  medium_method: grpc\n' >"$WORK/qpool.yaml"
start_qpoold "$QPOOLD" --config "$WORK/qpool.yaml" --upstream "$EMU" --max-connections 2 \
  --rest-upstream "$REST"
QP_REST=$(wait_for_line "$WORK/qpoold.log" 'REST front door at' '.*REST front door at http:..([0-9.:]+) .*')

counter() { curl -sf --max-time 5 "http://$CTL/counters" | jq -r "$1"; }
field() { jq -r "$2" "$1"; }

# 1. HealthCheck, closed loop, 4 connections x 4 in flight, 0.3 s warm-up + 2 s.
timeout 60 "$LOAD" --target "$QP" --method health --connections 4 --inflight 4 --warmup 0.3 \
  --duration 2 --max-time 30 --json "$WORK/health.json" | tee "$WORK/health.txt"
jq -e . "$WORK/health.json" >/dev/null || fail "health.json does not parse"
[[ $(field "$WORK/health.json" .errors) == 0 ]] || fail "health: errors $(field "$WORK/health.json" .measured.errors_by_code)"
[[ $(field "$WORK/health.json" .timed_out) == false ]] || fail "health: run hit --max-time"
jq -e '.throughput_rps > 0 and .measured.ok > 0 and .measured.ok == .measured.sent' \
  "$WORK/health.json" >/dev/null || fail "health: no throughput or unanswered calls"
sent=$(field "$WORK/health.json" .calls_sent_total)
seen=$(counter '.calls["qdrant.Qdrant/HealthCheck"] // 0')
[[ $sent == "$seen" ]] || fail "health: qpool-load sent $sent calls, the emulator counted $seen"

# 2. Search with a 768-d vector, open loop 300 calls/s for 1 s, after the tool's own setup.
timeout 60 "$LOAD" --target "$QP" --method search --dim 768 --points 200 --connections 2 \
  --rate 300 --warmup 0.2 --duration 1 --max-time 30 --json "$WORK/search.json" | tee "$WORK/search.txt"
jq -e '.errors == 0 and .throughput_rps > 0 and .measured.ok == .measured.sent and .timed_out == false' \
  "$WORK/search.json" >/dev/null || fail "search: $(cat "$WORK/search.json")"
sent=$(field "$WORK/search.json" .calls_sent_total)
seen=$(counter '.calls["qdrant.Points/Search"] // 0')
[[ $sent == "$seen" ]] || fail "search: qpool-load sent $sent calls, the emulator counted $seen"
setup=$(field "$WORK/search.json" '.setup_calls["qdrant.Points/Upsert"]')
seen=$(counter '.calls["qdrant.Points/Upsert"] // 0')
[[ $setup == "$seen" ]] || fail "search setup: $setup upserts sent, the emulator counted $seen"

# 3. A non-OK grpc-status is an error, counted under its code.
curl -sf --max-time 5 -X PUT "http://$CTL/faults" \
  -d '{"methods":{"HealthCheck":{"error_rate":1,"error_code":"UNAVAILABLE"}}}' >/dev/null
timeout 60 "$LOAD" --target "$QP" --method health --warmup 0 --count 50 --max-time 30 \
  --json "$WORK/faults.json" --quiet
jq -e '.errors == 50 and .measured.errors_by_code.UNAVAILABLE == 50 and .measured.ok == 0' \
  "$WORK/faults.json" >/dev/null || fail "injected UNAVAILABLE not counted: $(cat "$WORK/faults.json")"

# 4. REST (--protocol rest): search through qpoold's REST front door, 3 connections, bounded by
# --count; the emulator counts each REST request (setup included) and each Search.
curl -sf --max-time 5 -X PUT "http://$CTL/faults" -d '{}' >/dev/null
rest_before=$(counter '.restRequests // .rest_requests // 0')
search_before=$(counter '.calls["qdrant.Points/Search"] // 0')
timeout 60 "$LOAD" --protocol rest --target "$QP_REST" --method search --dim 64 --points 150 \
  --connections 3 --warmup 0.2 --count 600 --max-time 30 --json "$WORK/rest.json" | tee "$WORK/rest.txt"
jq -e '.protocol == "rest" and .errors == 0 and .measured.ok == 600 and .measured.sent == 600 and
       .timed_out == false and .throughput_rps > 0' "$WORK/rest.json" >/dev/null ||
  fail "rest search: $(cat "$WORK/rest.json")"
sent=$(field "$WORK/rest.json" .calls_sent_total)
setup=$(jq '[.setup_calls[]] | add' "$WORK/rest.json")
[[ $setup == 4 ]] || fail "rest setup: expected delete, create and 2 upserts, got $(field "$WORK/rest.json" .setup_calls)"
seen=$(( $(counter '.calls["qdrant.Points/Search"] // 0') - search_before ))
[[ $sent == "$seen" ]] || fail "rest search: qpool-load sent $sent searches, the emulator counted $seen"
seen=$(( $(counter '.restRequests // .rest_requests // 0') - rest_before ))
[[ $((sent + setup)) == "$seen" ]] || fail "rest: qpool-load sent $((sent + setup)) requests, the emulator's REST port read $seen"

# 5. REST pipelining (--inflight 4 on 2 connections) with GET /, and a non-2xx answer counted by
# its status: searching a collection that does not exist is Qdrant's 404.
timeout 60 "$LOAD" --protocol rest --target "$QP_REST" --method health --connections 2 \
  --inflight 4 --warmup 0 --count 400 --max-time 30 --json "$WORK/rest_health.json" --quiet
jq -e '.errors == 0 and .measured.ok == 400' "$WORK/rest_health.json" >/dev/null ||
  fail "rest pipelined GET /: $(cat "$WORK/rest_health.json")"
timeout 60 "$LOAD" --protocol rest --target "$QP_REST" --method search --dim 64 --no-setup \
  --collection qpool_load_missing --warmup 0 --count 20 --max-time 30 --json "$WORK/rest_404.json" --quiet
jq -e '.errors == 20 and .measured.errors_by_code.HTTP_404 == 20 and .measured.ok == 0' \
  "$WORK/rest_404.json" >/dev/null || fail "REST 404 not counted: $(cat "$WORK/rest_404.json")"

echo "ok: $(field "$WORK/health.json" .throughput_rps) HealthCheck calls/s through qpoold, no errors; counts match the emulator's"
echo "ok: $(field "$WORK/rest.json" .throughput_rps) REST searches/s through qpoold's REST front door, no errors; counts match"
