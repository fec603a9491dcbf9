#!/usr/bin/env bash
# Health checking overhead (issue 5, item 7): qpoold in front of 3 qdrant-emulators, idle (no app
# calls), for DURATION seconds. Reports
#  - the CPU time of the "qpool-health" thread and of the I/O worker thread(s), from
#    /proc/<pid>/task/<tid>/schedstat (ns on CPU) and .../stat (utime+stime, clock ticks), as a
#    share of one core;
#  - the mean time of one check per tier, from qpool_health_check_duration_seconds.
# Run 1 uses the default intervals (fast 10s, medium 5s, deep 30s). With medium probes every 5s
# a connection is never idle for 10s, so the fast tier sends no PING at the defaults; run 2
# (medium and deep off, fast_interval 200ms) measures a PING round trip instead; run 3 (medium
# every 100ms, deep every 200ms) collects enough checks for percentiles of one check's time.
# Usage: loadtest/health-overhead/run.sh QPOOLD EMULATOR [DURATION_SECONDS]
set -euo pipefail
QPOOLD=$1
EMULATOR=$2
DURATION=${3:-60}
WORK=$(mktemp -d)
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/../../tests/e2e/lib.sh"

start_emulator_n() {  # sets EMU_n
  "$EMULATOR" --listen 127.0.0.1:0 --control-listen 127.0.0.1:0 >"$WORK/emulator$1.out" 2>&1 &
  pids+=($!)
  wait_for_line "$WORK/emulator$1.out" 'listening grpc=' '.*grpc=([0-9.:]+).*'
}
E1=$(start_emulator_n 1)
E2=$(start_emulator_n 2)
E3=$(start_emulator_n 3)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

thread_cpu() {  # pid name -> "schedstat_ns ticks" summed over threads whose comm matches name
  local pid=$1 name=$2 ns=0 ticks=0
  for task in /proc/"$pid"/task/*; do
    # shellcheck disable=SC2053  # $name is a glob on purpose ('qpool-io-*')
    if [[ "$(cat "$task/comm")" == $name ]]; then
      ns=$((ns + $(cut -d' ' -f1 "$task/schedstat")))
      # fields 14 and 15 of stat (utime, stime); comm may hold spaces, so count from the ')'.
      local rest
      rest=$(sed 's/.*) //' "$task/stat")
      ticks=$((ticks + $(echo "$rest" | awk '{print $12 + $13}')))
    fi
  done
  echo "$ns $ticks"
}

run() {  # label, extra health yaml
  local label=$1 extra=$2 admin
  admin=$(free_port)
  cat >"$WORK/qpool.yaml" <<YAML
upstream:
  nodes: ["$E1", "$E2", "$E3"]
admin:
  listen: "127.0.0.1:$admin"
log:
  level: warn
health:
$extra
YAML
  "$QPOOLD" --config "$WORK/qpool.yaml" --listen 127.0.0.1:0 --log-level info 2>"$WORK/qpoold.log" &
  local qpid=$!
  pids+=("$qpid")
  wait_for_line "$WORK/qpoold.log" 'listening on' '.*listening on ([0-9.:]+).*' >/dev/null
  sleep 1
  local h0 w0 h1 w1
  curl -s "127.0.0.1:$admin/metrics" >"$WORK/metrics-$label-start.txt"
  h0=$(thread_cpu $qpid qpool-health)
  w0=$(thread_cpu $qpid 'qpool-io-*')
  sleep "$DURATION"
  h1=$(thread_cpu $qpid qpool-health)
  w1=$(thread_cpu $qpid 'qpool-io-*')
  curl -s "127.0.0.1:$admin/metrics" >"$WORK/metrics-$label.txt"
  kill "$qpid"; wait "$qpid" 2>/dev/null || true
  echo "== $label: ${DURATION}s idle, 3 nodes"
  python3 - "$h0" "$h1" "$w0" "$w1" "$DURATION" "$WORK/metrics-$label.txt" "$WORK/metrics-$label-start.txt" <<'PY'
import sys, re
h0, h1, w0, w1, dur, path, start_path = sys.argv[1:8]
dur = float(dur)
def delta(a, b):
    a = list(map(int, a.split())); b = list(map(int, b.split()))
    return (b[0] - a[0]) / 1e9, (b[1] - a[1]) / 100.0
for name, a, b in (("qpool-health thread", h0, h1), ("I/O worker thread(s) qpool-io-*", w0, w1)):
    ns, ticks = delta(a, b)
    print(f"{name}: {ns*1e3:.2f} ms CPU (schedstat), {ticks*1e3:.0f} ms (stat ticks) = {100*ns/dur:.4f}% of one core")
text = open(path).read()
start = open(start_path).read()
def value(t, pattern):
    m = re.search(pattern, t)
    return float(m.group(1)) if m else 0.0
# Checks made during the measured window only (end minus start), so start-up connects are out.
for tier in ("fast", "medium", "deep"):
    sp = r'qpool_health_check_duration_seconds_sum\{tier="%s"\} (\S+)' % tier
    cp = r'qpool_health_check_duration_seconds_count\{tier="%s"\} (\S+)' % tier
    n = value(text, cp) - value(start, cp)
    if n <= 0:
        continue
    total = value(text, sp) - value(start, sp)
    buckets = []
    for m in re.finditer(r'qpool_health_check_duration_seconds_bucket\{tier="%s",le="([^"]+)"\} (\S+)' % tier, text):
        le = m.group(1)
        b0 = value(start, r'qpool_health_check_duration_seconds_bucket\{tier="%s",le="%s"\} (\S+)' % (tier, re.escape(le)))
        buckets.append((le, float(m.group(2)) - b0))
    def quantile(q):
        for le, c in buckets:
            if c >= q * n:
                return le
        return "+Inf"
    print(f"{tier}: {int(n)} checks, mean {1e3*total/n:.3f} ms, p50 <= {quantile(0.5)} s, p99 <= {quantile(0.99)} s, max bucket <= {quantile(1.0)} s")
for line in text.splitlines():
    if line.startswith("qpool_health_checks_total") and 'result="failure"' in line and not line.endswith(" 0"):
        print("FAILURES:", line)
PY
}

run defaults "  enabled: true"
run ping "  medium_enabled: false
  deep_enabled: false
  fast_interval: 200ms
  fast_timeout: 1s"
run many "  medium_interval: 100ms
  medium_timeout: 100ms
  deep_interval: 200ms
  deep_timeout: 200ms"
