//! The attribution benchmark without the CLI or a warehouse: trains the tiny base model in memory
//! (or loads one from a directory) and prints the benchmark table.
//!
//! `cargo run --release -p tributary-jobs --example eval_attribution -- [SUBSETS] [BASE_MODEL_DIR]`
//!
//! With fewer subsets than the published 50 it is a quick smoke run of the same code path that
//! `tributary eval attribution` runs.

use tributary_jobs::base_model::{self, BaseModelSpec};
use tributary_jobs::compute::Compute;
use tributary_jobs::eval::{self, EvalConfig, EvalProgress};
use tributary_jobs::model::{BaseModel, ModelFiles};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let subsets = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let device = Compute::Cpu.device()?;
    let files = match args.get(2) {
        Some(dir) if std::path::Path::new(dir).join("config.json").exists() => ModelFiles::read_dir(std::path::Path::new(dir))?,
        other => {
            let t = std::time::Instant::now();
            let (m, tok, report) = base_model::train(&BaseModelSpec::default(), &device, &mut |_| {})?;
            eprintln!("base model: {} steps in {:.1}s, held-out loss {:.3}", report.steps_done, t.elapsed().as_secs_f64(), report.heldout_loss);
            let files = tributary_jobs::model::loader::model_files(&m, &tok)?;
            if let Some(dir) = other {
                files.write_dir(std::path::Path::new(dir))?;
            }
            files
        }
    };
    let base = BaseModel::from_files("tributary-base", &files, &device)?;
    let mut cfg = EvalConfig { subsets, ..EvalConfig::default() };
    // Optional overrides from the environment (`EvalConfig::override_from_env`).
    cfg.override_from_env()?;
    if std::env::var("TRIBUTARY_EVAL_TRAIN_ONLY").is_ok() {
        // Fit check: train once on the clean datanet and print the learning curve.
        let kb = tributary_jobs::corpus::KbSpec { corrupt_frac: 0.0, ..cfg.kb.clone() }.generate();
        let enc = |rows: &[tributary_jobs::corpus::KbRow]| -> Result<Vec<_>, tributary_jobs::Error> {
            rows.iter().map(|r| base.tokenizer.encode_pair(&r.prompt, &r.completion)).collect()
        };
        let t = std::time::Instant::now();
        let out = tributary_jobs::train::train_adapter(&base.model, &enc(&kb.train)?, &enc(&kb.val)?, &cfg.train, base.tokenizer.eot(), None, &mut tributary_jobs::train::Quiet)?;
        println!("base val loss {:.3}; {:.1}s", out.base_val_loss, t.elapsed().as_secs_f64());
        for e in &out.epochs {
            println!("epoch {:>2}: train {:.3} val {:.3} lr {:.4}", e.epoch, e.train_loss, e.val_loss, e.lr);
        }
        return Ok(());
    }
    let report = eval::run(&base, &cfg, &|p| {
        if let EvalProgress::Phase(m) = p {
            eprintln!("  {m}");
        }
    })?;
    println!("{}", report.markdown());
    if let Ok(path) = std::env::var("TRIBUTARY_EVAL_OUTPUT") {
        std::fs::write(&path, serde_json::to_vec(&report)?)?;
    }
    Ok(())
}
