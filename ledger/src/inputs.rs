//! Reading an epoch's leaves from the warehouse tables at a recorded Delta version.
//!
//! Settlement reads `gold.epoch_payouts` and `gold.example_influence` once, records the versions
//! it read, and every later check (`epoch verify`, a resumed settle) re-reads exactly those
//! versions through Delta time travel, so the roots can always be recomputed.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use alloy::primitives::U256;
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use tributary_pipeline::Tables;
use tributary_pipeline::tables::{TableDef, defs};

use crate::error::{Error, Result};
use crate::leaves::{AttributionLeaf, PayoutLeaf, parse_account, parse_contribution_id, parse_uint, scale_influence};

/// The payout leaves of one epoch and the table version they came from.
#[derive(Debug, Clone)]
pub struct PayoutInput {
    /// Delta version of `gold.epoch_payouts` read.
    pub version: i64,
    /// Leaves, ordered by index.
    pub leaves: Vec<PayoutLeaf>,
    /// Sum of the amounts.
    pub total: U256,
}

/// The attribution leaves of one epoch and the table version they came from.
#[derive(Debug, Clone)]
pub struct AttributionInput {
    /// Delta version of `gold.example_influence` read (0 when the table does not exist).
    pub version: i64,
    /// The influence method the leaves come from (`None` when there are no rows).
    pub method: Option<String>,
    /// Leaves, ordered by contribution id.
    pub leaves: Vec<AttributionLeaf>,
}

async fn query(tables: &Tables, def: &TableDef, version: Option<i64>, sql: &str) -> Result<Option<(i64, Vec<RecordBatch>)>> {
    let Some(table) = tables.open_version(&def.id, version).await? else { return Ok(None) };
    let read = table.version().unwrap_or(0) as i64;
    let ctx = SessionContext::new();
    tables.register(&ctx, &def.id, &table).await?;
    let df = ctx.sql(sql).await.map_err(tributary_pipeline::Error::from)?;
    let batches = df.collect().await.map_err(tributary_pipeline::Error::from)?;
    Ok(Some((read, batches)))
}

fn column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("query result lacks column {name}")))?;
    Ok(arrow::compute::cast(col, to)?)
}

fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let col = column(batch, name, &DataType::Utf8)?;
    let a = col
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Internal(format!("column {name} is not utf8 after cast")))?;
    Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())).collect())
}

fn ints(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    let col = column(batch, name, &DataType::Int64)?;
    let a = col
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| Error::Internal(format!("column {name} is not int64 after cast")))?;
    Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect())
}

fn floats(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let col = column(batch, name, &DataType::Float64)?;
    let a = col
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| Error::Internal(format!("column {name} is not float64 after cast")))?;
    Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect())
}

fn epoch_u64(epoch: i64) -> Result<u64> {
    u64::try_from(epoch).map_err(|_| Error::InvalidInput(format!("epoch {epoch} is negative; settled epochs start at 0")))
}

/// Read the payout leaves of `epoch` from `gold.epoch_payouts` at `version` (latest if `None`).
///
/// Every row must have a non-negative, unique `index`, a valid address and a decimal amount;
/// the first bad row stops the read with [`Error::InvalidRow`].
pub async fn read_payouts(tables: &Tables, epoch: i64, version: Option<i64>) -> Result<PayoutInput> {
    let epoch_u = epoch_u64(epoch)?;
    let def = defs::gold_epoch_payouts();
    let table = def.id.to_string();
    let sql = format!(
        "SELECT \"index\" AS idx, contributor, amount FROM {} WHERE epoch = {epoch} ORDER BY \"index\"",
        table
    );
    let Some((read, batches)) = query(tables, &def, version, &sql).await? else {
        return Err(Error::NoPayouts(epoch));
    };
    let mut leaves = Vec::new();
    let mut seen = HashSet::new();
    let mut total = U256::ZERO;
    for batch in &batches {
        let (idx, who, amount) = (ints(batch, "idx")?, strings(batch, "contributor")?, strings(batch, "amount")?);
        for i in 0..batch.num_rows() {
            let key = match idx[i] {
                Some(v) => format!("index {v}"),
                None => format!("row {i}"),
            };
            let bad = |column: &str, reason: String| Error::InvalidRow {
                table: table.clone(),
                epoch,
                key: key.clone(),
                column: column.into(),
                reason,
            };
            let index = match idx[i] {
                Some(v) if v >= 0 => v as u64,
                Some(v) => return Err(bad("index", format!("{v} is negative"))),
                None => return Err(bad("index", "is null".into())),
            };
            if !seen.insert(index) {
                return Err(bad("index", "appears twice in the epoch".into()));
            }
            let account = parse_account(who[i].as_deref().unwrap_or("")).map_err(|r| bad("contributor", r))?;
            let amount = parse_uint(amount[i].as_deref().unwrap_or("")).map_err(|r| bad("amount", r))?;
            total = total.checked_add(amount).ok_or_else(|| bad("amount", "the epoch total overflows uint256".into()))?;
            leaves.push(PayoutLeaf { epoch: epoch_u, index: U256::from(index), account, amount });
        }
    }
    if leaves.is_empty() {
        return Err(Error::NoPayouts(epoch));
    }
    if total > U256::from(u128::MAX) {
        return Err(Error::InvalidRow {
            table,
            epoch,
            key: "all rows".into(),
            column: "amount".into(),
            reason: format!("the epoch total {total} exceeds the contract's uint128 limit"),
        });
    }
    Ok(PayoutInput { version: read, leaves, total })
}

/// Read the attribution leaves of `epoch` from `gold.example_influence` at `version` (latest if `None`).
///
/// `method` picks the influence method; when `None` and the epoch has rows of several methods,
/// `exact-block` is used if present (the rewards policy's default), otherwise the read fails with
/// [`Error::AmbiguousAttributionMethod`]. A missing table or an epoch without
/// rows gives no leaves (the attribution root is then zero).
pub async fn read_attribution(
    tables: &Tables,
    epoch: i64,
    version: Option<i64>,
    method: Option<&str>,
) -> Result<AttributionInput> {
    let epoch_u = epoch_u64(epoch)?;
    let def = defs::gold_example_influence();
    let table = def.id.to_string();
    let sql = format!(
        "SELECT contribution_id, contributor, method, influence FROM {table} WHERE epoch = {epoch} ORDER BY contribution_id, method"
    );
    let Some((read, batches)) = query(tables, &def, version, &sql).await? else {
        return Ok(AttributionInput { version: 0, method: None, leaves: Vec::new() });
    };
    let mut rows = Vec::new();
    for batch in &batches {
        let (cid, who, m, inf) = (
            strings(batch, "contribution_id")?,
            strings(batch, "contributor")?,
            strings(batch, "method")?,
            floats(batch, "influence")?,
        );
        for i in 0..batch.num_rows() {
            rows.push((cid[i].clone(), who[i].clone(), m[i].clone().unwrap_or_default(), inf[i]));
        }
    }
    let methods: BTreeSet<String> = rows.iter().map(|r| r.2.clone()).collect();
    let chosen = match method {
        Some(m) => Some(m.to_string()),
        None if methods.len() <= 1 => methods.iter().next().cloned(),
        // The rewards policy's default method (`payouts.rs`), so both trees describe the same run.
        None if methods.contains("exact-block") => Some("exact-block".to_string()),
        None => return Err(Error::AmbiguousAttributionMethod { epoch, methods: methods.into_iter().collect() }),
    };
    let mut leaves = Vec::new();
    let mut seen = HashSet::new();
    for (cid, who, m, inf) in rows {
        if Some(&m) != chosen.as_ref() {
            continue;
        }
        let key = format!("contribution_id {}", cid.as_deref().unwrap_or("<null>"));
        let bad = |column: &str, reason: String| Error::InvalidRow {
            table: table.clone(),
            epoch,
            key: key.clone(),
            column: column.into(),
            reason,
        };
        let contribution_id = parse_contribution_id(cid.as_deref().unwrap_or("")).map_err(|r| bad("contribution_id", r))?;
        if !seen.insert(contribution_id) {
            return Err(bad("contribution_id", format!("appears twice for method {m}")));
        }
        let contributor = parse_account(who.as_deref().unwrap_or("")).map_err(|r| bad("contributor", r))?;
        let influence = scale_influence(inf.ok_or_else(|| bad("influence", "is null".into()))?)
            .map_err(|r| bad("influence", r))?;
        leaves.push(AttributionLeaf { epoch: epoch_u, contribution_id, contributor, influence });
    }
    Ok(AttributionInput { version: read, method: chosen.filter(|_| !leaves.is_empty()), leaves })
}

/// Convenience for tests and the demo: append `batch` to `def`'s table (created if missing);
/// returns the new version.
pub async fn append(tables: &Tables, def: &TableDef, batch: RecordBatch) -> Result<i64> {
    let table = tables.open_or_create(def).await?;
    let table = table
        .write(vec![batch])
        .await
        .map_err(|e| tributary_pipeline::Error::delta(def.id.to_string(), e))?;
    Ok(table.version().unwrap_or(0) as i64)
}

/// Build a `gold.epoch_payouts` batch from `(epoch, index, contributor, amount, breakdown)` rows.
pub fn payouts_batch(rows: &[(i64, i64, String, String, String)]) -> Result<RecordBatch> {
    let def = defs::gold_epoch_payouts();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.4.clone()).collect::<Vec<_>>())),
    ];
    Ok(RecordBatch::try_new(def.schema.clone(), cols)?)
}
