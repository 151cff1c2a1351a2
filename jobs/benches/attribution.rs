//! Attribution cost against its baselines, measured in the same run:
//!
//! 0. training batches of rows of similar length (`tributary train --group-by-length K`, rows sorted
//!    within groups of K = 2, 4 and 50 batches) against the default mixed batches: epoch time,
//!    padding and final validation loss;
//! 1. per-example gradients: one backward pass per chunk of rows (zero probes on each projection's
//!    low-rank path, each row's outer products formed after the pass) against the naive loop of one
//!    backward pass per row;
//! 2. the gradients of every training row in chunks of rows of similar length (what attribution
//!    does) against chunks in row order, which pad every row to the longest of its chunk;
//! 3. the chunk size: the same passes at 8 to 128 rows per chunk against the default;
//! 4. each method's full attribution time against one training epoch (the target: the
//!    default method at most 2× an epoch).
//!
//! `cargo bench -p tributary-jobs --bench attribution` (a few minutes on 2 cores; builds the tiny
//! base model first if `TRIBUTARY_BENCH_BASE` does not point at a model directory).

use std::time::Instant;

use tributary_jobs::attribute::grads::{GradBlocks, chunk_grads, length_chunks, per_example_grads};
use tributary_jobs::attribute::{self, AttributionConfig, Method, NoCache};
use tributary_jobs::base_model::{self, BaseModelSpec};
use tributary_jobs::batch::padding_share;
use tributary_jobs::compute::Compute;
use tributary_jobs::corpus::KbSpec;
use tributary_jobs::model::{BaseModel, ModelFiles};
use tributary_jobs::tokenizer::Encoded;
use tributary_jobs::train::{DEFAULT_LENGTH_GROUP, Quiet, TrainConfig, epoch_batches, train_adapter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo test --all-targets` runs bench targets without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("attribution bench: run with `cargo bench -p tributary-jobs --bench attribution`");
        return Ok(());
    }
    let device = Compute::Cpu.device()?;
    let files = match std::env::var("TRIBUTARY_BENCH_BASE") {
        Ok(dir) => ModelFiles::read_dir(std::path::Path::new(&dir))?,
        Err(_) => {
            eprintln!("training the tiny base model (set TRIBUTARY_BENCH_BASE to a model dir to skip)…");
            let (m, t, _) = base_model::train(&BaseModelSpec::default(), &device, &mut |_| {})?;
            tributary_jobs::model::loader::model_files(&m, &t)?
        }
    };
    let base = BaseModel::from_files("bench", &files, &device)?;
    let kb = KbSpec::default().generate();
    let enc = |rows: &[tributary_jobs::corpus::KbRow]| -> Result<Vec<Encoded>, tributary_jobs::Error> {
        rows.iter().map(|r| base.tokenizer.encode_pair(&r.prompt, &r.completion)).collect()
    };
    let (train, val) = (enc(&kb.train)?, enc(&kb.val)?);
    let cfg = TrainConfig::default();
    let pad = base.tokenizer.eot();

    let t = Instant::now();
    let out = train_adapter(&base.model, &train, &val, &cfg, pad, None, &mut Quiet)?;
    let epoch = t.elapsed().as_secs_f64() / cfg.epochs as f64;
    println!("model: {} weights; adapter: {} weights; {} training rows, {} validation rows", base.model.config.num_params(), out.adapter.num_params(), train.len(), val.len());
    println!("one training epoch: {epoch:.3}s (baseline for the cost ratios)");

    // 0. Training batches of similar length (`--group-by-length K`: sorted within groups of K
    //    batches) against mixed ones (the default).
    let lens: Vec<usize> = train.iter().map(|r| r.tokens.len()).collect();
    let mixed_padding = padding_share(&train, &epoch_batches(&cfg, 0, &lens));
    for k in [2, DEFAULT_LENGTH_GROUP, 50] {
        let grouped = TrainConfig { group_by_length: k, ..cfg.clone() };
        let t = Instant::now();
        let out_grouped = train_adapter(&base.model, &train, &val, &grouped, pad, None, &mut Quiet)?;
        let grouped_epoch = t.elapsed().as_secs_f64() / cfg.epochs as f64;
        println!(
            "training epoch, length-sorted groups of {k} batches: {grouped_epoch:.3}s against {epoch:.3}s mixed → {:.2}× faster \
             (padding {:.0}% against {:.0}% of the tokens; final validation loss {:.4} against {:.4})",
            epoch / grouped_epoch,
            100.0 * padding_share(&train, &epoch_batches(&grouped, 0, &lens)),
            100.0 * mixed_padding,
            out_grouped.final_val_loss,
            out.final_val_loss
        );
    }

    // 1. Per-example gradients: chunked vs one row per backward pass.
    let rows = &train[..64.min(train.len())];
    let t = Instant::now();
    let naive: Vec<_> = rows.iter().map(|r| chunk_grads(&base.model, &out.adapter, std::slice::from_ref(r), pad)).collect::<Result<_, _>>()?;
    let naive_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let chunk = attribute::DEFAULT_CHUNK;
    let chunked = per_example_grads(&base.model, &out.adapter, rows, pad, chunk)?;
    let chunked_s = t.elapsed().as_secs_f64();
    let worst = max_diff(&GradBlocks::concat(naive)?, &chunked);
    println!(
        "per-example gradients of {} rows: one backward per row {naive_s:.3}s, one per {chunk}-row chunk {chunked_s:.3}s → {:.1}× faster (max difference {worst:.2e})",
        rows.len(),
        naive_s / chunked_s
    );

    // 2. Chunks of rows of similar length against chunks in row order, over every training row:
    //    a pass pads each chunk to its longest row.
    let in_order: Vec<Vec<usize>> = (0..train.len()).collect::<Vec<_>>().chunks(chunk).map(<[usize]>::to_vec).collect();
    let sorted = length_chunks(&train, chunk);
    let t = Instant::now();
    let parts = train.chunks(chunk).map(|part| chunk_grads(&base.model, &out.adapter, part, pad)).collect::<Result<Vec<_>, _>>()?;
    let row_order = GradBlocks::concat(parts)?;
    let row_order_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let by_length = per_example_grads(&base.model, &out.adapter, &train, pad, chunk)?;
    let by_length_s = t.elapsed().as_secs_f64();
    let worst = max_diff(&row_order, &by_length);
    println!(
        "per-example gradients of all {} rows in {chunk}-row chunks: in row order {row_order_s:.3}s ({:.0}% of the tokens padding), \
         shortest first {by_length_s:.3}s ({:.0}%) → {:.2}× faster (max difference {worst:.2e})",
        train.len(),
        100.0 * padding_share(&train, &in_order),
        100.0 * padding_share(&train, &sorted),
        row_order_s / by_length_s
    );

    // 3. The chunk size, against the default (length-sorted chunks; the mean of 3 runs each).
    let time_chunk = |c: usize| -> Result<f64, tributary_jobs::Error> {
        let t = Instant::now();
        for _ in 0..3 {
            per_example_grads(&base.model, &out.adapter, &train, pad, c)?;
        }
        Ok(t.elapsed().as_secs_f64() / 3.0)
    };
    let default_s = time_chunk(chunk)?;
    for c in [8, 16, 32, 64, 128] {
        let s = time_chunk(c)?;
        println!("all {} rows in {c}-row chunks: {s:.3}s, {:.2}× the default ({chunk} rows, {default_s:.3}s)", train.len(), s / default_s);
    }

    // 4. Each method against one epoch.
    for m in Method::ALL {
        let t = Instant::now();
        attribute::attribute(&base.model, &out.adapter, &out.tracin, &train, &val, pad, cfg.batch_size, &AttributionConfig::new(m), &mut NoCache)?;
        let s = t.elapsed().as_secs_f64();
        println!("{:<12} {s:.3}s = {:.2}× one training epoch", m.name(), s / epoch);
    }
    Ok(())
}

/// The largest absolute difference between two gradient sets of the same rows.
fn max_diff(a: &GradBlocks, b: &GradBlocks) -> f32 {
    a.blocks.iter().zip(&b.blocks).map(|(x, y)| (x.clone() - y.clone()).abs().max().into_scalar::<f32>()).fold(0.0, f32::max)
}
