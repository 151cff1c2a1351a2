//! `tributary runs` (history) and `tributary status` (where things stand now).

use std::process::ExitCode;

use chrono::Utc;
use tributary_pipeline::epoch::current_epoch;
use tributary_pipeline::stages;

use super::{App, Format, output};

/// Arguments of `tributary runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// How many runs to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Also list every stage attempt.
    #[arg(long)]
    pub stages: bool,
}

pub async fn runs(app: &App, args: RunsArgs) -> anyhow::Result<ExitCode> {
    let catalog = app.catalog()?;
    let runs = catalog.recent_runs(args.limit)?;
    let attempts = if args.stages { stages::history(&catalog, args.limit * 6)? } else { vec![] };
    if app.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"runs": runs, "stage_attempts": attempts}))?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.kind.clone(),
                r.args.clone(),
                r.started_at.clone(),
                r.finished_at.clone().unwrap_or_default(),
                r.status.clone(),
                r.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    println!("{}", output::table(&["id", "kind", "args", "started", "finished", "status", "error"], rows));
    if args.stages {
        let rows = attempts
            .iter()
            .map(|a| {
                vec![
                    a.epoch.to_string(),
                    a.stage.clone(),
                    a.attempt.to_string(),
                    a.status.clone(),
                    a.duration_ms.map(|m| format!("{:.1}s", m as f64 / 1000.0)).unwrap_or_default(),
                    a.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        println!("{}", output::table(&["epoch", "stage", "attempt", "status", "time", "error"], rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `tributary status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

pub async fn status(app: &App, _args: StatusArgs) -> anyhow::Result<ExitCode> {
    let catalog = app.catalog()?;
    let current = current_epoch(&app.config)?;
    let latest_epoch = stages::epochs(&catalog)?.into_iter().next();
    let mut warnings = Vec::new();
    let stage_rows = match latest_epoch {
        Some(e) => stages::latest(&catalog, e)?,
        None => vec![],
    };
    for a in &stage_rows {
        if a.status == "failed" {
            warnings.push(format!("stage `{}` of epoch {} failed: {}", a.stage, a.epoch, a.error.clone().unwrap_or_default()));
        }
        if a.status == "running" {
            warnings.push(format!("stage `{}` of epoch {} is running or was interrupted (attempt {})", a.stage, a.epoch, a.attempt));
        }
    }
    let settled = last_settlement(app, &catalog).await;
    let settled = match settled {
        Ok(s) => s,
        Err(e) => {
            warnings.push(format!("cannot read settlements from the chain: {e:#}"));
            None
        }
    };
    match &settled {
        Some(s) if s.record.epoch < current - 1 => warnings.push(format!(
            "settlement is behind: last settled epoch is {}, the last finished epoch is {}",
            s.record.epoch,
            current - 1
        )),
        Some(s) if !s.root_matches => warnings.push(format!("epoch {}: the on-chain root differs from the recorded one", s.record.epoch)),
        None => warnings.push("no epoch has been settled yet".into()),
        _ => {}
    }
    let v = serde_json::json!({
        "now": Utc::now().to_rfc3339(),
        "current_epoch": current,
        "latest_run_epoch": latest_epoch,
        "stages": stage_rows,
        "last_settlement": settled,
        "warnings": warnings,
    });
    if app.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("current epoch: {current}");
    if let Some(e) = latest_epoch {
        println!("latest epoch run: {e}");
        let rows = stage_rows
            .iter()
            .map(|a| {
                vec![
                    a.stage.clone(),
                    a.status.clone(),
                    a.attempt.to_string(),
                    a.started_at.clone(),
                    a.duration_ms.map(|m| format!("{:.1}s", m as f64 / 1000.0)).unwrap_or_default(),
                ]
            })
            .collect();
        println!("{}", output::table(&["stage", "status", "attempt", "started", "time"], rows));
    }
    match &settled {
        Some(s) => println!("last settlement: {}", serde_json::to_string(s)?),
        None => println!("last settlement: none"),
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The newest settlement recorded in the catalog, checked against the chain (None if never settled).
async fn last_settlement(
    app: &App,
    catalog: &tributary_pipeline::Catalog,
) -> anyhow::Result<Option<tributary_ledger::status::EpochStatus>> {
    let chain = tributary_ledger::chain::AnyChain::open(&app.config.chain, catalog)?;
    let deployment = match tributary_ledger::settle::deployment(&chain, catalog, &app.config).await {
        Ok(d) => d,
        Err(tributary_ledger::Error::InvalidInput(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (_, statuses) = tributary_ledger::status::epoch_status(&chain, catalog, &deployment, None).await?;
    Ok(statuses.into_iter().next())
}
