//! Epochs end to end: `tributary epoch run` from an empty directory through settlement, re-run
//! changes nothing, and a run SIGKILLed at random stages resumes to the same roots.

use std::path::Path;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::cli::bin;

const CONFIG: &str = r#"
warehouse = "warehouse"
[ingest]
max_files_per_batch = 1000
[[datanets]]
name = "geo-qa"
kind = "prompt_completion"
require_signature = true
[rewards]
pool_per_epoch = "1000000000000000000000"
"#;

fn setup(dir: &Path) {
    std::fs::write(dir.join("tributary.toml"), CONFIG).expect("config");
    let out = bin()
        .arg("--config")
        .arg(dir)
        .args(["sample", "--contributors", "5", "--files", "2", "--rows", "24", "--seed", "11"])
        .output()
        .expect("sample");
    assert!(out.status.success(), "sample: {}", String::from_utf8_lossy(&out.stderr));
    copy_dir(&base_model_warehouse().join("warehouse/models"), &dir.join("warehouse/models"));
}

/// A warehouse holding a small base model, made once per build with `tributary base-model init`
/// (step-bound, so every copy is the same model and the two runs below can compare roots).
fn base_model_warehouse() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("epoch-test-base-v1");
        if dir.join("warehouse/models/tributary-base/model.safetensors").exists() {
            return dir;
        }
        std::fs::create_dir_all(&dir).expect("base dir");
        std::fs::write(dir.join("tributary.toml"), CONFIG).expect("config");
        let out = bin()
            .arg("--config")
            .arg(&dir)
            .args(["base-model", "init", "--steps", "200", "--max-seconds", "100000", "--force"])
            .output()
            .expect("base-model init");
        assert!(out.status.success(), "base-model init: {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn current_epoch(dir: &Path) -> i64 {
    let out = bin().arg("--config").arg(dir).args(["--format", "json", "status"]).output().expect("status");
    assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["current_epoch"].as_i64().expect("epoch")
}

fn run_epoch(dir: &Path, epoch: i64) -> serde_json::Value {
    let out = bin().arg("--config").arg(dir).args(["--format", "json", "epoch", "run", &epoch.to_string()]).output().expect("run");
    assert!(out.status.success(), "epoch run: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn roots(dir: &Path, epoch: i64) -> (String, String) {
    let receipt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("warehouse/epochs/{epoch}/receipt.json"))).expect("receipt")).expect("json");
    (receipt["payout_root"].as_str().expect("payout root").into(), receipt["attribution_root"].as_str().expect("attribution root").into())
}

#[test]
fn epoch_run_is_idempotent_and_survives_sigkill_with_the_same_roots() {
    let clean = tempfile::tempdir().expect("tempdir");
    setup(clean.path());
    let epoch = current_epoch(clean.path());
    let first = run_epoch(clean.path(), epoch);
    let stages: Vec<&str> = first["stages"].as_array().expect("stages").iter().map(|s| s["status"].as_str().unwrap_or("")).collect();
    assert!(stages.iter().all(|s| *s == "succeeded"), "{first}");
    let expected = roots(clean.path(), epoch);

    // Re-running a finished epoch changes nothing.
    let tables_before = std::fs::read_dir(clean.path().join("warehouse/tables/gold")).expect("gold").count();
    let again = run_epoch(clean.path(), epoch);
    assert!(again["stages"].as_array().expect("stages").iter().all(|s| s["status"] == "skipped"), "{again}");
    assert_eq!(roots(clean.path(), epoch), expected);
    assert_eq!(std::fs::read_dir(clean.path().join("warehouse/tables/gold")).expect("gold").count(), tables_before);

    // Kill at random moments, then finish: the same roots as the uninterrupted run.
    let killed = tempfile::tempdir().expect("tempdir");
    setup(killed.path());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut kills = 0;
    for _ in 0..4 {
        let mut child = bin().arg("--config").arg(killed.path()).args(["epoch", "run", &epoch.to_string()]).spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(rng.random_range(500..6000)));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        child.wait().expect("reap");
    }
    run_epoch(killed.path(), epoch);
    eprintln!("killed {kills} of 4 runs");
    assert_eq!(roots(killed.path(), epoch), expected, "a killed-and-resumed epoch settles to the same roots");
}
