#!/usr/bin/env bash
# Everything `make test` (and so .ci/run) runs, after `make setup`:
#   lint; recompile the contracts and compare with the committed artifacts (installs solc-js and anvil
#   from npm on first use); start an offline js-ipfs daemon on loopback for the daemon-backed store tests
#   (installs js-ipfs from npm on first use); run the whole test suite; stop the daemon by PID.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
export PYTHONHASHSEED=0

echo "== lint (ruff)"
$BIN/ruff check .
$BIN/ruff format --check .  # the whole tree stays formatted (as make lint checks)

echo "== contracts: recompile with the pinned solc-js and compare with the committed artifacts"
bash contracts/check.sh

echo "== js-ipfs daemon (offline, loopback) for the daemon-backed store tests"
IPFS_STATE="$(mktemp -d "${TMPDIR:-/tmp}/sandrun-ipfs.XXXXXX")"
cleanup() { bash scripts/ipfs/stop.sh "$IPFS_STATE" >/dev/null 2>&1 || true; rm -rf "$IPFS_STATE"; }
trap cleanup EXIT
SANDRUN_IPFS_API="$(bash scripts/ipfs/start.sh "$IPFS_STATE")"
export SANDRUN_IPFS_API SANDRUN_IPFS_STATE="$IPFS_STATE"
echo "IPFS API at $SANDRUN_IPFS_API"

echo "== tests"
$BIN/pytest -q -p no:cacheprovider "$@"
