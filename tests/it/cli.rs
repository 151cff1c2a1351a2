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
    // A bad value of an enumerated flag is a usage error too, naming the flag and the valid values.
    for (flag, value, valid) in [("--method", "bogus", "graddot"), ("--curvature", "bogus", "val-sampled"), ("--device", "tpu", "cpu")] {
        let out = bin().args(["attribute", "--datanet", "geo-qa", flag, value]).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag) && err.contains(valid), "{flag} {value}: {err}");
    }
    // A damping, learning rate, epoch count or length-group size that cannot work is a usage error naming the flag.
    for args in [
        vec!["attribute", "--datanet", "geo-qa", "--damping", "-1"],
        vec!["attribute", "--datanet", "geo-qa", "--damping", "0"],
        vec!["train", "--datanet", "geo-qa", "--lr", "NaN"],
        vec!["train", "--datanet", "geo-qa", "--lr", "-0.01"],
        vec!["train", "--datanet", "geo-qa", "--group-by-length", "many"],
        vec!["eval", "attribution", "--group-by-length", "many"],
        vec!["eval", "attribution", "--damping", "inf"],
        vec!["eval", "attribution", "--epochs", "0"],
    ] {
        let out = bin().args(&args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        let flag = args[args.len() - 2];
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag) && err.contains("invalid value") && !err.contains("missing"), "{args:?}: {err}");
    }
    // A bad method in `eval attribution --methods` is refused before the base model is built.
    let out = bin().args(["eval", "attribution", "--methods", "exact-block, bogus"]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "--methods: {err}");
    assert!(err.contains("--methods") && err.contains("unknown method `bogus`") && !err.contains("missing"), "--methods: {err}");
    for cmd in [vec!["train", "--datanet", "geo-qa"], vec!["base-model", "init"]] {
        let out = bin().args(&cmd).args(["--device", "tpu"]).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?} --device tpu: {err}");
        assert!(err.contains("--device") && err.contains("cuda:N"), "{cmd:?}: {err}");
    }
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
    // Every stage ran through settlement and a claim, and served requests were metered.
    for needle in ["== stage 7", "built the credits index", "anchored at", "claim for 0x", "gold.inference_usage rows of these requests"] {
        assert!(stderr.contains(needle), "demo output lacks `{needle}`:\n{stderr}");
    }
    let versions_before = delta_versions(&demo.join("warehouse/tables"));
    assert!(versions_before.len() >= 10, "{versions_before:?}");
    analysts_read_the_warehouse(&demo.join("warehouse"));

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
    assert_eq!(delta_versions(&demo.join("warehouse/tables")), versions_before, "a second demo run commits nothing");
}

/// `schema/table` → number of Delta commits, for every table under `tables/`.
fn delta_versions(tables: &std::path::Path) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for schema in std::fs::read_dir(tables).expect("tables dir") {
        let schema = schema.expect("entry").path();
        for table in std::fs::read_dir(&schema).expect("schema dir") {
            let table = table.expect("entry").path();
            let commits = std::fs::read_dir(table.join("_delta_log"))
                .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
                .unwrap_or(0);
            let name = format!("{}/{}", schema.file_name().unwrap_or_default().to_string_lossy(), table.file_name().unwrap_or_default().to_string_lossy());
            out.insert(name, commits);
        }
    }
    out
}

/// The analysts' side: every notebook runs headless against the fresh demo warehouse, and every
/// table reads with Python `deltalake` and `polars` alone (no Tributary code). The test command's
/// setup script installs the Python packages (notebooks/requirements.txt).
fn analysts_read_the_warehouse(warehouse: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for script in ["notebooks/check_tables.py", "notebooks/run_notebooks.py"] {
        let out = Command::new("python3").arg(root.join(script)).arg(warehouse).output().expect("python3 runs");
        assert!(
            out.status.success(),
            "{script} failed (are notebooks/requirements.txt installed? scripts/setup-test-deps.sh does it):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Progress lines (each model built, each training epoch, each benchmark phase) reach stderr when
/// it is not a terminal too — a log file or CI — where the progress bar itself stays hidden.
#[test]
fn progress_lines_reach_a_log_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tributary.toml"), "warehouse = \"warehouse\"\n[[datanets]]\nname = \"notes\"\nkind = \"text\"\n")
        .expect("config");
    let run = |args: &[&str]| {
        let out = bin().arg("--config").arg(dir.path()).args(args).output().expect("run");
        assert!(out.status.success(), "tributary {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    run(&["sample", "--contributors", "3", "--files", "1", "--rows", "20"]);
    run(&["ingest"]);
    let log = run(&["sql", "run"]);
    for model in ["silver.contributions_dedup", "silver.quality_scores", "gold.training_set"] {
        assert!(log.lines().any(|l| l.contains("built") && l.contains(model)), "no progress line for {model} in:\n{log}");
    }
    // Nothing left to build on a second run: no lines either.
    let again = run(&["sql", "run"]);
    assert!(!again.contains("built"), "{again}");
}

/// `eval attribution --output` into a folder that does not exist (or `--gradients` where no directory
/// can be made) fails at once, before the base model is built or anything trained, and names the path.
#[test]
fn eval_output_that_cannot_be_written_fails_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tributary.toml"), "warehouse = \"warehouse\"\n").expect("config");
    let bad = dir.path().join("no-such-folder").join("report.json");
    let out = bin().arg("--config").arg(dir.path()).args(["eval", "attribution", "--output"]).arg(&bad).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write the report") && stderr.contains("no-such-folder"), "{stderr}");
    assert!(!stderr.contains("building it first"), "work started: {stderr}");
    assert!(!dir.path().join("warehouse").join("models").exists(), "a base model was built");
    // So does a gradients directory under a regular file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").expect("file");
    let out = bin().arg("--config").arg(dir.path()).args(["eval", "attribution", "--gradients"]).arg(file.join("grads")).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write the gradients") && stderr.contains("a-file"), "{stderr}");
    assert!(!dir.path().join("warehouse").join("models").exists(), "a base model was built");

    // A run that fails after the file was created leaves neither an empty file that looks like a
    // report nor its partial sibling, and an earlier report at the path is kept as it was.
    let broken = dir.path().join("warehouse").join("models").join("broken");
    std::fs::create_dir_all(&broken).expect("model dir");
    std::fs::write(broken.join("model.safetensors"), b"not safetensors").expect("weights");
    std::fs::write(broken.join("config.json"), b"{").expect("config");
    let report = dir.path().join("report.json");
    std::fs::write(&report, b"{\"earlier\": true}").expect("earlier report");
    let out = bin()
        .arg("--config")
        .arg(dir.path())
        .args(["eval", "attribution", "--base-model", "broken", "--output"])
        .arg(&report)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&report).expect("earlier report kept"), b"{\"earlier\": true}");
    assert!(!dir.path().join("report.json.partial").exists(), "the partial file was left behind");
}
