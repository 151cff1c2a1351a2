//! `tributary demo`: the README's quick start. Builds a fresh local warehouse, generates a realistic
//! sample datanet and runs every stage built so far, printing what each produced.
//!
//! The demo is a list of named stages run in order; each later capability (SQL models, training,
//! attribution, settlement, serving) adds its stage here. Running it twice changes nothing: the
//! sample is deterministic and every stage is idempotent.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tributary_pipeline::config::CONFIG_FILE;
use tributary_pipeline::ingest::IngestBuilder;
use tributary_pipeline::models::RunBuilder;
use tributary_pipeline::sample::{self, SampleSpec};

use super::{App, Format, attribute, base_model, epoch, ingest, serve, sql};

/// Arguments of `tributary demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Directory of the demo warehouse, config and catalog.
    #[arg(long, default_value = "demo-warehouse")]
    pub dir: PathBuf,
}

/// The demo's config: two datanets, one requiring signatures.
pub const DEMO_CONFIG: &str = r#"# Tributary demo configuration (written by `tributary demo`).
warehouse = "warehouse"
catalog = "catalog.sqlite"

[epoch]
genesis = "2026-01-01T00:00:00Z"
length_secs = 86400

[[datanets]]
name = "geo-qa"
kind = "prompt_completion"
require_signature = true
max_text_bytes = 4096
daily_row_limit = 100000
reward_weight = 2.0

[[datanets]]
name = "notes"
kind = "text"
require_signature = false
max_text_bytes = 4096
daily_row_limit = 100000
reward_weight = 1.0
"#;

async fn stage<T, F: Future<Output = anyhow::Result<T>>>(n: usize, name: &str, f: F) -> anyhow::Result<T> {
    eprintln!("\n== stage {n}: {name}");
    let t = Instant::now();
    let out = f.await.with_context(|| format!("demo stage `{name}`"))?;
    eprintln!("   ({name}: {:.2}s)", t.elapsed().as_secs_f64());
    Ok(out)
}

pub async fn run(args: DemoArgs, format: Format) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let config_path = args.dir.join(CONFIG_FILE);
    if !config_path.exists() {
        std::fs::write(&config_path, DEMO_CONFIG)?;
    }
    let app = App::load(&config_path, format)?;
    let started = Instant::now();
    eprintln!("tributary demo in {}", args.dir.display());

    let warehouse = app.warehouse()?;
    stage(1, "generate sample contributions", async {
        for (i, datanet) in app.config.datanets.iter().enumerate() {
            let spec = SampleSpec { seed: 7 + i as u64, ..SampleSpec::default() };
            let m = sample::generate(&warehouse, datanet, &spec).await?;
            eprintln!(
                "   {}: {} contributors, {} good files ({} rows: {} exact dups, {} near dups, {} junk), {} bad files",
                datanet.name,
                m.contributors.len(),
                m.good_files.len(),
                m.rows,
                m.exact_dups.len(),
                m.near_dups.len(),
                m.junk.len(),
                m.bad_files.len()
            );
        }
        Ok(())
    })
    .await?;

    stage(2, "ingest", async {
        let catalog = app.catalog()?;
        let _lock = catalog.try_lock("ingest")?;
        let summary = IngestBuilder::new(Arc::clone(&app.config), app.tables()?).execute().await?;
        ingest::print_summary(&summary, format, false)?;
        Ok(())
    })
    .await?;

    stage(3, "SQL models: dedupe, quality, training set, leaderboard", async {
        let project = Arc::new(sql::load_project(None)?);
        let catalog = Arc::new(app.catalog()?);
        let builder = RunBuilder::new(project, Arc::clone(&app.config), app.tables()?, catalog);
        if sql::execute(&app, builder).await? != ExitCode::SUCCESS {
            anyhow::bail!("a SQL model failed");
        }
        eprintln!("\n   leaderboard (gold.contributor_stats):");
        sql::print_leaderboard(&app).await
    })
    .await?;

    stage(4, "base model: tokenizer and a small Llama-style decoder", base_model::demo_stage(&app)).await?;
    stage(5, "train a LoRA adapter per datanet and attribute every row", attribute::demo_stage(&app)).await?;
    stage(6, "serve: requests to the geo-qa and notes adapters, usage and credits", serve::demo_stage(&app)).await?;
    stage(7, "rewards (attribution + inference fees), settlement on the embedded chain, and a claim", epoch::demo_stage(&app)).await?;

    eprintln!("\ndemo finished in {:.1}s; warehouse at {}", started.elapsed().as_secs_f64(), args.dir.display());
    Ok(ExitCode::SUCCESS)
}
