//! The rewards job: read an epoch's attribution and usage, apply [`crate::rewards`], and write
//! `gold.epoch_payouts`.
//!
//! The job is idempotent: it replaces the epoch's rows in one Delta commit (`replace_where epoch = N`),
//! so re-running it with the same inputs writes the same leaves. It reports the Delta versions it
//! read and wrote so the epoch can be recomputed exactly later.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use alloy::primitives::U256;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Float64Type, Int64Type};
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::protocol::SaveMode;
use serde::Serialize;
use tributary_pipeline::tables::{defs, strings};
use tributary_pipeline::{Config, TableId, Tables};

use crate::error::{Error, Result};
use crate::rewards::{self, AttributionRow, DatanetWeight, RewardInputs, RewardOutcome, UsageRow};

/// What the rewards job did.
#[derive(Debug, Clone, Serialize)]
pub struct PayoutsReport {
    /// Epoch.
    pub epoch: i64,
    /// Attribution method whose rows were used.
    pub method: Option<String>,
    /// Paid contributors.
    pub leaves: usize,
    /// Total paid (decimal base units).
    pub total: String,
    /// Pool distributed.
    pub pool: String,
    /// Fees distributed.
    pub fees: String,
    /// Delta versions read, by table.
    pub versions_read: BTreeMap<String, i64>,
    /// Version of `gold.epoch_payouts` written.
    pub version_written: i64,
}

/// Run the policy for `epoch` and write its payout rows.
pub async fn write_epoch_payouts(config: &Config, tables: &Tables, epoch: i64, method: Option<&str>) -> Result<PayoutsReport> {
    let ctx = SessionContext::new();
    let mut versions_read = BTreeMap::new();
    for def in [defs::gold_contributor_attribution(), defs::gold_inference_usage()] {
        if let Some(t) = tables.open(&def.id).await? {
            tables.register(&ctx, &def.id, &t).await?;
            versions_read.insert(def.id.to_string(), t.version().map_or(0, |v| v as i64));
        }
    }
    let attribution_id = defs::gold_contributor_attribution().id;
    let (attribution, method) = if versions_read.contains_key(&attribution_id.to_string()) {
        read_attribution(&ctx, epoch, method).await?
    } else {
        (vec![], None)
    };
    let usage = if versions_read.contains_key(&defs::gold_inference_usage().id.to_string()) {
        read_usage(&ctx, epoch).await?
    } else {
        vec![]
    };
    let pool = U256::from_str(&config.rewards.pool_per_epoch)
        .map_err(|e| Error::InvalidInput(format!("rewards.pool_per_epoch: {e}")))?;
    let inputs = RewardInputs {
        epoch: u64::try_from(epoch).map_err(|_| Error::InvalidInput(format!("epoch {epoch} is negative")))?,
        pool,
        datanets: config.datanets.iter().map(|d| DatanetWeight { name: d.name.clone(), weight: d.reward_weight }).collect(),
        attribution,
        usage,
        penalty_threshold: config.rewards.rejection_penalty_threshold,
        penalty: config.rewards.rejection_penalty,
    };
    let outcome = rewards::compute(&inputs)?;
    let version_written = write(tables, epoch, &outcome).await?;
    Ok(PayoutsReport {
        epoch,
        method,
        leaves: outcome.payouts.len(),
        total: outcome.total().to_string(),
        pool: outcome.pool_distributed.to_string(),
        fees: outcome.fees_distributed.to_string(),
        versions_read,
        version_written,
    })
}

async fn read_attribution(ctx: &SessionContext, epoch: i64, method: Option<&str>) -> Result<(Vec<AttributionRow>, Option<String>)> {
    let methods = ctx
        .sql(&format!("SELECT DISTINCT method FROM gold.contributor_attribution WHERE epoch = {epoch} ORDER BY method"))
        .await
        .map_err(df)?
        .collect()
        .await
        .map_err(df)?;
    let available: Vec<String> =
        methods.iter().map(|b| strings(b.column(0))).collect::<std::result::Result<Vec<_>, _>>()?.iter().flat_map(|a| a.iter().flatten().map(str::to_string).collect::<Vec<_>>()).collect();
    let chosen = match method {
        Some(m) => Some(m.to_string()),
        None if available.len() <= 1 => available.first().cloned(),
        None if available.iter().any(|m| m == "exact-block") => Some("exact-block".to_string()),
        None => return Err(Error::AmbiguousAttributionMethod { epoch, methods: available }),
    };
    let Some(chosen) = chosen else { return Ok((vec![], None)) };
    let batches = ctx
        .sql(&format!(
            "SELECT datanet, contributor, rows_submitted, rows_accepted, duplicates, positive_influence
             FROM gold.contributor_attribution WHERE epoch = {epoch} AND method = '{}'",
            chosen.replace('\'', "''")
        ))
        .await
        .map_err(df)?
        .collect()
        .await
        .map_err(df)?;
    let mut rows = Vec::new();
    for b in &batches {
        let (d, c) = (strings(b.column(0))?, strings(b.column(1))?);
        let (s, a, dup) = (b.column(2).as_primitive::<Int64Type>(), b.column(3).as_primitive::<Int64Type>(), b.column(4).as_primitive::<Int64Type>());
        let p = b.column(5).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            rows.push(AttributionRow {
                datanet: d.value(i).to_string(),
                contributor: c.value(i).to_ascii_lowercase(),
                rows_submitted: s.value(i).max(0) as u64,
                rows_accepted: a.value(i).max(0) as u64,
                duplicates: dup.value(i).max(0) as u64,
                positive_influence: p.value(i),
            });
        }
    }
    Ok((rows, Some(chosen)))
}

async fn read_usage(ctx: &SessionContext, epoch: i64) -> Result<Vec<UsageRow>> {
    let batches = ctx
        .sql(&format!("SELECT datanet, fee, credits FROM gold.inference_usage WHERE epoch = {epoch}"))
        .await
        .map_err(df)?
        .collect()
        .await
        .map_err(df)?;
    let mut out = Vec::new();
    for b in &batches {
        let d = strings(b.column(0))?;
        let fee = strings(b.column(1))?;
        let credits = b.column(2).as_list::<i32>();
        for i in 0..b.num_rows() {
            let fee_v = U256::from_str(fee.value(i))
                .map_err(|e| Error::InvalidInput(format!("gold.inference_usage fee `{}`: {e}", fee.value(i))))?;
            let mut cs = Vec::new();
            if !credits.is_null(i) {
                let item: ArrayRef = credits.value(i);
                let st = item.as_struct();
                let who = strings(st.column(0))?;
                let w = st.column(1).as_primitive::<Float64Type>();
                for j in 0..st.len() {
                    cs.push((who.value(j).to_string(), w.value(j)));
                }
            }
            out.push(UsageRow { datanet: (!d.is_null(i)).then(|| d.value(i).to_string()), fee: fee_v, credits: cs });
        }
    }
    Ok(out)
}

async fn write(tables: &Tables, epoch: i64, outcome: &RewardOutcome) -> Result<i64> {
    let def = defs::gold_epoch_payouts();
    let table = tables.open_or_create(&def).await?;
    let n = outcome.payouts.len();
    let breakdowns: Vec<String> =
        outcome.payouts.iter().map(|p| serde_json::to_string(&p.breakdown)).collect::<std::result::Result<_, _>>()?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![epoch; n])),
        Arc::new(Int64Array::from_iter_values(outcome.payouts.iter().map(|p| p.index as i64))),
        Arc::new(StringArray::from_iter_values(outcome.payouts.iter().map(|p| p.contributor.as_str()))),
        Arc::new(StringArray::from_iter_values(outcome.payouts.iter().map(|p| p.amount.to_string()))),
        Arc::new(StringArray::from_iter_values(breakdowns.iter())),
    ];
    let batch = RecordBatch::try_new(def.schema.clone(), columns)?;
    let written = table
        .write(vec![batch])
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(col("epoch").eq(lit(epoch)))
        .await
        .map_err(|e| tributary_pipeline::Error::delta(def.id.to_string(), e))?;
    Ok(written.version().map_or(0, |v| v as i64))
}

fn df(e: datafusion::error::DataFusionError) -> Error {
    Error::Pipeline(tributary_pipeline::Error::from(e))
}

/// The table this job writes.
pub fn table_id() -> TableId {
    defs::gold_epoch_payouts().id
}
