#!/usr/bin/env bash
# Runs a test command only when the programs it needs are there; otherwise prints why and exits 77,
# which ctest reports as "Not Run" (the test's SKIP_RETURN_CODE), never as a pass.
# Usage: run_if_found.sh [--need PATH_OR_NAME]... [--need-dir DIR]... -- COMMAND [ARGS...]
# A --need that is empty (find_program found nothing at configure time) counts as missing.
set -uo pipefail
missing=()
while (($#)); do
  case "$1" in
    --need)
      if [[ -z "$2" ]] || ! command -v "$2" >/dev/null 2>&1; then missing+=("${2:-<not found at configure time>}"); fi
      shift 2 ;;
    --need-dir)
      if [[ ! -d "$2" ]]; then missing+=("$2 (directory)"); fi
      shift 2 ;;
    --) shift; break ;;
    *) echo "run_if_found.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if ((${#missing[@]})); then
  echo "NOT RUN: missing ${missing[*]}; scripts/install-deps installs what the tests need" >&2
  exit 77
fi
exec "$@"
