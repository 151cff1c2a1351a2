//! `claim --epoch N --account 0x…`: submit the account's unclaimed payout leaves.
//!
//! Anyone may claim on an account's behalf (the tokens always go to the account); the CLI uses the
//! operator key to pay the gas. Each leaf is its own purpose in the crash-safe sender, so a claim
//! interrupted mid-way resumes without submitting a leaf twice, and a leaf already claimed on
//! chain is skipped without a transaction.

use alloy::primitives::{Address, B256, U256};
use alloy::sol_types::SolCall;

use crate::chain::Chain;
use crate::contract::{RewardToken, TributarySettlement};
use crate::deploy::{self, Deployment};
use crate::error::Result;
use crate::proof::AccountProof;
use crate::sender::{TxRequest, TxSender};

/// One leaf's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClaimedLeaf {
    /// Leaf index.
    pub index: U256,
    /// Amount paid.
    pub amount: U256,
    /// The claim transaction (`None` if the leaf was already claimed before this run).
    pub tx_hash: Option<B256>,
    /// Gas it used.
    pub gas_used: Option<u64>,
    /// True if it was already claimed on chain (nothing sent).
    pub already_claimed: bool,
}

/// What `claim` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClaimReport {
    /// The epoch.
    pub epoch: u64,
    /// The account paid.
    pub account: Address,
    /// The reward token.
    pub token: Address,
    /// Token balance before.
    pub balance_before: U256,
    /// Token balance after.
    pub balance_after: U256,
    /// Each leaf.
    pub leaves: Vec<ClaimedLeaf>,
}

/// Claim every unclaimed leaf of `proof` (built by [`crate::proof::account_proof`]).
pub async fn claim<C: Chain>(sender: &TxSender<'_, C>, deployment: &Deployment, proof: &AccountProof) -> Result<ClaimReport> {
    let chain = sender.chain();
    let balance = |who: Address| deploy::view(chain, deployment.token, RewardToken::balanceOfCall { account: who });
    let balance_before = balance(proof.claims[0].account).await?;
    let mut leaves = Vec::new();
    for leaf in &proof.claims {
        let done = deploy::view(
            chain,
            deployment.settlement,
            TributarySettlement::isClaimedCall { epoch: proof.epoch, index: leaf.index },
        )
        .await?;
        let purpose = format!("claim:{}:{}:{}", deployment.settlement, proof.epoch, leaf.index);
        if done {
            // Claimed earlier (by this tool or anyone else): resume our own record if there is one.
            let ours = sender.resume(&purpose).await.ok().flatten();
            leaves.push(ClaimedLeaf {
                index: leaf.index,
                amount: leaf.amount,
                tx_hash: ours.as_ref().map(|c| c.receipt.tx_hash),
                gas_used: ours.as_ref().map(|c| c.receipt.gas_used),
                already_claimed: true,
            });
            continue;
        }
        let data = TributarySettlement::claimCall {
            epoch: proof.epoch,
            index: leaf.index,
            account: leaf.account,
            amount: leaf.amount,
            proof: leaf.proof.clone(),
        }
        .abi_encode();
        let c = sender.send(&purpose, &TxRequest { to: Some(deployment.settlement), data: data.into(), value: U256::ZERO }).await?;
        leaves.push(ClaimedLeaf {
            index: leaf.index,
            amount: leaf.amount,
            tx_hash: Some(c.receipt.tx_hash),
            gas_used: Some(c.receipt.gas_used),
            already_claimed: false,
        });
    }
    let balance_after = balance(proof.claims[0].account).await?;
    Ok(ClaimReport { epoch: proof.epoch, account: proof.claims[0].account, token: deployment.token, balance_before, balance_after, leaves })
}
