//! Gas benchmark: `anchor`, and `claim` in a 100,000-leaf payout tree, against the targets
//! (anchor ≤ 100,000; claim ≤ 80,000 — Uniswap's MerkleDistributor averages about 78,600).
//!
//!     cargo bench -p tributary-ledger --bench gas
//!
//! Runs on the embedded chain (revm, Prague) and, when the npm anvil is installed, repeats the
//! same transactions on anvil to show both EVMs charge the same gas. Claims go to fresh accounts
//! (their first token balance: the expensive, common case of a payout). Under
//! `cargo test --all-targets` (no `--bench` flag) it runs a 1,000-leaf smoke pass.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;
use tributary_ledger::chain::embedded::EmbeddedChain;
use tributary_ledger::chain::rpc::RpcChain;
use tributary_ledger::chain::{Chain, DevChain};
use tributary_ledger::contract::TributarySettlement;
use tributary_ledger::deploy::{self, Deployment};
use tributary_ledger::keys::{DevKey, dev_signer};
use tributary_ledger::leaves::{PayoutCodec, PayoutLeaf, PayoutTree};
use tributary_ledger::merkle::{StandardMerkleTree, TreeOptions};
use tributary_ledger::sender::{SendPolicy, TxRequest, TxSender};
use tributary_pipeline::Catalog;
use tributary_pipeline::config::ChainConfig;

fn tree(epoch: u64, n: u64) -> PayoutTree {
    let leaves = (0..n)
        .map(|i| {
            let mut a = [0u8; 20];
            a[0] = 0xa1;
            a[4..12].copy_from_slice(&epoch.to_be_bytes());
            a[12..].copy_from_slice(&(i + 1).to_be_bytes());
            PayoutLeaf {
                epoch,
                index: U256::from(i),
                account: Address::from(a),
                amount: U256::from(1_000_000_000_000_000u64 + i * 1_000_000_007),
            }
        })
        .collect();
    StandardMerkleTree::of(PayoutCodec, leaves, TreeOptions::default()).expect("tree")
}

struct Figures {
    anchors: Vec<u64>,
    /// Claims spread over the tree, each the first in its bitmap word.
    claims: Vec<u64>,
    /// Consecutive claims (the bitmap word written once per 256 claims).
    sequential: Vec<u64>,
}

async fn measure<C: DevChain>(chain: &C, dir: &std::path::Path, window: u64, n: u64, claims: usize) -> Figures {
    let catalog = Catalog::open(&dir.join(format!("catalog-{window}.sqlite"))).expect("catalog");
    let operator = dev_signer(DevKey::Operator);
    let policy = SendPolicy { confirmations: 1, resend_after: Duration::from_secs(30), max_fee_multiplier: 4.0, poll: Duration::from_millis(20) };
    let sender = TxSender::new(chain, &catalog, &operator, policy).await.expect("sender");
    let config = ChainConfig { challenge_window_secs: window, ..ChainConfig::default() };
    let d: Deployment = deploy::ensure(&sender, &config).await.expect("deploy");
    deploy::ensure_allowance(&sender, &d, U256::MAX >> 1).await.expect("approve");
    let mut anchors = Vec::new();
    let mut trees = Vec::new();
    for epoch in 1..=3u64 {
        let t = tree(epoch, n);
        let total: U256 = t.values().iter().map(|l| l.amount).sum();
        let data = TributarySettlement::anchorCall {
            epoch,
            payoutRoot: t.root(),
            attributionRoot: alloy::primitives::B256::repeat_byte(0x5a),
            total,
            datasetVersion: U256::from(epoch) << 64 | U256::from(3),
        }
        .abi_encode();
        let c = sender
            .send(&format!("bench:anchor:{epoch}"), &TxRequest { to: Some(d.settlement), data: data.into(), value: U256::ZERO })
            .await
            .expect("anchor");
        anchors.push(c.receipt.gas_used);
        trees.push(t);
    }
    if window > 0 {
        // Blocks mined faster than one a second run ahead of the wall clock (each is at least one
        // second after its parent), so step well past the window.
        chain.increase_time(window + 120).await.expect("time");
        chain.mine().await.expect("mine");
    }
    let outsider = dev_signer(DevKey::Outsider);
    let claimer = TxSender::new(chain, &catalog, &outsider, SendPolicy { poll: Duration::from_millis(20), ..SendPolicy::from_config(&config) })
        .await
        .expect("sender");
    let t = &trees[0];
    let mut out = Vec::new();
    let mut sequential = Vec::new();
    let step = (t.len() / claims.max(1)).max(1);
    // First `claims` leaves spread over the tree (each the first claim of its bitmap word: the
    // worst case), then `claims` consecutive leaves of one word range (what an epoch where every
    // contributor claims averages to: one word write per 256 claims).
    let spread: Vec<usize> = (0..claims.min(t.len())).map(|k| (k * step + 7 * k) % t.len()).collect();
    let base = t.len() / 2 / 256 * 256;
    let consecutive: Vec<usize> = (base..(base + 4 * claims).min(t.len())).filter(|i| !spread.contains(i)).collect();
    for (kind, i) in spread.iter().map(|&i| (0, i)).chain(consecutive.iter().map(|&i| (1, i))) {
        let leaf = t.values()[i];
        let data = TributarySettlement::claimCall {
            epoch: leaf.epoch,
            index: leaf.index,
            account: leaf.account,
            amount: leaf.amount,
            proof: t.proof(i).expect("proof"),
        }
        .abi_encode();
        let c = claimer
            .send(&format!("bench:claim:{i}"), &TxRequest { to: Some(d.settlement), data: data.into(), value: U256::ZERO })
            .await
            .expect("claim");
        if kind == 0 { out.push(c.receipt.gas_used) } else { sequential.push(c.receipt.gas_used) }
    }
    Figures { anchors, claims: out, sequential }
}

fn anvil_bin() -> Option<PathBuf> {
    let base = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/js/node_modules/@foundry-rs"));
    std::fs::read_dir(base).ok()?.filter_map(|e| e.ok()).map(|e| e.path().join("bin/anvil")).find(|p| p.is_file())
}

struct Anvil(Child);

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn report(label: &str, f: &Figures, proof_len: usize) {
    let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let (cmin, cmax) = (f.claims.iter().min().copied().unwrap_or(0), f.claims.iter().max().copied().unwrap_or(0));
    println!(
        "{label:<34} anchor first {:>7}  steady {:>7} (target <= 100000) | claim, fresh bitmap word: avg {:>8.0} min {:>6} max {:>6} over {} | consecutive claims avg {:>8.0} over {} | {proof_len}-hash proofs (target <= 80000)",
        f.anchors[0],
        f.anchors[1..].iter().max().copied().unwrap_or(0),
        avg(&f.claims),
        cmin,
        cmax,
        f.claims.len(),
        avg(&f.sequential),
        f.sequential.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let (n, claims) = if bench { (100_000u64, 64usize) } else { (1_000, 3) };
    let dir = tempfile::tempdir().expect("tempdir");
    let proof_len = tree(1, n).proof(0).expect("proof").len();
    println!("gas of TributarySettlement, {n}-leaf payout trees");
    for window in [0u64, 3600] {
        let chain = EmbeddedChain::open(&dir.path().join(format!("chain-{window}.sqlite")), 31337).expect("chain");
        let f = measure(&chain, dir.path(), window, n, claims).await;
        report(&format!("embedded revm, window {window}s"), &f, proof_len);
    }
    if !bench {
        return;
    }
    match anvil_bin() {
        None => println!("anvil not installed (scripts/setup-test-deps.sh): skipping the anvil cross-check"),
        Some(bin) => {
            for window in [0u64, 3600] {
                let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
                let _anvil = Anvil(
                    Command::new(&bin)
                        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--hardfork", "prague", "--silent"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("anvil"),
                );
                let chain = RpcChain::connect(&format!("http://127.0.0.1:{port}")).expect("url");
                while chain.chain_id().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let sub = dir.path().join(format!("anvil-{window}"));
                std::fs::create_dir_all(&sub).expect("dir");
                let f = measure(&chain, &sub, window, n, claims).await;
                report(&format!("anvil 1.7.1, window {window}s"), &f, proof_len);
            }
        }
    }
}
