//! Command definitions and dispatch. Each command lives in its own module, named after it.

mod demo;
mod ingest;
mod init;
mod output;
mod tables;

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
    /// Run the end-to-end demo on a fresh local warehouse.
    Demo(demo::DemoArgs),
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
                Command::Init(_) | Command::Demo(_) => unreachable!("handled above"),
            }
        }
    }
}
