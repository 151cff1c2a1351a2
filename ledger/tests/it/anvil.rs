//! The scenarios on a real node: anvil from npm `@foundry-rs/anvil`, on 127.0.0.1, a fresh one per test.

use std::time::{Duration, Instant};

use alloy::primitives::B256;
use tributary_ledger::contract::TributarySettlement;
use tributary_ledger::deploy::view;
use tributary_ledger::sender::Failpoint;
use tributary_ledger::settle::deployment;
use tributary_ledger::chain::DevChain;
use tributary_ledger::store;

use crate::common::{Anvil, Site, payout_rows, write_payouts};
use crate::scenarios::{self, settle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchor_and_claim() {
    let anvil = Anvil::start(None).await;
    let site = Site::new(Some(&anvil.url()), 0);
    scenarios::anchor_and_claim(&site, &anvil.chain()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veto_blocks_claims() {
    let anvil = Anvil::start(None).await;
    let site = Site::new(Some(&anvil.url()), 3600);
    scenarios::veto_blocks_claims(&site, &anvil.chain()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_resume() {
    let anvil = Anvil::start(None).await;
    let site = Site::new(Some(&anvil.url()), 0);
    scenarios::crash_and_resume(&site, &anvil.chain()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_tampering() {
    let anvil = Anvil::start(None).await;
    let site = Site::new(Some(&anvil.url()), 0);
    scenarios::verify_detects_tampering(&site, &anvil.chain()).await;
}

/// Mining paused: the anchor sits in the pool, the sender re-signs it with bumped fees (same
/// nonce, both fee fields +12.5% or more, under the cap), and the replacement is what gets mined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_transaction_gets_a_fee_bump() {
    let anvil = Anvil::start(None).await;
    let site = Site::new(Some(&anvil.url()), 0);
    let chain = anvil.chain();
    write_payouts(&site.tables, &payout_rows(1, 3)).await;
    settle(&site, &chain, 1, None).await.expect("epoch 1 deploys and anchors with automine on");
    let d = deployment(&chain, &site.catalog, &site.config).await.expect("deployment");
    let (key, _) = tributary_ledger::sender::chain_key(&chain).await.expect("key");
    let purpose = format!("anchor:{}:2", d.settlement);

    chain.set_automine(false).await.expect("pause mining");
    write_payouts(&site.tables, &payout_rows(2, 3)).await;
    let task = {
        let url = anvil.url();
        let config = site.config.clone();
        let tables = site.tables.clone();
        let catalog_path = site.catalog.path().to_path_buf();
        tokio::spawn(async move {
            let catalog = tributary_pipeline::Catalog::open(&catalog_path).expect("catalog");
            let chain = tributary_ledger::chain::rpc::RpcChain::connect(&url).expect("url");
            tributary_ledger::SettleBuilder::new(
                config,
                tables,
                &catalog,
                &chain,
                tributary_ledger::keys::dev_signer(tributary_ledger::keys::DevKey::Operator),
                2,
            )
            .with_policy(scenarios::fast_policy())
            .execute()
            .await
        })
    };
    // Wait until a replacement has been signed and sent, then mine.
    let t = Instant::now();
    loop {
        let attempts = store::attempts(&site.catalog, &key, &purpose).expect("attempts");
        if attempts.len() >= 2 && attempts.iter().all(|a| a.state != "signed") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no fee bump after 60 s: {attempts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = chain.txpool_content().await.expect("txpool");
    assert!(pool.to_string().contains(&format!("{}", d.settlement).to_lowercase()[2..]), "the anchor is pending: {pool}");
    chain.mine().await.expect("mine");
    let r = task.await.expect("join").expect("settle completes once mined");
    let attempts = store::attempts(&site.catalog, &key, &purpose).expect("attempts");
    assert!(attempts.len() >= 2);
    let (first, mined) = (&attempts[0], attempts.iter().find(|a| a.state == "final").expect("one final attempt"));
    assert!(mined.attempt >= 1, "a bumped replacement was mined");
    assert_eq!(r.tx_hash, Some(mined.tx_hash));
    assert!(attempts.iter().all(|a| a.nonce == first.nonce), "replacements reuse the nonce");
    for w in attempts.windows(2) {
        assert!(w[1].max_fee * 1000 >= w[0].max_fee * 1125, "maxFeePerGas bumped >= 12.5%: {w:?}");
        assert!(w[1].priority_fee * 1000 >= w[0].priority_fee * 1125, "priority fee bumped >= 12.5%");
    }
    assert!(attempts.iter().all(|a| a.max_fee <= first.max_fee * 4), "fees stay under the cap");
    assert!(attempts.iter().filter(|a| a.state == "dropped").count() == attempts.len() - 1);
    assert_eq!(
        view(&chain, d.settlement, TributarySettlement::rootOfCall { epoch: 2 }).await.expect("root"),
        r.payout_root
    );
}

/// anvil restarted mid-settlement (its pool lost, its state kept): the resumed settlement finds
/// no root and re-sends the very same signed bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anvil_restarted_mid_settlement() {
    let state_dir = tempfile::tempdir().expect("tempdir");
    let state = state_dir.path().join("anvil-state.json");
    let mut anvil = Anvil::start(Some(&state)).await;
    let site = Site::new(Some(&anvil.url()), 0);
    write_payouts(&site.tables, &payout_rows(1, 3)).await;
    settle(&site, &anvil.chain(), 1, None).await.expect("epoch 1");
    let (key, _) = tributary_ledger::sender::chain_key(&anvil.chain()).await.expect("key");

    // Epoch 2 is signed and sent while mining is paused, then the node goes down.
    anvil.chain().set_automine(false).await.expect("pause mining");
    write_payouts(&site.tables, &payout_rows(2, 3)).await;
    let crashed = settle(&site, &anvil.chain(), 2, Some(Failpoint::AfterSend("anchor:".into()))).await;
    assert!(matches!(crashed, Err(tributary_ledger::Error::Failpoint("after_send"))), "{crashed:?}");
    anvil.restart().await;
    let chain = anvil.chain();
    let (key_after, _) = tributary_ledger::sender::chain_key(&chain).await.expect("key");
    assert_eq!(key_after, key, "the restarted anvil is the same chain (state file)");
    let d = deployment(&chain, &site.catalog, &site.config).await.expect("contract survived the restart");
    assert_eq!(view(&chain, d.settlement, TributarySettlement::rootOfCall { epoch: 2 }).await.expect("root"), B256::ZERO);

    let r = settle(&site, &chain, 2, None).await.expect("resume after the restart");
    let attempts = store::attempts(&site.catalog, &key, &format!("anchor:{}:2", d.settlement)).expect("attempts");
    assert_eq!(attempts.len(), 1, "the same bytes were re-sent, nothing re-signed");
    assert_eq!(r.tx_hash, Some(attempts[0].tx_hash));
    assert_eq!(view(&chain, d.settlement, TributarySettlement::rootOfCall { epoch: 2 }).await.expect("root"), r.payout_root);
}
