//! The SQL model runner on real Delta tables in a temp-dir warehouse: DAG order and cycles,
//! incremental builds, write–audit–publish, duplicate detection against planted ground truth,
//! quality reason codes, error locations, lineage and time-travel queries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use chrono::{DateTime, Duration, Utc};
use tributary_pipeline::config::{Config, DatanetConfig, DatanetKind, QualityConfig};
use tributary_pipeline::error::Error;
use tributary_pipeline::ingest::IngestBuilder;
use tributary_pipeline::models::{
    AsOf, Dag, EpochSelection, ModelStatus, Project, QueryBuilder, Reason, RunBuilder, RunReport, State,
};
use tributary_pipeline::sample::{self, SampleManifest, SampleSpec};
use tributary_pipeline::{Catalog, TableId, Tables, Warehouse};

use super::common::put;

/// A warehouse in a temp dir with its catalog.
struct Env {
    _dir: tempfile::TempDir,
    config: Arc<Config>,
    tables: Tables,
    catalog: Arc<Catalog>,
}

fn env(datanets: Vec<DatanetConfig>) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        warehouse: dir.path().join("warehouse").display().to_string(),
        catalog: dir.path().join("catalog.sqlite"),
        datanets,
        ..Config::default()
    };
    let warehouse = Warehouse::open(&config).expect("warehouse");
    let catalog = Arc::new(Catalog::open(&config.catalog).expect("catalog"));
    Env { _dir: dir, config: Arc::new(config), tables: Tables::new(warehouse), catalog }
}

fn datanet(name: &str, kind: DatanetKind) -> DatanetConfig {
    DatanetConfig { name: name.into(), kind, ..DatanetConfig::default() }
}

/// Noon of epoch `day` (epochs are UTC days from 2026-01-01).
fn day(day: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").expect("valid").with_timezone(&Utc) + Duration::days(day)
}

fn sql_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sql")
}

fn shipped() -> Arc<Project> {
    Arc::new(Project::load(&sql_dir()).expect("the shipped models load"))
}

fn project(files: &[(&str, &str)]) -> Arc<Project> {
    Arc::new(Project::from_files(files.iter().map(|(f, t)| (f.to_string(), t.to_string())).collect()).expect("project"))
}

impl Env {
    async fn generate(&self, spec: &SampleSpec) -> Vec<SampleManifest> {
        let mut out = Vec::new();
        for d in &self.config.datanets {
            out.push(sample::generate(self.tables.warehouse(), d, spec).await.expect("sample"));
        }
        out
    }

    async fn ingest_at(&self, epoch: i64) {
        let s = IngestBuilder::new(self.config.clone(), self.tables.clone()).with_now(day(epoch)).execute().await.expect("ingest");
        assert!(s.rows_added > 0 || s.files_listed > 0);
    }

    fn runner(&self, project: &Arc<Project>) -> RunBuilder {
        RunBuilder::new(project.clone(), self.config.clone(), self.tables.clone(), self.catalog.clone())
    }

    async fn run(&self, project: &Arc<Project>) -> RunReport {
        self.runner(project).execute().await.expect("run")
    }

    async fn rows(&self, sql: &str) -> Vec<RecordBatch> {
        self.tables.query(sql).await.expect("query")
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let b = self.rows(sql).await;
        b[0].column(0).as_primitive::<Int64Type>().value(0)
    }

    async fn version(&self, table: &str) -> Option<i64> {
        self.tables.list().await.expect("list").get(&TableId::parse(table).expect("name")).copied()
    }

    /// Data files of `table` under the `epoch=<e>` partition.
    async fn epoch_files(&self, table: &str, e: i64) -> BTreeSet<String> {
        let t = self.tables.open(&TableId::parse(table).expect("name")).await.expect("open").expect("exists");
        let files: Vec<String> = t.get_file_uris().expect("files").collect();
        files.into_iter().filter(|f| f.contains(&format!("epoch={e}/"))).collect()
    }
}

fn strings(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
    let c = arrow::compute::cast(b.column_by_name(col).expect("column"), &arrow::datatypes::DataType::Utf8).expect("cast");
    let c = c.as_string::<i32>();
    (0..c.len()).map(|i| (!c.is_null(i)).then(|| c.value(i).to_string())).collect()
}

fn assert_all_built(report: &RunReport) {
    for m in &report.models {
        assert_eq!(m.status, ModelStatus::Built, "{}: {:?} {}", m.model, m.error, m.why);
    }
}

#[test]
fn dag_orders_models_and_names_cycles() {
    let p = project(&[
        ("gold/c.sql", "SELECT * FROM ref('b') JOIN ref('silver.a') USING (x)"),
        ("silver/b.sql", "SELECT * FROM ref('a')"),
        ("silver/a.sql", "SELECT * FROM source('bronze', 'contributions')"),
        ("silver/z.sql", "SELECT 1 AS x"),
    ]);
    let dag = Dag::build(&p).expect("acyclic");
    let order: Vec<String> = dag.order.iter().map(ToString::to_string).collect();
    let pos = |n: &str| order.iter().position(|o| o == n).expect("present");
    assert!(pos("silver.a") < pos("silver.b") && pos("silver.b") < pos("gold.c"), "{order:?}");
    assert_eq!(order.len(), 4);

    let cyclic = Project::from_files(vec![
        ("silver/a.sql".into(), "SELECT * FROM ref('c')".into()),
        ("silver/b.sql".into(), "SELECT * FROM ref('a')".into()),
        ("silver/c.sql".into(), "SELECT * FROM ref('b')".into()),
        ("silver/ok.sql".into(), "SELECT 1 AS x".into()),
    ])
    .expect("loads");
    match Dag::build(&cyclic) {
        Err(Error::Cycle { cycle }) => {
            assert_eq!(cycle.len(), 4, "{cycle:?}");
            assert_eq!(cycle.first(), cycle.last());
            for m in ["silver.a", "silver.b", "silver.c"] {
                assert!(cycle.contains(&m.to_string()), "{cycle:?}");
            }
            let msg = Error::Cycle { cycle: cycle.clone() }.to_string();
            assert!(msg.contains("silver.a → silver.b → silver.c → silver.a"), "{msg}");
        }
        other => panic!("expected a cycle error, got {other:?}"),
    }
    assert!(matches!(
        Project::from_files(vec![("silver/a.sql".into(), "SELECT * FROM ref('a')".into())]),
        Err(Error::Cycle { .. })
    ));
}

#[test]
fn unknown_refs_and_bad_headers_are_precise() {
    let e = Project::from_files(vec![
        ("silver/contributions_dedup.sql".into(), "SELECT 1 AS x".into()),
        ("gold/g.sql".into(), "SELECT *\n  FROM ref('contribution_dedup')".into()),
    ])
    .expect_err("unknown ref");
    match &e {
        Error::UnknownRef { file, line, name, suggestion } => {
            assert_eq!((file.as_str(), *line, name.as_str()), ("gold/g.sql", 2, "contribution_dedup"));
            assert_eq!(suggestion.as_deref(), Some("silver.contributions_dedup"));
        }
        other => panic!("expected UnknownRef, got {other:?}"),
    }
    assert!(e.to_string().contains("did you mean `silver.contributions_dedup`"), "{e}");

    let e = Project::from_files(vec![(
        "silver/m.sql".into(),
        "/* @model\nmaterialized = \"incremental\"\n*/\nSELECT 1 AS epoch".into(),
    )])
    .expect_err("incremental without @epoch");
    assert!(matches!(e, Error::Model { ref file, line: Some(3 | 4), .. } if file == "silver/m.sql"), "{e}");

    let e = Project::from_files(vec![(
        "silver/m.sql".into(),
        "/* @model\naudits = [\"uniq(x)\"]\n*/\nSELECT 1 AS x".into(),
    )])
    .expect_err("unknown audit");
    assert!(e.to_string().contains("did you mean `unique`"), "{e}");

    let e = Project::from_files(vec![("bronze/contributions.sql".into(), "SELECT 1 AS x".into())]).expect_err("reserved");
    assert!(matches!(e, Error::Model { .. }), "{e}");
    Project::load(&sql_dir()).expect("shipped models load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_errors_point_to_file_and_line() {
    let env = env(vec![datanet("notes", DatanetKind::Text)]);
    env.generate(&SampleSpec { contributors: 2, files_per_contributor: 1, rows_per_file: 5, bad_files: false, ..SampleSpec::default() }).await;
    env.ingest_at(0).await;
    let cases = [
        // A syntax error on line 5.
        ("silver/bad_syntax.sql", "/* @model\ndescription = \"typo\"\n*/\nSELECT contribution_id\nFORM source('bronze', 'contributions')\n", 5),
        // An unknown column on line 6.
        (
            "silver/bad_column.sql",
            "/* @model\ndescription = \"unknown column\"\n*/\nSELECT\n    contribution_id,\n    qualty_score\nFROM source('bronze', 'contributions')\n",
            6,
        ),
        // An unknown function on line 4.
        ("silver/bad_function.sql", "-- a comment\n\nSELECT\n  minhsh(text) AS sig\nFROM source('bronze', 'contributions')\n", 4),
    ];
    for (file, sql, line) in cases {
        let p = project(&[(file, sql)]);
        let report = env.run(&p).await;
        let m = &report.models[0];
        assert_eq!(m.status, ModelStatus::Failed);
        match &m.failure {
            Some(Error::Model { file: f, line: l, message }) => {
                assert_eq!(f, file);
                assert_eq!(*l, Some(line), "{file}: {message}");
            }
            other => panic!("{file}: expected a located model error, got {other:?}"),
        }
        assert!(m.error.as_deref().is_some_and(|e| e.starts_with(&format!("{file}:{line}:"))), "{:?}", m.error);
    }
    // A failing model leaves nothing behind.
    assert_eq!(env.version("silver.bad_column").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_blocking_audit_leaves_the_table_at_its_old_version() {
    let env = env(vec![datanet("notes", DatanetKind::Text)]);
    env.generate(&SampleSpec { contributors: 2, files_per_contributor: 1, rows_per_file: 8, bad_files: false, ..SampleSpec::default() }).await;
    env.ingest_at(0).await;
    let model = |score: &str| {
        format!(
            "/* @model\nmaterialized = \"table\"\nunique_key = \"contribution_id\"\naudits = [\"accepted_range(score, 0, 1)\"]\n\
             warn_audits = [\"not_null(label)\"]\n*/\nSELECT contribution_id, {score} AS score, label\n\
             FROM source('bronze', 'contributions')\n"
        )
    };
    let downstream = "SELECT count(*) AS n FROM ref('silver.scores')";
    let good = model("0.5");
    let r = env.run(&project(&[("silver/scores.sql", &good), ("gold/n.sql", downstream)])).await;
    assert_all_built(&r);
    let warn = r.models[0].audits.iter().find(|a| a.audit == "not_null(label)").expect("warn audit ran");
    assert!(!warn.blocking && warn.failing_rows == 16, "{warn:?}");
    let v0 = env.version("silver.scores").await.expect("built");

    let bad = model("CASE WHEN row_index < 3 THEN 1.5 ELSE 0.5 END");
    let r = env.run(&project(&[("silver/scores.sql", &bad), ("gold/n.sql", downstream)])).await;
    let m = r.model("silver.scores").expect("report");
    assert_eq!(m.status, ModelStatus::Failed);
    match &m.failure {
        Some(Error::AuditFailed { audit, failing_rows, sample, .. }) => {
            assert_eq!(audit, "accepted_range(score, 0, 1)");
            assert_eq!(*failing_rows, 6);
            assert!(sample.contains("1.5"), "{sample}");
        }
        other => panic!("expected AuditFailed, got {other:?}"),
    }
    assert_eq!(r.model("gold.n").expect("report").status, ModelStatus::Skipped);
    assert!(r.failed());
    assert_eq!(env.version("silver.scores").await, Some(v0), "the failed build must not commit");
    assert_eq!(env.scalar("SELECT count(*) FROM silver.scores WHERE score <> 0.5").await, 0);

    // Fixing the model publishes it.
    let r = env.run(&project(&[("silver/scores.sql", &model("0.25")), ("gold/n.sql", downstream)])).await;
    assert_all_built(&r);
    assert_eq!(env.version("silver.scores").await, Some(v0 + 1));
}

/// (datanet, file, row) → contribution_id.
async fn ids(env: &Env) -> HashMap<(String, String, usize), String> {
    let mut out = HashMap::new();
    for b in env.rows("SELECT datanet, file_path, row_index, contribution_id FROM bronze.contributions").await {
        let (d, f, i) = (strings(&b, "datanet"), strings(&b, "file_path"), b.column(2).as_primitive::<Int64Type>().clone());
        let c = strings(&b, "contribution_id");
        for r in 0..b.num_rows() {
            let (Some(d), Some(f), Some(c)) = (d[r].clone(), f[r].clone(), c[r].clone()) else { continue };
            out.insert((d, f, i.value(r) as usize), c);
        }
    }
    out
}

struct Dedup {
    canonical: HashMap<String, String>,
    kind: HashMap<String, String>,
}

async fn dedup(env: &Env) -> Dedup {
    let (mut canonical, mut kind) = (HashMap::new(), HashMap::new());
    for b in env.rows("SELECT contribution_id, canonical_id, dedup_kind FROM silver.contributions_dedup").await {
        let (c, k, d) = (strings(&b, "contribution_id"), strings(&b, "canonical_id"), strings(&b, "dedup_kind"));
        for r in 0..b.num_rows() {
            let id = c[r].clone().expect("id");
            canonical.insert(id.clone(), k[r].clone().expect("canonical"));
            kind.insert(id, d[r].clone().expect("kind"));
        }
    }
    Dedup { canonical, kind }
}

/// Union–find over contribution ids.
#[derive(Default)]
struct Clusters(HashMap<String, String>);

impl Clusters {
    fn find(&mut self, x: &str) -> String {
        let p = self.0.get(x).cloned().unwrap_or_else(|| x.to_string());
        if p == x {
            return p;
        }
        let r = self.find(&p);
        self.0.insert(x.to_string(), r.clone());
        r
    }
    fn union(&mut self, a: &str, b: &str) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0.insert(ra, rb);
        }
    }
}

/// Precision, recall and F1 of `kind` duplicates against the planted pairs.
fn score(d: &Dedup, truth: &mut Clusters, planted: &[(String, String)], kind: &str) -> (f64, f64, f64) {
    let predicted: Vec<(&String, &String)> =
        d.kind.iter().filter(|(_, k)| k.as_str() == kind).map(|(id, _)| (id, &d.canonical[id])).collect();
    let correct = predicted.iter().filter(|(a, b)| truth.find(a) == truth.find(b)).count();
    let found = planted.iter().filter(|(a, b)| d.canonical.contains_key(a) && d.canonical.get(a) == d.canonical.get(b)).count();
    let p = if predicted.is_empty() { 1.0 } else { correct as f64 / predicted.len() as f64 };
    let r = if planted.is_empty() { 1.0 } else { found as f64 / planted.len() as f64 };
    (p, r, if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_exact_and_near_duplicates_are_found() {
    let env = env(vec![datanet("geo-qa", DatanetKind::PromptCompletion), datanet("notes", DatanetKind::Text)]);
    let spec = SampleSpec {
        contributors: 8,
        files_per_contributor: 3,
        rows_per_file: 50,
        exact_dup_rate: 0.08,
        near_dup_rate: 0.12,
        junk_rate: 0.05,
        bad_files: false,
        ..SampleSpec::default()
    };
    let manifests = env.generate(&spec).await;
    env.ingest_at(0).await;
    let report = env.run(&shipped()).await;
    assert_all_built(&report);
    let order: Vec<&str> = report.models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(order[0], "silver.contributions_dedup");
    assert_eq!(order[1], "silver.quality_scores");

    let ids = ids(&env).await;
    let d = dedup(&env).await;
    assert_eq!(d.kind.len(), ids.len(), "one dedup row per contribution");
    let mut truth = Clusters::default();
    let (mut exact, mut near) = (Vec::new(), Vec::new());
    for (cfg, m) in env.config.datanets.iter().zip(&manifests) {
        let id = |(f, r): &(String, usize)| ids.get(&(cfg.name.clone(), f.clone(), *r)).cloned().expect("planted row ingested");
        for (dup, src) in m.exact_dups.iter().zip(&m.exact_dup_sources) {
            exact.push((id(dup), id(src)));
        }
        for (dup, src) in m.near_dups.iter().zip(&m.near_dup_sources) {
            near.push((id(dup), id(src)));
        }
    }
    assert!(exact.len() > 20 && near.len() > 30, "{} exact, {} near planted", exact.len(), near.len());
    for (a, b) in exact.iter().chain(&near) {
        truth.union(a, b);
    }
    // Identical normalized content is an exact duplicate whether planted or not (junk repeats).
    for b in env.rows("SELECT contribution_id, datanet, content_hash FROM bronze.contributions").await {
        let (c, dn, h) = (strings(&b, "contribution_id"), strings(&b, "datanet"), strings(&b, "content_hash"));
        let mut first: HashMap<(String, String), String> = HashMap::new();
        for r in 0..b.num_rows() {
            let key = (dn[r].clone().unwrap_or_default(), h[r].clone().unwrap_or_default());
            let id = c[r].clone().unwrap_or_default();
            match first.get(&key) {
                Some(f) => truth.union(&id, &f.clone()),
                None => {
                    first.insert(key, id);
                }
            }
        }
    }
    let (ep, er, _) = score(&d, &mut truth, &exact, "exact");
    let (np, nr, nf1) = score(&d, &mut truth, &near, "near");
    eprintln!("exact duplicates: precision {ep:.3} recall {er:.3}; near duplicates: precision {np:.3} recall {nr:.3} F1 {nf1:.3}");
    assert_eq!((ep, er), (1.0, 1.0), "exact dedup is deterministic");
    assert!(nf1 >= 0.9, "near-dup F1 {nf1:.3} (precision {np:.3}, recall {nr:.3})");

    // Every cluster has exactly one canonical row, and it is the cluster's earliest.
    let canon_rows = d.canonical.iter().filter(|(k, v)| k == v).count();
    let clusters: BTreeSet<&String> = d.canonical.values().collect();
    assert_eq!(canon_rows, clusters.len());
    assert_eq!(
        env.scalar("SELECT count(*) FROM silver.contributions_dedup d JOIN bronze.contributions c \
                    ON c.contribution_id = d.canonical_id WHERE c.ingested_at > d.ingested_at").await,
        0
    );

    // The gold tables agree with silver.
    let accepted = env.scalar("SELECT count(*) FROM silver.quality_scores WHERE accepted").await;
    assert!(accepted > 0);
    assert_eq!(env.scalar("SELECT count(*) FROM gold.training_set").await, accepted);
    assert_eq!(env.scalar("SELECT CAST(sum(accepted) AS BIGINT) FROM gold.contributor_stats").await, accepted);
    assert_eq!(
        env.scalar("SELECT CAST(sum(submitted) AS BIGINT) FROM gold.contributor_stats").await,
        ids.len() as i64
    );
    let junk_rejected = env
        .scalar("SELECT count(*) FROM silver.quality_scores WHERE dedup_kind = 'unique' AND NOT accepted")
        .await;
    assert!(junk_rejected > 0, "planted junk must be rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_touch_only_new_epochs() {
    let env = env(vec![datanet("notes", DatanetKind::Text)]);
    let small = |seed| SampleSpec { seed, contributors: 3, files_per_contributor: 2, rows_per_file: 15, bad_files: false, ..SampleSpec::default() };
    env.generate(&small(1)).await;
    env.ingest_at(0).await;
    let p = shipped();
    let r = env.run(&p).await;
    assert_all_built(&r);
    for m in &r.models {
        assert_eq!(m.epochs, vec![0], "{}", m.model);
    }

    // Nothing new: nothing runs, no version moves.
    let before = env.tables.list().await.expect("list");
    let r = env.run(&p).await;
    assert!(r.models.iter().all(|m| m.status == ModelStatus::UpToDate), "{:?}", r.models.iter().map(|m| &m.why).collect::<Vec<_>>());
    assert_eq!(env.tables.list().await.expect("list"), before);

    // Epoch 1 arrives: only epoch 1 is built, epoch 0's files are untouched.
    let files0 = env.epoch_files("silver.contributions_dedup", 0).await;
    let rows0 = env.rows("SELECT * FROM silver.contributions_dedup WHERE epoch = 0 ORDER BY contribution_id").await;
    env.generate(&small(2)).await;
    env.ingest_at(1).await;
    let plans = env.runner(&p).plan().await.expect("plan");
    for pl in &plans {
        assert_eq!(pl.epochs, vec![1], "{}", pl.model);
        assert!(!pl.full);
    }
    assert!(plans[0].reasons.iter().any(|(e, r)| *e == Some(1) && *r == Reason::NewEpoch), "{:?}", plans[0].reasons);
    let r = env.run(&p).await;
    assert_all_built(&r);
    for m in &r.models {
        assert_eq!(m.epochs, vec![1], "{}", m.model);
    }
    assert_eq!(env.epoch_files("silver.contributions_dedup", 0).await, files0);
    let rows0_after = env.rows("SELECT * FROM silver.contributions_dedup WHERE epoch = 0 ORDER BY contribution_id").await;
    assert_eq!(rows0, rows0_after);

    // Late rows in an already built epoch: that epoch (and only it) is rebuilt.
    env.generate(&small(3)).await;
    env.ingest_at(1).await;
    let plans = env.runner(&p).plan().await.expect("plan");
    assert_eq!(plans[0].epochs, vec![1]);
    assert!(matches!(plans[0].reasons[0].1, Reason::InputChanged { .. }), "{:?}", plans[0].reasons);
    let r = env.run(&p).await;
    assert_all_built(&r);

    // An incremental build gives the same table as a full refresh.
    let q = "SELECT contribution_id, canonical_id, dedup_kind, epoch FROM silver.contributions_dedup ORDER BY contribution_id";
    let incremental = env.rows(q).await;
    let r = env.runner(&p).with_full_refresh(true).execute().await.expect("full refresh");
    assert_all_built(&r);
    assert_eq!(r.models[0].epochs, vec![0, 1]);
    assert_eq!(env.rows(q).await, incremental);
    let stats = "SELECT * FROM gold.contributor_stats ORDER BY epoch, datanet, contributor";
    let full_stats = env.rows(stats).await;

    // --epoch rebuilds exactly that epoch; backfill a range.
    let r = env.runner(&p).with_epochs(EpochSelection::Only(vec![0])).execute().await.expect("epoch 0");
    assert!(r.models.iter().all(|m| m.epochs == vec![0]));
    let r = env.runner(&p).with_epochs(EpochSelection::Range(0, 5)).execute().await.expect("backfill");
    assert!(r.models.iter().all(|m| m.epochs == vec![0, 1]));
    assert_eq!(env.rows(stats).await, full_stats);
    assert_eq!(env.rows(q).await, incremental);

    // Changing a model's SQL rebuilds it and everything downstream.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&sql_dir(), dir.path());
    let f = dir.path().join("gold/training_set.sql");
    let text = std::fs::read_to_string(&f).expect("read").replace("q.quality_score\n", "q.quality_score,\n    1 AS version\n");
    std::fs::write(&f, text).expect("write");
    let edited = Arc::new(Project::load(dir.path()).expect("load"));
    let plans = env.runner(&edited).plan().await.expect("plan");
    let by: HashMap<&str, _> = plans.iter().map(|p| (p.model.as_str(), p)).collect();
    assert!(!by["silver.contributions_dedup"].build && !by["gold.contributor_stats"].build);
    assert!(by["gold.training_set"].full);
    assert!(matches!(by["gold.training_set"].reasons[0].1, Reason::SqlChanged { .. }));
    let r = env.run(&edited).await;
    assert_eq!(r.model("gold.training_set").expect("ran").status, ModelStatus::Built);
    assert_eq!(env.scalar("SELECT count(*) FROM gold.training_set WHERE version = 1").await,
               env.scalar("SELECT count(*) FROM gold.training_set").await);

    // State is recorded per epoch with versions read and written.
    let state = State::open(env.catalog.clone()).expect("state");
    let builds = state.epoch_builds("silver.contributions_dedup").expect("builds");
    assert_eq!(builds.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    assert!(builds[&1].inputs.iter().any(|i| i.table == "bronze.contributions" && i.version.is_some() && i.epoch_rows.is_some()));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

const ADDR: &str = "0x1111111111111111111111111111111111111111";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_rules_give_reason_codes_on_crafted_rows() {
    let labelled = DatanetConfig {
        name: "labelled".into(),
        quality: QualityConfig { max_words: 20, allowed_labels: vec!["positive".into(), "negative".into()], ..QualityConfig::default() },
        ..DatanetConfig::default()
    };
    let env = env(vec![datanet("crafted", DatanetKind::Text), labelled, datanet("qa", DatanetKind::PromptCompletion)]);
    let crafted: Vec<(&str, Vec<&str>)> = vec![
        ("The harbour of Velmora exports copper and salt to the northern coast every spring.", vec![]),
        ("Short text here.", vec!["too_few_words"]),
        ("Prices rose $$$ ### @@@ %%% &&& *** today in the market.", vec!["too_many_symbols", "too_few_alpha_words"]),
        ("Buy now today.\nBuy now today.\nBuy now today.\nThe end of the story.", vec!["repeated_lines", "repeated_ngrams"]),
        (
            "the brown horse jumped over the fence and the brown horse jumped over the fence and the brown horse jumped over the fence.",
            vec!["repeated_ngrams"],
        ),
        ("Please read our privacy policy and terms of use before you continue reading.", vec!["boilerplate"]),
        ("This sentence about the northern harbour never really ends", vec!["no_terminal_punctuation"]),
        (
            "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis floccinaucinihilipilification hippopotomonstrosesquippedaliophobia.",
            vec!["bad_mean_word_length"],
        ),
        ("12345 67890 11111 22222 33333 44444 55555 66666 well.", vec!["too_few_alpha_words"]),
    ];
    let texts: Vec<String> = crafted.iter().map(|(t, _)| t.to_string()).collect();
    put(env.tables.warehouse(), &format!("inbox/crafted/{ADDR}/rows.parquet"), sample::parquet_bytes(&sample::text_batch(&texts, &[])).expect("parquet")).await;

    let long = "word ".repeat(30).trim().to_string() + ".";
    let labelled_rows = vec![
        ("The river delta of Orinth floods every spring and feeds the fields.", "positive", vec![]),
        ("The river delta of Drask floods every autumn and ruins the fields.", "neutral", vec!["invalid_label"]),
        (long.as_str(), "negative", vec!["too_many_words", "repeated_ngrams"]),
    ];
    let lt: Vec<String> = labelled_rows.iter().map(|r| r.0.to_string()).collect();
    let ll: Vec<String> = labelled_rows.iter().map(|r| r.1.to_string()).collect();
    put(
        env.tables.warehouse(),
        &format!("inbox/labelled/{ADDR}/rows.parquet"),
        sample::parquet_bytes(&sample::text_batch(&lt, &[("label", ll)])).expect("parquet"),
    )
    .await;
    let qa = vec![
        ("What is the capital of the region of Velmora?".to_string(), "Yes.".to_string()),
        ("Which city governs the region of Tesk?".to_string(), "Brenna governs it from the northern coast.".to_string()),
    ];
    put(env.tables.warehouse(), &format!("inbox/qa/{ADDR}/rows.parquet"), sample::parquet_bytes(&sample::prompt_completion_batch(&qa)).expect("parquet")).await;
    env.ingest_at(0).await;
    assert_all_built(&env.run(&shipped()).await);

    let mut got: BTreeMap<String, (Vec<String>, f64, bool)> = BTreeMap::new();
    for b in env
        .rows("SELECT b.text, array_to_string(q.reasons, ',') AS reasons, q.quality_score, q.accepted \
               FROM silver.quality_scores q JOIN bronze.contributions b USING (contribution_id)")
        .await
    {
        let (t, r) = (strings(&b, "text"), strings(&b, "reasons"));
        let s = b.column(2).as_primitive::<Float64Type>();
        let a = b.column(3).as_boolean();
        for i in 0..b.num_rows() {
            let mut reasons: Vec<String> =
                r[i].clone().unwrap_or_default().split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
            reasons.sort();
            got.insert(t[i].clone().expect("text"), (reasons, s.value(i), a.value(i)));
        }
    }
    let check = |text: &str, expected: &[&str]| {
        let (reasons, score, accepted) = got.get(text).unwrap_or_else(|| panic!("no score for {text:?}"));
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(reasons, &want, "{text:?}");
        assert!((score - (1.0 - want.len() as f64 / 11.0)).abs() < 1e-9, "{text:?}: score {score}");
        assert_eq!(*accepted, want.is_empty(), "{text:?}");
    };
    for (t, want) in &crafted {
        check(t, want);
    }
    for (t, _, want) in &labelled_rows {
        check(t, want);
    }
    check(&format!("{}\n\n{}", qa[0].0, qa[0].1), &["short_completion"]);
    check(&format!("{}\n\n{}", qa[1].0, qa[1].1), &[]);

    // The leaderboard counts rejections by reason.
    let b = env
        .rows("SELECT rejected_quality, accepted, submitted FROM gold.contributor_stats WHERE datanet = 'crafted'")
        .await;
    let col = |i: usize| b[0].column(i).as_primitive::<Int64Type>().value(0);
    assert_eq!((col(0), col(1), col(2)), (8, 1, 9));
    assert_eq!(
        env.scalar(
            "SELECT CAST(sum(r['rows']) AS BIGINT) FROM (SELECT unnest(rejected_by_reason) AS r \
             FROM gold.contributor_stats WHERE datanet = 'crafted') WHERE r['reason'] = 'repeated_ngrams'"
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_time_travel_lineage_and_test() {
    let env = env(vec![datanet("notes", DatanetKind::Text)]);
    let small = |seed| SampleSpec { seed, contributors: 2, files_per_contributor: 1, rows_per_file: 10, bad_files: false, ..SampleSpec::default() };
    env.generate(&small(1)).await;
    env.ingest_at(0).await;
    let p = shipped();
    assert_all_built(&env.run(&p).await);
    let v0 = env.version("silver.contributions_dedup").await.expect("built");
    env.generate(&small(2)).await;
    env.ingest_at(1).await;
    assert_all_built(&env.run(&p).await);

    let count = |as_of: Vec<AsOf>| {
        let q = QueryBuilder::new(env.tables.clone(), env.config.clone(), "SELECT count(*) AS n FROM silver.contributions_dedup").with_as_of(as_of);
        async move {
            let (_, b) = q.execute().await.expect("query");
            b[0].column(0).as_primitive::<Int64Type>().value(0)
        }
    };
    assert_eq!(count(vec![]).await, 40);
    assert_eq!(count(vec!["0".parse().expect("as-of")]).await, 20);
    assert_eq!(count(vec![format!("silver.contributions_dedup={v0}").parse().expect("as-of")]).await, 20);
    let e = QueryBuilder::new(
        env.tables.clone(),
        env.config.clone(),
        "SELECT count(*) FROM silver.contributions_dedup JOIN bronze.contributions USING (contribution_id)",
    )
    .with_as_of(vec!["0".parse().expect("as-of")])
    .execute()
    .await
    .expect_err("ambiguous");
    assert!(e.to_string().contains("ambiguous"), "{e}");
    let e = QueryBuilder::new(env.tables.clone(), env.config.clone(), "DROP TABLE silver.contributions_dedup")
        .execute()
        .await
        .expect_err("read-only");
    assert!(matches!(e, Error::Model { .. }), "{e}");
    assert!("x.y=-1".parse::<AsOf>().is_err() && "nope".parse::<AsOf>().is_err());

    let state = State::open(env.catalog.clone()).expect("state");
    let m = tributary_pipeline::models::lineage::manifest(&p, &env.tables, &state).await.expect("manifest");
    let dedup = m.models.iter().find(|m| m.name == "silver.contributions_dedup").expect("in manifest");
    assert!(dedup.compiled_sql.contains("FROM bronze.contributions") && dedup.compiled_sql.contains("@epoch"));
    assert_eq!(dedup.builds.len(), 2);
    assert_eq!(dedup.builds[0].version_written, v0);
    assert!(dedup.builds[0].inputs.iter().any(|i| i.table == "bronze.contributions" && i.version.is_some()));
    let stats = m.models.iter().find(|m| m.name == "gold.contributor_stats").expect("in manifest");
    assert_eq!(stats.depends_on, vec!["silver.quality_scores"]);
    assert!(m.render_dag().contains("silver.quality_scores"));

    let results = tributary_pipeline::models::test::test(&p, &env.config, &env.tables).await.expect("test");
    assert!(results.iter().all(|r| !r.is_failure()), "{results:?}");
    assert!(results.iter().filter(|r| r.check == "canonical_is_earliest").all(|r| r.status == "pass"));
}
