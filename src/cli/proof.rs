//! `tributary proof --epoch N --account 0x…`: the account's payout leaves with Merkle proofs, as
//! JSON a wallet or script can submit (`to` + `data` is a ready `claim(...)` call).

use std::process::ExitCode;

use tributary_ledger::chain::AnyChain;
use tributary_ledger::leaves::parse_account;
use tributary_ledger::proof::{account_proof, load_payout_tree};
use tributary_ledger::{Chain, settle};

use super::App;

/// Arguments of `tributary proof`.
#[derive(Debug, clap::Args)]
pub struct ProofArgs {
    /// The epoch.
    #[arg(long)]
    pub epoch: i64,
    /// The account (0x address).
    #[arg(long)]
    pub account: String,
}

/// Parse a `--account` value into an address (clap reports the error as a usage error).
pub fn account_arg(s: &str) -> anyhow::Result<tributary_ledger::alloy::primitives::Address> {
    parse_account(s).map_err(|e| anyhow::anyhow!("--account: {e}"))
}

pub async fn run(app: &App, args: ProofArgs) -> anyhow::Result<ExitCode> {
    let account = account_arg(&args.account)?;
    let epoch = u64::try_from(args.epoch).map_err(|_| anyhow::anyhow!("--epoch must be >= 0"))?;
    let catalog = app.catalog()?;
    let chain = AnyChain::open(&app.config.chain, &catalog)?;
    let d = settle::deployment(&chain, &catalog, &app.config).await?;
    let tree = load_payout_tree(&app.tables()?, args.epoch).await?;
    let proof = account_proof(&tree, epoch, chain.chain_id().await?, d.settlement, account)?;
    // Always JSON: this output is meant for wallets and scripts.
    println!("{}", serde_json::to_string_pretty(&proof)?);
    Ok(ExitCode::SUCCESS)
}
