//! `tributary sql run | backfill | test | plan | lineage | query`: the SQL model runner.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tributary_pipeline::models::cluster::Engine;
use tributary_pipeline::models::lineage;
use tributary_pipeline::models::query::{Encoding, encode};
use tributary_pipeline::models::plan::ranges;
use tributary_pipeline::models::test as sql_test;
use tributary_pipeline::models::{
    AsOf, EpochSelection, ModelStatus, Project, QueryBuilder, RunBuilder, RunEvent, RunReport, State,
};

use super::{App, Format, output};

/// Arguments of `tributary sql`.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The SQL project directory (default: ./sql, else the models built into tributary).
    #[arg(long, global = true)]
    pub project: Option<PathBuf>,
    #[command(subcommand)]
    pub command: SqlCommand,
}

/// The `sql` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SqlCommand {
    /// Build models that are new or stale, in dependency order (write–audit–publish).
    Run(RunArgs),
    /// Rebuild the epochs FROM..=TO of incremental models.
    Backfill(BackfillArgs),
    /// Compile every model and run every audit against the committed tables.
    Test,
    /// Show what `run` would build and why, building nothing.
    Plan(RunArgs),
    /// Print the DAG and write a manifest (compiled SQL, dependencies, Delta versions).
    Lineage(LineageArgs),
    /// Run read-only SQL over every table.
    Query(QueryArgs),
}

/// Arguments of `sql run` and `sql plan`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Models to run (`layer.name` or `name`; `name+` adds everything downstream). Default: all.
    pub models: Vec<String>,
    /// Rebuild only this epoch of incremental models (repeatable).
    #[arg(long, conflicts_with = "full_refresh")]
    pub epoch: Vec<i64>,
    /// Rebuild the selected models from scratch.
    #[arg(long)]
    pub full_refresh: bool,
    /// Run the models' queries on the Ballista cluster whose scheduler is at HOST:PORT
    /// (see `tributary cluster`); planning, audits and commits stay here.
    #[arg(long, value_name = "HOST:PORT")]
    pub cluster: Option<String>,
}

/// Arguments of `sql backfill`.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// Models to backfill (default: all incremental models).
    pub models: Vec<String>,
    /// First epoch.
    #[arg(long)]
    pub from: i64,
    /// Last epoch (inclusive).
    #[arg(long)]
    pub to: i64,
}

/// Arguments of `sql lineage`.
#[derive(Debug, clap::Args)]
pub struct LineageArgs {
    /// Where to write the manifest.
    #[arg(long, default_value = "sql-manifest.json")]
    pub out: PathBuf,
}

/// Output formats of `sql query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryOutput {
    /// Aligned table.
    Table,
    /// CSV with a header.
    Csv,
    /// A JSON array of rows.
    Json,
    /// Parquet (to --out, or to a non-terminal stdout).
    Parquet,
}

/// Arguments of `sql query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The SQL (read-only; every table is registered as `layer.table`, plus `config.datanets`).
    pub sql: String,
    /// Time travel: `VERSION` for the one table the query reads, or `layer.table=VERSION` (repeatable).
    #[arg(long = "as-of", value_name = "[TABLE=]VERSION")]
    pub as_of: Vec<AsOf>,
    /// Output format (default: the global --format).
    #[arg(long, value_enum)]
    pub output: Option<QueryOutput>,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The project: `--project`, else `./sql` if present, else the built-in models.
pub fn load_project(dir: Option<&Path>) -> anyhow::Result<Project> {
    match dir {
        Some(d) => Project::load(d).with_context(|| format!("loading SQL project {}", d.display())),
        None if Path::new("sql").is_dir() => Project::load(Path::new("sql")).context("loading SQL project ./sql"),
        None => Ok(Project::builtin()?),
    }
}

pub async fn run(app: &App, args: SqlArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SqlCommand::Query(q) => query(app, q).await,
        SqlCommand::Lineage(l) => {
            let project = load_project(args.project.as_deref())?;
            let state = State::open(Arc::new(app.catalog()?))?;
            let manifest = lineage::manifest(&project, &app.tables()?, &state).await?;
            std::fs::write(&l.out, serde_json::to_vec_pretty(&manifest)?)
                .with_context(|| format!("writing {}", l.out.display()))?;
            match app.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&manifest)?),
                Format::Table => {
                    print!("{}", manifest.render_dag());
                    eprintln!("manifest written to {}", l.out.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SqlCommand::Test => {
            let project = load_project(args.project.as_deref())?;
            let results = sql_test::test(&project, &app.config, &app.tables()?).await?;
            let failed = results.iter().any(|r| r.is_failure());
            match app.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&results)?),
                Format::Table => {
                    let rows = results
                        .iter()
                        .map(|r| {
                            vec![
                                r.model.clone(),
                                r.check.clone(),
                                if r.blocking { "blocking".into() } else { "warn".into() },
                                r.status.clone(),
                                r.failing_rows.to_string(),
                                r.detail.clone(),
                            ]
                        })
                        .collect();
                    println!("{}", output::table(&["model", "check", "kind", "status", "failing rows", "detail"], rows));
                }
            }
            Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        SqlCommand::Plan(r) => {
            let builder = builder(app, args.project.as_deref(), &r.models)?
                .with_epochs(if r.epoch.is_empty() { EpochSelection::Pending } else { EpochSelection::Only(r.epoch) })
                .with_full_refresh(r.full_refresh);
            let plans = builder.plan().await?;
            match app.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&plans)?),
                Format::Table => {
                    let rows = plans
                        .iter()
                        .map(|p| {
                            vec![
                                p.model.clone(),
                                p.materialized.as_str().into(),
                                if !p.build {
                                    "skip".into()
                                } else if p.full {
                                    "rebuild table".into()
                                } else {
                                    "build epochs".into()
                                },
                                ranges(&p.epochs),
                                p.why(),
                            ]
                        })
                        .collect();
                    println!("{}", output::table(&["model", "kind", "action", "epochs", "why"], rows));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SqlCommand::Run(r) => {
            let engine = r.cluster.as_deref().map(Engine::cluster).unwrap_or_default();
            let builder = builder(app, args.project.as_deref(), &r.models)?
                .with_epochs(if r.epoch.is_empty() { EpochSelection::Pending } else { EpochSelection::Only(r.epoch) })
                .with_full_refresh(r.full_refresh)
                .with_engine(engine);
            execute(app, builder).await
        }
        SqlCommand::Backfill(b) => {
            if b.from > b.to {
                anyhow::bail!("--from {} is after --to {}", b.from, b.to);
            }
            let builder = builder(app, args.project.as_deref(), &b.models)?.with_epochs(EpochSelection::Range(b.from, b.to));
            execute(app, builder).await
        }
    }
}

fn builder(app: &App, project: Option<&Path>, models: &[String]) -> anyhow::Result<RunBuilder> {
    let project = Arc::new(load_project(project)?);
    Ok(RunBuilder::new(project, app.config.clone(), app.tables()?, Arc::new(app.catalog()?)).with_models(models.to_vec()))
}

/// Run with a spinner, print the report; exit 1 if a model failed.
pub async fn execute(app: &App, builder: RunBuilder) -> anyhow::Result<ExitCode> {
    let catalog = app.catalog()?;
    let _lock = catalog.try_lock("sql")?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    bar.enable_steady_tick(Duration::from_millis(120));
    let b = bar.clone();
    let builder = builder.with_progress(Arc::new(move |e| match e {
        RunEvent::Started { model, why, .. } => b.set_message(format!("{model}: {why}")),
        RunEvent::EpochBuilt { model, epoch, rows } => b.set_message(format!("{model}: epoch {epoch} → {rows} rows")),
        RunEvent::Finished { model, status, seconds } => {
            if status != ModelStatus::UpToDate {
                b.suspend(|| eprintln!("{:>10}  {model} ({seconds:.2}s)", status.as_str()));
            }
        }
    }));
    let report = builder.execute().await;
    bar.finish_and_clear();
    let report = report?;
    print_report(&report, app.format)?;
    Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Print a run report.
pub fn print_report(report: &RunReport, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let rows = report
        .models
        .iter()
        .map(|m| {
            vec![
                m.model.clone(),
                m.status.as_str().into(),
                ranges(&m.epochs),
                m.rows.to_string(),
                m.version_written.map(|v| v.to_string()).unwrap_or_default(),
                format!("{:.2}", m.seconds),
                m.why.clone(),
            ]
        })
        .collect();
    println!("{}", output::table(&["model", "status", "epochs", "rows", "version", "seconds", "why"], rows));
    for m in &report.models {
        for a in m.audits.iter().filter(|a| !a.passed() && !a.blocking) {
            eprintln!("warning: {}: audit `{}` found {} failing row(s)\n{}", m.model, a.audit, a.failing_rows, a.sample);
        }
        if let Some(e) = &m.error {
            eprintln!("error: {}: {e}", m.model);
        }
    }
    Ok(())
}

/// Print the contributor leaderboard (`gold.contributor_stats`, latest epoch first).
pub async fn print_leaderboard(app: &App) -> anyhow::Result<()> {
    // Reasons as `code×n` text keeps the table narrow.
    let simple = "SELECT s.epoch, s.datanet, s.rank, s.contributor, s.submitted, s.accepted, \
                  s.exact_duplicates AS exact_dups, s.near_duplicates AS near_dups, s.rejected_quality AS rejected, \
                  round(s.acceptance_rate, 3) AS rate, r.reasons \
                  FROM gold.contributor_stats s LEFT JOIN ( \
                    SELECT epoch, datanet, contributor, string_agg(concat(x['reason'], '×', CAST(x['rows'] AS VARCHAR)), ', ') AS reasons \
                    FROM (SELECT epoch, datanet, contributor, unnest(rejected_by_reason) AS x FROM gold.contributor_stats) \
                    GROUP BY epoch, datanet, contributor) r \
                  ON r.epoch = s.epoch AND r.datanet = s.datanet AND r.contributor = s.contributor \
                  ORDER BY s.epoch DESC, s.datanet, s.rank, s.contributor";
    let (schema, batches) = QueryBuilder::new(app.tables()?, app.config.clone(), simple).execute().await?;
    let encoding = if app.format == Format::Json { Encoding::Json } else { Encoding::Table };
    std::io::stdout().write_all(&encode(&schema, &batches, encoding)?)?;
    Ok(())
}

async fn query(app: &App, q: QueryArgs) -> anyhow::Result<ExitCode> {
    let (schema, batches) = QueryBuilder::new(app.tables()?, app.config.clone(), q.sql).with_as_of(q.as_of).execute().await?;
    let encoding = match q.output.unwrap_or(match app.format {
        Format::Table => QueryOutput::Table,
        Format::Json => QueryOutput::Json,
    }) {
        QueryOutput::Table => Encoding::Table,
        QueryOutput::Csv => Encoding::Csv,
        QueryOutput::Json => Encoding::Json,
        QueryOutput::Parquet => {
            if q.out.is_none() && std::io::stdout().is_terminal() {
                anyhow::bail!("--output parquet writes binary: give --out FILE or redirect stdout");
            }
            Encoding::Parquet
        }
    };
    let buf = encode(&schema, &batches, encoding)?;
    match &q.out {
        Some(path) => std::fs::write(path, &buf).with_context(|| format!("writing {}", path.display()))?,
        None => std::io::stdout().write_all(&buf)?,
    }
    Ok(ExitCode::SUCCESS)
}
