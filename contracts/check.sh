#!/usr/bin/env bash
# Recompile the contracts with the pinned solc-js and fail when the committed artifacts differ.
# Installs the npm packages (solc, anvil) first when they are missing. Used by the test command.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f node_modules/solc/package.json ] || [ ! -x node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node compile.js --check
