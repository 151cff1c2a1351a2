//! Settlement scenarios written once against the `Chain` trait and run on both backends
//! (`embedded.rs` and `anvil.rs` call them).

use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use tributary_ledger::chain::{Chain, DevChain};
use tributary_ledger::contract::{RewardToken, TributarySettlement};
use tributary_ledger::deploy::{Deployment, view};
use tributary_ledger::keys::{DevKey, dev_signer};
use tributary_ledger::proof::{account_proof, load_payout_tree};
use tributary_ledger::sender::{Failpoint, SendPolicy, TxRequest, TxSender};
use tributary_ledger::settle::{SettleBuilder, SettleReceipt, deployment};
use tributary_ledger::{Error, Result, claim, store, verify};

use crate::common::{Site, account, influence_rows, payout_rows, write_influence, write_payouts};

/// Short timeouts so tests do not wait long for bumps.
pub fn fast_policy() -> SendPolicy {
    SendPolicy { confirmations: 1, resend_after: Duration::from_secs(1), max_fee_multiplier: 4.0, poll: Duration::from_millis(50) }
}

pub async fn settle<C: Chain>(site: &Site, chain: &C, epoch: i64, failpoint: Option<Failpoint>) -> Result<SettleReceipt> {
    SettleBuilder::new(site.config.clone(), site.tables.clone(), &site.catalog, chain, dev_signer(DevKey::Operator), epoch)
        .with_policy(fast_policy())
        .with_failpoint(failpoint)
        .execute()
        .await
}

async fn sender<'a, C: Chain>(site: &'a Site, chain: &'a C, key: &'a PrivateKeySigner) -> TxSender<'a, C> {
    TxSender::new(chain, &site.catalog, key, fast_policy()).await.expect("sender")
}

fn assert_reverted<T: std::fmt::Debug>(r: Result<T>, needle: &str) {
    match r {
        Err(Error::Reverted { reason, .. }) => assert!(reason.contains(needle), "expected {needle}, got revert {reason}"),
        other => panic!("expected a revert with {needle}, got {other:?}"),
    }
}

async fn token_balance<C: Chain>(chain: &C, d: &Deployment, who: Address) -> U256 {
    view(chain, d.token, RewardToken::balanceOfCall { account: who }).await.expect("balanceOf")
}

#[expect(clippy::too_many_arguments, reason = "a claim's own fields, passed as the contract takes them")]
async fn raw_claim<C: Chain>(
    s: &TxSender<'_, C>,
    d: &Deployment,
    purpose: &str,
    epoch: u64,
    index: U256,
    account: Address,
    amount: U256,
    proof: Vec<B256>,
) -> Result<()> {
    let data = TributarySettlement::claimCall { epoch, index, account, amount, proof }.abi_encode();
    s.send(purpose, &TxRequest { to: Some(d.settlement), data: data.into(), value: U256::ZERO }).await.map(|_| ())
}

/// Anchor; same epoch again reverts; unauthorized key reverts; claim pays once; a second claim
/// reverts; wrong amount / index / account / proof revert; anyone may claim for an account.
pub async fn anchor_and_claim<C: Chain>(site: &Site, chain: &C) {
    write_payouts(&site.tables, &payout_rows(1, 6)).await;
    write_influence(&site.tables, &influence_rows(1, 25, "tracin")).await;
    let r = settle(site, chain, 1, None).await.expect("settle epoch 1");
    assert!(!r.already_anchored);
    assert_eq!(r.payout_leaves, 6);
    assert_eq!(r.attribution_leaves, 25);
    assert_ne!(r.attribution_root, B256::ZERO);
    assert_eq!(r.total, (U256::from(21u64) * U256::from(10u64).pow(U256::from(18))).to_string());
    let d = deployment(chain, &site.catalog, &site.config).await.expect("deployment recorded");
    let onchain = view(chain, d.settlement, TributarySettlement::rootOfCall { epoch: 1 }).await.expect("rootOf");
    assert_eq!(onchain, r.payout_root, "the payout root is anchored");
    for f in ["payouts.json", "attribution.json", "receipt.json"] {
        assert!(site.warehouse_dir().join("epochs/1").join(f).is_file(), "epochs/1/{f} written");
    }
    // The contract holds the epoch's total, pulled from the operator.
    assert_eq!(token_balance(chain, &d, d.settlement).await, r.total.parse::<U256>().expect("total"));

    // Settling again sends nothing.
    let (chain_key, _) = tributary_ledger::sender::chain_key(chain).await.expect("key");
    let before = store::all_txs(&site.catalog, &chain_key).expect("txs").len();
    let nonce = chain.mined_nonce(dev_signer(DevKey::Operator).address()).await.expect("nonce");
    let again = settle(site, chain, 1, None).await.expect("settle again");
    assert!(again.already_anchored, "second settle finds the epoch anchored");
    assert_eq!(again.payout_root, r.payout_root);
    assert_eq!(store::all_txs(&site.catalog, &chain_key).expect("txs").len(), before, "no new transaction recorded");
    assert_eq!(chain.mined_nonce(dev_signer(DevKey::Operator).address()).await.expect("nonce"), nonce, "nothing sent");

    // Re-anchoring the same epoch reverts, even with another root.
    let operator = dev_signer(DevKey::Operator);
    let op = sender(site, chain, &operator).await;
    let reanchor = TributarySettlement::anchorCall {
        epoch: 1,
        payoutRoot: B256::repeat_byte(1),
        attributionRoot: B256::ZERO,
        total: U256::ZERO,
        datasetVersion: U256::ZERO,
    }
    .abi_encode();
    assert_reverted(
        op.send("test:reanchor", &TxRequest { to: Some(d.settlement), data: reanchor.into(), value: U256::ZERO }).await,
        "EpochNotIncreasing",
    );
    // An account without OPERATOR_ROLE cannot anchor.
    let outsider = dev_signer(DevKey::Outsider);
    let out = sender(site, chain, &outsider).await;
    let unauthorized = TributarySettlement::anchorCall {
        epoch: 2,
        payoutRoot: B256::repeat_byte(2),
        attributionRoot: B256::ZERO,
        total: U256::ZERO,
        datasetVersion: U256::ZERO,
    }
    .abi_encode();
    assert_reverted(
        out.send("test:unauthorized", &TxRequest { to: Some(d.settlement), data: unauthorized.into(), value: U256::ZERO })
            .await,
        "AccessControlUnauthorizedAccount",
    );

    // A claim pays exactly once.
    let tree = load_payout_tree(&site.tables, 1).await.expect("published tree");
    let who = account(2);
    let proof = account_proof(&tree, 1, 31337, d.settlement, who).expect("proof");
    let amount = proof.claims[0].amount;
    let report = claim::claim(&op, &d, &proof).await.expect("claim");
    assert_eq!(report.balance_after - report.balance_before, amount, "the account received its amount");
    assert!(!report.leaves[0].already_claimed);
    assert!(view(chain, d.settlement, TributarySettlement::isClaimedCall { epoch: 1, index: proof.claims[0].index })
        .await
        .expect("isClaimed"));
    let second = claim::claim(&op, &d, &proof).await.expect("second claim is a no-op");
    assert!(second.leaves[0].already_claimed);
    assert_eq!(second.balance_after, report.balance_after, "nothing paid twice");
    let leaf = &proof.claims[0];
    assert_reverted(
        raw_claim(&out, &d, "test:claim-twice", 1, leaf.index, who, leaf.amount, leaf.proof.clone()).await,
        "AlreadyClaimed",
    );

    // Wrong amount, index, account or proof: InvalidProof.
    let other = account_proof(&tree, 1, 31337, d.settlement, account(4)).expect("proof");
    let l = other.claims[0].clone();
    assert_reverted(
        raw_claim(&out, &d, "test:wrong-amount", 1, l.index, l.account, l.amount + U256::from(1), l.proof.clone()).await,
        "InvalidProof",
    );
    assert_reverted(
        raw_claim(&out, &d, "test:wrong-index", 1, l.index + U256::from(1), l.account, l.amount, l.proof.clone()).await,
        "InvalidProof",
    );
    assert_reverted(
        raw_claim(&out, &d, "test:wrong-account", 1, l.index, account(5), l.amount, l.proof.clone()).await,
        "InvalidProof",
    );
    let mut bad = l.proof.clone();
    bad[0] = B256::repeat_byte(0xab);
    assert_reverted(raw_claim(&out, &d, "test:wrong-proof", 1, l.index, l.account, l.amount, bad).await, "InvalidProof");
    assert_reverted(
        raw_claim(&out, &d, "test:unanchored", 9, l.index, l.account, l.amount, l.proof.clone()).await,
        "EpochNotAnchored",
    );

    // Anyone may claim on the account's behalf; the tokens go to the account.
    let before = token_balance(chain, &d, l.account).await;
    raw_claim(&out, &d, "test:on-behalf", 1, l.index, l.account, l.amount, l.proof.clone()).await.expect("claim for account 4");
    assert_eq!(token_balance(chain, &d, l.account).await - before, l.amount);
    assert_eq!(token_balance(chain, &d, outsider.address()).await, U256::ZERO, "the caller got nothing");

    // The next epoch anchors; an older one no longer can.
    write_payouts(&site.tables, &payout_rows(3, 2)).await;
    settle(site, chain, 3, None).await.expect("epoch 3");
    write_payouts(&site.tables, &payout_rows(2, 2)).await;
    match settle(site, chain, 2, None).await {
        Err(Error::EpochNotIncreasing { epoch: 2, next: 4 }) => {}
        other => panic!("epoch 2 after 3 must be refused, got {other:?}"),
    }
}

/// With a challenge window, claims wait; a guardian veto blocks the epoch for good and returns its
/// total to the contract's credit, which funds the next epoch.
pub async fn veto_blocks_claims<C: DevChain>(site: &Site, chain: &C) {
    assert!(site.config.chain.challenge_window_secs >= 3600);
    write_payouts(&site.tables, &payout_rows(1, 4)).await;
    let r = settle(site, chain, 1, None).await.expect("settle epoch 1");
    let d = deployment(chain, &site.catalog, &site.config).await.expect("deployment");
    assert_eq!(d.challenge_window, site.config.chain.challenge_window_secs);
    let operator = dev_signer(DevKey::Operator);
    let op = sender(site, chain, &operator).await;
    let tree = load_payout_tree(&site.tables, 1).await.expect("tree");
    let proof = account_proof(&tree, 1, 31337, d.settlement, account(0)).expect("proof");
    match claim::claim(&op, &d, &proof).await {
        Err(Error::Reverted { reason, .. }) => assert!(reason.contains("ChallengeWindowOpen"), "{reason}"),
        other => panic!("claim inside the window must revert, got {other:?}"),
    }
    let veto = |epoch: u64| TxRequest {
        to: Some(d.settlement),
        data: TributarySettlement::vetoCall { epoch }.abi_encode().into(),
        value: U256::ZERO,
    };
    let outsider = dev_signer(DevKey::Outsider);
    assert_reverted(sender(site, chain, &outsider).await.send("test:veto-outsider", &veto(1)).await, "AccessControlUnauthorizedAccount");
    let guardian = dev_signer(DevKey::Guardian);
    let g = sender(site, chain, &guardian).await;
    g.send("test:veto", &veto(1)).await.expect("guardian vetoes inside the window");
    let info = view(chain, d.settlement, TributarySettlement::epochInfoCall { epoch: 1 }).await.expect("info");
    assert!(info.vetoed);
    let credit = view(chain, d.settlement, TributarySettlement::creditCall {}).await.expect("credit");
    assert_eq!(U256::from(credit), r.total.parse::<U256>().expect("total"), "the vetoed total is credited back");

    chain.increase_time(3601).await.expect("time");
    chain.mine().await.expect("mine");
    match claim::claim(&op, &d, &proof).await {
        Err(Error::Reverted { reason, .. }) => assert!(reason.contains("EpochVetoed"), "{reason}"),
        other => panic!("a vetoed epoch never pays, got {other:?}"),
    }
    assert_reverted(g.send("test:veto-late", &veto(1)).await, "EpochVetoed");
    match settle(site, chain, 1, None).await {
        Err(Error::Vetoed(1)) => {}
        other => panic!("re-settling a vetoed epoch must alarm, got {other:?}"),
    }

    // Epoch 2 is funded from the credit (no pull) and pays after its window.
    write_payouts(&site.tables, &payout_rows(2, 2)).await;
    let op_balance = token_balance(chain, &d, operator.address()).await;
    let r2 = settle(site, chain, 2, None).await.expect("settle epoch 2");
    assert_eq!(token_balance(chain, &d, operator.address()).await, op_balance, "funded from credit, nothing pulled");
    let credit = view(chain, d.settlement, TributarySettlement::creditCall {}).await.expect("credit");
    assert_eq!(U256::from(credit), r.total.parse::<U256>().expect("t1") - r2.total.parse::<U256>().expect("t2"));
    let tree2 = load_payout_tree(&site.tables, 2).await.expect("tree 2");
    let proof2 = account_proof(&tree2, 2, 31337, d.settlement, account(1)).expect("proof");
    assert_reverted(claim::claim(&op, &d, &proof2).await, "ChallengeWindowOpen");
    chain.increase_time(3601).await.expect("time");
    chain.mine().await.expect("mine");
    let paid = claim::claim(&op, &d, &proof2).await.expect("claim after the window");
    assert_eq!(paid.balance_after - paid.balance_before, proof2.claims[0].amount);
}

/// A crash between signing and sending, then a resume: the recorded bytes are sent once, no
/// second signature, one nonce used. Same for a crash right after sending.
pub async fn crash_and_resume<C: Chain>(site: &Site, chain: &C) {
    write_payouts(&site.tables, &payout_rows(1, 3)).await;
    let operator = dev_signer(DevKey::Operator).address();
    let crashed = settle(site, chain, 1, Some(Failpoint::AfterSign("anchor:".into()))).await;
    assert!(matches!(crashed, Err(Error::Failpoint("after_sign"))), "{crashed:?}");
    let d = deployment(chain, &site.catalog, &site.config).await.expect("deployed before the crash");
    assert_eq!(view(chain, d.settlement, TributarySettlement::rootOfCall { epoch: 1 }).await.expect("root"), B256::ZERO);
    let (key, _) = tributary_ledger::sender::chain_key(chain).await.expect("key");
    let purpose = format!("anchor:{}:1", d.settlement);
    let recorded = store::attempts(&site.catalog, &key, &purpose).expect("attempts");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].state, "signed", "recorded before sending");
    let nonce = chain.mined_nonce(operator).await.expect("nonce");
    assert_eq!(recorded[0].nonce, nonce, "the recorded nonce is the next one, still unused");

    let r = settle(site, chain, 1, None).await.expect("resume");
    assert_eq!(r.tx_hash, Some(recorded[0].tx_hash), "the resumed settlement sent the recorded bytes");
    let after = store::attempts(&site.catalog, &key, &purpose).expect("attempts");
    assert_eq!(after.len(), 1, "nothing re-signed");
    assert_eq!(after[0].state, "final");
    assert_eq!(chain.mined_nonce(operator).await.expect("nonce"), nonce + 1, "exactly one transaction sent");

    // Crash right after sending: the resume finds it on chain and sends nothing more.
    write_payouts(&site.tables, &payout_rows(2, 3)).await;
    let nonce = chain.mined_nonce(operator).await.expect("nonce");
    let crashed = settle(site, chain, 2, Some(Failpoint::AfterSend("anchor:".into()))).await;
    assert!(matches!(crashed, Err(Error::Failpoint("after_send"))), "{crashed:?}");
    let r2 = settle(site, chain, 2, None).await.expect("resume after send");
    let purpose2 = format!("anchor:{}:2", d.settlement);
    let attempts2 = store::attempts(&site.catalog, &key, &purpose2).expect("attempts");
    assert_eq!(attempts2.len(), 1);
    assert_eq!(r2.tx_hash, Some(attempts2[0].tx_hash));
    assert_eq!(chain.mined_nonce(operator).await.expect("nonce"), nonce + 1, "one transaction for epoch 2");
}

/// `epoch verify` passes on an honest epoch and fails when a table row is tampered with: through a
/// later Delta commit (an UPDATE of the settled epoch) or by rewriting the data file in place.
pub async fn verify_detects_tampering<C: Chain>(site: &Site, chain: &C) {
    write_payouts(&site.tables, &payout_rows(1, 5)).await;
    write_influence(&site.tables, &influence_rows(1, 12, "tracin")).await;
    settle(site, chain, 1, None).await.expect("settle");
    let d = deployment(chain, &site.catalog, &site.config).await.expect("deployment");
    let report = verify::verify_epoch(&site.tables, &site.catalog, chain, &d, 1).await.expect("verify");
    assert!(report.ok, "an honest epoch verifies: {:#?}", report.checks);

    // A row changed by a later commit: the recorded versions still match, the latest does not.
    let table = site.tables.open(&tributary_pipeline::tables::defs::gold_epoch_payouts().id).await.expect("open").expect("exists");
    let (_table, _) = table
        .update()
        .with_predicate("\"index\" = 2")
        .with_update("amount", "'999000000000000000000'")
        .await
        .expect("delta update");
    let report = verify::verify_epoch(&site.tables, &site.catalog, chain, &d, 1).await.expect("verify");
    assert!(!report.ok, "the tampered row is detected");
    let failed: Vec<_> = report.checks.iter().filter(|c| !c.ok).map(|c| c.name.clone()).collect();
    assert!(failed.iter().any(|n| n.contains("latest")), "{failed:?}");
    assert!(
        report.checks.iter().filter(|c| c.name.contains("recorded versions")).all(|c| c.ok),
        "history is intact: {:#?}",
        report.checks
    );

    // The data file read at the recorded version rewritten in place: the recorded history fails.
    crate::tamper::rewrite_amounts(&site.warehouse_dir().join("tables/gold/epoch_payouts"));
    let report = verify::verify_epoch(&site.tables, &site.catalog, chain, &d, 1).await.expect("verify");
    assert!(!report.ok);
    assert!(
        report.checks.iter().any(|c| !c.ok && c.name.contains("recorded versions")),
        "rewriting history is detected: {:#?}",
        report.checks
    );
}
