//! `tributary init [DIR]`: write the commented default config.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tributary_pipeline::config::{CONFIG_FILE, default_config_toml};

/// Arguments of `tributary init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to write tributary.toml into (created if missing).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Overwrite an existing tributary.toml.
    #[arg(long)]
    force: bool,
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let path = args.dir.join(CONFIG_FILE);
    if path.exists() && !args.force {
        bail!("{} already exists (use --force to overwrite)", path.display());
    }
    std::fs::write(&path, default_config_toml()).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}
