//! `tributary epoch run N` and `tributary backfill`: the whole pipeline for one epoch, stage by
//! stage, every attempt recorded in the ops catalog.
//!
//! Stages run in order — ingest → models → train → attribute → rewards → settle. Each is idempotent
//! on its own (ingest is exactly-once, models commit atomically, training is deterministic given
//! its seed and inputs, rewards replace the epoch's rows, settlement resumes from the catalog), and
//! a stage that already succeeded for the epoch is skipped, so re-running a finished epoch changes
//! nothing and a run killed at any instant resumes where it stopped. A failed stage is retried with
//! exponential backoff; `--stage` retries one stage alone.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tributary_pipeline::ingest::IngestBuilder;
use tributary_pipeline::models::{EpochSelection, RunBuilder};
use tributary_pipeline::stages::{self, STAGES};

use super::{App, Format, output};

/// Arguments of `tributary epoch run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The epoch to run.
    pub epoch: i64,
    #[command(flatten)]
    pub opts: RunOpts,
}

/// Options shared by `epoch run` and `backfill`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOpts {
    /// Run only this stage (retry a failed stage alone): ingest, models, train, attribute, rewards, settle.
    #[arg(long)]
    pub stage: Option<String>,
    /// Re-run stages that already succeeded for this epoch.
    #[arg(long)]
    pub force: bool,
    /// Attempts per stage before the run fails.
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
    /// First retry delay in seconds; doubles on each further retry.
    #[arg(long, default_value_t = 2.0)]
    pub backoff_secs: f64,
}

impl Default for RunOpts {
    fn default() -> Self {
        RunOpts { stage: None, force: false, attempts: 3, backoff_secs: 2.0 }
    }
}

/// Arguments of `tributary backfill`.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// First epoch (inclusive).
    #[arg(long)]
    pub from: i64,
    /// Last epoch (inclusive).
    #[arg(long)]
    pub to: i64,
    #[command(flatten)]
    pub opts: RunOpts,
}

/// One stage's outcome in a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageOutcome {
    /// Stage name.
    pub stage: String,
    /// `succeeded`, `skipped` (already done) or `failed`.
    pub status: String,
    /// Attempts made in this run.
    pub attempts: u32,
    /// Seconds spent in this run.
    pub seconds: f64,
    /// The stage's output, or the error.
    pub detail: serde_json::Value,
}

/// Run every stage of `epoch` (or only `opts.stage`). Holds the epoch's lock for the whole run, so
/// two schedulers never run the same epoch.
pub async fn run_epoch(app: &App, epoch: i64, opts: &RunOpts) -> anyhow::Result<Vec<StageOutcome>> {
    if let Some(s) = &opts.stage
        && !STAGES.contains(&s.as_str())
    {
        bail!("unknown stage `{s}` (stages: {})", STAGES.join(", "));
    }
    let catalog = Arc::new(app.catalog()?);
    let _lock = catalog.try_lock(&format!("epoch-{epoch}")).with_context(|| format!("epoch {epoch} is already running"))?;
    let run_id = catalog.start_run("epoch", &json!({"epoch": epoch, "stage": opts.stage, "force": opts.force}))?;
    let mut outcomes = Vec::new();
    let mut failed = None;
    for stage in STAGES {
        if opts.stage.as_deref().is_some_and(|s| s != stage) {
            continue;
        }
        if !opts.force
            && let Some(done) = stages::succeeded(&catalog, epoch, stage)?
        {
            outcomes.push(StageOutcome {
                stage: stage.into(),
                status: "skipped".into(),
                attempts: 0,
                seconds: 0.0,
                detail: json!({"already_succeeded_at": done.finished_at, "attempt": done.attempt}),
            });
            continue;
        }
        let started = Instant::now();
        let mut attempts = 0;
        let mut delay = opts.backoff_secs;
        let outcome = loop {
            attempts += 1;
            eprintln!("epoch {epoch}: {stage} (attempt {attempts})");
            let id = stages::begin(&catalog, Some(run_id), epoch, stage)?;
            let t = Instant::now();
            let result = run_stage(app, &catalog, epoch, stage).await;
            let ms = t.elapsed().as_millis() as i64;
            match result {
                Ok(out) => {
                    stages::finish(&catalog, id, Ok(&out), ms)?;
                    break Ok(out);
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    stages::finish(&catalog, id, Err(&msg), ms)?;
                    if attempts >= opts.attempts.max(1) {
                        break Err(msg);
                    }
                    eprintln!("epoch {epoch}: {stage} failed ({msg}); retrying in {delay:.1}s");
                    tokio::time::sleep(Duration::from_secs_f64(delay)).await;
                    delay *= 2.0;
                }
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(detail) => outcomes.push(StageOutcome { stage: stage.into(), status: "succeeded".into(), attempts, seconds, detail }),
            Err(msg) => {
                outcomes.push(StageOutcome { stage: stage.into(), status: "failed".into(), attempts, seconds, detail: json!(msg) });
                failed = Some(format!("stage `{stage}` failed after {attempts} attempt(s): {msg}"));
                break;
            }
        }
    }
    let summary = serde_json::to_value(&outcomes)?;
    match &failed {
        None => catalog.finish_run(run_id, Ok(&summary))?,
        Some(e) => catalog.finish_run(run_id, Err(e))?,
    }
    if let Some(e) = failed {
        bail!("epoch {epoch}: {e} (retry it alone with `tributary epoch run {epoch} --stage <stage>`)");
    }
    Ok(outcomes)
}

/// One stage, returning its JSON output (Delta versions, counts, roots).
async fn run_stage(app: &App, catalog: &Arc<tributary_pipeline::Catalog>, epoch: i64, stage: &str) -> anyhow::Result<serde_json::Value> {
    let tables = app.tables()?;
    match stage {
        "ingest" => {
            let _lock = catalog.try_lock("ingest")?;
            let s = IngestBuilder::new(app.config.clone(), tables.clone()).execute().await?;
            let versions = tables.list().await?;
            Ok(json!({
                "files_accepted": s.files_accepted,
                "files_quarantined": s.files_quarantined,
                "rows_added": s.rows_added,
                "recovered_batch": s.recovered_batch,
                "bronze_version": versions.iter().find(|(id, _)| id.to_string() == "bronze.contributions").map(|(_, v)| *v),
            }))
        }
        "models" => {
            let project = Arc::new(super::sql::load_project(None)?);
            let report = RunBuilder::new(project, app.config.clone(), tables, catalog.clone())
                .with_epochs(EpochSelection::Only(vec![epoch]))
                .execute()
                .await?;
            if report.failed() {
                bail!("SQL models failed: {}", serde_json::to_string(&report)?);
            }
            Ok(serde_json::to_value(&report)?)
        }
        "train" => {
            let mut out = serde_json::Map::new();
            for d in &app.config.datanets {
                let summary = tributary_jobs::train::TrainJob::new(app.config.clone(), tables.clone(), d.name.clone())
                    .with_epoch(Some(epoch))
                    .execute()
                    .await
                    .with_context(|| format!("training datanet {}", d.name))?;
                super::train::publish_credits_index(app, &summary).await?;
                out.insert(d.name.clone(), serde_json::to_value(&summary)?);
            }
            Ok(serde_json::Value::Object(out))
        }
        "attribute" => {
            let mut out = serde_json::Map::new();
            for d in &app.config.datanets {
                let summary = tributary_jobs::attribute::AttributeJob::new(app.config.clone(), tables.clone(), d.name.clone())
                    .with_epoch(Some(epoch))
                    .execute()
                    .await
                    .with_context(|| format!("attributing datanet {}", d.name))?;
                out.insert(d.name.clone(), serde_json::to_value(&summary)?);
            }
            Ok(serde_json::Value::Object(out))
        }
        "rewards" => {
            let report = tributary_ledger::payouts::write_epoch_payouts(&app.config, &tables, epoch, None).await?;
            Ok(serde_json::to_value(&report)?)
        }
        "settle" => {
            let receipt = super::epoch::settle_epoch(app, epoch, None).await?;
            Ok(serde_json::to_value(&receipt)?)
        }
        other => bail!("unknown stage `{other}`"),
    }
}

/// Print a run's stage outcomes.
pub fn print_outcomes(epoch: i64, outcomes: &[StageOutcome], format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&json!({"epoch": epoch, "stages": outcomes}))?);
        return Ok(());
    }
    let rows = outcomes
        .iter()
        .map(|o| {
            let detail = match &o.detail {
                serde_json::Value::String(s) => s.clone(),
                v => {
                    let s = v.to_string();
                    if s.len() > 90 { format!("{}…", &s[..s.char_indices().nth(89).map_or(s.len(), |c| c.0)]) } else { s }
                }
            };
            vec![o.stage.clone(), o.status.clone(), o.attempts.to_string(), format!("{:.1}s", o.seconds), detail]
        })
        .collect();
    println!("epoch {epoch}");
    println!("{}", output::table(&["stage", "status", "attempts", "time", "detail"], rows));
    Ok(())
}

/// `tributary epoch run N`.
pub async fn run(app: &App, args: RunArgs) -> anyhow::Result<ExitCode> {
    let outcomes = run_epoch(app, args.epoch, &args.opts).await?;
    print_outcomes(args.epoch, &outcomes, app.format)?;
    Ok(ExitCode::SUCCESS)
}

/// `tributary backfill --from A --to B`: run epochs A..=B in order, stopping at the first failure.
pub async fn backfill(app: &App, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    if args.from > args.to {
        bail!("--from {} is after --to {}", args.from, args.to);
    }
    for epoch in args.from..=args.to {
        let outcomes = run_epoch(app, epoch, &args.opts).await?;
        print_outcomes(epoch, &outcomes, app.format)?;
    }
    Ok(ExitCode::SUCCESS)
}
