//! `tributary eval attribution`: the attribution benchmark (see `jobs/src/eval.rs`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use indicatif::{ProgressBar, ProgressStyle};
use tributary_jobs::attribute::{Curvature, Method};
use tributary_jobs::base_model::BaseModelSpec;
use tributary_jobs::compute::Compute;
use tributary_jobs::eval::{self, EvalConfig, EvalProgress, RetrainSeeds};
use tributary_jobs::model::BaseModel;
use tributary_jobs::train::TrainConfig;

use super::{App, Format};

/// Arguments of `tributary eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Debug, clap::Subcommand)]
enum EvalCommand {
    /// Detection AUCs, example- and contributor-level LDS against the noise ceiling, cost.
    Attribution(AttributionArgs),
}

#[derive(Debug, clap::Args)]
struct AttributionArgs {
    /// Retrainings per LDS (at least 50 for the published figures).
    #[arg(long, default_value_t = 50)]
    subsets: usize,
    /// Worker threads for the retrainings.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Methods, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "exact-block,datainf,tracin,graddot", value_parser = super::flag_value::<Method>)]
    methods: Vec<Method>,
    /// exact-block's curvature: val-sampled, val-observed, train-sampled or train-observed.
    #[arg(long, default_value = "val-sampled", value_parser = super::flag_value::<Curvature>)]
    curvature: Curvature,
    /// Damping of exact-block and datainf, positive (default: each method's).
    #[arg(long, allow_negative_numbers = true, value_parser = super::positive_f64)]
    damping: Option<f64>,
    /// Damping of the group prediction (the `exact-block (group)` rows), positive.
    #[arg(long, allow_negative_numbers = true, value_parser = super::positive_f64)]
    group_damping: Option<f64>,
    /// How the retrainings are seeded: `common` (the first retraining of every subset reuses the
    /// attributed run's seed, the second one other seed) or `independent` (a fresh seed each).
    #[arg(long, default_value = "common", value_parser = super::flag_value::<RetrainSeeds>)]
    seeds: RetrainSeeds,
    /// Training epochs of the adapter and of every retraining (default: `tributary train`'s).
    #[arg(long, default_value_t = TrainConfig::default().epochs, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    epochs: usize,
    /// Train the adapter and every retraining on batches of rows of similar length, sorted within
    /// groups of this many batches (`tributary train --group-by-length`; the flag alone: 4).
    #[arg(long, value_name = "BATCHES", num_args = 0..=1, default_value_t = 0, default_missing_value = super::train::DEFAULT_GROUP)]
    group_by_length: usize,
    /// Base model under models/ (built with the default spec if missing).
    #[arg(long)]
    base_model: Option<String>,
    /// Seed of the generated datanet.
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Also write the full report as JSON here, with the per-validation-row detail behind the
    /// contributor-level LDS (for `bench/contributor_lds.py`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Also write each scenario's per-row gradients and losses under the attributed adapter into
    /// this directory (`corrupted/`, `clean/`: `.npy` matrices and `meta.json`; each earlier
    /// epoch-end checkpoint's in `epoch<E>/` below them), for `bench/group_readings.py`.
    #[arg(long)]
    gradients: Option<PathBuf>,
}

pub async fn run(app: &App, args: EvalArgs) -> anyhow::Result<ExitCode> {
    let EvalCommand::Attribution(a) = args.command;
    // The report file is created before minutes of work, so a path that cannot be written fails now.
    let output = a.output.as_deref().map(PendingReport::create).transpose()?;
    // So is a gradients directory that cannot be made.
    if let Some(dir) = &a.gradients {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot write the gradients to {}", dir.display()))?;
    }
    let name = a.base_model.clone().unwrap_or_else(|| app.config.serving.base_model.clone());
    let warehouse = app.warehouse()?;
    let device = Compute::Cpu.device()?;
    if !tributary_jobs::base_model::exists(&warehouse, &name).await? {
        eprintln!("base model models/{name}/ is missing; building it first");
        let spec = BaseModelSpec { name: name.clone(), ..BaseModelSpec::default() };
        super::base_model::init(app, &spec, Compute::Cpu, false).await?;
    }
    let base = BaseModel::load(&warehouse, &name, &device).await?;
    let mut cfg = EvalConfig {
        subsets: a.subsets,
        threads: a.threads,
        methods: a.methods,
        curvature: a.curvature,
        damping: a.damping,
        group_damping: a.group_damping,
        seeds: a.seeds,
        gradients: a.gradients,
        ..EvalConfig::default()
    };
    cfg.train.epochs = a.epochs;
    cfg.train.group_by_length = a.group_by_length;
    cfg.kb.seed = a.seed;

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let progress = move |p: EvalProgress| match p {
        EvalProgress::Phase(m) => {
            b.set_message(m.clone());
            b.suspend(|| eprintln!("  {m}"));
        }
        EvalProgress::Retrained { done, total } => {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    };
    let report = tokio::task::spawn_blocking(move || eval::run(&base, &cfg, &progress)).await??;
    bar.finish_and_clear();
    if let Some(out) = output {
        out.write(&report)?;
    }
    match app.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report.without_detail())?),
        Format::Table => println!("{}", report.markdown()),
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--output` file. A sibling `<name>.partial` is created up front — so a path that cannot be
/// written fails before any work — and renamed over the target once the report is written; a run
/// that fails removes it and leaves whatever the target held before untouched.
struct PendingReport {
    path: PathBuf,
    partial: PathBuf,
    file: std::fs::File,
    written: bool,
}

impl PendingReport {
    fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        let mut name = path.file_name().with_context(|| format!("--output {} names no file", path.display()))?.to_os_string();
        name.push(".partial");
        let partial = path.with_file_name(name);
        let file = std::fs::File::create(&partial).with_context(|| format!("cannot write the report to {}", path.display()))?;
        Ok(PendingReport { path: path.to_path_buf(), partial, file, written: false })
    }

    fn write(mut self, report: &eval::EvalReport) -> anyhow::Result<()> {
        let mut w = std::io::BufWriter::new(&self.file);
        let wrote: std::io::Result<()> = serde_json::to_writer_pretty(&mut w, report).map_err(Into::into).and_then(|()| w.flush());
        drop(w);
        wrote
            .and_then(|()| std::fs::rename(&self.partial, &self.path))
            .with_context(|| format!("writing the report to {}", self.path.display()))?;
        self.written = true;
        Ok(())
    }
}

impl Drop for PendingReport {
    fn drop(&mut self) {
        if !self.written {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
