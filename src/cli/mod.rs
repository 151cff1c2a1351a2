//! Command definitions and dispatch. Each command lives in its own module, named after it.

mod attribute;
mod base_model;
mod claim;
mod cluster;
mod demo;
mod epoch;
mod epoch_run;
mod eval;
mod ingest;
mod init;
mod output;
mod proof;
mod runs;
mod sample;
mod scheduler;
mod serve;
mod sql;
mod tables;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tributary_pipeline::{Catalog, Config, Tables, Warehouse};

pub use output::Format;

/// Tributary: an attribution lakehouse for specialised AI.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about, long_about = None)]
pub struct Cli {
    /// Config file (or a directory holding tributary.toml).
    #[arg(long, global = true, env = "TRIBUTARY_CONFIG", default_value = "tributary.toml")]
    pub config: PathBuf,
    /// Output format for tabular results.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a commented default tributary.toml into DIR.
    Init(init::InitArgs),
    /// Ingest contributor drops from the inbox into bronze.contributions, exactly once.
    Ingest(ingest::IngestArgs),
    /// List the warehouse's Delta tables and their versions.
    Tables(tables::TablesArgs),
    /// Run, test, plan and inspect the SQL models in sql/, and query any table.
    Sql(sql::SqlArgs),
    /// Serve every adapter over one base model (OpenAI-compatible HTTP API, usage metering).
    Serve(serve::ServeArgs),
    /// Drop a deterministic sample datanet into the inbox (signed files, duplicates, junk).
    Sample(sample::SampleArgs),
    /// Build the base model (tokenizer + small Llama) the adapters are trained on.
    BaseModel(base_model::BaseModelArgs),
    /// Train a datanet's LoRA adapter on gold.training_set.
    Train(train::TrainArgs),
    /// Measure each training row's influence on the datanet's validation loss.
    Attribute(attribute::AttributeArgs),
    /// Evaluate attribution methods (benchmark; not run in CI).
    Eval(eval::EvalArgs),
    /// Run, settle, inspect and verify epochs.
    Epoch(epoch::EpochArgs),
    /// Run a range of epochs in order (every stage of each).
    Backfill(epoch_run::BackfillArgs),
    /// Manage cron schedules for epoch runs.
    Schedule(scheduler::ScheduleArgs),
    /// Run scheduled jobs as a daemon.
    Scheduler(scheduler::SchedulerArgs),
    /// Run history, with stage attempts.
    Runs(runs::RunsArgs),
    /// Current epoch, stage states, last settlement and warnings.
    Status(runs::StatusArgs),
    /// A contributor's payout proof for an epoch, as JSON a wallet can submit.
    Proof(proof::ProofArgs),
    /// Claim a contributor's payout for an epoch.
    Claim(claim::ClaimArgs),
    /// Run the end-to-end demo on a fresh local warehouse.
    Demo(demo::DemoArgs),
    /// Run a member (scheduler or executor) of a Ballista cluster for `sql run --cluster`.
    Cluster(cluster::ClusterArgs),
}

/// Everything a command needs: the loaded config and handles on the warehouse.
pub struct App {
    /// The loaded config.
    pub config: Arc<Config>,
    /// How to print results.
    pub format: Format,
}

impl App {
    /// Load the config named on the command line.
    pub fn load(config: &std::path::Path, format: Format) -> anyhow::Result<App> {
        let config = Config::load(config).with_context(|| format!("loading config {}", config.display()))?;
        Ok(App { config: Arc::new(config), format })
    }

    /// The warehouse.
    pub fn warehouse(&self) -> anyhow::Result<Warehouse> {
        Warehouse::open(&self.config).context("opening the warehouse")
    }

    /// The table registry.
    pub fn tables(&self) -> anyhow::Result<Tables> {
        Ok(Tables::new(self.warehouse()?))
    }

    /// The ops catalog.
    pub fn catalog(&self) -> anyhow::Result<Catalog> {
        let path = self.config.catalog_path();
        Catalog::open(&path).with_context(|| format!("opening the ops catalog {}", path.display()))
    }
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(a) => init::run(a),
        Command::Demo(a) => demo::run(a, cli.format).await,
        command => {
            let app = App::load(&cli.config, cli.format)?;
            match command {
                Command::Ingest(a) => ingest::run(&app, a).await,
                Command::Tables(a) => tables::run(&app, a).await,
                Command::Serve(a) => serve::run(&app, a).await,
                Command::Sql(a) => sql::run(&app, a).await,
                Command::Sample(a) => sample::run(&app, a).await,
                Command::BaseModel(a) => base_model::run(&app, a).await,
                Command::Train(a) => train::run(&app, a).await,
                Command::Attribute(a) => attribute::run(&app, a).await,
                Command::Eval(a) => eval::run(&app, a).await,
                Command::Epoch(a) => epoch::run(&app, a).await,
                Command::Backfill(a) => epoch_run::backfill(&app, a).await,
                Command::Schedule(a) => scheduler::run_schedule(&app, a).await,
                Command::Scheduler(a) => scheduler::run_daemon(&app, a).await,
                Command::Runs(a) => runs::runs(&app, a).await,
                Command::Status(a) => runs::status(&app, a).await,
                Command::Proof(a) => proof::run(&app, a).await,
                Command::Claim(a) => claim::run(&app, a).await,
                Command::Cluster(a) => cluster::run(&app, a).await,
                Command::Init(_) | Command::Demo(_) => unreachable!("handled above"),
            }
        }
    }
}

/// A clap value parser for a `FromStr` type: a bad value is a usage error (exit 2) that names the
/// flag and says which values are accepted, before the command does anything. Surrounding white
/// space is ignored (`--methods "exact-block, datainf"`).
pub fn flag_value<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.trim().parse().map_err(|e: T::Err| e.to_string())
}

/// A clap value parser for a positive, finite number (`--damping`, `--lr`): zero, a negative
/// value, `inf` or `NaN` is a usage error (exit 2) naming the flag.
pub fn positive_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if v > 0.0 && v.is_finite() { Ok(v) } else { Err(format!("{v} is not a positive finite number")) }
}

/// A flag set on Ctrl-C or SIGTERM (printing `message`), for long jobs that stop at their next safe
/// point (a commit, a checkpoint). The handlers are installed now, by the same
/// [`tributary_serving::shutdown_signal`] `tributary serve` stops on.
pub fn stop_flag(message: &'static str) -> Arc<std::sync::atomic::AtomicBool> {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = Arc::clone(&flag);
    let signal = tributary_serving::shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        eprintln!("{message}");
        set.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    flag
}
