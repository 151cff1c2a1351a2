//! Ingestion: inbox drops → `bronze.contributions`, exactly once, with every file logged.
//!
//! [`IngestBuilder`] plans (list the inbox, drop what the log has already judged), validates files
//! concurrently, then applies the order-dependent rules (duplicate files, per-epoch limits) in key
//! order so a run is deterministic, and commits each batch through [`commit`]'s exactly-once
//! protocol. `dry_run` stops before the commit and reports what would happen.

pub mod commit;
pub mod inbox;
pub mod log;
pub mod signature;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;

use crate::config::Config;
use crate::epoch::epoch_of;
use crate::error::{Error, Result};
use crate::reason::ReasonCode;
use crate::tables::Tables;
use inbox::{InboxEntry, SIG_SUFFIX};
use log::{FileStatus, LogEntry, LogState};
use validate::{RowContext, Validated};

/// Progress events for a progress bar.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The plan is made: this many files to judge.
    Planned {
        /// Files not yet judged.
        files: usize,
    },
    /// One more file judged.
    FileDone,
    /// A batch committed.
    Committed {
        /// Its number.
        batch: i64,
        /// Rows it added.
        rows: u64,
    },
}

/// Callback receiving [`Progress`] events.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// What an ingest run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestSummary {
    /// Objects listed in the inbox (without `.sig` companions).
    pub files_listed: usize,
    /// Already judged earlier (same path and bytes, or same listing metadata).
    pub files_skipped: usize,
    /// Accepted in this run.
    pub files_accepted: usize,
    /// Quarantined in this run.
    pub files_quarantined: usize,
    /// Quarantined files per reason code.
    pub quarantined_by_reason: BTreeMap<String, usize>,
    /// Rows appended to bronze.
    pub rows_added: u64,
    /// Content bytes appended.
    pub bytes_added: u64,
    /// Batches committed.
    pub batches: Vec<i64>,
    /// A batch replayed from bronze's commit info after an interrupted run.
    pub recovered_batch: Option<i64>,
    /// Listing errors (names the store cannot represent).
    pub unreadable: Vec<String>,
    /// Every file judged in this run, with its status and reason.
    pub judged: Vec<LogEntry>,
    /// True if nothing was committed.
    pub dry_run: bool,
}

/// A batch whose commit runs in the background while the next batch is judged.
struct InFlight {
    batch: i64,
    rows: u64,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl InFlight {
    /// Wait for the commit; the batch number and its rows once it is visible.
    async fn wait(self) -> Result<(i64, u64)> {
        let batch = self.batch;
        self.task.await.map_err(|e| Error::Internal(format!("commit of ingest batch {batch}: {e}")))??;
        Ok((batch, self.rows))
    }
}

/// Files up to this size are validated on the async worker that read them; larger ones on a
/// blocking thread.
///
/// Judging a typical file (hash, decode, ids: well under a millisecond) costs less than handing it
/// to another thread, and on a 2-core machine every handoff is a wake-up the kernel may place on
/// the busy core while the other one idles: with each file handed to the blocking pool, ingest kept
/// 1.7 of 2 cores busy; judged in place, on tasks spawned onto the runtime's workers, 1.9, and the
/// ingest benchmark ran in 0.88 s instead of 0.98 s (README § Benchmarks). A large file would hold
/// a worker for tens of milliseconds, so it still goes to the blocking pool.
pub const INLINE_VALIDATION_BYTES: u64 = 4 << 20;

/// Files hashed together: one per lane of [`tributary_hashes::sha256_many`].
const HASH_GROUP_FILES: usize = 16;

/// A group of files held in memory together is closed at this many bytes (a larger file is a
/// group of its own), so that reading ahead for the hash stays bounded whatever the file sizes.
const HASH_GROUP_BYTES: u64 = 32 << 20;

/// Groups read and hashed ahead of the files being judged.
const GROUPS_IN_FLIGHT: usize = 2;

/// Split a batch's files, in order, into the groups that are read and hashed together.
fn hash_groups(entries: Vec<InboxEntry>) -> Vec<Vec<InboxEntry>> {
    let mut groups = Vec::new();
    let (mut group, mut bytes) = (Vec::new(), 0u64);
    for entry in entries {
        if !group.is_empty() && (group.len() == HASH_GROUP_FILES || bytes.saturating_add(entry.size) > HASH_GROUP_BYTES) {
            groups.push(std::mem::take(&mut group));
            bytes = 0;
        }
        bytes = bytes.saturating_add(entry.size);
        group.push(entry);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

/// One file of a batch after reading: its log entry so far and, unless it was refused before its
/// bytes were needed (bad path, unknown datanet, over the size limit, vanished), what was read.
struct Fetched {
    log: LogEntry,
    read: Option<ReadFile>,
}

/// A file after its group was hashed: what was read comes with the sha256 of its bytes.
struct Hashed {
    log: LogEntry,
    read: Option<(ReadFile, [u8; 32])>,
}

/// The bytes of a file to judge, and what judging them needs.
struct ReadFile {
    datanet: crate::config::DatanetConfig,
    contributor: String,
    bytes: Bytes,
    /// The `.sig` companion, read when the datanet requires signatures.
    sig: Option<Bytes>,
}

/// What judging one file needs; shared by the tasks that judge a batch's files concurrently.
struct Judge {
    config: Arc<Config>,
    tables: Tables,
}

/// A spawned task that is aborted when its handle is dropped (a failed pass stops judging).
struct Spawned<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for Spawned<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// Builds and runs one ingest pass (`tributary ingest`).
pub struct IngestBuilder {
    config: Arc<Config>,
    tables: Tables,
    datanet: Option<String>,
    dry_run: bool,
    progress: Option<ProgressFn>,
    cancel: Option<Arc<AtomicBool>>,
    now: Option<chrono::DateTime<chrono::Utc>>,
}

impl IngestBuilder {
    /// An ingest pass over every datanet's inbox.
    pub fn new(config: Arc<Config>, tables: Tables) -> Self {
        IngestBuilder { config, tables, datanet: None, dry_run: false, progress: None, cancel: None, now: None }
    }

    /// Only this datanet's inbox.
    pub fn with_datanet(mut self, datanet: Option<String>) -> Self {
        self.datanet = datanet;
        self
    }

    /// Judge files but commit nothing.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Receive progress events.
    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Stop after the current batch's commit once `cancel` is set (Ctrl-C).
    pub fn with_cancel(mut self, cancel: Arc<AtomicBool>) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Use this clock instead of the system's (tests, backfills).
    pub fn with_now(mut self, now: chrono::DateTime<chrono::Utc>) -> Self {
        self.now = Some(now);
        self
    }

    fn emit(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(p);
        }
    }

    /// Run the pass.
    pub async fn execute(self) -> Result<IngestSummary> {
        if let Some(d) = &self.datanet
            && self.config.datanet(d).is_none()
        {
            return Err(Error::Config(format!("unknown datanet `{d}` (not in the config)")));
        }
        let mut summary = IngestSummary { dry_run: self.dry_run, ..Default::default() };
        if !self.dry_run {
            summary.recovered_batch = commit::recover(&self.tables).await?;
        }
        let mut state = log::load_state(&self.tables).await?;
        let (listed, unreadable) = inbox::list(self.tables.warehouse(), self.datanet.as_deref()).await?;
        summary.files_listed = listed.len();
        summary.unreadable = unreadable;
        let todo: Vec<InboxEntry> = listed
            .into_iter()
            .filter(|e| !state.seen_listing.contains(&(e.path.clone(), e.size, e.etag.clone())))
            .collect();
        summary.files_skipped = summary.files_listed - todo.len();
        self.emit(Progress::Planned { files: todo.len() });

        let tables = commit::IngestTables::open(&self.tables).await?;
        let next_batch = tables.next_batch().await?;
        drop(tables);
        let mut in_flight = None;
        let run = self.run_batches(todo, next_batch, &mut state, &mut summary, &mut in_flight).await;
        // Whatever happened, the batch being committed finishes before the pass returns.
        let last = match in_flight {
            Some(commit) => Some(commit.wait().await),
            None => None,
        };
        run?;
        if let Some(done) = last {
            self.committed(&mut summary, done?);
        }
        Ok(summary)
    }

    /// Judge `todo` in batches of `max_files_per_batch`, numbered from `next_batch`. Each batch's
    /// commit runs while the next batch is judged (its Parquet writers finish, then its two Delta
    /// commits); a batch's commit starts only after the previous one has finished, so batches
    /// become visible in order and bronze is never more than one batch ahead of the log.
    async fn run_batches(
        &self,
        todo: Vec<InboxEntry>,
        mut next_batch: i64,
        state: &mut LogState,
        summary: &mut IngestSummary,
        in_flight: &mut Option<InFlight>,
    ) -> Result<()> {
        let max_files = self.config.ingest.max_files_per_batch;
        let mut queue = todo.into_iter().peekable();
        while queue.peek().is_some() {
            if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst)) {
                break;
            }
            let now = self.now.unwrap_or_else(chrono::Utc::now);
            let chunk: Vec<InboxEntry> = queue.by_ref().take(max_files).collect();
            let batch = next_batch;
            let epoch = epoch_of(&self.config, now)?;
            let micros = now.timestamp_micros();
            // Files are judged concurrently but come back in key order, so the order-dependent
            // rules below are deterministic; accepted rows go straight to the Parquet writers,
            // which encode while the rest of the chunk is still being judged.
            let mut files = if self.dry_run { None } else { Some(commit::BronzeFiles::open(&self.tables).await?) };
            // Files are read and hashed a group at a time (sixteen sha256s at once, see
            // `tributary_hashes`), then each is judged on a task of its own, so judging goes on
            // while this loop waits for a writer, and the runtime's workers share the files.
            let judge = Arc::new(Judge { config: self.config.clone(), tables: self.tables.clone() });
            let mut judged = futures::stream::iter(hash_groups(chunk))
                .map(|group| {
                    let judge = judge.clone();
                    let task = Spawned(tokio::spawn(async move { judge.read_group(group, batch, epoch, micros).await }));
                    async move { task.await.map_err(|e| Error::Internal(format!("reading task failed: {e}")))? }
                })
                .buffered(GROUPS_IN_FLIGHT)
                .flat_map(|group| {
                    let files: Vec<Result<Hashed>> = match group {
                        Ok(files) => files.into_iter().map(Ok).collect(),
                        Err(e) => vec![Err(e)],
                    };
                    futures::stream::iter(files)
                })
                .map(|fetched| {
                    let task = fetched.map(|f| Spawned(tokio::spawn(async move { Judge::judge_read(f).await })));
                    async move { task?.await.map_err(|e| Error::Internal(format!("validation task failed: {e}")))? }
                })
                .buffered(self.config.ingest.concurrency);

            let mut entries = Vec::new();
            let mut batch_rows = 0u64;
            while let Some(result) = judged.next().await {
                let (mut entry, validated) = result?;
                if entry.sha256.as_ref().is_some_and(|sha| state.seen_bytes.contains(&(entry.path.clone(), sha.clone()))) {
                    // Same bytes re-listed under new metadata (e.g. touched): already judged.
                    summary.files_skipped += 1;
                    continue;
                }
                self.apply_stateful_rules(state, &mut entry, validated.as_ref());
                if entry.status == FileStatus::Accepted
                    && let Some(v) = validated
                {
                    batch_rows += v.rows.num_rows() as u64;
                    if let Some(files) = files.as_mut() {
                        files.push(v.rows).await?;
                    }
                }
                state.add(&entry);
                match entry.status {
                    FileStatus::Accepted => {
                        summary.files_accepted += 1;
                        summary.rows_added += entry.rows;
                        summary.bytes_added += entry.bytes;
                    }
                    FileStatus::Quarantined => {
                        summary.files_quarantined += 1;
                        *summary.quarantined_by_reason.entry(entry.reason.clone().unwrap_or_default()).or_default() += 1;
                    }
                }
                entries.push(entry);
                self.emit(Progress::FileDone);
            }
            drop(judged);
            if let Some(files) = files.filter(|_| !entries.is_empty()) {
                if let Some(previous) = in_flight.take() {
                    self.committed(summary, previous.wait().await?);
                }
                let (tables, log) = (self.tables.clone(), entries.clone());
                let task = tokio::spawn(async move { commit::commit_batch(&tables, batch, files, &log).await });
                *in_flight = Some(InFlight { batch, rows: batch_rows, task });
                next_batch += 1;
            }
            summary.judged.extend(entries);
        }
        Ok(())
    }

    fn committed(&self, summary: &mut IngestSummary, (batch, rows): (i64, u64)) {
        summary.batches.push(batch);
        self.emit(Progress::Committed { batch, rows });
    }

    /// Rules that depend on what was accepted before (in the log or earlier in this run).
    fn apply_stateful_rules(&self, state: &mut LogState, entry: &mut LogEntry, validated: Option<&Validated>) {
        if entry.status != FileStatus::Accepted || validated.is_none() {
            return;
        }
        let (Some(d), Some(c), Some(sha)) = (entry.datanet.clone(), entry.contributor.clone(), entry.sha256.clone()) else {
            return;
        };
        let refuse = |entry: &mut LogEntry, code: ReasonCode, detail: String| {
            entry.status = FileStatus::Quarantined;
            entry.reason = Some(code.as_str().to_string());
            entry.detail = Some(detail);
            entry.rows = 0;
            entry.bytes = 0;
        };
        if state.accepted.contains(&(d.clone(), c.clone(), sha.clone())) {
            refuse(entry, ReasonCode::DuplicateFile, format!("same bytes ({}) already accepted from {c}", &sha[..12]));
            return;
        }
        let Some(cfg) = self.config.datanet(&d) else { return };
        let (used_rows, used_bytes) = state.usage.get(&(d.clone(), c.clone(), entry.epoch)).copied().unwrap_or((0, 0));
        if cfg.daily_row_limit > 0 && used_rows + entry.rows > cfg.daily_row_limit {
            let detail = format!("{used_rows} + {} rows > daily_row_limit {}", entry.rows, cfg.daily_row_limit);
            refuse(entry, ReasonCode::DailyRowLimitExceeded, detail);
        } else if cfg.daily_byte_limit > 0 && used_bytes + entry.bytes > cfg.daily_byte_limit {
            let detail = format!("{used_bytes} + {} bytes > daily_byte_limit {}", entry.bytes, cfg.daily_byte_limit);
            refuse(entry, ReasonCode::DailyByteLimitExceeded, detail);
        }
    }
}

impl Judge {
    /// Read `group`'s files (`ingest.concurrency` at a time), then hash the bytes of all of them at once.
    async fn read_group(
        &self,
        group: Vec<InboxEntry>,
        batch: i64,
        epoch: i64,
        micros: i64,
    ) -> Result<Vec<Hashed>> {
        // At most `concurrency` reads at once, in order.
        let fetched: Vec<Fetched> = futures::stream::iter(group)
            .map(|e| self.fetch_file(e, batch, epoch, micros))
            .buffered(self.config.ingest.concurrency)
            .try_collect()
            .await?;
        let hash = |fetched: Vec<Fetched>| {
            let messages: Vec<&[u8]> = fetched.iter().filter_map(|f| f.read.as_ref()).map(|r| r.bytes.as_ref()).collect();
            let mut shas = tributary_hashes::sha256_many(&messages, tributary_hashes::Fold::Bytes).into_iter();
            fetched
                .into_iter()
                // `sha256_many` returns one digest per message, in order: one per file read.
                .map(|Fetched { log, read }| Hashed { log, read: read.and_then(|r| shas.next().map(|sha| (r, sha))) })
                .collect::<Vec<_>>()
        };
        // A group of small files (sixteen typical ones: ~4 MB, ~1.5 ms) is hashed on this worker, a
        // larger one on a blocking thread, by the same rule as validation.
        let bytes: usize = fetched.iter().filter_map(|f| f.read.as_ref()).map(|r| r.bytes.len()).sum();
        if bytes as u64 <= INLINE_VALIDATION_BYTES {
            Ok(hash(fetched))
        } else {
            tokio::task::spawn_blocking(move || hash(fetched))
                .await
                .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))
        }
    }

    /// Read one inbox file (and its signature); refuse it already if its path, datanet or size
    /// is wrong.
    async fn fetch_file(&self, entry: InboxEntry, batch: i64, epoch: i64, micros: i64) -> Result<Fetched> {
        let mut log = LogEntry {
            path: entry.path.clone(),
            datanet: None,
            contributor: None,
            size: entry.size,
            etag: entry.etag.clone(),
            sha256: None,
            status: FileStatus::Quarantined,
            reason: None,
            detail: None,
            rows: 0,
            bytes: 0,
            epoch,
            batch,
            ingested_at_micros: micros,
        };
        let quarantine = |log: LogEntry, refusal: (ReasonCode, String)| Ok(Fetched { log: quarantined(log, refusal), read: None });
        let parsed = match inbox::parse_path(&entry.path) {
            Ok(p) => p,
            Err(r) => return quarantine(log, r),
        };
        log.contributor = Some(parsed.contributor.clone());
        let Some(datanet) = self.config.datanet(&parsed.datanet).cloned() else {
            return quarantine(log, (ReasonCode::UnknownDatanet, format!("datanet `{}` is not declared", parsed.datanet)));
        };
        log.datanet = Some(datanet.name.clone());
        if entry.size > datanet.max_file_bytes {
            return quarantine(
                log,
                (ReasonCode::FileTooLarge, format!("{} bytes, over max_file_bytes {}", entry.size, datanet.max_file_bytes)),
            );
        }
        let store = self.tables.warehouse().store().clone();
        let location = Path::from(entry.path.as_str());
        let bytes: Bytes = match store.get(&location).await {
            Ok(r) => r.bytes().await?,
            // Deleted between listing and reading: nothing to judge, nothing to log.
            Err(object_store::Error::NotFound { .. }) => {
                return quarantine(log, (ReasonCode::InvalidPath, "file vanished before it could be read".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let sig = if datanet.require_signature {
            match store.get(&Path::from(format!("{}{SIG_SUFFIX}", entry.path))).await {
                Ok(r) => Some(r.bytes().await?),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        Ok(Fetched { log, read: Some(ReadFile { datanet, contributor: parsed.contributor, bytes, sig }) })
    }

    /// Judge a file whose bytes hash to `sha`: its log entry, and its rows if it is accepted. Small files are judged on the calling worker, large ones on a blocking thread
    /// (see [`INLINE_VALIDATION_BYTES`]).
    async fn judge_read(hashed: Hashed) -> Result<(LogEntry, Option<Validated>)> {
        let Hashed { mut log, read } = hashed;
        let Some((read, sha)) = read else { return Ok((log, None)) };
        let ReadFile { datanet: datanet_cfg, contributor, bytes, sig: sig_bytes } = read;
        let (path, epoch, micros, batch) = (log.path.clone(), log.epoch, log.ingested_at_micros, log.batch);
        let inline = bytes.len() as u64 <= INLINE_VALIDATION_BYTES;
        let judge = move || {
            let sha_hex = hex::encode(sha);
            if datanet_cfg.require_signature {
                let Some(sig) = sig_bytes else {
                    return (sha_hex, Err((ReasonCode::SignatureMissing, "datanet requires <file>.sig".to_string())));
                };
                if let Err(r) = signature::verify(&sig, &sha_hex, &contributor) {
                    return (sha_hex, Err(r));
                }
            }
            let ctx = RowContext {
                datanet: datanet_cfg.name.clone(),
                contributor,
                file_path: path,
                file_sha256: sha,
                epoch,
                ingested_at_micros: micros,
                batch,
            };
            (sha_hex, validate::validate_file(bytes, &datanet_cfg, &ctx))
        };
        let outcome = if inline {
            judge()
        } else {
            tokio::task::spawn_blocking(judge).await.map_err(|e| Error::Internal(format!("validation task failed: {e}")))?
        };
        let (sha_hex, result) = outcome;
        log.sha256 = Some(sha_hex);
        match result {
            Ok(v) => {
                log.status = FileStatus::Accepted;
                log.rows = v.rows.num_rows() as u64;
                log.bytes = v.content_bytes;
                Ok((log, Some(v)))
            }
            Err(r) => Ok((quarantined(log, r), None)),
        }
    }
}

/// `log` marked quarantined for `code`.
fn quarantined(mut log: LogEntry, (code, detail): (ReasonCode, String)) -> LogEntry {
    log.status = FileStatus::Quarantined;
    log.reason = Some(code.as_str().to_string());
    log.detail = Some(detail);
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize, size: u64) -> InboxEntry {
        InboxEntry { path: format!("inbox/d/0x{:040x}/{i}.parquet", 1), size, etag: None }
    }

    #[test]
    fn hash_groups_keep_order_and_bound_files_and_bytes() {
        let sizes: Vec<u64> = (0..40).map(|i| if i == 20 { 100 << 20 } else { 1 << 20 }).collect();
        let groups = hash_groups(sizes.iter().enumerate().map(|(i, &s)| entry(i, s)).collect());
        let order: Vec<String> = groups.iter().flatten().map(|e| e.path.clone()).collect();
        assert_eq!(order, (0..40).map(|i| entry(i, 0).path).collect::<Vec<_>>(), "every file once, in order");
        for g in &groups {
            assert!(!g.is_empty() && g.len() <= HASH_GROUP_FILES);
            let bytes: u64 = g.iter().map(|e| e.size).sum();
            assert!(bytes <= HASH_GROUP_BYTES || g.len() == 1, "{} files, {bytes} bytes", g.len());
        }
        let big = groups.iter().find(|g| g.iter().any(|e| e.size == 100 << 20)).expect("the big file");
        assert_eq!(big.len(), 1, "a file over the byte bound is a group of its own");
        assert_eq!(groups[0].len(), HASH_GROUP_FILES);
        assert!(hash_groups(Vec::new()).is_empty());
    }
}
