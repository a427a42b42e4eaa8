#!/usr/bin/env bash
# `make demo`: a real local network doing real jobs.
#
# Starts a 4-node `sandrun-p2p testnet` (separate agent processes on loopback, one shared chain: anvil when
# installed, else the embedded EVM served over JSON-RPC), submits the sample jobs from examples/ through
# different nodes with `sandrun-p2p submit --wait`, shows their progress, prints the verified results and
# where the money went, and always shuts the network down (trap), by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sandrun-demo.XXXXXX")"
NET="$WORK/net"
OUT="$WORK/results"
export SANDRUN_P2P_HOME="$WORK/client"   # the demo client's job records and keys stay in the demo dir
TESTNET_PID=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  local rc=$?
  if [[ -n "$TESTNET_PID" ]] && kill -0 "$TESTNET_PID" 2>/dev/null; then
    say "shutting the network down (testnet pid $TESTNET_PID stops every agent and the chain by PID)"
    kill -TERM "$TESTNET_PID" 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 "$TESTNET_PID" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$TESTNET_PID" 2>/dev/null; then kill -KILL "$TESTNET_PID" 2>/dev/null || true; fi
    tail -n 2 "$WORK/testnet.log" || true
  fi
  echo "demo files (logs, node state, results): $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting a 4-node local network (sandrun-p2p testnet)"
# the testnet handles SIGTERM/SIGINT itself: `kill -TERM` stops every agent and the chain by PID
"$BIN/sandrun-p2p" testnet --nodes 4 --data-dir "$NET" --timeout 180 >"$WORK/testnet.log" 2>&1 &
TESTNET_PID=$!
for _ in $(seq 1 400); do
  grep -q "running; press Ctrl-C" "$WORK/testnet.log" && break
  if ! kill -0 "$TESTNET_PID" 2>/dev/null; then cat "$WORK/testnet.log"; echo "the testnet did not start"; exit 1; fi
  sleep 0.5
done
grep -q "running; press Ctrl-C" "$WORK/testnet.log" || { cat "$WORK/testnet.log"; echo "testnet not ready in 200 s"; exit 1; }
grep -v "running; press" "$WORK/testnet.log"

submit() {  # submit NAME NODE REDUNDANCY [extra flags...]
  local name=$1 node=$2 k=$3; shift 3
  say "job '$name' (redundancy $k) through node$node"
  "$BIN/sandrun-p2p" submit --code "examples/$name" --manifest "examples/$name/job.json" --redundancy "$k" \
    --peer "$NET/node$node" --escrow auto --wait --out "$OUT/$name" "$@"
}

submit primes 0 1
submit monte-carlo-pi 1 3
submit multi-output 2 2
submit checkpoint-counter 3 1
submit memory-hog 1 1
GPUS=$("$BIN/sandrun-p2p" nodes --data-dir "$NET/node0" --json | python3 -c \
  'import json, sys; print(sum(len(n["caps"]["gpus"]) for n in json.load(sys.stdin)["nodes"]))')
if [[ $GPUS -gt 0 ]]; then
  say "the nodes have $GPUS GPU(s): job 'gpu-cuda' (a CUDA kernel) runs on two of them and is cross-verified"
  submit gpu-cuda 0 2
else
  say "job 'gpu-cuda' needs a GPU; without --force the client refuses it before paying:"
  "$BIN/sandrun-p2p" submit --code examples/gpu-cuda --manifest examples/gpu-cuda/job.json --peer "$NET/node0" \
    --escrow auto || true
  set +e
  submit gpu-cuda 0 1 --force --deadline 30
  gpu_rc=$?
  set -e
  [[ $gpu_rc -eq 1 ]] || { echo "expected the GPU job to fail with a reason (exit 1), got $gpu_rc"; exit 1; }
fi

say "verified results"
echo "primes:          $(wc -l <"$OUT/primes/primes.txt") primes; the last is $(tail -n 1 "$OUT/primes/primes.txt")"
echo "monte-carlo-pi:  $(cat "$OUT/monte-carlo-pi/pi.json")  (3 executors, 2 had to agree)"
echo "multi-output:    $(cat "$OUT/multi-output/summary.json") + $(find "$OUT/multi-output/out" -type f | wc -l) files in out/"
echo "checkpointing:   result.txt = $(cat "$OUT/checkpoint-counter/result.txt")"
echo "memory-hog:      $(python3 -c 'import json,sys; t=json.load(open(sys.argv[1])); print("status", t["status"], "exit", t["exit_code"], "(killed at its 64 MB limit)")' "$OUT/memory-hog/.sandrun/trace.json")"

say "this client's jobs (sandrun-p2p submit --list)"
"$BIN/sandrun-p2p" submit --list
