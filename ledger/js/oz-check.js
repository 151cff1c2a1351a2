#!/usr/bin/env node
// Cross-check driver for the Rust tests: runs the real @openzeppelin/merkle-tree on a batch of operations.
//
//   node oz-check.js < request.json > response.json
//
// request:  {"ops": [op, ...]}
//   {"op": "of", "encoding": [...], "values": [...], "sortLeaves": true, "multi": [[i, ...], ...]}
//       -> {"root", "dump", "proofs": [proof of value i, ...], "multi": [{"leaves", "proof", "proofFlags"}, ...]}
//   {"op": "verify", "root", "encoding", "items": [{"value", "proof"}], "multi": [{"leaves", "proof", "proofFlags"}]}
//       -> {"ok": [bool, ...], "multiOk": [bool, ...]}
//   {"op": "load", "dump"}   (StandardMerkleTree.load + validate)
//       -> {"root", "proofs": [...]}
// response: {"results": [...]} in request order; an op that throws yields {"error": message}.
'use strict';
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');

function run(op) {
  switch (op.op) {
    case 'of': {
      const tree = StandardMerkleTree.of(op.values, op.encoding, { sortLeaves: op.sortLeaves !== false });
      const proofs = op.values.map((_, i) => tree.getProof(i));
      const multi = (op.multi || []).map(indices => tree.getMultiProof(indices));
      return { root: tree.root, dump: tree.dump(), proofs, multi };
    }
    case 'verify': {
      const ok = (op.items || []).map(it => StandardMerkleTree.verify(op.root, op.encoding, it.value, it.proof));
      const multiOk = (op.multi || []).map(m => StandardMerkleTree.verifyMultiProof(op.root, op.encoding, m));
      return { ok, multiOk };
    }
    case 'load': {
      const tree = StandardMerkleTree.load(op.dump);
      tree.validate();
      const proofs = [];
      for (const [i] of tree.entries()) proofs.push(tree.getProof(i));
      return { root: tree.root, proofs };
    }
    default:
      throw new Error(`unknown op ${op.op}`);
  }
}

function main() {
  const chunks = [];
  process.stdin.on('data', c => chunks.push(c));
  process.stdin.on('end', () => {
    const req = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const results = req.ops.map(op => {
      try {
        return run(op);
      } catch (e) {
        return { error: String(e && e.message ? e.message : e) };
      }
    });
    process.stdout.write(JSON.stringify({ results }, (_, v) => (typeof v === 'bigint' ? v.toString() : v)));
  });
}

main();
