//! The exactly-once commit protocol of ingestion.
//!
//! Delta cannot commit two tables atomically, so one commit carries both: the batch's rows are
//! appended to `bronze.contributions` in a commit whose application transaction is
//! `(tributary-ingest, batch)` and whose commit info carries the batch's log entries. The log entries
//! are then appended to `ops.ingest_log` under the same transaction id. A process killed between the
//! two commits leaves bronze one batch ahead of the log; [`recover`] notices (bronze's transaction
//! version is greater than the log's) and replays the entries from bronze's commit info. A batch
//! with no accepted rows only writes the log: losing it loses nothing, its files are judged again.
//!
//! Batch numbers are derived from the tables themselves (`max(bronze txn, log txn) + 1`), so there is
//! no third place that could disagree.

use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;

use crate::error::{Error, Result};
use crate::ingest::log::{self, LogEntry};
use crate::tables::{Tables, defs, history};

/// Application id of ingest's Delta transactions.
pub const APP_ID: &str = "tributary-ingest";
/// Commit-info key holding the batch number.
pub const META_BATCH: &str = "tributary.ingest.batch";
/// Commit-info key holding the batch's log entries.
pub const META_LOG: &str = "tributary.ingest.log";

/// The last batch committed to `table`, per its application transaction.
pub async fn txn_version(table: &DeltaTable) -> Result<i64> {
    let snapshot = table.snapshot().map_err(|e| Error::delta(table.table_url().to_string(), e))?;
    Ok(snapshot
        .transaction_version(table.log_store().as_ref(), APP_ID)
        .await
        .map_err(|e| Error::delta(table.table_url().to_string(), e))?
        .unwrap_or(0))
}

/// Both tables, opened (created on first use).
pub struct IngestTables {
    /// `bronze.contributions`.
    pub bronze: DeltaTable,
    /// `ops.ingest_log`.
    pub log: DeltaTable,
}

impl IngestTables {
    /// Open or create both tables.
    pub async fn open(tables: &Tables) -> Result<Self> {
        Ok(IngestTables {
            bronze: tables.open_or_create(&defs::bronze_contributions()).await?,
            log: tables.open_or_create(&defs::ops_ingest_log()).await?,
        })
    }

    /// The next batch number.
    pub async fn next_batch(&self) -> Result<i64> {
        Ok(txn_version(&self.bronze).await?.max(txn_version(&self.log).await?) + 1)
    }
}

/// Replay a batch that reached bronze but not the log. Returns the replayed batch number.
pub async fn recover(tables: &Tables) -> Result<Option<i64>> {
    let t = IngestTables::open(tables).await?;
    let (vb, vl) = (txn_version(&t.bronze).await?, txn_version(&t.log).await?);
    if vb <= vl {
        return Ok(None);
    }
    // The batch is among the latest bronze commits (only ingest appends to bronze).
    let commits = history(&t.bronze, 1000).await?;
    let info = commits
        .iter()
        .find(|c| c.info.get(META_BATCH).and_then(|v| v.as_i64()) == Some(vb))
        .ok_or_else(|| Error::Internal(format!("bronze is at ingest batch {vb} but its commit info is not in the history")))?;
    let entries: Vec<LogEntry> = info
        .info
        .get(META_LOG)
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| Error::Internal(format!("batch {vb} log entries in commit info: {e}")))?
        .unwrap_or_default();
    append_log(t.log, vb, &entries).await?;
    Ok(Some(vb))
}

async fn append_log(table: DeltaTable, batch: i64, entries: &[LogEntry]) -> Result<()> {
    let name = defs::ops_ingest_log().id.to_string();
    let props = CommitProperties::default().with_application_transaction(Transaction::new(APP_ID, batch));
    let t = table
        .write(vec![log::to_batch(entries)?])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(props)
        .await
        .map_err(|e| Error::delta(name, e))?;
    drop(t);
    Ok(())
}

/// Commit one batch: rows (if any) to bronze, then the log entries. Idempotent per batch number.
pub async fn commit_batch(
    tables: &Tables,
    batch: i64,
    rows: Vec<arrow::record_batch::RecordBatch>,
    entries: &[LogEntry],
) -> Result<()> {
    if rows.iter().any(|b| b.num_rows() > 0) {
        commit_rows(tables, batch, rows, entries).await?;
    }
    commit_log(tables, batch, entries).await
}

/// The first half of a batch: append `rows` to bronze with the batch's transaction id and its log
/// entries in the commit info. A no-op if bronze already holds this batch.
pub async fn commit_rows(
    tables: &Tables,
    batch: i64,
    rows: Vec<arrow::record_batch::RecordBatch>,
    entries: &[LogEntry],
) -> Result<()> {
    let t = IngestTables::open(tables).await?;
    if txn_version(&t.bronze).await? >= batch {
        return Ok(());
    }
    let name = defs::bronze_contributions().id.to_string();
    let entries_json = serde_json::to_value(entries).map_err(|e| Error::Internal(e.to_string()))?;
    let props = CommitProperties::default()
        .with_application_transaction(Transaction::new(APP_ID, batch))
        .with_metadata([(META_BATCH.to_string(), serde_json::json!(batch)), (META_LOG.to_string(), entries_json)]);
    t.bronze
        .write(rows)
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(defs::bronze_contributions().partition_columns)
        .with_commit_properties(props)
        .await
        .map_err(|e| Error::delta(name, e))?;
    Ok(())
}

/// The second half of a batch: append its entries to `ops.ingest_log`. A no-op if already there.
pub async fn commit_log(tables: &Tables, batch: i64, entries: &[LogEntry]) -> Result<()> {
    let t = IngestTables::open(tables).await?;
    if txn_version(&t.log).await? < batch {
        append_log(t.log, batch, entries).await?;
    }
    Ok(())
}
