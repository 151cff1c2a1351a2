//! `tributary schedule …` and `tributary scheduler`: cron schedules for epoch runs, and the daemon
//! that runs them.
//!
//! An `epoch` schedule firing at time T runs the last epoch that has *ended* by T. Catch-up is off by
//! default: a daemon that was down for a while runs the latest missed firing once, not every missed
//! one (`--catch-up` on the schedule changes that; `tributary backfill` runs ranges on request).
//! Retries with exponential backoff happen inside each epoch run; the per-epoch lock means two
//! daemons never run the same epoch, and a firing is claimed in the catalog before it runs.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::bail;
use chrono::Utc;
use tributary_pipeline::epoch::epoch_of;
use tributary_pipeline::schedule;

use super::epoch_run::{RunOpts, print_outcomes, run_epoch};
use super::{App, Format, output};

/// Arguments of `tributary schedule`.
#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

/// The `schedule` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule: `tributary schedule add "0 1 * * *" epoch` (standard cron, UTC).
    Add {
        /// Cron expression: minute hour day-of-month month day-of-week (or @daily, @hourly…).
        cron: String,
        /// The job to run: `epoch`.
        job: String,
        /// Run every missed firing after downtime, not just the latest.
        #[arg(long)]
        catch_up: bool,
    },
    /// List schedules with their next firing.
    List,
    /// Remove a schedule by id.
    Remove {
        /// Schedule id (see `schedule list`).
        id: i64,
    },
}

/// Arguments of `tributary scheduler`.
#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// Check once, run what is due, and exit (for cron-driven or test use).
    #[arg(long)]
    pub once: bool,
    /// Seconds between checks.
    #[arg(long, default_value_t = 30)]
    pub poll_secs: u64,
    /// Attempts per stage before an epoch run fails.
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
}

pub async fn run_schedule(app: &App, args: ScheduleArgs) -> anyhow::Result<ExitCode> {
    let catalog = app.catalog()?;
    match args.command {
        ScheduleCommand::Add { cron, job, catch_up } => {
            let s = schedule::add(&catalog, &cron, &job, catch_up)?;
            println!("added schedule {}: `{}` {}{}", s.id, s.cron, s.job, if s.catch_up { " (catch-up)" } else { "" });
        }
        ScheduleCommand::List => {
            let list = schedule::list(&catalog)?;
            if app.format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows = list
                    .iter()
                    .map(|s| {
                        let next = schedule::CronExpr::parse(&s.cron)
                            .ok()
                            .and_then(|c| c.next_after(Utc::now()))
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_else(|| "never".into());
                        vec![s.id.to_string(), s.cron.clone(), s.job.clone(), s.catch_up.to_string(), s.last_fired.clone().unwrap_or_default(), next]
                    })
                    .collect();
                println!("{}", output::table(&["id", "cron", "job", "catch_up", "last fired", "next"], rows));
            }
        }
        ScheduleCommand::Remove { id } => {
            if !schedule::remove(&catalog, id)? {
                bail!("no schedule with id {id}");
            }
            println!("removed schedule {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("scheduler: stopping after the current run…");
        f.store(true, Ordering::SeqCst);
    });
    flag
}

/// One pass: run every due firing. Returns how many epoch runs were started.
pub async fn tick(app: &App, attempts: u32) -> anyhow::Result<usize> {
    let catalog = app.catalog()?;
    let now = Utc::now();
    let mut started = 0;
    for s in schedule::list(&catalog)? {
        for fire in schedule::due(&s, now)? {
            // Claim the firing first: a second daemon that sees it claimed skips it.
            if !schedule::mark_fired(&catalog, s.id, fire)? {
                continue;
            }
            let epoch = epoch_of(&app.config, fire)? - 1;
            eprintln!("scheduler: schedule {} fired at {fire}: epoch run {epoch}", s.id);
            started += 1;
            let opts = RunOpts { attempts, ..RunOpts::default() };
            match run_epoch(app, epoch, &opts).await {
                Ok(outcomes) => print_outcomes(epoch, &outcomes, app.format)?,
                Err(e) => eprintln!("scheduler: epoch {epoch} failed: {e:#}"),
            }
        }
    }
    Ok(started)
}

pub async fn run_daemon(app: &App, args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    let stop = stop_flag();
    loop {
        let n = tick(app, args.attempts).await?;
        if args.once {
            eprintln!("scheduler: {n} run(s) started");
            return Ok(ExitCode::SUCCESS);
        }
        for _ in 0..(args.poll_secs * 5) {
            if stop.load(Ordering::SeqCst) {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
