//! `ops.ingest_log`: the record of every inbox file version ingestion has judged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::Int64Type;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reason::ReasonCode;
use crate::tables::{Tables, defs};

/// Status stored in `ops.ingest_log.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Rows were appended to `bronze.contributions`.
    Accepted,
    /// The file was refused with a reason code.
    Quarantined,
}

impl FileStatus {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Accepted => "accepted",
            FileStatus::Quarantined => "quarantined",
        }
    }
}

/// One row of `ops.ingest_log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Inbox key.
    pub path: String,
    /// Datanet, when the path names a declared one.
    pub datanet: Option<String>,
    /// Contributor, when the path holds a valid address.
    pub contributor: Option<String>,
    /// Size from the listing.
    pub size: u64,
    /// ETag from the listing.
    pub etag: Option<String>,
    /// sha256 of the bytes, when they were read.
    pub sha256: Option<String>,
    /// Accepted or quarantined.
    pub status: FileStatus,
    /// Reason code when quarantined (stored as its string).
    pub reason: Option<String>,
    /// Human-readable detail.
    pub detail: Option<String>,
    /// Rows appended (0 when quarantined).
    pub rows: u64,
    /// Content bytes appended.
    pub bytes: u64,
    /// Epoch of ingestion.
    pub epoch: i64,
    /// Ingest batch that judged the file.
    pub batch: i64,
    /// When, µs since the Unix epoch.
    pub ingested_at_micros: i64,
}

impl LogEntry {
    /// The reason as a typed code.
    pub fn reason_code(&self) -> Option<ReasonCode> {
        self.reason.as_deref().and_then(|r| r.parse().ok())
    }
}

/// Build the Arrow batch for `entries` in the `ops.ingest_log` schema.
pub fn to_batch(entries: &[LogEntry]) -> Result<RecordBatch> {
    let s = |f: fn(&LogEntry) -> Option<&str>| -> ArrayRef { Arc::new(entries.iter().map(f).collect::<StringArray>()) };
    let i = |f: fn(&LogEntry) -> i64| -> ArrayRef { Arc::new(entries.iter().map(f).collect::<Int64Array>()) };
    let columns: Vec<ArrayRef> = vec![
        s(|e| Some(e.path.as_str())),
        s(|e| e.datanet.as_deref()),
        s(|e| e.contributor.as_deref()),
        i(|e| e.size as i64),
        s(|e| e.etag.as_deref()),
        s(|e| e.sha256.as_deref()),
        s(|e| Some(e.status.as_str())),
        s(|e| e.reason.as_deref()),
        s(|e| e.detail.as_deref()),
        i(|e| e.rows as i64),
        i(|e| e.bytes as i64),
        i(|e| e.epoch),
        i(|e| e.batch),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(entries.iter().map(|e| e.ingested_at_micros)).with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(defs::ops_ingest_log().schema, columns)?)
}

/// What the log says about files already judged, for skipping and limits.
#[derive(Debug, Default)]
pub struct LogState {
    /// (path, size, etag) of every logged file version: listed again unchanged → skip unread.
    pub seen_listing: HashSet<(String, u64, Option<String>)>,
    /// (path, sha256) of every logged file version: same bytes at the same path → skip.
    pub seen_bytes: HashSet<(String, String)>,
    /// (datanet, contributor, sha256) of accepted files: the same bytes again → `duplicate_file`.
    pub accepted: HashSet<(String, String, String)>,
    /// (datanet, contributor, epoch) → (rows, bytes) accepted so far, for the per-epoch limits.
    pub usage: HashMap<(String, String, i64), (u64, u64)>,
    /// Total entries.
    pub entries: usize,
}

impl LogState {
    /// Fold one entry into the state (used for the log on disk and for a batch being built).
    pub fn add(&mut self, e: &LogEntry) {
        self.entries += 1;
        self.seen_listing.insert((e.path.clone(), e.size, e.etag.clone()));
        if let Some(sha) = &e.sha256 {
            self.seen_bytes.insert((e.path.clone(), sha.clone()));
        }
        if e.status == FileStatus::Accepted
            && let (Some(d), Some(c), Some(sha)) = (&e.datanet, &e.contributor, &e.sha256)
        {
            self.accepted.insert((d.clone(), c.clone(), sha.clone()));
            let u = self.usage.entry((d.clone(), c.clone(), e.epoch)).or_default();
            u.0 += e.rows;
            u.1 += e.bytes;
        }
    }
}

/// Read the whole log into a [`LogState`].
pub async fn load_state(tables: &Tables) -> Result<LogState> {
    let mut state = LogState::default();
    for e in read_all(tables).await? {
        state.add(&e);
    }
    Ok(state)
}

/// Every row of `ops.ingest_log` (empty if the table does not exist yet).
pub async fn read_all(tables: &Tables) -> Result<Vec<LogEntry>> {
    let def = defs::ops_ingest_log();
    let Some(table) = tables.open(&def.id).await? else { return Ok(vec![]) };
    let ctx = datafusion::prelude::SessionContext::new();
    tables.register(&ctx, &def.id, &table).await?;
    let batches = ctx
        .sql(
            "SELECT path, datanet, contributor, size, etag, sha256, status, reason, detail, rows, bytes, epoch,
                    ingest_batch, CAST(ingested_at AS BIGINT) AS at FROM ops.ingest_log",
        )
        .await?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in batches {
        // DataFusion may hand strings back as Utf8View: normalize before downcasting.
        let s = |i: usize| -> Result<arrow::array::StringArray> {
            Ok(arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8)?.as_string::<i32>().clone())
        };
        let n = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (path, datanet, contributor, etag, sha, status, reason, detail) =
            (s(0)?, s(1)?, s(2)?, s(4)?, s(5)?, s(6)?, s(7)?, s(8)?);
        let (size, rows, bytes, epoch, batch, at) = (n(3), n(9), n(10), n(11), n(12), n(13));
        let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
        for i in 0..b.num_rows() {
            let status = match status.value(i) {
                "accepted" => FileStatus::Accepted,
                "quarantined" => FileStatus::Quarantined,
                other => return Err(Error::Internal(format!("ops.ingest_log holds unknown status `{other}`"))),
            };
            out.push(LogEntry {
                path: path.value(i).to_string(),
                datanet: opt(&datanet, i),
                contributor: opt(&contributor, i),
                size: size.value(i) as u64,
                etag: opt(&etag, i),
                sha256: opt(&sha, i),
                status,
                reason: opt(&reason, i),
                detail: opt(&detail, i),
                rows: rows.value(i) as u64,
                bytes: bytes.value(i) as u64,
                epoch: epoch.value(i),
                batch: batch.value(i),
                ingested_at_micros: at.value(i),
            });
        }
    }
    Ok(out)
}
