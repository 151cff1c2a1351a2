//! `proof --epoch N --account 0x…`: the account's payout leaves with their proofs, as JSON a wallet
//! or a script can submit (`to` + `data` is a ready `claim(...)` call).
//!
//! Proofs come from the published `epochs/N/payouts.json` dump, loaded and fully validated first,
//! so a proof is only ever served from a tree whose every node checks out.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::SolCall;
use object_store::ObjectStoreExt;
use tributary_pipeline::Tables;

use crate::contract::TributarySettlement;
use crate::error::{Error, Result};
use crate::leaves::{PayoutCodec, PayoutTree};
use crate::merkle::{StandardDump, StandardMerkleTree};
use crate::settle::epoch_key;

/// One claimable leaf.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeafProof {
    /// Leaf index (the claimed-bitmap bit).
    pub index: U256,
    /// The account paid.
    pub account: Address,
    /// Token base units.
    pub amount: U256,
    /// Sibling hashes, bottom up.
    pub proof: Vec<B256>,
    /// The contract to call.
    pub to: Address,
    /// ABI-encoded `claim(epoch, index, account, amount, proof)`.
    pub data: Bytes,
}

/// The proof document of one account in one epoch.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountProof {
    /// The epoch.
    pub epoch: u64,
    /// Chain id.
    pub chain_id: u64,
    /// Settlement contract.
    pub contract: Address,
    /// Payout root the proofs lead to.
    pub root: B256,
    /// The leaf encoding (`["uint64","uint256","address","uint256"]`).
    pub leaf_encoding: Vec<String>,
    /// The account's leaves.
    pub claims: Vec<LeafProof>,
}

/// Load and validate the published payout tree of `epoch`.
pub async fn load_payout_tree(tables: &Tables, epoch: i64) -> Result<PayoutTree> {
    let key = epoch_key(epoch, "payouts.json");
    let bytes = match tables.warehouse().store().get(&key).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Err(Error::NotSettled(epoch)),
        Err(e) => return Err(e.into()),
    };
    let dump = StandardDump::from_json(&String::from_utf8_lossy(&bytes))?;
    StandardMerkleTree::load(PayoutCodec, &dump)
}

/// The leaves of `account` in `tree`, with proofs and ready calldata for `contract`.
pub fn account_proof(tree: &PayoutTree, epoch: u64, chain_id: u64, contract: Address, account: Address) -> Result<AccountProof> {
    let mut claims = Vec::new();
    for (i, leaf) in tree.values().iter().enumerate() {
        if leaf.account != account {
            continue;
        }
        let proof = tree.proof(i)?;
        let data = TributarySettlement::claimCall {
            epoch: leaf.epoch,
            index: leaf.index,
            account: leaf.account,
            amount: leaf.amount,
            proof: proof.clone(),
        }
        .abi_encode();
        claims.push(LeafProof { index: leaf.index, account, amount: leaf.amount, proof, to: contract, data: data.into() });
    }
    if claims.is_empty() {
        return Err(Error::NoPayoutFor { epoch: epoch as i64, account });
    }
    Ok(AccountProof {
        epoch,
        chain_id,
        contract,
        root: tree.root(),
        leaf_encoding: tree.dump().leaf_encoding,
        claims,
    })
}
