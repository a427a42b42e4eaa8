#!/usr/bin/env bash
# Start a throw-away js-ipfs daemon for the test suite: offline, loopback only, no bootstrap, no swarm.
#
#   scripts/ipfs/start.sh [STATE_DIR]      prints the API multiaddr (e.g. /ip4/127.0.0.1/tcp/45123) on stdout
#
# STATE_DIR (default $SANDRUN_IPFS_STATE or <repo>/.data/ipfs-test) receives:
#   repo/      the IPFS repository (created fresh on every start)
#   pid        the daemon's process id (scripts/ipfs/stop.sh kills exactly this pid)
#   api        the API multiaddr, one line
#   daemon.log the daemon's output
# Idempotent: installs the pinned js-ipfs (package-lock.json) into scripts/ipfs/node_modules only when missing,
# and when a daemon from the same STATE_DIR is still answering it just prints its address again.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="${1:-${SANDRUN_IPFS_STATE:-$ROOT/.data/ipfs-test}}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
JSIPFS="$HERE/node_modules/.bin/jsipfs"

api_alive() {  # $1 = multiaddr /ip4/H/tcp/P
  local host port
  host="$(echo "$1" | cut -d/ -f3)"; port="$(echo "$1" | cut -d/ -f5)"
  curl -s -m 2 -X POST "http://$host:$port/api/v0/id" >/dev/null 2>&1
}

# Already running from this state dir?
if [[ -f "$STATE/pid" && -f "$STATE/api" ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null \
   && api_alive "$(cat "$STATE/api")"; then
  cat "$STATE/api"
  exit 0
fi

# Install once (about 290 MB, 2-3 minutes cold) at the versions of the committed package-lock.json.
# Not `npm ci`: it refuses this lockfile because an optional dependency deep in js-ipfs (electron-eval ->
# headless, a GitHub tarball) never installs and so is absent from it; `npm install` skips it and keeps
# every locked version (the lockfile is left unchanged).
if [[ ! -x "$JSIPFS" ]]; then
  echo "installing js-ipfs into $HERE/node_modules (npm install from package-lock.json) ..." >&2
  (cd "$HERE" && npm install --no-audit --no-fund --loglevel=error >&2)
fi

# A free loopback port: ask the kernel, then hand it to the daemon (tiny race, retried below).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

for attempt in 1 2 3; do
  rm -rf "$STATE/repo" "$STATE/pid" "$STATE/api"
  API_PORT="$(free_port)"; GW_PORT="$(free_port)"; RPC_PORT="$(free_port)"
  cat > "$STATE/config.json" <<JSON
{
  "Addresses": {
    "API": "/ip4/127.0.0.1/tcp/$API_PORT",
    "Gateway": "/ip4/127.0.0.1/tcp/$GW_PORT",
    "RPC": "/ip4/127.0.0.1/tcp/$RPC_PORT",
    "Swarm": [],
    "Announce": [],
    "NoAnnounce": [],
    "Delegates": []
  },
  "Bootstrap": [],
  "Discovery": { "MDNS": { "Enabled": false }, "webRTCStar": { "Enabled": false } },
  "Routing": { "Type": "none" }
}
JSON
  IPFS_PATH="$STATE/repo" "$JSIPFS" init --profile test --emptyRepo "$STATE/config.json" >"$STATE/init.log" 2>&1 || {
    cat "$STATE/init.log" >&2; exit 1; }
  IPFS_PATH="$STATE/repo" setsid "$JSIPFS" daemon --offline --enable-preload=false >"$STATE/daemon.log" 2>&1 &
  PID=$!
  echo "$PID" > "$STATE/pid"
  ADDR="/ip4/127.0.0.1/tcp/$API_PORT"
  for _ in $(seq 1 120); do            # up to 60 s
    if api_alive "$ADDR"; then
      echo "$ADDR" > "$STATE/api"
      echo "$ADDR"
      exit 0
    fi
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.5
  done
  echo "js-ipfs daemon did not answer on $ADDR (attempt $attempt); log:" >&2
  tail -n 20 "$STATE/daemon.log" >&2 || true
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
done
exit 1
