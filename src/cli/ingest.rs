//! `tributary ingest`: inbox → bronze.contributions, exactly once.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tributary_pipeline::ingest::{IngestBuilder, IngestSummary, Progress};

use super::{App, Format, output};

/// Arguments of `tributary ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Only this datanet's inbox.
    #[arg(long)]
    pub datanet: Option<String>,
    /// Keep polling the inbox every `ingest.poll_interval_secs`; Ctrl-C finishes the current commit and exits.
    #[arg(long)]
    pub watch: bool,
    /// Judge files and print what would happen, committing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// List every judged file, not only the totals.
    #[arg(long)]
    pub verbose: bool,
}

pub async fn run(app: &App, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let catalog = app.catalog()?;
    let _lock = catalog.try_lock("ingest")?;
    let cancel = super::stop_flag("stopping after the current commit…");
    loop {
        let run_id = catalog.start_run("ingest", &serde_json::json!({"datanet": args.datanet, "dry_run": args.dry_run}))?;
        let result = ingest_once(app, &args, cancel.clone()).await;
        match &result {
            Ok(s) => catalog.finish_run(run_id, Ok(&serde_json::to_value(Totals::from(s))?))?,
            Err(e) => catalog.finish_run(run_id, Err(&format!("{e:#}")))?,
        }
        let summary = result?;
        if !args.watch || summary.files_accepted + summary.files_quarantined > 0 || summary.recovered_batch.is_some() {
            print_summary(&summary, app.format, args.verbose)?;
        }
        if !args.watch || cancel.load(Ordering::SeqCst) {
            break;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(app.config.ingest.poll_interval_secs);
        while tokio::time::Instant::now() < deadline && !cancel.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if cancel.load(Ordering::SeqCst) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn ingest_once(app: &App, args: &IngestArgs, cancel: Arc<AtomicBool>) -> anyhow::Result<IngestSummary> {
    let bar = ProgressBar::hidden();
    let progress_bar = bar.clone();
    let progress = Arc::new(move |p: Progress| match p {
        Progress::Planned { files } if files > 20 => {
            progress_bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            progress_bar.set_length(files as u64);
            progress_bar.set_style(
                ProgressStyle::with_template("{spinner} ingest [{bar:30}] {pos}/{len} files {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
        Progress::Planned { .. } => {}
        Progress::FileDone => progress_bar.inc(1),
        Progress::Committed { batch, rows } => progress_bar.set_message(format!("batch {batch}: +{rows} rows")),
    });
    let summary = IngestBuilder::new(app.config.clone(), app.tables()?)
        .with_datanet(args.datanet.clone())
        .with_dry_run(args.dry_run)
        .with_progress(progress)
        .with_cancel(cancel)
        .execute()
        .await?;
    bar.finish_and_clear();
    Ok(summary)
}

/// The part of a summary worth storing in the run history.
#[derive(serde::Serialize)]
struct Totals {
    files_listed: usize,
    files_skipped: usize,
    files_accepted: usize,
    files_quarantined: usize,
    rows_added: u64,
    quarantined_by_reason: std::collections::BTreeMap<String, usize>,
    batches: Vec<i64>,
}

impl From<&IngestSummary> for Totals {
    fn from(s: &IngestSummary) -> Self {
        Totals {
            files_listed: s.files_listed,
            files_skipped: s.files_skipped,
            files_accepted: s.files_accepted,
            files_quarantined: s.files_quarantined,
            rows_added: s.rows_added,
            quarantined_by_reason: s.quarantined_by_reason.clone(),
            batches: s.batches.clone(),
        }
    }
}

/// Print an ingest summary (also used by the demo).
pub fn print_summary(s: &IngestSummary, format: Format, verbose: bool) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let verb = if s.dry_run { "would add" } else { "added" };
    println!(
        "ingest: {} listed, {} already ingested, {} accepted, {} quarantined; {verb} {} rows ({} bytes) in {} batch(es)",
        s.files_listed,
        s.files_skipped,
        s.files_accepted,
        s.files_quarantined,
        s.rows_added,
        s.bytes_added,
        s.batches.len()
    );
    if let Some(b) = s.recovered_batch {
        println!("recovered: batch {b} had reached bronze but not the ingest log; its log entries were replayed");
    }
    for u in &s.unreadable {
        println!("unreadable inbox entry: {u}");
    }
    if !s.quarantined_by_reason.is_empty() {
        let rows = s.quarantined_by_reason.iter().map(|(r, n)| vec![r.clone(), n.to_string()]).collect();
        println!("{}", output::table(&["reason", "files"], rows));
    }
    let shown: Vec<_> = s
        .judged
        .iter()
        .filter(|e| verbose || e.reason.is_some())
        .map(|e| {
            vec![
                e.path.clone(),
                e.status.as_str().to_string(),
                e.reason.clone().unwrap_or_default(),
                e.detail.clone().unwrap_or_default(),
                e.rows.to_string(),
            ]
        })
        .collect();
    if !shown.is_empty() {
        println!("{}", output::table(&["file", "status", "reason", "detail", "rows"], shown));
    }
    Ok(())
}
