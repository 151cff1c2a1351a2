//! `epoch settle N`: build the payout and attribution trees, publish their dumps, anchor the roots.
//!
//! [`SettleBuilder::plan`] reads the tables (recording the Delta versions it read) and builds both
//! trees without touching a chain — the dry run. [`SettleBuilder::execute`] then:
//!
//! 1. records the plan in the ops catalog the first time; on any later run it rebuilds the trees
//!    from the *recorded* versions and refuses to continue if the roots differ;
//! 2. writes `epochs/N/payouts.json` and `epochs/N/attribution.json` (`standard-v1` dumps);
//! 3. reads `rootOf(N)` on chain: our root → already anchored, nothing is sent; another non-zero
//!    root → [`Error::RootMismatch`] (an alarm: a human must look); zero → anchor, through the
//!    crash-safe [`TxSender`] (which re-sends recorded bytes after a crash instead of re-signing);
//! 4. writes `epochs/N/receipt.json` and marks the settlement anchored.

use std::sync::Arc;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use object_store::{ObjectStoreExt, PutPayload};
use object_store::path::Path as StorePath;
use tributary_pipeline::storage::prefix;
use tributary_pipeline::{Catalog, Config, Tables};

use crate::chain::Chain;
use crate::contract::TributarySettlement;
use crate::deploy::{self, Deployment};
use crate::error::{Error, Result};
use crate::inputs::{AttributionInput, PayoutInput, read_attribution, read_payouts};
use crate::leaves::{AttributionCodec, AttributionTree, PayoutCodec, PayoutTree};
use crate::merkle::{StandardMerkleTree, TreeOptions};
use crate::sender::{Failpoint, SendPolicy, TxRequest, TxSender};
use crate::store::{self, SettlementRecord};

/// The warehouse key of a file of epoch `epoch` (`epochs/<epoch>/<name>`).
pub fn epoch_key(epoch: i64, name: &str) -> StorePath {
    StorePath::from(format!("{}/{epoch}/{name}", prefix::EPOCHS))
}

/// The contract's `datasetVersion`: `gold.epoch_payouts` version in the high 64 bits of the low
/// 128, `gold.example_influence` version in the low 64 bits.
pub fn dataset_version(payouts_version: i64, influence_version: i64) -> U256 {
    (U256::from(payouts_version.max(0) as u64) << 64) | U256::from(influence_version.max(0) as u64)
}

/// The two trees of an epoch and where their inputs came from.
pub struct SettlementPlan {
    /// The epoch.
    pub epoch: i64,
    /// The payout tree.
    pub payouts: PayoutTree,
    /// The attribution tree, if the epoch has influence rows.
    pub attribution: Option<AttributionTree>,
    /// Sum of payouts.
    pub total: U256,
    /// `gold.epoch_payouts` version read.
    pub payouts_version: i64,
    /// `gold.example_influence` version read (0 when absent).
    pub influence_version: i64,
    /// Influence method of the attribution tree.
    pub attribution_method: Option<String>,
}

impl std::fmt::Debug for SettlementPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettlementPlan")
            .field("epoch", &self.epoch)
            .field("payout_root", &self.payout_root())
            .field("attribution_root", &self.attribution_root())
            .field("total", &self.total)
            .finish()
    }
}

impl SettlementPlan {
    /// Build both trees of `epoch` from the tables at the given versions (latest if `None`).
    pub async fn build(
        tables: &Tables,
        epoch: i64,
        versions: Option<(i64, i64)>,
        method: Option<&str>,
    ) -> Result<SettlementPlan> {
        let PayoutInput { version: pv, leaves, total } = read_payouts(tables, epoch, versions.map(|v| v.0)).await?;
        let influence_version = versions.map(|v| v.1).filter(|v| *v > 0);
        let AttributionInput { version: iv, method, leaves: attr } = if versions.is_some() && influence_version.is_none() {
            AttributionInput { version: 0, method: None, leaves: Vec::new() }
        } else {
            read_attribution(tables, epoch, influence_version, method).await?
        };
        let payouts = StandardMerkleTree::of(PayoutCodec, leaves, TreeOptions::default())?;
        let attribution =
            if attr.is_empty() { None } else { Some(StandardMerkleTree::of(AttributionCodec, attr, TreeOptions::default())?) };
        Ok(SettlementPlan {
            epoch,
            payouts,
            attribution,
            total,
            payouts_version: pv,
            influence_version: iv,
            attribution_method: method,
        })
    }

    /// The payout root.
    pub fn payout_root(&self) -> B256 {
        self.payouts.root()
    }

    /// The attribution root (zero without influence rows).
    pub fn attribution_root(&self) -> B256 {
        self.attribution.as_ref().map(|t| t.root()).unwrap_or_default()
    }

    /// Write `payouts.json` and `attribution.json` under `epochs/<epoch>/`; returns the keys written.
    pub async fn write_dumps(&self, tables: &Tables) -> Result<Vec<String>> {
        let store = tables.warehouse().store();
        let mut written = Vec::new();
        let key = epoch_key(self.epoch, "payouts.json");
        store.put(&key, PutPayload::from(self.payouts.dump().to_json()?)).await?;
        written.push(key.to_string());
        if let Some(a) = &self.attribution {
            let key = epoch_key(self.epoch, "attribution.json");
            store.put(&key, PutPayload::from(a.dump().to_json()?)).await?;
            written.push(key.to_string());
        }
        Ok(written)
    }
}

/// What `epoch settle` reports (and writes to `epochs/<epoch>/receipt.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SettleReceipt {
    /// The epoch.
    pub epoch: i64,
    /// `embedded` or `rpc`.
    pub backend: String,
    /// Chain id.
    pub chain_id: u64,
    /// Settlement contract.
    pub contract: Address,
    /// Reward token.
    pub token: Address,
    /// Payout root.
    pub payout_root: B256,
    /// Attribution root (zero when the epoch has no influence rows).
    pub attribution_root: B256,
    /// Total paid (token base units, decimal).
    pub total: String,
    /// Payout leaves.
    pub payout_leaves: u64,
    /// Attribution leaves.
    pub attribution_leaves: u64,
    /// Influence method of the attribution tree.
    pub attribution_method: Option<String>,
    /// Table versions read: `gold.epoch_payouts`, `gold.example_influence`.
    pub table_versions: std::collections::BTreeMap<String, i64>,
    /// The `datasetVersion` anchored.
    pub dataset_version: String,
    /// Anchor transaction (absent if the root was found on chain without a recorded transaction).
    pub tx_hash: Option<B256>,
    /// Its block.
    pub block_number: Option<u64>,
    /// Its block hash.
    pub block_hash: Option<B256>,
    /// Gas it used.
    pub gas_used: Option<u64>,
    /// Fee-bump attempts (1 = none).
    pub attempts: u32,
    /// True when this run found the epoch already anchored and sent nothing.
    pub already_anchored: bool,
    /// Files written under the warehouse.
    pub files: Vec<String>,
}

/// Settles one epoch (see the module docs).
pub struct SettleBuilder<'a, C: Chain> {
    config: Arc<Config>,
    tables: Tables,
    catalog: &'a Catalog,
    chain: &'a C,
    signer: PrivateKeySigner,
    epoch: i64,
    method: Option<String>,
    policy: SendPolicy,
    failpoint: Option<Failpoint>,
}

impl<'a, C: Chain> SettleBuilder<'a, C> {
    /// Settle `epoch` with `signer` as operator.
    pub fn new(config: Arc<Config>, tables: Tables, catalog: &'a Catalog, chain: &'a C, signer: PrivateKeySigner, epoch: i64) -> Self {
        let policy = SendPolicy::from_config(&config.chain);
        SettleBuilder { config, tables, catalog, chain, signer, epoch, method: None, policy, failpoint: None }
    }

    /// Use influence rows of `method` for the attribution tree.
    pub fn with_method(mut self, method: Option<String>) -> Self {
        self.method = method;
        self
    }

    /// Override the sending policy (tests shorten the resend timeout).
    pub fn with_policy(mut self, policy: SendPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Stop at a failpoint, as if the process died there (tests).
    pub fn with_failpoint(mut self, failpoint: Option<Failpoint>) -> Self {
        self.failpoint = failpoint;
        self
    }

    /// The dry run: build both trees from the latest table versions; touches no chain.
    pub async fn plan(&self) -> Result<SettlementPlan> {
        SettlementPlan::build(&self.tables, self.epoch, None, self.method.as_deref()).await
    }

    /// Settle (see the module docs). Takes the catalog's `settle` lock for the duration.
    pub async fn execute(self) -> Result<SettleReceipt> {
        let _lock = self.catalog.try_lock("settle")?;
        store::migrate(self.catalog)?;
        let chain_id = self.chain.chain_id().await?;
        if chain_id != self.config.chain.chain_id {
            return Err(Error::ChainIdMismatch { configured: self.config.chain.chain_id, actual: chain_id });
        }
        let epoch_u =
            u64::try_from(self.epoch).map_err(|_| Error::InvalidInput(format!("epoch {} is negative", self.epoch)))?;
        let sender = TxSender::new(self.chain, self.catalog, &self.signer, self.policy.clone())
            .await?
            .with_failpoint(self.failpoint.clone());
        // Validate the inputs before deploying anything on a fresh chain.
        let mut early = match deploy::find(self.chain, self.catalog, &self.config.chain).await? {
            Some(_) => None,
            None => Some(self.plan().await?),
        };
        let deployment = deploy::ensure(&sender, &self.config.chain).await?;

        // 1. The plan: first time from the latest tables, afterwards from the recorded versions.
        let record = store::settlement(self.catalog, deployment.settlement, self.epoch)?;
        let plan = match &record {
            None => match early.take() {
                Some(p) => p,
                None => self.plan().await?,
            },
            Some(r) => {
                let plan = SettlementPlan::build(
                    &self.tables,
                    self.epoch,
                    Some((r.payouts_version, r.influence_version)),
                    r.attribution_method.as_deref(),
                )
                .await?;
                check_same(self.epoch, "payout root", r.payout_root, plan.payout_root())?;
                check_same(self.epoch, "attribution root", r.attribution_root, plan.attribution_root())?;
                plan
            }
        };
        if record.is_none() {
            store::insert_settlement(
                self.catalog,
                &SettlementRecord {
                    contract: deployment.settlement,
                    epoch: self.epoch,
                    chain: sender.chain_key().to_string(),
                    payout_root: plan.payout_root(),
                    attribution_root: plan.attribution_root(),
                    total: plan.total.to_string(),
                    payout_leaves: plan.payouts.len() as u64,
                    attribution_leaves: plan.attribution.as_ref().map(|t| t.len() as u64).unwrap_or(0),
                    payouts_version: plan.payouts_version,
                    influence_version: plan.influence_version,
                    attribution_method: plan.attribution_method.clone(),
                    state: "planned".into(),
                    tx_hash: None,
                    block_number: None,
                    block_hash: None,
                    gas_used: None,
                    created_at: String::new(),
                    anchored_at: None,
                },
            )?;
        }

        // 2. Publish the dumps (identical bytes on every run).
        let files = plan.write_dumps(&self.tables).await?;

        // 3. What does the chain say?
        let purpose = format!("anchor:{}:{}", deployment.settlement, self.epoch);
        let info = deploy::view(self.chain, deployment.settlement, TributarySettlement::epochInfoCall { epoch: epoch_u }).await?;
        let ours = plan.payout_root();
        let (confirmed, already) = if info.payoutRoot == ours {
            if info.vetoed {
                return Err(Error::Vetoed(epoch_u));
            }
            // Anchored already (by an earlier run whose bookkeeping we may have missed).
            let c = sender.resume(&purpose).await.ok().flatten();
            if c.is_none() {
                store::drop_purpose(self.catalog, sender.chain_key(), &purpose)?;
            }
            (c, true)
        } else if info.payoutRoot != B256::ZERO {
            return Err(Error::RootMismatch { epoch: epoch_u, onchain: info.payoutRoot, ours });
        } else {
            let next = deploy::view(self.chain, deployment.settlement, TributarySettlement::nextEpochCall {}).await?;
            let recorded = !store::attempts(self.catalog, sender.chain_key(), &purpose)?.is_empty();
            if epoch_u < next && !recorded {
                return Err(Error::EpochNotIncreasing { epoch: epoch_u, next });
            }
            let credit = deploy::view(self.chain, deployment.settlement, TributarySettlement::creditCall {}).await?;
            let needed = plan.total.saturating_sub(U256::from(credit));
            if !needed.is_zero() && !recorded {
                deploy::ensure_allowance(&sender, &deployment, needed).await?;
            }
            let data = TributarySettlement::anchorCall {
                epoch: epoch_u,
                payoutRoot: ours,
                attributionRoot: plan.attribution_root(),
                total: plan.total,
                datasetVersion: dataset_version(plan.payouts_version, plan.influence_version),
            }
            .abi_encode();
            let c = sender
                .send(&purpose, &TxRequest { to: Some(deployment.settlement), data: data.into(), value: U256::ZERO })
                .await?;
            let now = deploy::view(self.chain, deployment.settlement, TributarySettlement::rootOfCall { epoch: epoch_u }).await?;
            if now != ours {
                return Err(Error::RootMismatch { epoch: epoch_u, onchain: now, ours });
            }
            (Some(c), false)
        };

        // 4. Record and publish the receipt.
        let receipt_ref = confirmed.as_ref().map(|c| &c.receipt);
        store::mark_anchored(
            self.catalog,
            deployment.settlement,
            self.epoch,
            receipt_ref.map(|r| r.tx_hash),
            receipt_ref.map(|r| (r.block_number, r.block_hash)),
            receipt_ref.map(|r| r.gas_used),
        )?;
        let mut out = SettleReceipt {
            epoch: self.epoch,
            backend: self.chain.backend().into(),
            chain_id,
            contract: deployment.settlement,
            token: deployment.token,
            payout_root: ours,
            attribution_root: plan.attribution_root(),
            total: plan.total.to_string(),
            payout_leaves: plan.payouts.len() as u64,
            attribution_leaves: plan.attribution.as_ref().map(|t| t.len() as u64).unwrap_or(0),
            attribution_method: plan.attribution_method.clone(),
            table_versions: [
                ("gold.epoch_payouts".to_string(), plan.payouts_version),
                ("gold.example_influence".to_string(), plan.influence_version),
            ]
            .into(),
            dataset_version: dataset_version(plan.payouts_version, plan.influence_version).to_string(),
            tx_hash: receipt_ref.map(|r| r.tx_hash),
            block_number: receipt_ref.map(|r| r.block_number),
            block_hash: receipt_ref.map(|r| r.block_hash),
            gas_used: receipt_ref.map(|r| r.gas_used),
            attempts: confirmed.as_ref().map(|c| c.attempts).unwrap_or(0),
            already_anchored: already || confirmed.as_ref().is_some_and(|c| c.already_final),
            files,
        };
        let key = epoch_key(self.epoch, "receipt.json");
        out.files.push(key.to_string());
        self.tables.warehouse().store().put(&key, PutPayload::from(serde_json::to_string_pretty(&out)?)).await?;
        Ok(out)
    }
}

fn check_same(epoch: i64, what: &str, recorded: B256, recomputed: B256) -> Result<()> {
    if recorded == recomputed {
        return Ok(());
    }
    Err(Error::Recomputed { epoch, what: what.into(), expected: recorded.to_string(), recomputed: recomputed.to_string() })
}

/// The deployment recorded for this chain, for commands that never deploy (status, proof, claim).
pub async fn deployment<C: Chain>(chain: &C, catalog: &Catalog, config: &Config) -> Result<Deployment> {
    deploy::find(chain, catalog, &config.chain)
        .await?
        .ok_or_else(|| Error::InvalidInput("no settlement contract on this chain yet: run `tributary epoch settle N` first".into()))
}
