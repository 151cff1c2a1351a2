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
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};

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

/// Commit one batch: its files (if any rows were accepted) to bronze, then the log entries.
/// Idempotent per batch number.
pub async fn commit_batch(tables: &Tables, batch: i64, files: BronzeFiles, entries: &[LogEntry]) -> Result<()> {
    let adds = files.finish().await?;
    if !adds.is_empty() {
        commit_adds(tables, batch, adds, entries).await?;
    }
    commit_log(tables, batch, entries).await
}

/// The first half of a batch from rows in memory: encode `rows` and commit them (see
/// [`commit_adds`]). A no-op if bronze already holds this batch.
pub async fn commit_rows(
    tables: &Tables,
    batch: i64,
    rows: Vec<arrow::record_batch::RecordBatch>,
    entries: &[LogEntry],
) -> Result<()> {
    let mut files = BronzeFiles::open(tables).await?;
    for b in rows {
        files.push(b).await?;
    }
    let adds = files.finish().await?;
    commit_adds(tables, batch, adds, entries).await
}

/// The first half of a batch: commit the written files to bronze with the batch's transaction id
/// and its log entries in the commit info. A no-op if bronze already holds this batch (the files
/// are then left unreferenced, for `vacuum`).
pub async fn commit_adds(tables: &Tables, batch: i64, adds: Vec<Add>, entries: &[LogEntry]) -> Result<()> {
    let t = IngestTables::open(tables).await?;
    if txn_version(&t.bronze).await? >= batch {
        return Ok(());
    }
    let def = defs::bronze_contributions();
    let name = def.id.to_string();
    let entries_json = serde_json::to_value(entries).map_err(|e| Error::Internal(e.to_string()))?;
    let props = CommitProperties::default()
        .with_application_transaction(Transaction::new(APP_ID, batch))
        .with_metadata([(META_BATCH.to_string(), serde_json::json!(batch)), (META_LOG.to_string(), entries_json)]);
    let operation =
        DeltaOperation::Write { mode: SaveMode::Append, partition_by: Some(def.partition_columns.clone()), predicate: None };
    let snapshot = t.bronze.snapshot().map_err(|e| Error::delta(name.clone(), e))?;
    CommitBuilder::from(props)
        .with_actions(adds.into_iter().map(Action::Add).collect())
        .build(Some(snapshot), t.bronze.log_store(), operation)
        .await
        .map_err(|e| Error::delta(name, e))?;
    Ok(())
}

/// Fewest rows a writer takes before another one is started.
pub const MIN_ROWS_PER_WRITER: usize = 64 * 1024;

/// Validated input files waiting to be batched into an in-channel.
const WRITER_QUEUE: usize = 16;

/// Bronze Parquet files being written while the batch is still being judged.
///
/// Accepted files' rows are handed over as soon as they are judged and encoded by up to one writer
/// task per core, so decoding and validation overlap with encoding. A writer takes whole input
/// files; a new writer starts only once every running one holds [`MIN_ROWS_PER_WRITER`] rows, so a
/// small batch still makes one file. Nothing is visible until [`commit_adds`]: a crash before it
/// leaves unreferenced files only, which `vacuum` removes.
pub struct BronzeFiles {
    table: DeltaTable,
    max_writers: usize,
    writers: Vec<(usize, tokio::sync::mpsc::Sender<arrow::record_batch::RecordBatch>)>,
    tasks: tokio::task::JoinSet<DeltaResult<Vec<Add>>>,
}

type DeltaResult<T> = std::result::Result<T, deltalake::DeltaTableError>;

impl BronzeFiles {
    /// Writers for `bronze.contributions` (created on first use).
    pub async fn open(tables: &Tables) -> Result<Self> {
        let table = tables.open_or_create(&defs::bronze_contributions()).await?;
        let max_writers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(BronzeFiles { table, max_writers, writers: Vec::new(), tasks: tokio::task::JoinSet::new() })
    }

    fn error(e: deltalake::DeltaTableError) -> Error {
        Error::delta(defs::bronze_contributions().id.to_string(), e)
    }

    /// Queue one input file's rows (all of one datanet) for writing.
    pub async fn push(&mut self, rows: arrow::record_batch::RecordBatch) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let all_full = self.writers.iter().all(|(n, _)| *n >= MIN_ROWS_PER_WRITER);
        if all_full && self.writers.len() < self.max_writers {
            self.spawn_writer()?;
        }
        let (n, tx) = self.writers.iter_mut().min_by_key(|(n, _)| *n).expect("a writer was started");
        *n += rows.num_rows();
        if tx.send(rows).await.is_err() {
            // The writer stopped early: it failed, and its error is the one to report.
            return Err(self.first_error().await);
        }
        Ok(())
    }

    fn spawn_writer(&mut self) -> Result<()> {
        let mut writer =
            RecordBatchWriter::for_table(&self.table).map_err(Self::error)?.with_writer_properties(bronze_writer_properties());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<arrow::record_batch::RecordBatch>(WRITER_QUEUE);
        self.tasks.spawn(async move {
            while let Some(b) = rx.recv().await {
                // One file's rows share one datanet: hand the partition value over directly
                // instead of letting the writer split (and copy) the batch by partition.
                let column = b
                    .column_by_name("datanet")
                    .ok_or_else(|| deltalake::DeltaTableError::Generic("bronze rows without a datanet column".into()))?;
                let value = ScalarExt::from_array(column.as_ref(), 0)
                    .ok_or_else(|| deltalake::DeltaTableError::Generic("unreadable datanet value".into()))?;
                let partition = indexmap::IndexMap::from([("datanet".to_string(), value)]);
                writer.write_partition(b, &partition, WriteMode::Default).await?;
            }
            writer.flush().await
        });
        self.writers.push((0, tx));
        Ok(())
    }

    async fn first_error(&mut self) -> Error {
        self.writers.clear();
        while let Some(done) = self.tasks.join_next().await {
            match done {
                Ok(Err(e)) => return Self::error(e),
                Err(e) => return Error::Internal(format!("bronze writer task: {e}")),
                Ok(Ok(_)) => {}
            }
        }
        Error::Internal("a bronze writer stopped without an error".into())
    }

    /// Close every writer and return the `Add` actions of the files written.
    pub async fn finish(mut self) -> Result<Vec<Add>> {
        self.writers.clear();
        let mut adds = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            adds.extend(done.map_err(|e| Error::Internal(format!("bronze writer task: {e}")))?.map_err(Self::error)?);
        }
        Ok(adds)
    }
}

/// Parquet settings for bronze files.
///
/// Every column is zstd (level 1): on the 1M-row ingest benchmark it halves the table against
/// snappy (177 MB → 87 MB; the texts shrink about 2.5× instead of 1.6×, and the digests' hex
/// digits are entropy-coded to about half, where snappy finds nothing), and writing the bytes costs
/// more than compressing them. Row ids and content hashes are unique 64-digit digests and the texts
/// are mostly unique: a dictionary never pays for itself there and their min/max statistics cannot
/// skip anything, so both are off; the digests are `DELTA_LENGTH_BYTE_ARRAY`-encoded (their
/// lengths, all 64, delta-encode to almost nothing instead of a 4-byte prefix per value). The other
/// columns keep per-chunk statistics (what Delta's file skipping reads), not per-page ones.
pub fn bronze_writer_properties() -> parquet::file::properties::WriterProperties {
    use parquet::basic::{Compression, Encoding, ZstdLevel};
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use parquet::schema::types::ColumnPath;
    let zstd = Compression::ZSTD(ZstdLevel::default());
    let mut b = WriterProperties::builder().set_compression(zstd).set_statistics_enabled(EnabledStatistics::Chunk);
    for col in ["contribution_id", "content_hash", "text"] {
        let path = ColumnPath::from(col);
        b = b.set_column_dictionary_enabled(path.clone(), false).set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    for col in ["contribution_id", "content_hash"] {
        b = b.set_column_encoding(ColumnPath::from(col), Encoding::DELTA_LENGTH_BYTE_ARRAY);
    }
    b.build()
}

/// The second half of a batch: append its entries to `ops.ingest_log`. A no-op if already there.
pub async fn commit_log(tables: &Tables, batch: i64, entries: &[LogEntry]) -> Result<()> {
    let t = IngestTables::open(tables).await?;
    if txn_version(&t.log).await? < batch {
        append_log(t.log, batch, entries).await?;
    }
    Ok(())
}
