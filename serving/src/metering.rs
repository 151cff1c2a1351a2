//! Usage metering: one `gold.inference_usage` row per finished request, written in batches.
//!
//! The engine hands each finished request's [`UsageRecord`] to the [`Meter`] over a channel before
//! it answers the client, so every answered request is metered. The meter task appends buffered rows
//! every `usage_flush_ms` or `usage_flush_rows`, whichever comes first, and flushes what is left
//! when the channel closes (clean shutdown and SIGTERM both end that way).
//!
//! Each append is a Delta commit carrying an application transaction `(app_id, batch)` where
//! `app_id` is unique to this meter and `batch` counts its flushes. Before retrying a failed commit
//! the meter reads the table's transaction version for its `app_id`: if the "failed" commit in fact
//! landed, the batch is not written again. So rows are neither lost nor duplicated.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Fields};
use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tributary_pipeline::tables::defs;
use tributary_pipeline::{Config, Tables};

use crate::credits::Credit;
use crate::error::{Error, Result};

/// One metered request.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// The request's id.
    pub request_id: String,
    /// When it finished.
    pub ts: DateTime<Utc>,
    /// `datanet/version`, or the base model's name.
    pub adapter: String,
    /// The adapter's datanet (`None` for the base model).
    pub datanet: Option<String>,
    /// Prompt tokens.
    pub tokens_in: usize,
    /// Generated tokens.
    pub tokens_out: usize,
    /// Fee in token base units.
    pub fee: u128,
    /// Contributors credited (`None` when no index could be searched).
    pub credits: Option<Vec<Credit>>,
}

/// How the meter batches writes.
#[derive(Debug, Clone)]
pub struct MeterOptions {
    /// Flush when this many rows are buffered.
    pub flush_rows: usize,
    /// Flush at least this often while rows are buffered.
    pub flush_every: Duration,
    /// Attempts per batch before giving up until the next flush.
    pub attempts: usize,
}

impl Default for MeterOptions {
    fn default() -> Self {
        MeterOptions { flush_rows: 256, flush_every: Duration::from_millis(1000), attempts: 5 }
    }
}

/// What the meter wrote over its life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterReport {
    /// Rows written.
    pub rows: usize,
    /// Delta commits made.
    pub commits: usize,
}

/// The running meter: a sender for the engine and the task that writes.
#[derive(Debug)]
pub struct Meter {
    tx: mpsc::UnboundedSender<UsageRecord>,
    task: JoinHandle<Result<MeterReport>>,
}

impl Meter {
    /// Start the writer task on the current runtime.
    pub fn start(tables: Tables, config: Arc<Config>, options: MeterOptions) -> Meter {
        let (tx, rx) = mpsc::unbounded_channel();
        let app_id = format!("tributary-serving-{}", uuid::Uuid::new_v4().simple());
        let task = tokio::spawn(run(tables, config, options, rx, app_id));
        Meter { tx, task }
    }

    /// A sender for usage records (the engine holds one).
    pub fn sender(&self) -> mpsc::UnboundedSender<UsageRecord> {
        self.tx.clone()
    }

    /// Wait for every sender to be dropped, flush, and report. Call after the engine stopped.
    pub async fn finish(self) -> Result<MeterReport> {
        drop(self.tx);
        self.task.await.map_err(|e| Error::Internal(format!("meter task: {e}")))?
    }
}

async fn run(
    tables: Tables,
    config: Arc<Config>,
    options: MeterOptions,
    mut rx: mpsc::UnboundedReceiver<UsageRecord>,
    app_id: String,
) -> Result<MeterReport> {
    let mut buffer: Vec<UsageRecord> = Vec::new();
    let mut report = MeterReport::default();
    let mut batch = 0i64;
    let mut tick = tokio::time::interval(options.flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (closed, ticked) = tokio::select! {
            rec = rx.recv() => match rec {
                Some(r) => {
                    buffer.push(r);
                    (false, false)
                }
                None => (true, false),
            },
            _ = tick.tick() => (false, true),
        };
        let due = closed || ticked || buffer.len() >= options.flush_rows;
        if due && !buffer.is_empty() {
            match flush(&tables, &config, &app_id, batch + 1, &buffer, options.attempts).await {
                Ok(()) => {
                    batch += 1;
                    report.rows += buffer.len();
                    report.commits += 1;
                    buffer.clear();
                }
                Err(e) if closed => {
                    return Err(Error::Internal(format!("{} usage rows could not be written at shutdown: {e}", buffer.len())));
                }
                // Keep the rows; the next flush retries them.
                Err(e) => tracing::error!(error = %e, rows = buffer.len(), "usage flush failed; will retry"),
            }
        }
        if closed {
            return Ok(report);
        }
    }
}

/// The transaction version this meter last committed.
async fn txn_version(table: &DeltaTable, app_id: &str) -> Result<i64> {
    let name = defs::gold_inference_usage().id.to_string();
    let snapshot = table.snapshot().map_err(|e| Error::delta(&name, e))?;
    Ok(snapshot.transaction_version(table.log_store().as_ref(), app_id).await.map_err(|e| Error::delta(&name, e))?.unwrap_or(0))
}

async fn flush(
    tables: &Tables,
    config: &Config,
    app_id: &str,
    batch: i64,
    rows: &[UsageRecord],
    attempts: usize,
) -> Result<()> {
    let def = defs::gold_inference_usage();
    let name = def.id.to_string();
    let record_batch = to_batch(config, rows)?;
    let mut last = None;
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
        }
        let table = match tables.open_or_create(&def).await {
            Ok(t) => t,
            Err(e) => {
                last = Some(Error::Pipeline(e));
                continue;
            }
        };
        // A previous attempt may have committed even though it reported an error.
        if txn_version(&table, app_id).await? >= batch {
            return Ok(());
        }
        let props = CommitProperties::default().with_application_transaction(Transaction::new(app_id, batch));
        match table
            .write(vec![record_batch.clone()])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(props)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(Error::delta(&name, e)),
        }
    }
    Err(last.unwrap_or_else(|| Error::Internal("usage flush made no attempt".into())))
}

/// Usage records as a batch with `gold.inference_usage`'s schema.
pub fn to_batch(config: &Config, rows: &[UsageRecord]) -> Result<RecordBatch> {
    let schema = defs::gold_inference_usage().schema;
    let epochs = rows
        .iter()
        .map(|r| tributary_pipeline::epoch::epoch_of(config, r.ts))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let credit_fields = match defs::credits_type() {
        DataType::List(item) => match item.data_type() {
            DataType::Struct(fields) => fields.clone(),
            other => return Err(Error::Internal(format!("credits item type {other}"))),
        },
        other => return Err(Error::Internal(format!("credits type {other}"))),
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.request_id.as_str()))),
        Arc::new(TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.ts.timestamp_micros())).with_timezone("UTC")),
        Arc::new(Int64Array::from(epochs)),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.adapter.as_str()))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.datanet.as_deref()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.tokens_in as i64))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.tokens_out as i64))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.fee.to_string()))),
        Arc::new(credits_array(rows, credit_fields)?),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn credits_array(rows: &[UsageRecord], fields: Fields) -> Result<ListArray> {
    let all: Vec<&Credit> = rows.iter().flat_map(|r| r.credits.iter().flatten()).collect();
    let values = StructArray::try_new(
        fields.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(all.iter().map(|c| c.address.as_str()))),
            Arc::new(Float64Array::from_iter_values(all.iter().map(|c| c.weight))),
        ],
        None,
    )?;
    let lengths = rows.iter().map(|r| r.credits.as_ref().map_or(0, Vec::len));
    let offsets = OffsetBuffer::from_lengths(lengths);
    let nulls = arrow::buffer::NullBuffer::from(rows.iter().map(|r| r.credits.is_some()).collect::<Vec<bool>>());
    let item = match defs::credits_type() {
        DataType::List(item) => item,
        other => return Err(Error::Internal(format!("credits type {other}"))),
    };
    Ok(ListArray::try_new(item, offsets, Arc::new(values), Some(nulls))?)
}

/// Every row of `gold.inference_usage` (tests, the demo, `tributary serve`'s summary).
pub async fn read_usage(tables: &Tables) -> Result<Vec<UsageRecord>> {
    use tributary_pipeline::tables::strings;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
    let def = defs::gold_inference_usage();
    if tables.open(&def.id).await?.is_none() {
        return Ok(vec![]);
    }
    let sql = "SELECT request_id, ts, adapter, datanet, tokens_in, tokens_out, fee, credits FROM gold.inference_usage ORDER BY ts, request_id";
    let mut out = Vec::new();
    for b in tables.query(sql).await? {
        let ids = strings(b.column(0))?;
        let ts = b.column(1).as_primitive::<TimestampMicrosecondType>();
        let adapter = strings(b.column(2))?;
        let datanet = strings(b.column(3))?;
        let tin = b.column(4).as_primitive::<Int64Type>();
        let tout = b.column(5).as_primitive::<Int64Type>();
        let fee = strings(b.column(6))?;
        let credits = b.column(7).as_list::<i32>();
        for i in 0..b.num_rows() {
            let credits = if credits.is_null(i) {
                None
            } else {
                let s = credits.value(i);
                let s = s.as_struct();
                let who = strings(s.column(0))?;
                let w = s.column(1).as_primitive::<Float64Type>();
                Some((0..s.len()).map(|j| Credit { address: who.value(j).to_string(), weight: w.value(j) }).collect())
            };
            out.push(UsageRecord {
                request_id: ids.value(i).to_string(),
                ts: DateTime::from_timestamp_micros(ts.value(i)).unwrap_or_default(),
                adapter: adapter.value(i).to_string(),
                datanet: (!datanet.is_null(i)).then(|| datanet.value(i).to_string()),
                tokens_in: tin.value(i).max(0) as usize,
                tokens_out: tout.value(i).max(0) as usize,
                fee: fee.value(i).parse().unwrap_or(0),
                credits,
            });
        }
    }
    Ok(out)
}
