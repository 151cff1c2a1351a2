//! `epoch status [N]`: what the catalog recorded for each settlement, checked against the chain.

use alloy::primitives::{Address, B256};
use tributary_pipeline::Catalog;

use crate::chain::Chain;
use crate::contract::TributarySettlement;
use crate::deploy::{self, Deployment};
use crate::error::Result;
use crate::store::{self, SettlementRecord};

/// The status of one epoch's settlement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochStatus {
    /// The catalog's record.
    #[serde(flatten)]
    pub record: SettlementRecord,
    /// `rootOf(epoch)` on chain.
    pub onchain_root: B256,
    /// Whether it equals the recorded payout root.
    pub root_matches: bool,
    /// When claims open (unix seconds; 0 without a challenge window).
    pub claimable_at: u64,
    /// Whether a guardian vetoed it.
    pub vetoed: bool,
    /// Whether claims are open now (anchored, not vetoed, window passed).
    pub claimable_now: bool,
}

/// The settlement contract and the status of `epoch` (or of every recorded epoch, newest first).
pub async fn epoch_status<C: Chain>(
    chain: &C,
    catalog: &Catalog,
    deployment: &Deployment,
    epoch: Option<i64>,
) -> Result<(Address, Vec<EpochStatus>)> {
    store::migrate(catalog)?;
    let records = match epoch {
        Some(e) => store::settlement(catalog, deployment.settlement, e)?.into_iter().collect(),
        None => store::settlements(catalog, deployment.settlement)?,
    };
    let now = chain.block_timestamp().await?;
    let mut out = Vec::new();
    for record in records {
        let e = u64::try_from(record.epoch).unwrap_or_default();
        let info = deploy::view(chain, deployment.settlement, TributarySettlement::epochInfoCall { epoch: e }).await?;
        let anchored = info.payoutRoot != B256::ZERO;
        out.push(EpochStatus {
            root_matches: info.payoutRoot == record.payout_root,
            onchain_root: info.payoutRoot,
            claimable_at: info.claimableAt,
            vetoed: info.vetoed,
            claimable_now: anchored && !info.vetoed && now >= info.claimableAt,
            record,
        });
    }
    Ok((deployment.settlement, out))
}
