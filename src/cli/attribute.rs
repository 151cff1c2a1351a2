//! `tributary attribute`: per-row influence and per-contributor attribution of a trained adapter.

use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use tributary_jobs::attribute::{AttributeEvent, AttributeJob, AttributeSummary, AttributionConfig, Curvature, Method};
use tributary_jobs::compute::Compute;
use tributary_jobs::train::{TrainConfig, TrainJob};

use super::{App, Format, output};

/// Arguments of `tributary attribute`.
#[derive(Debug, clap::Args)]
pub struct AttributeArgs {
    /// Datanet.
    #[arg(long)]
    pub datanet: String,
    /// Epoch whose adapter to attribute (default: the newest adapter).
    #[arg(long)]
    pub epoch: Option<i64>,
    /// Method: exact-block, datainf, tracin or graddot.
    #[arg(long, default_value = "exact-block", value_parser = super::flag_value::<Method>)]
    pub method: Method,
    /// A specific adapter version (default: the newest of the epoch).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Damping relative to the mean curvature, positive (default: the method's).
    #[arg(long, allow_negative_numbers = true, value_parser = super::positive_f64)]
    pub damping: Option<f64>,
    /// exact-block: where the curvature comes from — val-sampled (Gauss-Newton matrix on the
    /// validation rows, the default), val-observed (their empirical Fisher), train-sampled or
    /// train-observed (the same on the training rows; train-sampled costs about twice as much).
    #[arg(long, default_value = "val-sampled", value_parser = super::flag_value::<Curvature>)]
    pub curvature: Curvature,
    /// Recompute even if results for this adapter and method version exist.
    #[arg(long)]
    pub force: bool,
    /// Compute device: cpu, or cuda[:N] when built with the `cuda` feature.
    #[arg(long, default_value = "cpu", value_parser = super::flag_value::<Compute>)]
    pub device: Compute,
}

pub async fn run(app: &App, args: AttributeArgs) -> anyhow::Result<ExitCode> {
    let catalog = app.catalog()?;
    let _lock = catalog.try_lock(&format!("attribute-{}", args.datanet))?;
    let (method, compute) = (args.method, args.device);
    let run_id = catalog.start_run(
        "attribute",
        &serde_json::json!({"datanet": args.datanet, "epoch": args.epoch, "method": method.name()}),
    )?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} gradients [{bar:30}] {pos}/{len} chunks")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let progress = Arc::new(move |e: AttributeEvent| match e {
        AttributeEvent::Chunk { done, total } => {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    });
    let attribution = AttributionConfig { damping: args.damping, curvature: args.curvature, ..AttributionConfig::new(method) };
    let result = AttributeJob::new(app.config.clone(), app.tables()?, &args.datanet)
        .with_epoch(args.epoch)
        .with_adapter_version(args.adapter.clone())
        .with_attribution(attribution)
        .with_compute(compute)
        .with_force(args.force)
        .with_progress(progress)
        .with_cancel(super::stop_flag("stopping after the chunk in flight…"))
        .execute()
        .await;
    bar.finish_and_clear();
    match &result {
        Ok(s) => catalog.finish_run(
            run_id,
            Ok(&serde_json::json!({"rows": s.rows, "adapter": s.adapter_version, "method_version": s.method_version})),
        )?,
        Err(e) => catalog.finish_run(run_id, Err(&e.to_string()))?,
    }
    print_summary(&result?, app.format)?;
    Ok(ExitCode::SUCCESS)
}

/// Print an attribution summary and the contributor table (also used by the demo).
pub fn print_summary(s: &AttributeSummary, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let what = if s.already_done { "already attributed" } else { "attributed" };
    println!(
        "{}: {what} {} rows of adapter {} (gold.training_set@{}, epoch {}) on {} validation rows with {} in {:.1}s{}",
        s.datanet,
        s.rows,
        s.adapter_version,
        s.training_set_version,
        s.epoch,
        s.validation_rows,
        s.method_version,
        s.seconds,
        if s.chunks_resumed > 0 { format!(" ({} gradient chunks resumed)", s.chunks_resumed) } else { String::new() }
    );
    let rows = s
        .contributors
        .iter()
        .map(|c| {
            vec![
                c.contributor.clone(),
                c.rows_submitted.to_string(),
                c.rows_accepted.to_string(),
                c.duplicates.to_string(),
                format!("{:+.3e}", c.influence_sum),
                format!("{:.3e}", c.positive_influence),
                format!("{:.1}%", 100.0 * c.share),
            ]
        })
        .collect();
    println!(
        "{}",
        output::table(&["contributor", "submitted", "accepted", "duplicates", "influence", "positive", "share"], rows)
    );
    Ok(())
}

/// The demo's train-and-attribute stage: an adapter per datanet with rows in `gold.training_set`,
/// then `exact-block` attribution and the contributor table.
pub async fn demo_stage(app: &App) -> anyhow::Result<()> {
    let tables = app.tables()?;
    if tables.open(&tributary_jobs::dataset::training_set_id()).await?.is_none() {
        eprintln!("   skipped: gold.training_set does not exist yet (the SQL models stage builds it)");
        return Ok(());
    }
    let warehouse = app.warehouse()?;
    for (i, datanet) in app.config.datanets.iter().enumerate() {
        if tributary_jobs::dataset::ensure_sample_validation(&warehouse, datanet, 1000 + i as u64, 48).await? {
            eprintln!("   {}: wrote the validation set {}", datanet.name, datanet.validation_set);
        }
        let t = std::time::Instant::now();
        let train = TrainJob::new(app.config.clone(), tables.clone(), &datanet.name)
            .with_train_config(demo_train_config())
            .execute()
            .await;
        let summary = match train {
            Ok(s) => s,
            Err(tributary_jobs::Error::Data { reason, .. }) => {
                eprintln!("   {}: skipped ({reason})", datanet.name);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        super::train::print_summary(&summary, Format::Table)?;
        super::train::publish_credits_index(app, &summary).await?;
        eprintln!("   ({}: train {:.1}s)", datanet.name, t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        let s = AttributeJob::new(app.config.clone(), tables.clone(), &datanet.name)
            .with_adapter_version(Some(summary.version.clone()))
            .execute()
            .await?;
        print_summary(&s, Format::Table)?;
        eprintln!("   ({}: attribute {:.1}s)", datanet.name, t.elapsed().as_secs_f64());
    }
    Ok(())
}

/// The demo's training settings: the defaults with fewer epochs, to stay within its time budget.
pub fn demo_train_config() -> TrainConfig {
    TrainConfig { epochs: 2, ..TrainConfig::default() }
}
