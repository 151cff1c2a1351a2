//! Ingest throughput against DataFusion alone (issue: bookkeeping costs at most 30%).
//!
//! Generates 1,000 Parquet files with 1,000 rows each in a local inbox, then, in alternating rounds
//! of the same run (one warm-up round, then nine measured ones; medians compared):
//!   1. the baseline: DataFusion reading the same files and writing one Delta table,
//!   2. `tributary ingest` (validation, hashing, ids, signatures off, exactly-once log) into a fresh
//!      warehouse whose inbox holds the same files as hard links.
//!
//! Prints rows/s of both, the bytes each table takes, the ratio, and the spread of the per-round
//! ratios. Run: `cargo bench -p tributary-pipeline --bench ingest` (`BENCH_FILES` / `BENCH_ROWS`
//! override the size, `BENCH_ROUNDS` the measured rounds; `BENCH_TRACE=1` prints ingest's cores busy per 100 ms;
//! `BENCH_SIDES=ingest` runs ingest alone, for a profiler; `BENCH_BASELINE_ZSTD=1` makes the baseline write
//! zstd, bronze's codec, instead of delta-rs's default snappy; `BENCH_INPUT=snappy` or `zstd` writes the
//! input files compressed — pyarrow's and polars' defaults — instead of uncompressed, parquet-rs's).

use std::sync::Arc;
use std::time::Instant;

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use rand::SeedableRng;
use tributary_pipeline::config::{Config, DatanetConfig, DatanetKind, IngestConfig};
use tributary_pipeline::ingest::IngestBuilder;
use tributary_pipeline::sample::{fact_text, parquet_bytes_with, text_batch};
use tributary_pipeline::{Tables, Warehouse};

/// The allocator the `tributary` binary uses (src/main.rs), so that both sides are measured as shipped.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `BENCH_INPUT`: the input files' codec — unset or `uncompressed` (parquet-rs's default, what the
/// sample generator writes), `snappy` (pyarrow's) or `zstd` (polars').
fn input_properties() -> Result<(String, Option<parquet::file::properties::WriterProperties>), Box<dyn std::error::Error>> {
    use parquet::basic::Compression;
    let codec = std::env::var("BENCH_INPUT").unwrap_or_else(|_| "uncompressed".into());
    let compression = match codec.as_str() {
        "uncompressed" => return Ok((codec, None)),
        "snappy" => Compression::SNAPPY,
        "zstd" => Compression::ZSTD(Default::default()),
        other => return Err(format!("BENCH_INPUT={other}: expected uncompressed, snappy or zstd").into()),
    };
    Ok((codec, Some(parquet::file::properties::WriterProperties::builder().set_compression(compression).build())))
}

/// CPU seconds (user + system) this process has used so far, from /proc (Linux; 0 elsewhere).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    f.iter().sum::<f64>() / 100.0
}

/// Samples this process's CPU use every `ms` milliseconds on a thread of its own
/// (`BENCH_TRACE=1`): shows when ingest leaves a core idle. The last interval ends when
/// [`Sampler::stop`] is called, so it holds no time after the measured work.
struct Sampler {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Vec<f64>>,
}

impl Sampler {
    fn start(ms: u64) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut busy = Vec::new();
            let (mut t, mut c) = (Instant::now(), cpu_secs());
            loop {
                // Stopped, or the sampler dropped: this interval is the last.
                let wait = stopped.recv_timeout(std::time::Duration::from_millis(ms));
                let last = !matches!(wait, Err(std::sync::mpsc::RecvTimeoutError::Timeout));
                let (t1, c1) = (Instant::now(), cpu_secs());
                busy.push((c1 - c) / (t1 - t).as_secs_f64());
                (t, c) = (t1, c1);
                if last {
                    return busy;
                }
            }
        });
        Sampler { stop, thread }
    }

    /// Cores busy in each interval, e.g. `1.9 2.0 1.2 …`.
    fn stop(self) -> String {
        let _ = self.stop.send(());
        let busy = self.thread.join().unwrap_or_default();
        busy.iter().map(|b| format!("{b:.1}")).collect::<Vec<_>>().join(" ")
    }
}

/// Measured rounds of each side (`BENCH_ROUNDS`), after one warm-up round that is not counted; the
/// medians are compared. Single rounds on this machine wander by ±30%, so one run's median still
/// moves by a few hundredths; the per-round ratios' quartiles are printed beside it.
const ROUNDS: usize = 9;

/// The `q`-quantile of `v` (nearest rank).
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn bench_config(base_dir: &std::path::Path) -> Arc<Config> {
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
    cfg.base_dir = base_dir.to_path_buf();
    Arc::new(cfg)
}

/// Write back dirty pages, so that neither side pays for the other's writes (Linux `sync`).
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn median(v: Vec<f64>) -> f64 {
    quantile(v, 0.5)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = env_usize("BENCH_FILES", 1000);
    let rows_per_file = env_usize("BENCH_ROWS", 1000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Not a dot-prefixed name: DataFusion skips hidden path components when listing the baseline.
    let dir = tempfile::Builder::new().prefix("tributary-ingest-bench").tempdir()?;
    let source = dir.path().join("source");

    let (input_codec, input_props) = input_properties()?;
    eprintln!("generating {files} files × {rows_per_file} rows ({input_codec})…");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut relative = Vec::with_capacity(files);
    for f in 0..files {
        let texts: Vec<String> = (0..rows_per_file).map(|_| fact_text(&mut rng).1).collect();
        let contributor = format!("0x{:040x}", f % 100 + 1);
        let rel = format!("bench/{contributor}/part-{f:05}.parquet");
        let path = source.join("inbox").join(&rel);
        std::fs::create_dir_all(path.parent().ok_or("parent")?)?;
        std::fs::write(path, parquet_bytes_with(&text_batch(&texts, &[]), input_props.clone())?)?;
        relative.push(rel);
    }
    let total = (files * rows_per_file) as f64;
    // The baseline writes with delta-rs's default Parquet settings (snappy); BENCH_BASELINE_ZSTD=1
    // gives it the codec bronze uses (zstd level 1) instead.
    let baseline_zstd = std::env::var("BENCH_BASELINE_ZSTD").is_ok_and(|v| v == "1");
    let input_bytes = dir_bytes(&source.join("inbox"));
    let ingest_only = std::env::var("BENCH_SIDES").is_ok_and(|v| v == "ingest");
    let measured = env_usize("BENCH_ROUNDS", ROUNDS).max(1);

    let (mut base_secs, mut base_cpu, mut ingest_secs, mut ingest_cpu) = (vec![], vec![], vec![], vec![]);
    let (mut base_bytes, mut bronze_bytes) = (0, 0);
    let (mut base_last, mut ratios) = (None, vec![]);
    for round in 0..=measured {
        // Round 0 warms the page cache, the allocator and the thread pools; it is printed, not counted.
        let warm_up = round == 0;
        // Baseline first in each round, alternating with ingest, so both see the same page cache
        // and the same drift of the machine.
        if !ingest_only {
            settle();
            let cpu0 = cpu_secs();
            let secs = rt.block_on(async {
                let t = Instant::now();
                // The inbox nests files under <datanet>/<address>/: list subdirectories too.
                let config = datafusion::prelude::SessionConfig::new()
                    .set_bool("datafusion.execution.listing_table_ignore_subdirectory", false);
                let ctx = SessionContext::new_with_config(config);
                let inbox = format!("{}/", source.join("inbox").display());
                let df = ctx.read_parquet(inbox, ParquetReadOptions::default().file_extension(".parquet")).await?;
                let batches = df.collect().await?;
                let n: usize = batches.iter().map(|b| b.num_rows()).sum();
                assert_eq!(n as f64, total, "baseline read every row");
                let out = dir.path().join(format!("baseline-{round}"));
                std::fs::create_dir_all(&out)?;
                let url = url::Url::from_directory_path(&out).map_err(|_| "url")?;
                let table = deltalake::DeltaTable::try_from_url(url).await?;
                let mut write = table.write(batches);
                if baseline_zstd {
                    write = write.with_writer_properties(
                        parquet::file::properties::WriterProperties::builder()
                            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                            .build(),
                    );
                }
                write.await?;
                Ok::<f64, Box<dyn std::error::Error>>(t.elapsed().as_secs_f64())
            })?;
            let cpu = cpu_secs() - cpu0;
            let out = dir.path().join(format!("baseline-{round}"));
            base_bytes = dir_bytes(&out);
            std::fs::remove_dir_all(out)?;
            if !warm_up {
                base_secs.push(secs);
                base_cpu.push(cpu);
            }
            base_last = Some(secs);
        }

        // A fresh warehouse whose inbox holds the same files (hard links: same bytes, same cache).
        let cfg = bench_config(&dir.path().join(format!("round-{round}")));
        let warehouse = Warehouse::open(&cfg)?;
        let root = warehouse.local_dir().ok_or("local warehouse")?;
        for rel in &relative {
            let to = root.join("inbox").join(rel);
            std::fs::create_dir_all(to.parent().ok_or("parent")?)?;
            std::fs::hard_link(source.join("inbox").join(rel), to)?;
        }
        settle();
        let trace = std::env::var("BENCH_TRACE").is_ok_and(|v| v == "1").then(|| Sampler::start(100));
        let cpu1 = cpu_secs();
        let secs = rt.block_on(async {
            let t = Instant::now();
            let s = IngestBuilder::new(cfg.clone(), Tables::new(warehouse.clone())).execute().await?;
            assert_eq!(s.rows_added as f64, total, "ingest accepted every row: {:?}", s.quarantined_by_reason);
            Ok::<f64, Box<dyn std::error::Error>>(t.elapsed().as_secs_f64())
        })?;
        if let Some(t) = trace {
            eprintln!("  ingest cores busy per 100 ms: {}", t.stop());
        }
        let cpu = cpu_secs() - cpu1;
        bronze_bytes = dir_bytes(&root.join("tables/bronze/contributions"));
        std::fs::remove_dir_all(dir.path().join(format!("round-{round}")))?;
        let label = if warm_up { "warm-up".to_string() } else { format!("round {round}") };
        match base_last {
            Some(b) => eprintln!("  {label}: baseline {b:.2} s, ingest {secs:.2} s, ratio {:.2}", b / secs),
            None => eprintln!("  {label}: ingest {secs:.2} s"),
        }
        if !warm_up {
            ingest_secs.push(secs);
            ingest_cpu.push(cpu);
            if let Some(b) = base_last {
                ratios.push(b / secs);
            }
        }
    }

    let i = median(ingest_secs);
    let rounds = if ingest_only { "rounds of ingest alone" } else { "alternating rounds" };
    println!("ingest benchmark: {files} files, {} rows, median of {measured} {rounds} after a warm-up", total as u64);
    let codec = if baseline_zstd { "zstd" } else { "snappy" };
    let b = (!ingest_only).then(|| median(base_secs));
    if let Some(b) = b {
        println!("  baseline (DataFusion read + one Delta write, {codec}): {b:8.2} s  {:12.0} rows/s  cpu {:6.2} s", total / b, median(base_cpu));
    }
    println!("  tributary ingest (validate, ids, log, txn):   {i:8.2} s  {:12.0} rows/s  cpu {:6.2} s", total / i, median(ingest_cpu));
    let mb = |b: u64| b as f64 / 1e6;
    let baseline_table = if ingest_only { String::new() } else { format!("baseline table {:.1} MB; ", mb(base_bytes)) };
    println!("  bytes: input {:.1} MB; {baseline_table}bronze.contributions {:.1} MB", mb(input_bytes), mb(bronze_bytes));
    if let Some(b) = b {
        println!("  ratio ingest/baseline throughput: {:.2} (target >= 0.70)", b / i);
        println!(
            "  per-round ratios: median {:.2}, quartiles {:.2}–{:.2}, range {:.2}–{:.2}",
            median(ratios.clone()),
            quantile(ratios.clone(), 0.25),
            quantile(ratios.clone(), 0.75),
            quantile(ratios.clone(), 0.0),
            quantile(ratios, 1.0)
        );
    }
    Ok(())
}
