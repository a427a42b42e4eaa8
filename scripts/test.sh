#!/usr/bin/env bash
# Everything `make test` (and so .ci/run) runs, after `make setup`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
export PYTHONHASHSEED=0 HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}

echo "== lint"
$BIN/ruff check .

cleanup() { :; }
trap 'cleanup' EXIT

echo "== tests"
$BIN/pytest -q -p no:cacheprovider "$@"
