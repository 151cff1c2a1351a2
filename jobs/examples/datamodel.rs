//! The retrainings of a contributor-level datamodel: many random halves of the contributors of the
//! eval's corrupted scenario, each retrained exactly as `tributary eval attribution` retrains its
//! own subsets, with every validation row's loss written as JSON for `bench/datamodel_bound.py`.
//!
//! `cargo run --release -p tributary-jobs --example datamodel -- SUBSETS BASE_MODEL_DIR [SEED] [DRAW] > dm.json`
//!
//! `SEED` is which of the eval's two retraining seeds to use (0, the default: the attributed run's
//! own; 1: the other), `DRAW` the seed the subsets are drawn from (default 1). The settings are the
//! eval's, with the same environment overrides as `eval_attribution` (`EvalConfig::override_from_env`).
//! About 0.7 s a retraining on 2 cores with the default datanet.
//!
//! `datamodel --predict BASE_MODEL_DIR dm.json > predictions.json` trains the attributed run once
//! and writes what it predicts for the subsets of `dm.json` (the group prediction and each method's
//! additive prediction, `eval::contributor_predictions`), so the script can score the table's rows on
//! the same retrainings as the datamodels.

use tributary_jobs::compute::Compute;
use tributary_jobs::eval::{self, EvalConfig, EvalProgress};
use tributary_jobs::model::{BaseModel, ModelFiles};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: datamodel SUBSETS BASE_MODEL_DIR [SEED 0|1] [DRAW] | datamodel --predict BASE_MODEL_DIR DM.json";
    let mut cfg = EvalConfig::default();
    cfg.override_from_env()?;
    let device = Compute::Cpu.device()?;
    let base = |dir: &str| BaseModel::from_files("tributary-base", &ModelFiles::read_dir(std::path::Path::new(dir))?, &device);
    if args.get(1).map(String::as_str) == Some("--predict") {
        let (Some(dir), Some(dm)) = (args.get(2), args.get(3)) else {
            return Err(usage.into());
        };
        let dm: serde_json::Value = serde_json::from_slice(&std::fs::read(dm)?)?;
        let kept: Vec<Vec<usize>> = serde_json::from_value(dm["kept"].clone()).map_err(|e| format!("{}: kept: {e}", args[3]))?;
        let out = eval::contributor_predictions(&base(dir)?, &cfg, &kept)?;
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    let (Some(subsets), Some(dir)) = (args.get(1), args.get(2)) else {
        return Err(usage.into());
    };
    let subsets: usize = subsets.parse().map_err(|e| format!("SUBSETS {subsets:?}: {e}; {usage}"))?;
    let replica: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let draw: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let out = eval::contributor_retrainings(&base(dir)?, &cfg, subsets, draw, replica, &|p| {
        if let EvalProgress::Retrained { done, total } = p
            && (done % 50 == 0 || done == total)
        {
            eprintln!("  {done}/{total} retrainings");
        }
    })?;
    eprintln!("{} retrainings in {:.0}s", out.kept.len(), out.seconds);
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
