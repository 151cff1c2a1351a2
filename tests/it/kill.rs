//! Kill test: `tributary ingest` is SIGKILLed at random moments; after a final clean run every row
//! is in bronze exactly once and the ingest log agrees.

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tributary_pipeline::config::Config;
use tributary_pipeline::sample::{self, SampleSpec};
use tributary_pipeline::{Tables, Warehouse};

use super::cli::bin;

const CONFIG: &str = r#"
warehouse = "warehouse"
[ingest]
max_files_per_batch = 8
concurrency = 4
[[datanets]]
name = "big"
kind = "prompt_completion"
require_signature = true
daily_row_limit = 0
daily_byte_limit = 0
"#;

async fn count(tables: &Tables, sql: &str) -> i64 {
    use arrow::array::AsArray;
    let b = tables.query(sql).await.expect("query");
    b[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0)
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tributary.toml"), CONFIG).expect("config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = Arc::new(Config::load(dir.path()).expect("config loads"));
    let warehouse = Warehouse::open(&cfg).expect("warehouse");
    let spec = SampleSpec { contributors: 12, files_per_contributor: 8, rows_per_file: 300, bad_files: true, ..SampleSpec::default() };
    let manifest = rt.block_on(sample::generate(&warehouse, &cfg.datanets[0], &spec)).expect("sample");
    let total_files = manifest.good_files.len() + manifest.bad_files.len();

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut kills = 0;
    for _ in 0..6 {
        let mut child = bin().arg("--config").arg(dir.path()).arg("ingest").spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(rng.random_range(150..1500)));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        child.wait().expect("reap");
    }
    let out = bin().arg("--config").arg(dir.path()).arg("ingest").output().expect("final run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("killed {kills} of 6 runs");

    let tables = Tables::new(warehouse);
    rt.block_on(async {
        let rows = count(&tables, "SELECT COUNT(*) FROM bronze.contributions").await;
        assert_eq!(rows as usize, manifest.rows, "every row exactly once");
        assert_eq!(count(&tables, "SELECT COUNT(DISTINCT contribution_id) FROM bronze.contributions").await, rows);
        assert_eq!(count(&tables, "SELECT COUNT(*) FROM ops.ingest_log").await as usize, total_files, "one log entry per file");
        assert_eq!(count(&tables, "SELECT COUNT(DISTINCT path) FROM ops.ingest_log").await as usize, total_files);
        assert_eq!(count(&tables, "SELECT CAST(SUM(rows) AS BIGINT) FROM ops.ingest_log WHERE status = 'accepted'").await, rows);
        // Every bronze file has exactly one accepted log entry with the same sha256.
        let orphans = count(
            &tables,
            "SELECT COUNT(*) FROM (SELECT DISTINCT file_path, file_sha256 FROM bronze.contributions) b
             LEFT JOIN ops.ingest_log l ON l.path = b.file_path AND l.sha256 = b.file_sha256 AND l.status = 'accepted'
             WHERE l.path IS NULL",
        )
        .await;
        assert_eq!(orphans, 0);
    });
}
