//! Ingest throughput against DataFusion alone (issue: bookkeeping costs at most 30%).
//!
//! Generates 1,000 Parquet files with 1,000 rows each in a local inbox, then in the same run:
//!   1. `tributary ingest` (validation, hashing, ids, signatures off, exactly-once log),
//!   2. the baseline: DataFusion reading the same files and writing one Delta table.
//! Prints rows/s of both and the ratio. Run: `cargo bench -p tributary-pipeline --bench ingest`
//! (`BENCH_FILES` / `BENCH_ROWS` override the size).

use std::sync::Arc;
use std::time::Instant;

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use rand::SeedableRng;
use tributary_pipeline::config::{Config, DatanetConfig, DatanetKind, IngestConfig};
use tributary_pipeline::ingest::IngestBuilder;
use tributary_pipeline::sample::{fact_text, parquet_bytes, text_batch};
use tributary_pipeline::{Tables, Warehouse};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU seconds (user + system) this process has used so far, from /proc (Linux; 0 elsewhere).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    f.iter().sum::<f64>() / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = env_usize("BENCH_FILES", 1000);
    let rows_per_file = env_usize("BENCH_ROWS", 1000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Not a dot-prefixed name: DataFusion skips hidden path components when listing the baseline.
    let dir = tempfile::Builder::new().prefix("tributary-ingest-bench").tempdir()?;
    let mut cfg = Config {
        datanets: vec![DatanetConfig {
            name: "bench".into(),
            kind: DatanetKind::Text,
            daily_row_limit: 0,
            daily_byte_limit: 0,
            ..DatanetConfig::default()
        }],
        ingest: IngestConfig { max_files_per_batch: 250, concurrency: 8, ..IngestConfig::default() },
        ..Config::default()
    };
    cfg.base_dir = dir.path().to_path_buf();
    let cfg = Arc::new(cfg);
    let warehouse = Warehouse::open(&cfg)?;
    let root = warehouse.local_dir().ok_or("local warehouse")?;

    eprintln!("generating {files} files × {rows_per_file} rows…");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for f in 0..files {
        let texts: Vec<String> = (0..rows_per_file).map(|_| fact_text(&mut rng).1).collect();
        let contributor = format!("0x{:040x}", f % 100 + 1);
        let path = root.join(format!("inbox/bench/{contributor}/part-{f:05}.parquet"));
        std::fs::create_dir_all(path.parent().ok_or("parent")?)?;
        std::fs::write(path, parquet_bytes(&text_batch(&texts, &[]))?)?;
    }
    let total = (files * rows_per_file) as f64;

    // Baseline first, so the page cache is equally warm for both.
    let cpu0 = cpu_secs();
    let baseline_secs = rt.block_on(async {
        let t = Instant::now();
        // The inbox nests files under <datanet>/<address>/: list subdirectories too.
        let config = datafusion::prelude::SessionConfig::new()
            .set_bool("datafusion.execution.listing_table_ignore_subdirectory", false);
        let ctx = SessionContext::new_with_config(config);
        let inbox = format!("{}/", root.join("inbox").display());
        let df = ctx.read_parquet(inbox, ParquetReadOptions::default().file_extension(".parquet")).await?;
        let batches = df.collect().await?;
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(n as f64, total, "baseline read every row");
        let url = url::Url::from_directory_path(root.join("baseline_delta")).map_err(|_| "url")?;
        std::fs::create_dir_all(root.join("baseline_delta"))?;
        let table = deltalake::DeltaTable::try_from_url(url).await?;
        table.write(batches).await?;
        Ok::<f64, Box<dyn std::error::Error>>(t.elapsed().as_secs_f64())
    })?;

    let cpu1 = cpu_secs();
    let ingest_secs = rt.block_on(async {
        let t = Instant::now();
        let s = IngestBuilder::new(cfg.clone(), Tables::new(warehouse.clone())).execute().await?;
        assert_eq!(s.rows_added as f64, total, "ingest accepted every row: {:?}", s.quarantined_by_reason);
        Ok::<f64, Box<dyn std::error::Error>>(t.elapsed().as_secs_f64())
    })?;

    let cpu2 = cpu_secs();
    let base_rps = total / baseline_secs;
    let ingest_rps = total / ingest_secs;
    println!("ingest benchmark: {files} files, {} rows", total as u64);
    println!("  baseline (DataFusion read + one Delta write): {baseline_secs:8.2} s  {base_rps:12.0} rows/s  cpu {:6.2} s", cpu1 - cpu0);
    println!("  tributary ingest (validate, ids, log, txn):   {ingest_secs:8.2} s  {ingest_rps:12.0} rows/s  cpu {:6.2} s", cpu2 - cpu1);
    println!("  ratio ingest/baseline throughput: {:.2} (target >= 0.70)", ingest_rps / base_rps);
    Ok(())
}
