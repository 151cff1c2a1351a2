//! `epoch verify N`: recompute both roots from the tables at the recorded versions and compare
//! them with the chain. Anyone with read access to the warehouse and the chain can run it.
//!
//! The recorded versions come from the published `epochs/N/receipt.json` (falling back to the ops
//! catalog). Checks: the recomputed payout root equals `rootOf(N)`; the recomputed attribution
//! root, total and dataset version equal those of the `Anchored` event; the published dumps load,
//! validate and carry the same roots; and the epoch's rows at the *latest* table versions still
//! give the anchored roots (a row rewritten after settlement is flagged, even through Delta).

use alloy::primitives::{B256, U256};
use alloy::sol_types::SolEvent;
use object_store::ObjectStoreExt;
use tributary_pipeline::{Catalog, Tables};

use crate::chain::{Chain, LogFilter};
use crate::contract::TributarySettlement;
use crate::deploy::{self, Deployment};
use crate::error::{Error, Result};
use crate::leaves::{AttributionCodec, PayoutCodec};
use crate::merkle::{StandardDump, StandardMerkleTree};
use crate::settle::{SettlementPlan, dataset_version, epoch_key};
use crate::store;

/// One check of a verification.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// What it found (or why it could not check).
    pub detail: String,
}

/// The outcome of `epoch verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// The epoch.
    pub epoch: i64,
    /// The settlement contract.
    pub contract: alloy::primitives::Address,
    /// Table versions the roots were recomputed from.
    pub payouts_version: i64,
    /// See `payouts_version`.
    pub influence_version: i64,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// True when every check held.
    pub ok: bool,
}

#[derive(Debug, serde::Deserialize)]
struct PublishedReceipt {
    table_versions: std::collections::BTreeMap<String, i64>,
    attribution_method: Option<String>,
}

fn check(name: &str, ok: bool, detail: String) -> Check {
    Check { name: name.into(), ok, detail }
}

fn cmp(name: &str, expected: impl std::fmt::Display, actual: impl std::fmt::Display) -> Check {
    let (e, a) = (expected.to_string(), actual.to_string());
    let ok = e == a;
    check(name, ok, if ok { e } else { format!("expected {e}, found {a}") })
}

/// Verify epoch `epoch` (see the module docs).
pub async fn verify_epoch<C: Chain>(
    tables: &Tables,
    catalog: &Catalog,
    chain: &C,
    deployment: &Deployment,
    epoch: i64,
) -> Result<VerifyReport> {
    let epoch_u = u64::try_from(epoch).map_err(|_| Error::InvalidInput(format!("epoch {epoch} is negative")))?;
    let store_ = tables.warehouse().store();
    // Recorded versions: the published receipt, else the catalog.
    let published = match store_.get(&epoch_key(epoch, "receipt.json")).await {
        Ok(r) => Some(serde_json::from_slice::<PublishedReceipt>(&r.bytes().await?)?),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let (pv, iv, method) = match published {
        Some(p) => (
            p.table_versions.get("gold.epoch_payouts").copied().unwrap_or(0),
            p.table_versions.get("gold.example_influence").copied().unwrap_or(0),
            p.attribution_method,
        ),
        None => {
            store::migrate(catalog)?;
            let r = store::settlement(catalog, deployment.settlement, epoch)?.ok_or(Error::NotSettled(epoch))?;
            (r.payouts_version, r.influence_version, r.attribution_method)
        }
    };
    let mut checks = Vec::new();

    // On chain: the payout root in storage, the rest in the Anchored event.
    let onchain = deploy::view(chain, deployment.settlement, TributarySettlement::epochInfoCall { epoch: epoch_u }).await?;
    let events = chain
        .logs(&LogFilter {
            address: deployment.settlement,
            topic0: TributarySettlement::Anchored::SIGNATURE_HASH,
            topic1: Some(B256::from(U256::from(epoch_u))),
            from_block: 0,
        })
        .await?;
    let anchored = events
        .last()
        .map(|e| TributarySettlement::Anchored::decode_log_data(&e.log.data))
        .transpose()
        .map_err(|e| Error::Rpc(format!("decoding Anchored event: {e}")))?;
    checks.push(check(
        "epoch anchored on chain",
        onchain.payoutRoot != B256::ZERO && anchored.is_some(),
        format!("rootOf({epoch}) = {}", onchain.payoutRoot),
    ));
    if onchain.vetoed {
        checks.push(check("not vetoed", false, "a guardian vetoed this epoch".into()));
    }

    // Recompute at the recorded versions.
    match SettlementPlan::build(tables, epoch, Some((pv, iv)), method.as_deref()).await {
        Ok(plan) => {
            checks.push(cmp("payout root (tables at recorded versions) = rootOf", onchain.payoutRoot, plan.payout_root()));
            if let Some(ev) = &anchored {
                checks.push(cmp("attribution root = Anchored.attributionRoot", ev.attributionRoot, plan.attribution_root()));
                checks.push(cmp("total = Anchored.total", ev.total, plan.total));
                checks.push(cmp(
                    "dataset version = Anchored.datasetVersion",
                    ev.datasetVersion,
                    dataset_version(plan.payouts_version, plan.influence_version),
                ));
            }
            checks.push(dump_check(tables, epoch, "payouts.json", plan.payout_root(), true).await);
            checks.push(dump_check(tables, epoch, "attribution.json", plan.attribution_root(), false).await);
        }
        Err(e) => checks.push(check("tables readable at the recorded versions", false, e.to_string())),
    }

    // The epoch's rows at the latest versions (catches a row rewritten through a later commit).
    match SettlementPlan::build(tables, epoch, None, method.as_deref()).await {
        Ok(latest) => {
            checks.push(cmp("payout root at the latest table version = rootOf", onchain.payoutRoot, latest.payout_root()));
            if let Some(ev) = &anchored {
                checks.push(cmp(
                    "attribution root at the latest table version = anchored",
                    ev.attributionRoot,
                    latest.attribution_root(),
                ));
            }
        }
        Err(e) => checks.push(check("tables readable at the latest versions", false, e.to_string())),
    }
    let ok = checks.iter().all(|c| c.ok);
    Ok(VerifyReport { epoch, contract: deployment.settlement, payouts_version: pv, influence_version: iv, checks, ok })
}

async fn dump_check(tables: &Tables, epoch: i64, name: &str, root: B256, required: bool) -> Check {
    let label = format!("published {name} validates with the recomputed root");
    let got = match tables.warehouse().store().get(&epoch_key(epoch, name)).await {
        Ok(r) => r.bytes().await,
        Err(object_store::Error::NotFound { .. }) if !required && root == B256::ZERO => {
            return check(&label, true, "no attribution rows, no dump".into());
        }
        Err(e) => Err(e),
    };
    let text = match got {
        Ok(b) => String::from_utf8_lossy(&b).to_string(),
        Err(e) => return check(&label, false, e.to_string()),
    };
    let loaded = StandardDump::from_json(&text).and_then(|d| {
        if name == "payouts.json" {
            StandardMerkleTree::load(PayoutCodec, &d).map(|t| t.root())
        } else {
            StandardMerkleTree::load(AttributionCodec, &d).map(|t| t.root())
        }
    });
    match loaded {
        Ok(r) => cmp(&label, root, r),
        Err(e) => check(&label, false, e.to_string()),
    }
}
