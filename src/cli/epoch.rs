//! `tributary epoch …`: settle an epoch on the configured chain, show settlements, verify one.
//!
//! `epoch` is a subcommand group ([`EpochCommand`]) so later stages (e.g. `epoch run`) slot in.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tributary_ledger::chain::AnyChain;
use tributary_ledger::keys::operator_signer;
use tributary_ledger::{SettleBuilder, settle, status, verify};

use super::{App, Format, output};

/// Arguments of `tributary epoch`.
#[derive(Debug, clap::Args)]
pub struct EpochArgs {
    #[command(subcommand)]
    pub command: EpochCommand,
}

/// The `epoch` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum EpochCommand {
    /// Run epoch N's stages in order: ingest → models → train → attribute → rewards → settle.
    Run(super::epoch_run::RunArgs),
    /// Build epoch N's payout and attribution trees, publish them under epochs/N/, anchor both roots.
    Settle(SettleArgs),
    /// Settlements recorded in the catalog, checked against the chain (all epochs, or N).
    Status(StatusArgs),
    /// Recompute epoch N's roots from the tables at the recorded versions and compare with the chain.
    Verify(VerifyArgs),
}

/// Arguments of `tributary epoch settle`.
#[derive(Debug, clap::Args)]
pub struct SettleArgs {
    /// The epoch.
    pub epoch: i64,
    /// Influence method for the attribution tree (needed when gold.example_influence has several).
    #[arg(long)]
    pub method: Option<String>,
    /// Build the trees and print their roots; write nothing, send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `tributary epoch status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this epoch.
    pub epoch: Option<i64>,
}

/// Arguments of `tributary epoch verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The epoch.
    pub epoch: i64,
}

pub async fn run(app: &App, args: EpochArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        EpochCommand::Run(a) => super::epoch_run::run(app, a).await,
        EpochCommand::Settle(a) => run_settle(app, a).await,
        EpochCommand::Status(a) => run_status(app, a).await,
        EpochCommand::Verify(a) => run_verify(app, a).await,
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Settle `epoch` and return the receipt (shared with the demo).
pub async fn settle_epoch(app: &App, epoch: i64, method: Option<String>) -> anyhow::Result<tributary_ledger::SettleReceipt> {
    let catalog = app.catalog()?;
    let chain = AnyChain::open(&app.config.chain, &catalog).context("opening the chain")?;
    let (signer, source) = operator_signer(&app.config.chain, &app.config.base_dir)?;
    eprintln!("operator {} (key from {source}) on the {} chain", signer.address(), format!("{:?}", app.config.chain.backend).to_lowercase());
    let pb = spinner(&format!("settling epoch {epoch}"));
    let receipt = SettleBuilder::new(app.config.clone(), app.tables()?, &catalog, &chain, signer, epoch)
        .with_method(method)
        .execute()
        .await;
    pb.finish_and_clear();
    receipt.with_context(|| format!("settling epoch {epoch}"))
}

async fn run_settle(app: &App, args: SettleArgs) -> anyhow::Result<ExitCode> {
    if args.dry_run {
        let plan = settle::SettlementPlan::build(&app.tables()?, args.epoch, None, args.method.as_deref()).await?;
        let v = serde_json::json!({
            "epoch": plan.epoch,
            "payout_root": plan.payout_root(),
            "attribution_root": plan.attribution_root(),
            "total": plan.total.to_string(),
            "payout_leaves": plan.payouts.len(),
            "attribution_leaves": plan.attribution.as_ref().map(|t| t.len()).unwrap_or(0),
            "table_versions": {"gold.epoch_payouts": plan.payouts_version, "gold.example_influence": plan.influence_version},
            "dry_run": true,
        });
        print_kv(app.format, &v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let receipt = settle_epoch(app, args.epoch, args.method).await?;
    print_kv(app.format, &serde_json::to_value(&receipt)?)?;
    Ok(ExitCode::SUCCESS)
}

async fn run_status(app: &App, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let catalog = app.catalog()?;
    let chain = AnyChain::open(&app.config.chain, &catalog)?;
    let d = settle::deployment(&chain, &catalog, &app.config).await?;
    let (contract, rows) = status::epoch_status(&chain, &catalog, &d, args.epoch).await?;
    match app.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({"contract": contract, "epochs": rows}))?),
        Format::Table => {
            println!("settlement contract {contract} (token {}, challenge window {}s)", d.token, d.challenge_window);
            let body = rows
                .iter()
                .map(|s| {
                    vec![
                        s.record.epoch.to_string(),
                        s.record.state.clone(),
                        s.record.payout_root.to_string(),
                        s.record.total.clone(),
                        s.record.payout_leaves.to_string(),
                        s.record.tx_hash.map(|h| h.to_string()).unwrap_or_default(),
                        if s.vetoed {
                            "VETOED".into()
                        } else if !s.root_matches {
                            "MISMATCH".into()
                        } else if s.claimable_now {
                            "claimable".into()
                        } else {
                            format!("claimable at {}", s.claimable_at)
                        },
                    ]
                })
                .collect();
            println!("{}", output::table(&["epoch", "state", "payout root", "total", "leaves", "anchor tx", "on chain"], body));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_verify(app: &App, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let catalog = app.catalog()?;
    let chain = AnyChain::open(&app.config.chain, &catalog)?;
    let d = settle::deployment(&chain, &catalog, &app.config).await?;
    let report = verify::verify_epoch(&app.tables()?, &catalog, &chain, &d, args.epoch).await?;
    match app.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            println!(
                "epoch {} on {} (tables at gold.epoch_payouts v{}, gold.example_influence v{})",
                report.epoch, report.contract, report.payouts_version, report.influence_version
            );
            let body = report
                .checks
                .iter()
                .map(|c| vec![if c.ok { "ok".to_string() } else { "FAIL".to_string() }, c.name.clone(), c.detail.clone()])
                .collect();
            println!("{}", output::table(&["", "check", "detail"], body));
            println!("{}", if report.ok { "verified" } else { "VERIFICATION FAILED" });
        }
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Print a flat JSON object as `key: value` lines, or as JSON.
pub fn print_kv(format: Format, v: &serde_json::Value) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Format::Table => {
            if let Some(obj) = v.as_object() {
                let rows = obj
                    .iter()
                    .map(|(k, v)| vec![k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())])
                    .collect();
                println!("{}", output::table(&["field", "value"], rows));
            }
        }
    }
    Ok(())
}

/// The demo's settlement stage: settle the demo epoch on the embedded chain and claim for one
/// contributor, printing the balance change.
pub async fn demo_stage(app: &App) -> anyhow::Result<()> {
    let tables = app.tables()?;
    let batches = tables.query("SELECT MAX(epoch) AS e FROM bronze.contributions").await?;
    let epoch = batches
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().map(|a| a.value(0)))
        .context("bronze.contributions has no rows to settle")?;
    if tributary_ledger::inputs::read_payouts(&tables, epoch, None).await.is_err() {
        let report = tributary_ledger::payouts::write_epoch_payouts(&app.config, &tables, epoch, None).await?;
        eprintln!("   rewards policy: {} payouts, total {} for epoch {epoch}", report.leaves, report.total);
        if report.leaves == 0 {
            eprintln!("   nothing to pay in epoch {epoch} (no positive attribution and no inference fees): not settling");
            return Ok(());
        }
    }
    let payouts = tables
        .query(&format!(
            "SELECT contributor, amount, breakdown FROM gold.epoch_payouts WHERE epoch = {epoch} \
             ORDER BY CAST(amount AS DECIMAL(38, 0)) DESC, contributor"
        ))
        .await?;
    eprintln!("   gold.epoch_payouts for epoch {epoch} (token base units):");
    super::output::print_batches(&payouts, app.format)?;
    let r = settle_epoch(app, epoch, None).await?;
    eprintln!(
        "   epoch {epoch}: {} payouts, total {} anchored at {} (payout root {}, attribution root {}){}",
        r.payout_leaves,
        r.total,
        r.contract,
        r.payout_root,
        r.attribution_root,
        if r.already_anchored { ", already anchored" } else { "" }
    );
    if let (Some(tx), Some(gas)) = (r.tx_hash, r.gas_used) {
        eprintln!("   anchor tx {tx} ({gas} gas)");
    }
    let tree = tributary_ledger::proof::load_payout_tree(&tables, epoch).await?;
    let first = tree.values().first().context("empty payout tree")?;
    let account = first.account.to_string();
    let c = super::claim::claim_for(app, epoch, &account).await?;
    let what = if c.leaves.iter().all(|l| l.already_claimed) { " (already claimed earlier)" } else { "" };
    eprintln!("   claim for {account}: token balance {} -> {}{what}", c.balance_before, c.balance_after);
    Ok(())
}
