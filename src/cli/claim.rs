//! `tributary claim --epoch N --account 0x…`: pay the account's unclaimed leaves of epoch N.
//! The operator key pays the gas; the tokens go to the account.

use std::process::ExitCode;

use tributary_ledger::chain::AnyChain;
use tributary_ledger::keys::operator_signer;
use tributary_ledger::proof::{account_proof, load_payout_tree};
use tributary_ledger::sender::{SendPolicy, TxSender};
use tributary_ledger::{Chain, claim, settle};

use super::{App, Format, epoch::print_kv, proof::account_arg};

/// Arguments of `tributary claim`.
#[derive(Debug, clap::Args)]
pub struct ClaimArgs {
    /// The epoch.
    #[arg(long)]
    pub epoch: i64,
    /// The account to pay (0x address).
    #[arg(long)]
    pub account: String,
}

/// Claim for `account` in `epoch`; returns the report (shared with the demo).
pub async fn claim_for(app: &App, epoch: i64, account: &str) -> anyhow::Result<claim::ClaimReport> {
    let account = account_arg(account)?;
    let epoch_u = u64::try_from(epoch).map_err(|_| anyhow::anyhow!("--epoch must be >= 0"))?;
    let catalog = app.catalog()?;
    let chain = AnyChain::open(&app.config.chain, &catalog)?;
    let d = settle::deployment(&chain, &catalog, &app.config).await?;
    let tree = load_payout_tree(&app.tables()?, epoch).await?;
    let proof = account_proof(&tree, epoch_u, chain.chain_id().await?, d.settlement, account)?;
    let (signer, _) = operator_signer(&app.config.chain, &app.config.base_dir)?;
    let sender = TxSender::new(&chain, &catalog, &signer, SendPolicy::from_config(&app.config.chain)).await?;
    Ok(claim::claim(&sender, &d, &proof).await?)
}

pub async fn run(app: &App, args: ClaimArgs) -> anyhow::Result<ExitCode> {
    let report = claim_for(app, args.epoch, &args.account).await?;
    match app.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            for l in &report.leaves {
                let what = if l.already_claimed { "already claimed".to_string() } else { format!("paid {}", l.amount) };
                eprintln!("leaf {}: {what}{}", l.index, l.tx_hash.map(|h| format!(" (tx {h})")).unwrap_or_default());
            }
            print_kv(
                Format::Table,
                &serde_json::json!({
                    "epoch": report.epoch,
                    "account": report.account,
                    "token": report.token,
                    "balance_before": report.balance_before.to_string(),
                    "balance_after": report.balance_after.to_string(),
                }),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
