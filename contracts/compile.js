#!/usr/bin/env node
// Compiles the settlement contracts with the pinned solc-js and writes one JSON artifact per contract.
//   node compile.js           write the artifacts
//   node compile.js --check   compile and exit 1 when a committed artifact differs (or is missing/extra)
// Production contracts (contracts/*.sol) go to sandrun_p2p/chain/artifacts/, test helpers
// (contracts/test/*.sol) to tests/chain/artifacts/. Output is byte-identical across runs.
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const PINNED = '0.8.37';
const HERE = __dirname;
const ROOT = path.resolve(HERE, '..');
const TARGETS = [
  { dir: HERE, out: path.join(ROOT, 'sandrun_p2p', 'chain', 'artifacts') },
  { dir: path.join(HERE, 'test'), out: path.join(ROOT, 'tests', 'chain', 'artifacts') },
];
const SETTINGS = {
  evmVersion: 'cancun',
  viaIR: true,
  optimizer: { enabled: true, runs: 1000 },
  metadata: { bytecodeHash: 'none', appendCBOR: false },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function sources() {
  const out = {};
  for (const t of TARGETS) {
    if (!fs.existsSync(t.dir)) continue;
    for (const f of fs.readdirSync(t.dir).sort()) {
      if (!f.endsWith('.sol')) continue;
      const rel = path.relative(HERE, path.join(t.dir, f));
      out[rel] = { content: fs.readFileSync(path.join(t.dir, f), 'utf8') };
    }
  }
  return out;
}

function findImports(p) {
  const full = path.join(HERE, p);
  if (fs.existsSync(full)) return { contents: fs.readFileSync(full, 'utf8') };
  return { error: 'not found: ' + p };
}

function main() {
  const check = process.argv.includes('--check');
  const version = solc.version().split('+')[0];
  if (version !== PINNED) {
    console.error(`solc ${solc.version()} is installed, ${PINNED} is pinned: run npm ci in contracts/`);
    process.exit(2);
  }
  const srcs = sources();
  const input = { language: 'Solidity', sources: srcs, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  let failed = false;
  for (const e of output.errors || []) {
    if (e.severity === 'error') failed = true;
    // the reentrancy guard clears its transient slot before returning, which is the safe use solc warns about
    if (e.severity === 'warning' && e.message.startsWith('Transient storage as defined by EIP-1153')) continue;
    console.error(e.formattedMessage);
  }
  if (failed) process.exit(1);

  const wanted = new Map(); // out path -> text
  for (const t of TARGETS) {
    for (const rel of Object.keys(srcs)) {
      if (path.dirname(path.join(HERE, rel)) !== t.dir) continue;
      for (const [name, c] of Object.entries(output.contracts[rel] || {})) {
        if (!c.evm.bytecode.object) continue; // interfaces, abstract contracts
        const artifact = {
          contractName: name,
          sourceName: 'contracts/' + rel,
          compiler: { name: 'solc-js', version: solc.version() },
          settings: { evmVersion: SETTINGS.evmVersion, viaIR: SETTINGS.viaIR, optimizer: SETTINGS.optimizer, metadata: SETTINGS.metadata },
          abi: c.abi,
          bytecode: '0x' + c.evm.bytecode.object,
          deployedBytecode: '0x' + c.evm.deployedBytecode.object,
        };
        wanted.set(path.join(t.out, name + '.json'), JSON.stringify(artifact, null, 1) + '\n');
      }
    }
  }

  const stale = [];
  for (const t of TARGETS) {
    if (!fs.existsSync(t.out)) {
      if (!check) fs.mkdirSync(t.out, { recursive: true });
      continue;
    }
    for (const f of fs.readdirSync(t.out)) {
      const p = path.join(t.out, f);
      if (f.endsWith('.json') && !wanted.has(p)) {
        stale.push(p);
        if (!check) fs.unlinkSync(p);
      }
    }
  }
  const differ = [];
  for (const [p, text] of wanted) {
    const have = fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : null;
    if (have === text) continue;
    differ.push(p);
    if (!check) fs.writeFileSync(p, text);
  }
  for (const [p, text] of wanted) {
    const a = JSON.parse(text);
    const size = (a.deployedBytecode.length - 2) / 2;
    if (!check) console.log(`${path.relative(ROOT, p)}: ${size} bytes deployed`);
    if (size > 24576 && !p.includes(path.join('tests', 'chain'))) {
      console.error(`${a.contractName} is ${size} bytes, over the EIP-170 limit of 24576`);
      process.exit(1);
    }
  }
  if (check) {
    if (differ.length || stale.length) {
      for (const p of differ) console.error('out of date: ' + path.relative(ROOT, p));
      for (const p of stale) console.error('no source for: ' + path.relative(ROOT, p));
      console.error('contract artifacts differ from contracts/*.sol: run `node contracts/compile.js` and commit');
      process.exit(1);
    }
    console.log(`contract artifacts match sources (${wanted.size} contracts, solc ${solc.version()})`);
  } else {
    console.log(`wrote ${differ.length} artifact(s), removed ${stale.length}, ${wanted.size - differ.length} unchanged`);
  }
}

main();
