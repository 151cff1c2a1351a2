#!/usr/bin/env node
// Baseline for ledger/benches/merkle.rs: builds a StandardMerkleTree of N payout leaves
// (uint64 epoch, uint256 index, address account, uint256 amount) with @openzeppelin/merkle-tree and
// computes every proof. Leaves follow the same formula as the Rust bench, so the roots must agree.
//
//   node bench-oz.js [N]      -> one JSON line: {"n", "build_ms", "proofs_ms", "total_ms", "root", "proof_nodes"}
'use strict';
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');

const n = Number(process.argv[2] || 1000000);
const ENCODING = ['uint64', 'uint256', 'address', 'uint256'];

// Same formula as bench_leaf() in ledger/benches/merkle.rs.
function leaf(i) {
  const account = '0x' + (BigInt(i) * 2654435761n + 1n).toString(16).padStart(40, '0');
  const amount = ((BigInt(i) * 7919n) % 1000003n + 1n) * 1000000000000n;
  return ['7', i.toString(), account, amount.toString()];
}

const values = new Array(n);
for (let i = 0; i < n; i++) values[i] = leaf(i);

const t0 = process.hrtime.bigint();
const tree = StandardMerkleTree.of(values, ENCODING);
const t1 = process.hrtime.bigint();
let nodes = 0;
for (let i = 0; i < n; i++) nodes += tree.getProof(i).length;
const t2 = process.hrtime.bigint();

const ms = (a, b) => Number(b - a) / 1e6;
console.log(JSON.stringify({ n, build_ms: ms(t0, t1), proofs_ms: ms(t1, t2), total_ms: ms(t0, t2), root: tree.root, proof_nodes: nodes }));
