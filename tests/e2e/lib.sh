# shellcheck shell=bash disable=SC2034  # EMU, CTL, REST, QP, QP_ADMIN are set for the scripts sourcing this
# Shared by the e2e shell tests: start the built qdrant-emulator and qpoold on ports chosen at run
# time (port 0), read those ports from their output, and stop everything started here on exit.
# Usage: source "$(dirname "$0")/lib.sh"; WORK must be set.

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

# start_emulator EMULATOR_BINARY: sets EMU (gRPC address) and CTL (control endpoint address).
start_emulator() {
  "$1" --listen 127.0.0.1:0 --control-listen 127.0.0.1:0 >"$WORK/emulator.out" 2>&1 &
  pids+=($!)
  EMU=$(wait_for_line "$WORK/emulator.out" 'listening grpc=' '.*grpc=([0-9.:]+).*')
  CTL=$(wait_for_line "$WORK/emulator.out" 'listening grpc=' '.*control=([0-9.:]+).*')
}

# start_emulator_rest EMULATOR_BINARY: as start_emulator, with the REST port on too; also sets
# REST (its HOST:PORT; the base URL is http://$REST).
start_emulator_rest() {
  "$1" --listen 127.0.0.1:0 --control-listen 127.0.0.1:0 --rest-listen 127.0.0.1:0 \
    >"$WORK/emulator.out" 2>&1 &
  pids+=($!)
  EMU=$(wait_for_line "$WORK/emulator.out" 'listening grpc=' '.*grpc=([0-9.:]+).*')
  CTL=$(wait_for_line "$WORK/emulator.out" 'listening grpc=' '.*control=([0-9.:]+).*')
  REST=$(wait_for_line "$WORK/emulator.out" 'listening grpc=' '.*rest=([0-9.:]+).*')
}

# start_qpoold QPOOLD_BINARY [FLAGS...]: listens on free ports (gRPC, REST, admin), logs to
# $WORK/qpoold.log; sets QP (gRPC) and QP_ADMIN (the admin endpoint's HOST:PORT).
start_qpoold() {
  local binary=$1
  shift
  "$binary" --listen 127.0.0.1:0 --rest-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 "$@" \
    2>"$WORK/qpoold.log" &
  pids+=($!)
  QP=$(wait_for_line "$WORK/qpoold.log" 'listening on' '.*listening on ([0-9.:]+).*')
  QP_ADMIN=$(wait_for_line "$WORK/qpoold.log" 'listening on' '.*admin on http:..([0-9.:]+).*')
}

# require_js_client JS_DIR: exits 77 (ctest's NOT RUN) when node, or the official client installed
# in JS_DIR/node_modules (scripts/install-deps), is missing.
require_js_client() {
  if ! command -v node >/dev/null 2>&1; then
    echo "NOT RUN: node is not installed (scripts/install-deps installs it)" >&2
    exit 77
  fi
  if [ ! -d "$1/node_modules/@qdrant" ]; then
    echo "NOT RUN: $1/node_modules is missing (run scripts/install-deps)" >&2
    exit 77
  fi
}

# qpoold_rest_address: prints the HOST:PORT of the REST front door of the qpoold start_qpoold
# started (from its log).
qpoold_rest_address() {
  wait_for_line "$WORK/qpoold.log" 'REST front door at' '.*REST front door at http:..([0-9.:]+).*'
}
