//! Merkle benchmark: build the payout tree of N leaves and compute every proof, in Rust and with
//! `@openzeppelin/merkle-tree` on Node (`ledger/js/bench-oz.js`) in the same run; prints both
//! times and the ratio, and checks both roots agree.
//!
//!     cargo bench -p tributary-ledger --bench merkle            # N = 1,000,000
//!     cargo bench -p tributary-ledger --bench merkle -- 100000  # another N
//!
//! Under `cargo test --all-targets` (no `--bench` flag) it only runs a 1,000-leaf smoke pass.

use std::process::Command;
use std::time::Instant;

use alloy::primitives::{Address, U256};
use tributary_ledger::leaves::{PayoutCodec, PayoutLeaf};
use tributary_ledger::merkle::{StandardMerkleTree, TreeOptions};

/// Same formula as `leaf(i)` in ledger/js/bench-oz.js.
fn bench_leaf(i: u64) -> PayoutLeaf {
    let account = U256::from(i) * U256::from(2_654_435_761u64) + U256::from(1);
    let amount = U256::from((i * 7919) % 1_000_003 + 1) * U256::from(1_000_000_000_000u64);
    PayoutLeaf { epoch: 7, index: U256::from(i), account: Address::from_word(account.into()), amount }
}

fn rust_run(n: u64) -> (f64, f64, String, usize) {
    let leaves: Vec<PayoutLeaf> = (0..n).map(bench_leaf).collect();
    let t0 = Instant::now();
    let tree = StandardMerkleTree::of(PayoutCodec, leaves, TreeOptions::default()).expect("non-empty");
    let t1 = Instant::now();
    let mut nodes = 0usize;
    for i in 0..tree.len() {
        nodes += tree.proof(i).expect("leaf").len();
    }
    let t2 = Instant::now();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    (ms(t0, t1), ms(t1, t2), tree.root().to_string(), nodes)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let n: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(if bench { 1_000_000 } else { 1_000 });
    if !bench {
        let (b, p, root, _) = rust_run(n);
        println!("merkle smoke run: {n} leaves, build {b:.1} ms, proofs {p:.1} ms, root {root}");
        return;
    }
    println!("Merkle tree + all proofs, {n} payout leaves (uint64,uint256,address,uint256)");
    let (build, proofs, root, nodes) = rust_run(n);
    let js_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/js");
    let out = Command::new("node")
        .args(["--max-old-space-size=12000", "bench-oz.js", &n.to_string()])
        .current_dir(js_dir)
        .output()
        .expect("node runs (install with scripts/setup-test-deps.sh)");
    assert!(out.status.success(), "bench-oz.js failed: {}", String::from_utf8_lossy(&out.stderr));
    let oz: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench-oz.js prints JSON");
    let f = |k: &str| oz[k].as_f64().unwrap_or(f64::NAN);
    assert_eq!(oz["root"].as_str(), Some(root.as_str()), "both implementations must build the same tree");
    assert_eq!(oz["proof_nodes"].as_u64(), Some(nodes as u64), "same proof sizes");
    let threads = std::thread::available_parallelism().map(|p| p.get()).unwrap_or(1);
    println!("{:<32} {:>12} {:>12} {:>12}", "implementation", "build ms", "proofs ms", "total ms");
    println!("{:<32} {:>12.1} {:>12.1} {:>12.1}", format!("tributary-ledger ({threads} threads)"), build, proofs, build + proofs);
    println!("{:<32} {:>12.1} {:>12.1} {:>12.1}", "@openzeppelin/merkle-tree 1.0.8", f("build_ms"), f("proofs_ms"), f("total_ms"));
    println!("speedup: {:.1}x (target >= 20x); roots equal: {root}", f("total_ms") / (build + proofs));
}
