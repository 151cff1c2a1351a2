//! `tributary base-model`: make (or import) the base model adapters are trained on.

use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use tributary_jobs::base_model::{self, BaseModelSpec, BaseModelSummary, BaseProgress, Preset};
use tributary_jobs::compute::Compute;

use super::{App, Format};

/// Arguments of `tributary base-model`.
#[derive(Debug, clap::Args)]
pub struct BaseModelArgs {
    #[command(subcommand)]
    command: BaseModelCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BaseModelCommand {
    /// Train a tokenizer and a small Llama-style model on a generated corpus; write models/<name>/.
    Init(InitArgs),
    /// Copy a Hugging Face model directory (config.json, model.safetensors, tokenizer.json) into
    /// models/<name>/, after checking it loads.
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Name under models/ (default: serving.base_model).
    #[arg(long)]
    name: Option<String>,
    /// Size: tiny (~0.15M weights, what the demo and benchmark use) or small (~3.5M).
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Optimizer steps (upper bound).
    #[arg(long, default_value_t = 500)]
    steps: usize,
    /// Wall-clock bound in seconds.
    #[arg(long, default_value_t = 120.0)]
    max_seconds: f64,
    /// Seed of corpus, initialization and batch order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rebuild even if the model exists.
    #[arg(long)]
    force: bool,
    /// Compute device: cpu, or cuda[:N] when built with the `cuda` feature.
    #[arg(long, default_value = "cpu", value_parser = super::flag_value::<Compute>)]
    device: Compute,
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// Name under models/.
    #[arg(long)]
    name: String,
    /// The Hugging Face model directory.
    dir: PathBuf,
}

pub async fn run(app: &App, args: BaseModelArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BaseModelCommand::Init(a) => {
            let spec = BaseModelSpec {
                name: a.name.unwrap_or_else(|| app.config.serving.base_model.clone()),
                preset: Preset::parse(&a.preset)?,
                seed: a.seed,
                steps: a.steps,
                max_seconds: a.max_seconds,
                ..BaseModelSpec::default()
            };
            let compute = a.device;
            let summary = init(app, &spec, compute, a.force).await?;
            print_summary(&summary, app.format)?;
        }
        BaseModelCommand::Import(a) => {
            let device = Compute::Cpu.device()?;
            base_model::import_dir(&app.warehouse()?, &a.name, &a.dir, &device).await?;
            println!("imported {} as models/{}/", a.dir.display(), a.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Build the base model with a progress bar (also used by the demo).
pub async fn init(app: &App, spec: &BaseModelSpec, compute: Compute, force: bool) -> anyhow::Result<BaseModelSummary> {
    let catalog = app.catalog()?;
    let _lock = catalog.try_lock("base-model")?;
    let device = compute.device()?;
    let bar = ProgressBar::new(spec.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} base model [{bar:30}] {pos}/{len} steps {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let mut progress = move |p: BaseProgress| match p {
        BaseProgress::Tokenizer { vocab } => b.set_message(format!("tokenizer: {vocab} tokens")),
        BaseProgress::Step { step, loss, .. } => {
            b.set_position(step as u64);
            b.set_message(format!("loss {loss:.3}"));
        }
    };
    let summary =
        base_model::init(&app.warehouse()?, spec, &device, compute.backend_name(), force, &mut progress).await?;
    bar.finish_and_clear();
    Ok(summary)
}

/// Print the outcome.
pub fn print_summary(s: &BaseModelSummary, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    match (&s.report, s.existed) {
        (_, true) => println!("base model models/{}/ already exists", s.name),
        (Some(r), false) => println!(
            "base model models/{}/: {} weights, {} steps in {:.1}s{}, final train loss {:.3}, held-out loss {:.3}",
            s.name,
            r.params,
            r.steps_done,
            r.seconds,
            if r.stopped_by_time { " (time bound)" } else { "" },
            r.final_train_loss,
            r.heldout_loss
        ),
        (None, false) => println!("base model models/{}/ written", s.name),
    }
    Ok(())
}

/// The demo's base-model stage: build `models/<serving.base_model>/` once; later runs reuse it.
pub async fn demo_stage(app: &App) -> anyhow::Result<()> {
    let spec = BaseModelSpec { name: app.config.serving.base_model.clone(), ..BaseModelSpec::default() };
    let summary = init(app, &spec, Compute::Cpu, false).await?;
    print_summary(&summary, Format::Table)
}
