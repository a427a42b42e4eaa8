#!/usr/bin/env bash
# Static analysis of the production contract with slither, in its own virtualenv (slither-analyzer needs web3<8,
# the package needs web3 8). The compiler is the pinned solc-js behind solc-cli.js (no native solc is needed).
#   bash contracts/slither.sh [extra slither arguments]
set -euo pipefail
cd "$(dirname "$0")"
[ -f node_modules/solc/package.json ] || npm ci --no-audit --no-fund --loglevel=error
if [ ! -x .slither-venv/bin/slither ]; then
  python3 -m venv .slither-venv
  .slither-venv/bin/pip install -q slither-analyzer==0.11.6
fi
node -e '
const fs = require("fs");
const settings = { evmVersion: "cancun", viaIR: true, optimizer: { enabled: true, runs: 1000 },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode", "evm.deployedBytecode", "evm.methodIdentifiers"], "": ["ast"] } } };
const sources = { "SandrunMarket.sol": { content: fs.readFileSync("SandrunMarket.sol", "utf8") } };
fs.writeFileSync(".slither-input.json", JSON.stringify({ language: "Solidity", sources, settings }));
'
exec .slither-venv/bin/slither .slither-input.json --solc ./solc-cli.js --compile-force-framework solc-json "$@"
