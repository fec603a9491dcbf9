# shellcheck shell=bash
# Shared by loadtest/cpu-per-call and loadtest/instructions-per-call: a work dir, free ports,
# waiting for a listener, an empty gRPC request body, and stopping by pid whatever was started.
# Usage: source loadtest/lib.sh from the repository root   (sets WORK, EMPTY_GRPC; fill `pids` with what you start)

WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A TCP port on 127.0.0.1 that nothing listened on a moment ago.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to 20 s (valgrind starts slowly) for a listener on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 1 400); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2
  return 1
}

# An empty gRPC message (5-byte frame header), the body of h2load's HealthCheck calls.
EMPTY_GRPC="$WORK/empty.grpc"
printf '\x00\x00\x00\x00\x00' >"$EMPTY_GRPC"
