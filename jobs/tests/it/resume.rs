//! A training run killed with SIGKILL resumes from its checkpoint and produces the same adapter,
//! bit for bit, as a run that was never interrupted.
//!
//! The test re-executes its own binary as the child that gets killed (selected by an environment
//! variable), so the kill is a real process death, not a polite cancellation.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_jobs::adapter_store::{AdapterDir, files};
use tributary_jobs::corpus::KbSpec;
use tributary_jobs::train::{TrainConfig, TrainJob};
use tributary_pipeline::config::Config;
use tributary_pipeline::{Tables, Warehouse};

use crate::common::{append_training_set, config, kb_rows, put_validation, warehouse_with_base};

const CHILD_ENV: &str = "TRIBUTARY_TEST_TRAIN_CHILD";

fn train_config() -> TrainConfig {
    TrainConfig { epochs: 4, checkpoint_every: 3, ..TrainConfig::default() }
}

fn open(dir: &Path) -> (Arc<Config>, Tables) {
    let url = format!("file://{}", dir.display());
    let cfg = config(&url, "facts", "validation/facts.parquet");
    let w = Warehouse::open(&cfg).expect("open warehouse");
    (cfg, Tables::new(w))
}

async fn prepare(dir: &Path) {
    let (_, tables) = open(dir);
    let w = tables.warehouse().clone();
    warehouse_with_base(&w).await;
    let kb = KbSpec { seed: 8, regions: 16, train_rows: 320, val_per_region: 2, contributors: 16, corrupt_frac: 0.0 }.generate();
    append_training_set(&tables, "facts", &kb_rows(&kb.train, 0)).await;
    put_validation(&w, "validation/facts.parquet", &kb.val).await;
}

async fn train(dir: &Path) -> tributary_jobs::train::TrainSummary {
    let (cfg, tables) = open(dir);
    TrainJob::new(cfg, tables, "facts").with_train_config(train_config()).execute().await.expect("train")
}

fn find_resume_checkpoint(dir: &Path) -> Option<std::path::PathBuf> {
    let root = dir.join("adapters/facts");
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let p = e.path().join(files::RESUME);
        if p.exists() {
            return Some(p);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_training_run_resumes_bit_for_bit() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        // The child: train until killed.
        train(Path::new(&dir)).await;
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (killed, clean) = (tmp.path().join("killed"), tmp.path().join("clean"));
    prepare(&killed).await;
    prepare(&clean).await;

    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["--exact", "resume::killed_training_run_resumes_bit_for_bit", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &killed)
        .spawn()
        .expect("spawn child");
    let deadline = Instant::now() + Duration::from_secs(300);
    while find_resume_checkpoint(&killed).is_none() {
        assert!(Instant::now() < deadline, "the child never wrote a checkpoint");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child exited ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap");

    let (_, tables) = open(&killed);
    let versions: Vec<_> = std::fs::read_dir(killed.join("adapters/facts")).expect("dir").flatten().collect();
    assert_eq!(versions.len(), 1);
    let version = versions[0].file_name().to_string_lossy().to_string();
    let dir = AdapterDir::new(tables.warehouse(), "facts", &version);
    assert!(dir.record().await.expect("read").is_none(), "killed before finishing: no adapter.json yet");

    let resumed = train(&killed).await;
    assert!(resumed.resumed_from.is_some_and(|s| s > 0), "did not resume: {:?}", resumed.resumed_from);
    let uninterrupted = train(&clean).await;
    assert_eq!(uninterrupted.resumed_from, None);
    assert_eq!(resumed.version, uninterrupted.version);
    let weights = |d: &Path| std::fs::read(d.join("adapters/facts").join(&resumed.version).join(files::WEIGHTS)).expect("weights");
    assert_eq!(weights(&killed), weights(&clean), "resumed adapter differs from the uninterrupted one");
    assert_eq!(resumed.metrics.epochs, uninterrupted.metrics.epochs);
    for k in 1..=4 {
        let ck = |d: &Path| std::fs::read(d.join("adapters/facts").join(&resumed.version).join(format!("checkpoints/epoch-{k}.safetensors")));
        assert_eq!(ck(&killed).expect("ck"), ck(&clean).expect("ck"), "TracIn checkpoint {k} differs");
    }
    assert!(find_resume_checkpoint(&killed).is_none(), "resume checkpoint removed after finishing");
}
