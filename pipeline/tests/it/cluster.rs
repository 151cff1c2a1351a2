//! Scale-out: the shipped SQL models on a Ballista cluster — a scheduler and two executors that
//! talk gRPC and Arrow Flight over loopback — build the same tables as the local engine.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tributary_pipeline::config::{Config, DatanetConfig, DatanetKind};
use tributary_pipeline::ingest::IngestBuilder;
use tributary_pipeline::models::cluster::{self, Engine, ExecutorOptions};
use tributary_pipeline::models::{ModelStatus, Project, RunBuilder, RunReport};
use tributary_pipeline::sample::{self, SampleSpec};
use tributary_pipeline::{Catalog, TableId, Tables, Warehouse};

struct Env {
    _dir: tempfile::TempDir,
    config: Arc<Config>,
    tables: Tables,
    catalog: Arc<Catalog>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let datanet = |name: &str, kind| DatanetConfig { name: name.into(), kind, ..DatanetConfig::default() };
    let config = Config {
        warehouse: dir.path().join("warehouse").display().to_string(),
        catalog: dir.path().join("catalog.sqlite"),
        datanets: vec![datanet("geo-qa", DatanetKind::PromptCompletion), datanet("notes", DatanetKind::Text)],
        ..Config::default()
    };
    let warehouse = Warehouse::open(&config).expect("warehouse");
    let catalog = Arc::new(Catalog::open(&config.catalog).expect("catalog"));
    Env { _dir: dir, config: Arc::new(config), tables: Tables::new(warehouse), catalog }
}

fn day(d: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").expect("valid").with_timezone(&Utc) + chrono::Duration::days(d)
}

impl Env {
    /// Two epochs of sample drops (duplicates, near duplicates, junk) for both datanets.
    async fn fill(&self) {
        for (epoch, seed) in [(0, 11), (1, 12)] {
            let spec = SampleSpec { seed, contributors: 6, files_per_contributor: 2, rows_per_file: 30, bad_files: false, ..SampleSpec::default() };
            for d in &self.config.datanets {
                sample::generate(self.tables.warehouse(), d, &spec).await.expect("sample");
            }
            IngestBuilder::new(self.config.clone(), self.tables.clone()).with_now(day(epoch)).execute().await.expect("ingest");
        }
    }

    fn runner(&self, project: &Arc<Project>) -> RunBuilder {
        RunBuilder::new(project.clone(), self.config.clone(), self.tables.clone(), self.catalog.clone())
    }

    /// Every row of `table`, printed and sorted, so two builds compare whatever their row order.
    async fn contents(&self, table: &str) -> Vec<String> {
        let batches = self.tables.query(&format!("SELECT * FROM {table}")).await.expect("query");
        let text = arrow::util::pretty::pretty_format_batches(&batches).expect("format").to_string();
        let mut lines: Vec<String> = text.lines().filter(|l| l.starts_with('|')).skip(1).map(str::to_string).collect();
        lines.sort();
        lines
    }
}

fn shipped() -> Arc<Project> {
    Arc::new(Project::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql")).expect("the shipped models load"))
}

fn assert_all(report: &RunReport, status: ModelStatus) {
    for m in &report.models {
        assert_eq!(m.status, status, "{}: {:?} {}", m.model, m.error, m.why);
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], cluster::free_port().expect("free port")))
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipped_models_on_a_ballista_cluster_match_the_local_engine() {
    let _ = env_logger::Builder::new().parse_filters("warn").is_test(true).try_init();
    let env = env();
    env.fill().await;
    let project = shipped();
    let local = env.runner(&project).execute().await.expect("local run");
    assert_all(&local, ModelStatus::Built);
    let mut expected = Vec::new();
    for m in &local.models {
        let rows = env.contents(&m.model).await;
        assert!(!rows.is_empty(), "{} is empty", m.model);
        expected.push((m.model.clone(), rows));
    }

    // A scheduler and two executors on loopback ports, each executor with its own shuffle dir.
    let scheduler = loopback();
    tokio::spawn(cluster::serve_scheduler(scheduler));
    cluster::wait_listening(scheduler, Duration::from_secs(30)).await.expect("scheduler up");
    let work: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    for w in &work {
        let bind = loopback();
        let opts = ExecutorOptions {
            scheduler,
            bind,
            grpc_port: cluster::free_port().expect("port"),
            vcores: 2,
            work_dir: Some(w.path().to_path_buf()),
        };
        let warehouse = env.tables.warehouse().clone();
        tokio::spawn(async move {
            let ended = cluster::serve_executor(warehouse, opts).await;
            eprintln!("executor on {bind} stopped: {ended:?}");
        });
        cluster::wait_listening(bind, Duration::from_secs(30)).await.expect("executor up");
    }

    let remote = env
        .runner(&project)
        .with_full_refresh(true)
        .with_engine(Engine::cluster(&scheduler.to_string()))
        .execute()
        .await
        .expect("cluster run");
    assert_all(&remote, ModelStatus::Built);
    for ((model, rows), (l, r)) in expected.iter().zip(local.models.iter().zip(&remote.models)) {
        assert!(r.version_written > l.version_written, "{model}: the cluster run committed a new version");
        assert_eq!(l.rows, r.rows, "{model}: row count");
        assert_eq!(&env.contents(model).await, rows, "{model}: same rows as the local engine");
    }
    // The work ran on the executors: their shuffle directories hold the jobs' stage outputs.
    let shuffle_files: usize = work.iter().map(|w| files_under(w.path())).sum();
    assert!(shuffle_files > 0, "no stage output on the executors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_scheduler_fails_the_run_clearly_and_commits_nothing() {
    let env = env();
    env.fill().await;
    let project = shipped();
    let nobody = loopback();
    let report = env
        .runner(&project)
        .with_engine(Engine::cluster(&nobody.to_string()))
        .execute()
        .await
        .expect("the run itself completes with failed models");
    let first = &report.models[0];
    assert_eq!(first.status, ModelStatus::Failed);
    let error = first.error.clone().unwrap_or_default();
    assert!(error.contains(&format!("Ballista scheduler at http://{nobody}")), "error names the scheduler: {error}");
    assert!(report.models[1..].iter().all(|m| m.status != ModelStatus::Built), "{:?}", report.models);
    for m in &report.models {
        let id = TableId::parse(&m.model).expect("name");
        assert!(!env.tables.list().await.expect("list").contains_key(&id), "{} was committed", m.model);
    }
}
