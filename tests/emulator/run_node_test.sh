#!/bin/sh
# Runs a Node.js test script, or reports it NOT RUN (exit 77, ctest SKIP_RETURN_CODE) when node or
# the script's npm packages (installed by scripts/install-deps) are missing.
# Usage: run_node_test.sh SCRIPT.mjs [ARGS...]
script=$1
if ! command -v node >/dev/null 2>&1; then
  echo "NOT RUN: node is not installed (scripts/install-deps installs it)" >&2
  exit 77
fi
if [ ! -d "$(dirname "$script")/node_modules/@qdrant" ]; then
  echo "NOT RUN: $(dirname "$script")/node_modules is missing (run scripts/install-deps)" >&2
  exit 77
fi
exec node "$@"
