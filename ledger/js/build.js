#!/usr/bin/env node
// Compiles ledger/contracts/*.sol offline with the pinned npm `solc` (see package.json) and writes one
// artifact per contract (ABI + creation and runtime bytecode + compiler settings) to ledger/artifacts/.
//
//   node build.js                 # rewrite the committed artifacts
//   node build.js --out DIR       # write them to DIR instead (the Rust test compares DIR with the committed ones)
//
// The output is deterministic: same sources + same solc + same OpenZeppelin version => same bytes.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const ROOT = path.resolve(__dirname, '..');
const CONTRACTS = path.join(ROOT, 'contracts');
const CONTRACT_NAMES = ['TributarySettlement', 'RewardToken'];

function parseArgs(argv) {
  const args = { out: path.join(ROOT, 'artifacts') };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') args.out = path.resolve(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return args;
}

const SETTINGS = {
  optimizer: { enabled: true, runs: 20000 },
  evmVersion: 'prague',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function findImport(importPath) {
  const candidates = [path.join(__dirname, 'node_modules', importPath), path.join(CONTRACTS, importPath)];
  for (const c of candidates) {
    if (fs.existsSync(c)) return { contents: fs.readFileSync(c, 'utf8') };
  }
  return { error: `import not found: ${importPath}` };
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const sources = {};
  for (const name of CONTRACT_NAMES) {
    const file = `${name}.sol`;
    sources[file] = { content: fs.readFileSync(path.join(CONTRACTS, file), 'utf8') };
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter(e => e.severity === 'error');
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + '\n');
  if (errors.length) process.exit(1);
  const ozVersion = require('@openzeppelin/contracts/package.json').version;
  fs.mkdirSync(args.out, { recursive: true });
  for (const name of CONTRACT_NAMES) {
    const c = output.contracts[`${name}.sol`][name];
    const artifact = {
      contractName: name,
      source: `ledger/contracts/${name}.sol`,
      compiler: { solc: solc.version(), openzeppelinContracts: ozVersion, settings: { optimizer: SETTINGS.optimizer, evmVersion: SETTINGS.evmVersion } },
      abi: c.abi,
      bytecode: '0x' + c.evm.bytecode.object,
      deployedBytecode: '0x' + c.evm.deployedBytecode.object,
    };
    const file = path.join(args.out, `${name}.json`);
    fs.writeFileSync(file, JSON.stringify(artifact, null, 2) + '\n');
    process.stderr.write(`wrote ${file} (${c.evm.deployedBytecode.object.length / 2} runtime bytes)\n`);
  }
}

main();
