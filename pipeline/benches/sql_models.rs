//! SQL model benchmarks, each against a Python baseline measured in the same run.
//!
//! 1. `quality`: exact dedup + quality scoring over 1M rows with Tributary's functions on
//!    DataFusion, against the same logic written as plain SQL for DuckDB, on the same Parquet
//!    file. Target: Tributary ≤ 1.5× DuckDB's time.
//! 2. `near`: near-duplicate detection (MinHash, 128 permutations, word 5-gram shingles, LSH
//!    16 bands × 8 rows, confirmation at estimated Jaccard ≥ 0.8, connected components) over 100k
//!    documents with planted near duplicates, against Python `datasketch` `MinHashLSH` with the same
//!    parameters. Target: ≥ 10× faster at equal or better F1.
//!
//! Run with `bash bench/sql_models.sh` (it creates `bench/.venv` with duckdb and datasketch), or
//! `TRIBUTARY_BENCH_PYTHON=bench/.venv/bin/python cargo bench -p tributary-pipeline --bench sql_models
//! -- [--rows N] [--docs N] [--runs N] [--only quality|near]`.
//!
//! The SQL below mirrors `sql/silver/contributions_dedup.sql` and `sql/silver/quality_scores.sql`
//! (the models read Delta tables and the config; here both engines read one Parquet file and the
//! thresholds are the defaults written as literals).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::ParquetReadOptions;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_pipeline::ids;
use tributary_pipeline::models::{minhash, session};
use tributary_pipeline::sample;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Exact dedup + the 9 text rules of `quality_scores.sql`, thresholds at their defaults.
const QUALITY_SQL: &str = r#"
WITH exact AS (
    SELECT contribution_id, datanet, contributor, ingested_at, text,
           first_value(contribution_id) OVER (
               PARTITION BY datanet, content_hash ORDER BY ingested_at, contribution_id) AS canonical_id
    FROM docs
),
measured AS (
    SELECT contribution_id, datanet, contributor, canonical_id, text_stats(text) AS s FROM exact
),
judged AS (
    SELECT *, array_compact(make_array(
        CASE WHEN s['words'] < 5 THEN 'too_few_words' END,
        CASE WHEN s['words'] > 100000 THEN 'too_many_words' END,
        CASE WHEN s['mean_word_length'] < 3.0 OR s['mean_word_length'] > 10.0 THEN 'bad_mean_word_length' END,
        CASE WHEN s['symbol_ratio'] > 0.1 THEN 'too_many_symbols' END,
        CASE WHEN s['alpha_word_ratio'] < 0.8 THEN 'too_few_alpha_words' END,
        CASE WHEN s['dup_line_fraction'] > 0.3 THEN 'repeated_lines' END,
        CASE WHEN s['top_2gram_fraction'] > 0.2 OR s['dup_5gram_fraction'] > 0.15 THEN 'repeated_ngrams' END,
        CASE WHEN s['boilerplate_hits'] > 0 THEN 'boilerplate' END,
        CASE WHEN NOT s['ends_with_terminal'] THEN 'no_terminal_punctuation' END
    )) AS reasons
    FROM measured
)
SELECT contribution_id, datanet, contributor, canonical_id,
       CASE WHEN contribution_id = canonical_id THEN 'unique' ELSE 'exact' END AS dedup_kind,
       reasons,
       1.0 - CAST(cardinality(reasons) AS DOUBLE) / 9.0 AS quality_score,
       contribution_id = canonical_id AND cardinality(reasons) = 0 AS accepted
FROM judged
"#;

/// Steps 2–4 of `contributions_dedup.sql`: signatures, LSH candidates, confirmation, clusters.
const NEAR_SQL: &str = r#"
WITH survivors AS (
    SELECT datanet, id AS ord, minhash(text, 128) AS signature FROM docs
),
components AS (
    SELECT datanet, lsh_clusters(ord, signature, 16, 8, 0.8) AS members FROM survivors GROUP BY datanet
)
SELECT member['node'] AS id, member['root'] AS root
FROM (SELECT unnest(members) AS member FROM components)
"#;

struct Args {
    rows: usize,
    docs: usize,
    runs: usize,
    only: Option<String>,
    python: String,
    dir: PathBuf,
}

fn args() -> Result<Args, BoxError> {
    let mut a = Args {
        rows: 1_000_000,
        docs: 100_000,
        runs: 3,
        only: None,
        python: std::env::var("TRIBUTARY_BENCH_PYTHON").unwrap_or_else(|_| "python3".into()),
        dir: PathBuf::from(std::env::var("TRIBUTARY_BENCH_DIR").unwrap_or_else(|_| "bench/data".into())),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rows" => a.rows = value()?.parse()?,
            "--docs" => a.docs = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--only" => a.only = Some(value()?),
            "--bench" => {}
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<(), BoxError> {
    let a = args()?;
    // Benches run from the package directory; data and scripts live at the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = if a.dir.is_absolute() { a.dir.clone() } else { root.join(&a.dir) };
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("machine: {} cores; python: {}", std::thread::available_parallelism().map_or(1, |n| n.get()), a.python);
    if a.only.as_deref().is_none_or(|o| o == "quality") {
        rt.block_on(quality(&a, &root, &dir))?;
    }
    if a.only.as_deref().is_none_or(|o| o == "near") {
        rt.block_on(near(&a, &root, &dir))?;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn python(a: &Args, script: &Path, args: &[&str]) -> Result<serde_json::Value, BoxError> {
    let out = Command::new(&a.python).arg(script).args(args).output()?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr)).into());
    }
    let stdout = String::from_utf8(out.stdout)?;
    let last = stdout.lines().last().ok_or("no output from the baseline")?;
    Ok(serde_json::from_str(last)?)
}

fn write_parquet(path: &Path, batches: &[RecordBatch]) -> Result<(), BoxError> {
    let file = std::fs::File::create(path)?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).set_max_row_group_row_count(Some(128 * 1024)).build();
    let mut w = ArrowWriter::try_new(file, batches[0].schema(), Some(props))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    Ok(())
}

/// 1M bronze-like rows: fact documents, ~8% exact duplicates (case/spacing variants), ~6% junk.
fn quality_data(rows: usize, path: &Path) -> Result<(), BoxError> {
    let mut rng = StdRng::seed_from_u64(42);
    let junk = [
        "click here to subscribe!!! click here to subscribe!!!",
        "$$$ ### @@@ %%% &&& *** $$$ ### @@@",
        "ok",
        "lorem ipsum dolor sit amet lorem ipsum dolor sit amet lorem ipsum dolor sit amet",
        "asdf asdf asdf asdf asdf asdf asdf asdf asdf",
        "Copyright all rights reserved. Terms of use. Privacy policy. Cookie policy.",
    ];
    let contributors: Vec<String> = (0..50).map(|i| format!("0x{:040x}", i + 1)).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("contribution_id", DataType::Utf8, false),
        Field::new("datanet", DataType::Utf8, false),
        Field::new("contributor", DataType::Utf8, false),
        Field::new("epoch", DataType::Int64, false),
        Field::new("ingested_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("text", DataType::Utf8, false),
        Field::new("content_hash", DataType::Utf8, false),
    ]));
    let mut fresh: Vec<String> = Vec::new();
    let mut batches = Vec::new();
    let chunk = 100_000;
    let t0 = 1_767_225_600_000_000i64;
    for start in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - start);
        let mut cols: [Vec<String>; 5] = Default::default();
        let (mut epoch, mut at) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in start..start + n {
            let roll: f64 = rng.random();
            let text = if roll < 0.06 {
                junk[rng.random_range(0..junk.len())].to_string()
            } else if roll < 0.14 && !fresh.is_empty() {
                fresh[rng.random_range(0..fresh.len())].to_uppercase().replace(' ', "  ")
            } else {
                let (p, c) = sample::fact_text(&mut rng);
                let t = format!("{p} {c}");
                fresh.push(t.clone());
                t
            };
            cols[0].push(ids::sha256_hex(&(i as u64).to_be_bytes()));
            cols[1].push(if i % 3 == 0 { "notes".into() } else { "geo-qa".into() });
            cols[2].push(contributors[rng.random_range(0..contributors.len())].clone());
            cols[4].push(ids::content_hash(&text).to_string());
            cols[3].push(text);
            epoch.push(0i64);
            at.push(t0 + (i as i64 / 1000) * 1_000_000);
        }
        let s = |v: &Vec<String>| Arc::new(StringArray::from_iter_values(v)) as ArrayRef;
        batches.push(RecordBatch::try_new(
            schema.clone(),
            vec![
                s(&cols[0]),
                s(&cols[1]),
                s(&cols[2]),
                Arc::new(Int64Array::from(epoch)),
                Arc::new(TimestampMicrosecondArray::from(at).with_timezone("UTC")),
                s(&cols[3]),
                s(&cols[4]),
            ],
        )?);
    }
    write_parquet(path, &batches)
}

async fn quality(a: &Args, root: &Path, dir: &Path) -> Result<(), BoxError> {
    let data = dir.join(format!("quality-{}.parquet", a.rows));
    if !data.exists() {
        let t = Instant::now();
        quality_data(a.rows, &data)?;
        println!("generated {} rows in {:.1}s → {}", a.rows, t.elapsed().as_secs_f64(), data.display());
    }
    let mut times = Vec::new();
    let out = dir.join("quality-out-tributary");
    for _ in 0..a.runs {
        let _ = std::fs::remove_dir_all(&out);
        let t = Instant::now();
        let ctx = session::context();
        ctx.register_parquet("docs", data.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?;
        ctx.sql(QUALITY_SQL).await?.write_parquet(out.to_string_lossy().as_ref(), DataFrameWriteOptions::new(), None).await?;
        times.push(t.elapsed().as_secs_f64());
    }
    // What the run found, to check both engines computed the same thing.
    let ctx = session::context();
    ctx.register_parquet("out", out.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?;
    let counts = ctx
        .sql("SELECT CAST(count(*) FILTER (WHERE accepted) AS BIGINT), CAST(count(*) FILTER (WHERE dedup_kind = 'exact') AS BIGINT) FROM out")
        .await?
        .collect()
        .await?;
    let accepted = counts[0].column(0).as_primitive::<Int64Type>().value(0);
    let exact = counts[0].column(1).as_primitive::<Int64Type>().value(0);
    let reasons = ctx.sql("SELECT r, CAST(count(*) AS BIGINT) FROM (SELECT unnest(reasons) AS r FROM out) GROUP BY r ORDER BY r").await?.collect().await?;
    let mut ours: Vec<(String, i64)> = Vec::new();
    for b in &reasons {
        let r = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        for i in 0..b.num_rows() {
            ours.push((r.as_string::<i32>().value(i).to_string(), b.column(1).as_primitive::<Int64Type>().value(i)));
        }
    }

    let duck_out = dir.join("quality-out-duckdb.parquet");
    let duck = python(
        a,
        &root.join("bench/duckdb_quality.py"),
        &[&data.to_string_lossy(), &duck_out.to_string_lossy(), &a.runs.to_string()],
    )?;
    let duck_time = duck["median_seconds"].as_f64().ok_or("duckdb: no time")?;
    let ours_time = median(times.clone());
    println!("\n== quality: exact dedup + quality scoring, {} rows", a.rows);
    println!("tributary (DataFusion + Rust UDFs): median {ours_time:.2}s of {:?}", times.iter().map(|t| format!("{t:.2}")).collect::<Vec<_>>());
    println!("duckdb {} (SQL):                   median {duck_time:.2}s of {}", duck["version"], duck["seconds"]);
    println!("ratio tributary / duckdb = {:.2}× (target ≤ 1.5×)", ours_time / duck_time);
    println!("accepted: tributary {accepted}, duckdb {}; exact duplicates: tributary {exact}, duckdb {}", duck["accepted"], duck["exact"]);
    let theirs: HashMap<String, i64> = serde_json::from_value(duck["reasons"].clone())?;
    for (r, n) in &ours {
        let d = theirs.get(r).copied().unwrap_or(0);
        println!("  {r:<26} tributary {n:>8}  duckdb {d:>8}{}", if d == *n { "" } else { "  (differs)" });
    }
    Ok(())
}

/// A pseudo-word vocabulary and Zipf-like sampling of it.
struct Vocab {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Vocab {
    fn new(rng: &mut StdRng, n: usize) -> Self {
        const SYL: &[&str] = &[
            "ka", "lo", "mi", "ren", "sa", "tor", "vel", "qui", "an", "dor", "el", "fi", "gar", "hu", "is", "jo", "ke", "lum",
            "mar", "ne", "or", "pa", "ra", "sen", "ti", "ul", "va", "wen", "xi", "yo", "za", "bri", "cal", "dun", "est",
        ];
        let mut seen = std::collections::HashSet::new();
        let mut words = Vec::with_capacity(n);
        while words.len() < n {
            let k = rng.random_range(1..4);
            let w: String = (0..k).map(|_| SYL[rng.random_range(0..SYL.len())]).collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut acc = 0.0;
        let cumulative = (1..=n)
            .map(|r| {
                acc += 1.0 / (r as f64).powf(0.9);
                acc
            })
            .collect();
        Vocab { words, cumulative }
    }

    fn word(&self, rng: &mut StdRng) -> &str {
        let total = self.cumulative[self.cumulative.len() - 1];
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|c| *c < x).min(self.words.len() - 1);
        &self.words[i]
    }

    fn doc(&self, rng: &mut StdRng) -> Vec<String> {
        let n = rng.random_range(80..200);
        (0..n).map(|_| self.word(rng).to_string()).collect()
    }
}

fn render(words: &[String]) -> String {
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(if i % 13 == 0 { '\n' } else { ' ' });
        }
        if i % 13 == 0 {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                out.extend(f.to_uppercase());
                out.push_str(c.as_str());
            }
        } else {
            out.push_str(w);
        }
        if i % 13 == 12 || i + 1 == words.len() {
            out.push('.');
        }
    }
    out
}

/// A near duplicate of `words`: the kinds of edits copies pick up (a few substituted words, an
/// added or dropped phrase, punctuation and case).
fn edit(rng: &mut StdRng, vocab: &Vocab, words: &[String]) -> String {
    let mut w = words.to_vec();
    match rng.random_range(0..5) {
        0 => {
            for _ in 0..rng.random_range(1..3) {
                let i = rng.random_range(0..w.len());
                w[i] = vocab.word(rng).to_string();
            }
        }
        1 => {
            let extra: Vec<String> = (0..rng.random_range(2..6)).map(|_| vocab.word(rng).to_string()).collect();
            w.extend(extra);
        }
        2 => {
            let extra: Vec<String> = (0..rng.random_range(2..6)).map(|_| vocab.word(rng).to_string()).collect();
            w.splice(0..0, extra);
        }
        3 => {
            let i = rng.random_range(0..w.len() - 3);
            w.drain(i..i + rng.random_range(1..3));
        }
        _ => return render(&w).to_uppercase().replace(". ", "! "),
    }
    render(&w)
}

/// 100k documents; ~10% are near duplicates of an earlier one. Truth: planted pairs whose exact
/// shingle Jaccard is ≥ 0.8 (what "near duplicate at 0.8" means).
fn near_data(docs: usize, path: &Path, truth_path: &Path) -> Result<(usize, usize), BoxError> {
    let mut rng = StdRng::seed_from_u64(7);
    let vocab = Vocab::new(&mut rng, 30_000);
    let mut bases: Vec<(i64, Vec<String>)> = Vec::new();
    let (mut ids, mut texts) = (Vec::with_capacity(docs), Vec::with_capacity(docs));
    let (mut dup, mut src, mut jac) = (Vec::new(), Vec::new(), Vec::new());
    let mut planted = 0;
    for i in 0..docs as i64 {
        let text = if rng.random::<f64>() < 0.1 && !bases.is_empty() {
            let (s, words) = &bases[rng.random_range(0..bases.len())];
            let t = edit(&mut rng, &vocab, words);
            let j = minhash::exact_jaccard(&t, &render(words));
            planted += 1;
            if j >= 0.8 {
                dup.push(i);
                src.push(*s);
                jac.push(j);
            }
            t
        } else {
            let words = vocab.doc(&mut rng);
            let t = render(&words);
            bases.push((i, words));
            t
        };
        ids.push(i);
        texts.push(text);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("datanet", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n("bench", docs))),
            Arc::new(StringArray::from_iter_values(texts)),
        ],
    )?;
    write_parquet(path, &[b])?;
    let truth = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("dup", DataType::Int64, false),
            Field::new("src", DataType::Int64, false),
            Field::new("jaccard", DataType::Float64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(dup.clone())),
            Arc::new(Int64Array::from(src)),
            Arc::new(arrow::array::Float64Array::from(jac)),
        ],
    )?;
    write_parquet(truth_path, &[truth])?;
    Ok((planted, dup.len()))
}

fn read_pairs(path: &Path, a: &str, b: &str) -> Result<Vec<(i64, i64)>, BoxError> {
    let file = std::fs::File::open(path)?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let (x, y) = (batch.column_by_name(a).ok_or("column")?, batch.column_by_name(b).ok_or("column")?);
        let (x, y) = (x.as_primitive::<Int64Type>(), y.as_primitive::<Int64Type>());
        for i in 0..batch.num_rows() {
            out.push((x.value(i), y.value(i)));
        }
    }
    Ok(out)
}

/// Precision/recall/F1 of predicted clusters (`node → root`) against planted pairs: a predicted
/// duplicate (node ≠ root) is correct when node and root are in the same true cluster; a planted
/// pair is found when both are in the same predicted cluster. `bench/datasketch_near.py` computes
/// the same.
fn f1(pred: &HashMap<i64, i64>, truth: &[(i64, i64)]) -> (f64, f64, f64) {
    let mut parent: HashMap<i64, i64> = HashMap::new();
    fn find(p: &mut HashMap<i64, i64>, x: i64) -> i64 {
        let mut r = x;
        while let Some(&n) = p.get(&r) {
            if n == r {
                break;
            }
            r = n;
        }
        p.insert(x, r);
        r
    }
    for &(d, s) in truth {
        let (rd, rs) = (find(&mut parent, d), find(&mut parent, s));
        if rd != rs {
            parent.insert(rd.max(rs), rd.min(rs));
            parent.entry(rd.min(rs)).or_insert(rd.min(rs));
        }
    }
    let dups: Vec<(i64, i64)> = pred.iter().filter(|(n, r)| n != r).map(|(n, r)| (*n, *r)).collect();
    let correct = dups.iter().filter(|(n, r)| find(&mut parent, *n) == find(&mut parent, *r)).count();
    let root = |x: i64| pred.get(&x).copied().unwrap_or(x);
    let found = truth.iter().filter(|(d, s)| root(*d) == root(*s)).count();
    let p = if dups.is_empty() { 1.0 } else { correct as f64 / dups.len() as f64 };
    let r = if truth.is_empty() { 1.0 } else { found as f64 / truth.len() as f64 };
    (p, r, if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 })
}

async fn near(a: &Args, root: &Path, dir: &Path) -> Result<(), BoxError> {
    let data = dir.join(format!("near-{}.parquet", a.docs));
    let truth_path = dir.join(format!("near-{}-truth.parquet", a.docs));
    if !data.exists() || !truth_path.exists() {
        let t = Instant::now();
        let (planted, kept) = near_data(a.docs, &data, &truth_path)?;
        println!(
            "generated {} docs in {:.1}s: {planted} planted near duplicates, {kept} with shingle Jaccard ≥ 0.8 (the truth)",
            a.docs,
            t.elapsed().as_secs_f64()
        );
    }
    let truth = read_pairs(&truth_path, "dup", "src")?;
    let mut times = Vec::new();
    let mut pred = HashMap::new();
    for _ in 0..a.runs {
        let t = Instant::now();
        let ctx = session::context();
        ctx.register_parquet("docs", data.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?;
        let batches = ctx.sql(NEAR_SQL).await?.collect().await?;
        times.push(t.elapsed().as_secs_f64());
        pred.clear();
        for b in &batches {
            let (n, r) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_primitive::<Int64Type>());
            for i in 0..b.num_rows() {
                pred.insert(n.value(i), r.value(i));
            }
        }
    }
    let (p, r, f) = f1(&pred, &truth);
    let ds = python(a, &root.join("bench/datasketch_near.py"), &[&data.to_string_lossy(), &truth_path.to_string_lossy()])?;
    let ours = median(times.clone());
    let theirs = ds["seconds"].as_f64().ok_or("datasketch: no time")?;
    println!("\n== near: MinHash LSH near-duplicate detection, {} docs, {} true near-duplicate pairs", a.docs, truth.len());
    println!(
        "tributary (DataFusion + Rust UDFs): median {ours:.2}s of {:?}; precision {p:.4} recall {r:.4} F1 {f:.4}",
        times.iter().map(|t| format!("{t:.2}")).collect::<Vec<_>>()
    );
    println!(
        "datasketch {} MinHashLSH:          {theirs:.2}s; precision {:.4} recall {:.4} F1 {:.4}",
        ds["version"], ds["precision"].as_f64().unwrap_or(0.0), ds["recall"].as_f64().unwrap_or(0.0), ds["f1"].as_f64().unwrap_or(0.0)
    );
    println!("speed-up datasketch / tributary = {:.1}× (target ≥ 10×); F1 difference {:+.4}", theirs / ours, f - ds["f1"].as_f64().unwrap_or(0.0));
    Ok(())
}
