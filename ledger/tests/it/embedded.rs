//! The scenarios on the embedded chain (revm in process, state in SQLite beside the catalog).

use tributary_ledger::chain::AnyChain;
use tributary_ledger::chain::embedded::EmbeddedChain;
use tributary_ledger::keys::{DevKey, dev_signer};
use tributary_ledger::{Chain, store};

use crate::common::{Site, payout_rows, write_payouts};
use crate::scenarios;

fn chain(site: &Site) -> AnyChain {
    AnyChain::open(&site.config.chain, &site.catalog).expect("embedded chain")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchor_and_claim() {
    let site = Site::new(None, 0);
    scenarios::anchor_and_claim(&site, &chain(&site)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veto_blocks_claims() {
    let site = Site::new(None, 3600);
    let AnyChain::Embedded(c) = chain(&site) else { panic!("embedded by default") };
    scenarios::veto_blocks_claims(&site, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_resume() {
    let site = Site::new(None, 0);
    scenarios::crash_and_resume(&site, &chain(&site)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_tampering() {
    let site = Site::new(None, 0);
    scenarios::verify_detects_tampering(&site, &chain(&site)).await;
}

/// Settle and claim in separate "invocations": every handle is dropped and reopened from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_persists_across_processes() {
    let site = Site::new(None, 0);
    write_payouts(&site.tables, &payout_rows(4, 3)).await;
    let root = {
        let c = chain(&site);
        scenarios::settle(&site, &c, 4, None).await.expect("settle").payout_root
    };
    let path = EmbeddedChain::path_beside(site.catalog.path());
    assert!(path.is_file(), "the chain lives beside the catalog: {}", path.display());
    // A new process: reopen the catalog and the chain from their files.
    let catalog = tributary_pipeline::Catalog::open(site.catalog.path()).expect("catalog");
    let c = AnyChain::open(&site.config.chain, &catalog).expect("reopen");
    let d = tributary_ledger::settle::deployment(&c, &catalog, &site.config).await.expect("deployment survives");
    let onchain = tributary_ledger::deploy::view(&c, d.settlement, tributary_ledger::contract::TributarySettlement::rootOfCall { epoch: 4 })
        .await
        .expect("rootOf");
    assert_eq!(onchain, root);
    let (key, _) = tributary_ledger::sender::chain_key(&c).await.expect("key");
    assert!(!store::all_txs(&catalog, &key).expect("txs").is_empty());
    let operator = dev_signer(DevKey::Operator);
    let sender = tributary_ledger::sender::TxSender::new(&c, &catalog, &operator, scenarios::fast_policy()).await.expect("sender");
    let tree = tributary_ledger::proof::load_payout_tree(&site.tables, 4).await.expect("tree");
    let proof = tributary_ledger::proof::account_proof(&tree, 4, c.chain_id().await.expect("id"), d.settlement, crate::common::account(1))
        .expect("proof");
    let report = tributary_ledger::claim::claim(&sender, &d, &proof).await.expect("claim in a later process");
    assert_eq!(report.balance_after - report.balance_before, proof.claims[0].amount);
}

/// The embedded chain validates transactions like a node: bad chain id, replayed nonce, bad bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_chain_refuses_invalid_transactions() {
    use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
    use alloy::eips::eip2718::Encodable2718;
    use alloy::primitives::{Bytes, TxKind, U256};
    use alloy::signers::SignerSync;
    let site = Site::new(None, 0);
    let c = chain(&site);
    let key = dev_signer(DevKey::Spare);
    let sign = |chain_id: u64, nonce: u64| -> Bytes {
        let tx = TxEip1559 {
            chain_id,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: 3_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: TxKind::Call(crate::common::account(7)),
            value: U256::from(5),
            access_list: Default::default(),
            input: Bytes::new(),
        };
        let sig = key.sign_hash_sync(&tx.signature_hash()).expect("sign");
        TxEnvelope::from(tx.into_signed(sig)).encoded_2718().into()
    };
    let good = sign(31337, 0);
    let hash = c.send_raw(&good).await.expect("a valid transfer is mined");
    let receipt = c.receipt(hash).await.expect("receipt").expect("mined");
    assert!(receipt.success);
    assert_eq!(receipt.gas_used, 21_000);
    assert_eq!(c.balance(crate::common::account(7)).await.expect("balance"), U256::from(5));
    assert_eq!(c.send_raw(&good).await.expect("re-sending known bytes is fine"), hash);
    assert!(matches!(c.send_raw(&sign(31337, 0)).await, Ok(h) if h == hash), "identical signature bytes");
    assert!(matches!(c.send_raw(&sign(1, 1)).await, Err(tributary_ledger::Error::Rejected(_))), "wrong chain id");
    assert!(matches!(c.send_raw(&sign(31337, 5)).await, Err(tributary_ledger::Error::Rejected(_))), "nonce gap");
    assert!(matches!(c.send_raw(&Bytes::from_static(b"\x02junk")).await, Err(tributary_ledger::Error::Rejected(_))));
}
