//! Scale-out with real processes: `tributary cluster scheduler` and two `tributary cluster executor`
//! processes on loopback, and `tributary sql run --cluster` building the shipped models on them —
//! the same tables as the local engine.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tributary_pipeline::config::Config;
use tributary_pipeline::models::cluster;
use tributary_pipeline::{Tables, Warehouse};

use super::cli::bin;

const CONFIG: &str = r#"
warehouse = "warehouse"
[[datanets]]
name = "notes"
kind = "text"
[[datanets]]
name = "geo-qa"
kind = "prompt_completion"
"#;

/// Child processes killed when the test ends, however it ends.
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], cluster::free_port().expect("free port")))
}

fn wait_listening(addr: SocketAddr, child: &mut Child) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(child.try_wait().expect("poll").is_none(), "cluster member exited early");
        assert!(start.elapsed() < Duration::from_secs(60), "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tributary(dir: &Path, args: &[&str]) -> String {
    let out = bin().arg("--config").arg(dir).args(args).output().expect("run");
    assert!(out.status.success(), "tributary {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every row of every model table, printed and sorted per table.
fn contents(dir: &Path) -> Vec<(String, Vec<String>)> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = Config::load(dir).expect("config loads");
    let tables = Tables::new(Warehouse::open(&cfg).expect("warehouse"));
    rt.block_on(async {
        let mut out = Vec::new();
        for t in ["silver.contributions_dedup", "silver.quality_scores", "gold.training_set", "gold.contributor_stats"] {
            let batches = tables.query(&format!("SELECT * FROM {t}")).await.expect("query");
            let text = arrow::util::pretty::pretty_format_batches(&batches).expect("format").to_string();
            let mut rows: Vec<String> = text.lines().filter(|l| l.starts_with('|')).skip(1).map(str::to_string).collect();
            rows.sort();
            assert!(!rows.is_empty(), "{t} is empty");
            out.push((t.to_string(), rows));
        }
        out
    })
}

#[test]
fn sql_models_run_on_a_ballista_cluster_of_separate_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tributary.toml"), CONFIG).expect("config");
    tributary(dir.path(), &["sample", "--contributors", "6", "--files", "2", "--rows", "40"]);
    tributary(dir.path(), &["ingest"]);
    tributary(dir.path(), &["sql", "run"]);
    let local = contents(dir.path());

    let scheduler = free_addr();
    let config = dir.path().to_str().expect("utf-8 path");
    // Each member's stderr goes to <name>.log in the test dir (what a failure report needs).
    let spawn = |name: &str, args: Vec<String>| -> Child {
        let mut cmd: Command = bin();
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("log file");
        cmd.arg("--config").arg(config).arg("cluster").args(&args).stdout(Stdio::null()).stderr(log);
        cmd.spawn().expect("spawn cluster member")
    };
    let mut members = Members(vec![spawn("scheduler", vec!["scheduler".into(), "--bind".into(), scheduler.to_string()])]);
    wait_listening(scheduler, &mut members.0[0]);
    for i in 0..2 {
        let (bind, grpc) = (free_addr(), free_addr());
        let work = dir.path().join(format!("executor-{i}"));
        members.0.push(spawn(&format!("executor-{i}"), vec![
            "executor".into(),
            "--scheduler".into(),
            scheduler.to_string(),
            "--bind".into(),
            bind.to_string(),
            "--grpc-port".into(),
            grpc.port().to_string(),
            "--vcores".into(),
            "2".into(),
            "--work-dir".into(),
            work.display().to_string(),
        ]));
        let last = members.0.len() - 1;
        wait_listening(bind, &mut members.0[last]);
    }

    let report = tributary(dir.path(), &["--format", "json", "sql", "run", "--full-refresh", "--cluster", &scheduler.to_string()]);
    let report: serde_json::Value = serde_json::from_str(&report).expect("json report");
    let models = report["models"].as_array().expect("models");
    assert_eq!(models.len(), 4, "{report}");
    for m in models {
        assert_eq!(m["status"], "built", "{m}");
    }
    assert_eq!(contents(dir.path()), local, "the cluster built the same tables as the local engine");
    // The executors did the work: their shuffle directories hold the jobs' stage outputs.
    let stage_files: usize = (0..2).map(|i| count_files(&dir.path().join(format!("executor-{i}")))).sum();
    assert!(stage_files > 0, "no stage output in the executors' work dirs");
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|es| es.flatten().map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}
