//! The CLI surface: init, help, exit codes, ingest and the demo.

use std::process::Command;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
}

#[test]
fn init_writes_a_config_that_loads_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = bin().arg("init").arg(dir.path()).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(dir.path().join("tributary.toml")).expect("written");
    assert!(text.contains("[[datanets]]") && text.contains("# "), "commented config");
    let again = bin().arg("init").arg(dir.path()).output().expect("run");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let tables = bin().args(["--config"]).arg(dir.path()).args(["--format", "json", "tables"]).output().expect("run");
    assert!(tables.status.success(), "{}", String::from_utf8_lossy(&tables.stderr));
    assert_eq!(String::from_utf8_lossy(&tables.stdout).trim(), "[]");
}

#[test]
fn usage_errors_exit_2_and_help_exists_everywhere() {
    let out = bin().arg("no-such-command").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    for cmd in [vec!["--help"], vec!["ingest", "--help"], vec!["init", "--help"], vec!["demo", "--help"], vec!["tables", "--help"]] {
        let out = bin().args(&cmd).output().expect("run");
        assert!(out.status.success(), "{cmd:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{cmd:?}");
    }
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tributary.toml"), "warehouse = 3\n").expect("write");
    let out = bin().arg("--config").arg(dir.path()).arg("ingest").output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tributary.toml") && err.contains("warehouse"), "{err}");
}

#[test]
fn demo_runs_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = dir.path().join("demo");
    let out = bin().arg("demo").arg("--dir").arg(&demo).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("signature_mismatch") && stdout.contains("not_parquet"), "{stdout}");
    assert!(demo.join("warehouse/tables/bronze/contributions/_delta_log").is_dir());

    let again = bin().arg("demo").arg("--dir").arg(&demo).args(["--format", "json"]).output().expect("run");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let text = String::from_utf8_lossy(&again.stdout);
    let first_json = text.find('{').expect("json summary");
    let summary: serde_json::Value = serde_json::Deserializer::from_str(&text[first_json..])
        .into_iter()
        .next()
        .expect("one value")
        .expect("valid json");
    assert_eq!(summary["rows_added"], 0, "second demo run must add nothing: {text}");
    assert_eq!(summary["files_accepted"], 0);
}
