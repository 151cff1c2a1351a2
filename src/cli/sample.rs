//! `tributary sample`: drop a deterministic sample datanet into the configured warehouse's inbox,
//! exactly as contributors would (signed files, planted duplicates, junk rows, optional bad files).

use std::process::ExitCode;

use anyhow::bail;
use tributary_pipeline::sample::{self, SampleSpec};

use super::{App, Format};

/// Arguments of `tributary sample`.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// Datanet to fill (default: every configured datanet).
    #[arg(long)]
    pub datanet: Option<String>,
    /// Contributors.
    #[arg(long, default_value_t = 8)]
    pub contributors: usize,
    /// Files per contributor.
    #[arg(long, default_value_t = 3)]
    pub files: usize,
    /// Rows per file.
    #[arg(long, default_value_t = 40)]
    pub rows: usize,
    /// RNG seed (the same seed writes the same bytes).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Also write bad files that ingestion must quarantine.
    #[arg(long)]
    pub bad_files: bool,
}

pub async fn run(app: &App, args: SampleArgs) -> anyhow::Result<ExitCode> {
    let warehouse = app.warehouse()?;
    let datanets: Vec<_> = app.config.datanets.iter().filter(|d| args.datanet.as_ref().is_none_or(|n| *n == d.name)).collect();
    if datanets.is_empty() {
        bail!("no datanet named `{}` in the config", args.datanet.unwrap_or_default());
    }
    let mut manifests = Vec::new();
    for (i, d) in datanets.iter().enumerate() {
        let spec = SampleSpec {
            seed: args.seed + i as u64,
            contributors: args.contributors,
            files_per_contributor: args.files,
            rows_per_file: args.rows,
            bad_files: args.bad_files,
            ..SampleSpec::default()
        };
        let m = sample::generate(&warehouse, d, &spec).await?;
        if app.format == Format::Table {
            println!(
                "{}: {} files ({} rows: {} exact dups, {} near dups, {} junk) from {} contributors, {} bad files",
                d.name,
                m.good_files.len(),
                m.rows,
                m.exact_dups.len(),
                m.near_dups.len(),
                m.junk.len(),
                m.contributors.len(),
                m.bad_files.len()
            );
        }
        manifests.push(serde_json::json!({"datanet": d.name, "manifest": m}));
    }
    if app.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&manifests)?);
    }
    Ok(ExitCode::SUCCESS)
}
