#!/usr/bin/env node
// A `solc` command backed by the pinned solc-js, for tools that want a compiler binary (slither through
// crytic-compile): answers --version and --standard-json (input on stdin, output on stdout).
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require(path.join(__dirname, 'node_modules', 'solc'));

const args = process.argv.slice(2);
if (args.includes('--version')) {
  console.log('solc, the solidity compiler commandline interface');
  console.log('Version: ' + solc.version().replace('Emscripten.clang', 'Linux.g++'));
} else if (args.includes('--standard-json')) {
  const input = fs.readFileSync(0, 'utf8');
  const findImports = (p) => (fs.existsSync(p) ? { contents: fs.readFileSync(p, 'utf8') } : { error: 'not found: ' + p });
  // exit only once the (large) output is flushed to the pipe
  process.stdout.write(solc.compile(input, { import: findImports }), () => process.exit(0));
} else {
  console.error('solc-cli.js supports --version and --standard-json only, not: ' + args.join(' '));
  process.exit(1);
}
