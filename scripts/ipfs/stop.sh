#!/usr/bin/env bash
# Stop the daemon started by scripts/ipfs/start.sh (by its recorded pid) and delete its repository.
#   scripts/ipfs/stop.sh [STATE_DIR]      idempotent: nothing running -> exit 0
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="${1:-${SANDRUN_IPFS_STATE:-$ROOT/.data/ipfs-test}}"
[[ -d "$STATE" ]] || exit 0
if [[ -f "$STATE/pid" ]]; then
  PID="$(cat "$STATE/pid")"
  if kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done   # ~1.5 s normally
    kill -0 "$PID" 2>/dev/null && kill -KILL "$PID" 2>/dev/null
  fi
fi
rm -rf "$STATE/repo" "$STATE/pid" "$STATE/api" "$STATE/config.json"
exit 0
