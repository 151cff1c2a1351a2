//! `tributary train`: fit a LoRA adapter on a datanet's `gold.training_set`.

use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use tributary_jobs::compute::Compute;
use tributary_jobs::model::LoraTarget;
use tributary_jobs::train::{TrainConfig, TrainEvent, TrainJob, TrainSummary};

use super::{App, Format, output};

/// Arguments of `tributary train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Datanet to train on.
    #[arg(long)]
    pub datanet: String,
    /// Epoch: train on rows of epochs up to this one (default: the latest present).
    #[arg(long)]
    pub epoch: Option<i64>,
    /// Base model under models/ (default: serving.base_model).
    #[arg(long)]
    pub base_model: Option<String>,
    /// LoRA rank.
    #[arg(long, default_value_t = TrainConfig::default().lora.rank)]
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = TrainConfig::default().lora.alpha)]
    pub alpha: f64,
    /// LoRA dropout.
    #[arg(long, default_value_t = TrainConfig::default().lora.dropout)]
    pub dropout: f64,
    /// Target modules, comma-separated (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj).
    #[arg(long, default_value_t = default_targets())]
    pub targets: String,
    /// Passes over the training rows.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    /// Rows per step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = TrainConfig::default().lr, allow_negative_numbers = true, value_parser = super::positive_f64)]
    pub lr: f64,
    /// Seed (initialization, batch order, dropout).
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,
    /// Batch rows of similar length together, sorting them within groups of this many batches
    /// (the flag alone: 4; 0: off). Less padding, faster epochs; larger groups mix rows less.
    #[arg(long, value_name = "BATCHES", num_args = 0..=1, default_value_t = 0, default_missing_value = DEFAULT_GROUP)]
    pub group_by_length: usize,
    /// Compute device: cpu, or cuda[:N] when built with the `cuda` feature.
    #[arg(long, default_value = "cpu", value_parser = super::flag_value::<Compute>)]
    pub device: Compute,
}

/// `--group-by-length` without a value: `tributary_jobs::train::DEFAULT_LENGTH_GROUP` (clap takes
/// the default as text; the test below checks the two agree).
pub const DEFAULT_GROUP: &str = "4";

/// `TrainConfig`'s default targets as the flag's comma-separated list (the flags' defaults are read
/// from `TrainConfig::default()`, so the CLI and the library cannot drift apart).
fn default_targets() -> String {
    TrainConfig::default().lora.targets.iter().map(|t| t.module_name()).collect::<Vec<_>>().join(",")
}

impl TrainArgs {
    /// The training settings these flags describe.
    pub fn train_config(&self) -> anyhow::Result<TrainConfig> {
        let targets = self
            .targets
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| LoraTarget::parse(s).ok_or_else(|| anyhow::anyhow!("unknown target module `{s}`")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut cfg = TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
            group_by_length: self.group_by_length,
            ..TrainConfig::default()
        };
        cfg.lora.rank = self.rank;
        cfg.lora.alpha = self.alpha;
        cfg.lora.dropout = self.dropout;
        cfg.lora.targets = targets;
        Ok(cfg)
    }
}

/// A progress bar fed by train events.
pub fn progress_bar(label: &str) -> (ProgressBar, Arc<dyn Fn(TrainEvent) + Send + Sync>) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} {label} [{{bar:30}}] {{pos}}/{{len}} steps {{msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let f = Arc::new(move |e: TrainEvent| match e {
        TrainEvent::Started { total_steps, resumed_from, .. } => {
            b.set_length(total_steps as u64);
            b.set_position(resumed_from.unwrap_or(0) as u64);
        }
        TrainEvent::Step(p) => {
            b.set_position(p.step as u64);
            b.set_message(format!("epoch {} loss {:.3} lr {:.1e}", p.epoch, p.loss, p.lr));
        }
        TrainEvent::Epoch(m) => {
            b.suspend(|| eprintln!("  epoch {}: train loss {:.4}, validation loss {:.4}", m.epoch, m.train_loss, m.val_loss));
        }
    });
    (bar, f)
}

pub async fn run(app: &App, args: TrainArgs) -> anyhow::Result<ExitCode> {
    let catalog = app.catalog()?;
    let _lock = catalog.try_lock(&format!("train-{}", args.datanet))?;
    let compute = args.device;
    let cfg = args.train_config()?;
    let run_id = catalog.start_run("train", &serde_json::json!({"datanet": args.datanet, "epoch": args.epoch}))?;
    let (bar, progress) = progress_bar(&args.datanet);
    let mut job = TrainJob::new(app.config.clone(), app.tables()?, &args.datanet)
        .with_epoch(args.epoch)
        .with_train_config(cfg)
        .with_compute(compute)
        .with_progress(progress)
        .with_cancel(super::stop_flag("stopping after a checkpoint…"));
    if let Some(b) = &args.base_model {
        job = job.with_base_model(b.clone());
    }
    let result = job.execute().await;
    bar.finish_and_clear();
    match &result {
        Ok(s) => catalog.finish_run(run_id, Ok(&serde_json::to_value(s)?))?,
        Err(e) => catalog.finish_run(run_id, Err(&e.to_string()))?,
    }
    let summary = result?;
    print_summary(&summary, app.format)?;
    publish_credits_index(app, &summary).await?;
    Ok(ExitCode::SUCCESS)
}

/// Build the adapter's per-inference credits index (a suffix array over the tokens of its training
/// rows, stored beside it as `credits.index`) as part of publishing it, so a server attributes the
/// first answer of a new version without building anything. Idempotent: an existing index is kept.
pub async fn publish_credits_index(app: &App, summary: &TrainSummary) -> anyhow::Result<()> {
    use tributary_jobs::model::loader::ModelFiles;
    use tributary_jobs::tokenizer::Tokenizer;
    let warehouse = app.warehouse()?;
    let record = tributary_jobs::adapter_store::find(&warehouse, &summary.datanet, None, Some(&summary.version)).await?;
    let files = ModelFiles::read_warehouse(&warehouse, &record.base_model.name).await?;
    let json = files
        .tokenizer
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("base model `{}` has no tokenizer.json", record.base_model.name))?;
    let tokenizer = Tokenizer::from_json(json)?;
    if tributary_serving::credits::ensure(&warehouse, &app.tables()?, &tokenizer, &record).await? {
        eprintln!("{}/{}: built the credits index", summary.datanet, summary.version);
    }
    Ok(())
}

/// Print a train summary (also used by the demo).
pub fn print_summary(s: &TrainSummary, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let what = if s.already_trained {
        "already trained".to_string()
    } else {
        match s.resumed_from {
            Some(step) => format!("trained (resumed at step {step})"),
            None => "trained".to_string(),
        }
    };
    println!(
        "{}: adapter {} {what} on {} rows of gold.training_set@{} (epoch {}); validation loss {:.4} → {:.4}",
        s.datanet, s.version, s.rows, s.training_set_version, s.epoch, s.metrics.base_val_loss, s.metrics.final_val_loss
    );
    let rows = s
        .metrics
        .epochs
        .iter()
        .map(|e| vec![e.epoch.to_string(), format!("{:.4}", e.train_loss), format!("{:.4}", e.val_loss), format!("{:.2e}", e.lr)])
        .collect();
    println!("{}", output::table(&["epoch", "train loss", "validation loss", "mean lr"], rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        train: TrainArgs,
    }

    fn settings(args: &[&str]) -> TrainConfig {
        let cmd = Cmd::try_parse_from(std::iter::once("train").chain(args.iter().copied())).expect("flags parse");
        cmd.train.train_config().expect("settings")
    }

    #[test]
    fn flags_map_onto_the_training_settings_and_default_to_the_library_defaults() {
        assert_eq!(settings(&["--datanet", "d"]), TrainConfig::default());
        let cfg = settings(&["--datanet", "d", "--group-by-length", "--epochs", "3", "--rank", "8", "--targets", "q_proj,v_proj"]);
        assert_eq!(cfg.group_by_length, tributary_jobs::train::DEFAULT_LENGTH_GROUP, "the flag alone");
        assert_eq!(settings(&["--datanet", "d", "--group-by-length", "50"]).group_by_length, 50);
        assert_eq!((cfg.epochs, cfg.lora.rank), (3, 8));
        assert_eq!(cfg.lora.targets, vec![LoraTarget::Q, LoraTarget::V]);
        let err = Cmd::try_parse_from(["train", "--datanet", "d", "--targets", "q_proj,bogus"]).expect("parses").train.train_config();
        assert!(err.is_err_and(|e| e.to_string().contains("unknown target module `bogus`")));
    }
}
