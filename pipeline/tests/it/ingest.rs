//! Ingestion end to end on memory:// and on a local directory.

use std::sync::Arc;

use object_store::ObjectStoreExt as _;

use tributary_pipeline::config::{Config, DatanetKind};
use tributary_pipeline::ingest::commit;
use tributary_pipeline::ingest::IngestBuilder;
use tributary_pipeline::sample::{self, SampleSpec, parquet_bytes, text_batch};
use tributary_pipeline::{Tables, Warehouse};

use crate::common::*;

#[tokio::test]
async fn sample_datanet_ingests_exactly_once_in_memory() {
    let cfg = config(vec![datanet("geo", DatanetKind::PromptCompletion, true)]);
    let w = Warehouse::in_memory();
    let tables = Tables::new(w.clone());
    let m = sample::generate(&w, &cfg.datanets[0], &SampleSpec::default()).await.expect("sample");

    let s = ingest(&cfg, &tables).await;
    assert_eq!(s.files_accepted, m.good_files.len());
    assert_eq!(s.rows_added as usize, m.rows);
    assert_eq!(s.files_quarantined, m.bad_files.len());
    let log = log_by_path(&tables).await;
    for (path, reason) in &m.bad_files {
        assert_eq!(log[path].1.as_deref(), Some(reason.as_str()), "{path}");
    }
    for path in &m.good_files {
        assert_eq!(log[path].0, "accepted", "{path}");
    }
    assert_eq!(scalar(&tables, "SELECT COUNT(*) FROM bronze.contributions").await as usize, m.rows);
    assert_eq!(scalar(&tables, "SELECT COUNT(DISTINCT contribution_id) FROM bronze.contributions").await as usize, m.rows);

    // A second pass judges nothing and adds nothing.
    let again = ingest(&cfg, &tables).await;
    assert_eq!((again.files_accepted, again.files_quarantined, again.rows_added), (0, 0, 0));
    assert_eq!(again.files_skipped, again.files_listed);
    assert_eq!(scalar(&tables, "SELECT COUNT(*) FROM bronze.contributions").await as usize, m.rows);
    assert_eq!(scalar(&tables, "SELECT COUNT(*) FROM ops.ingest_log").await as usize, m.good_files.len() + m.bad_files.len());
}

#[tokio::test]
async fn changed_bytes_are_a_new_version_and_other_contributors_are_kept() {
    let cfg = config(vec![datanet("notes", DatanetKind::Text, false)]);
    let w = Warehouse::in_memory();
    let tables = Tables::new(w.clone());
    let a = "0x1111111111111111111111111111111111111111";
    let b = "0x2222222222222222222222222222222222222222";
    let v1 = parquet_bytes(&text_batch(&["first version of the note".into()], &[])).expect("pq");
    put(&w, &format!("inbox/notes/{a}/n.parquet"), v1.clone()).await;
    put(&w, &format!("inbox/notes/{b}/copy.parquet"), v1.clone()).await;
    let s = ingest(&cfg, &tables).await;
    assert_eq!(s.files_accepted, 2, "same bytes under another contributor are ingested: {:?}", s.judged);

    let v2 = parquet_bytes(&text_batch(&["second version".into(), "with two rows".into()], &[])).expect("pq");
    put(&w, &format!("inbox/notes/{a}/n.parquet"), v2).await;
    let s = ingest(&cfg, &tables).await;
    assert_eq!((s.files_accepted, s.rows_added), (1, 2));
    assert_eq!(scalar(&tables, "SELECT COUNT(*) FROM bronze.contributions").await, 4);
    assert_eq!(
        scalar(&tables, "SELECT COUNT(DISTINCT file_sha256) FROM bronze.contributions WHERE file_path LIKE '%/n.parquet'").await,
        2
    );

    // Re-uploading identical bytes (new etag, same sha256) is not a new version.
    put(&w, &format!("inbox/notes/{a}/n.parquet"), parquet_bytes(&text_batch(&["second version".into(), "with two rows".into()], &[])).expect("pq")).await;
    let s = ingest(&cfg, &tables).await;
    assert_eq!((s.files_accepted, s.files_quarantined), (0, 0));
}

#[tokio::test]
async fn dry_run_commits_nothing_and_local_warehouse_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config { datanets: vec![datanet("geo", DatanetKind::PromptCompletion, true)], ..Config::default() };
    cfg.base_dir = dir.path().to_path_buf();
    let cfg = Arc::new(cfg);
    let w = Warehouse::open(&cfg).expect("open local warehouse");
    assert!(w.url().as_str().starts_with("file://"));
    let m = sample::generate(&w, &cfg.datanets[0], &SampleSpec { bad_files: false, ..SampleSpec::default() })
        .await
        .expect("sample");
    let tables = Tables::new(w.clone());
    let dry = IngestBuilder::new(cfg.clone(), tables.clone()).with_dry_run(true).execute().await.expect("dry run");
    assert!(dry.dry_run);
    assert_eq!(dry.rows_added as usize, m.rows);
    assert!(dry.batches.is_empty());
    assert_eq!(scalar(&tables, "SELECT COUNT(*) FROM bronze.contributions").await, 0);

    ingest(&cfg, &tables).await;
    // Re-open from the path alone: the data is on disk as standard Delta.
    let reopened = Tables::new(Warehouse::open(&cfg).expect("reopen"));
    assert_eq!(scalar(&reopened, "SELECT COUNT(*) FROM bronze.contributions").await as usize, m.rows);
    assert!(dir.path().join("warehouse/tables/bronze/contributions/_delta_log").is_dir());
}

#[tokio::test]
async fn batch_in_bronze_but_not_in_log_is_replayed_not_duplicated() {
    let cfg = config(vec![datanet("notes", DatanetKind::Text, false)]);
    let w = Warehouse::in_memory();
    let tables = Tables::new(w.clone());
    let a = "0x3333333333333333333333333333333333333333";
    put(&w, &format!("inbox/notes/{a}/x.parquet"), parquet_bytes(&text_batch(&["alpha beta".into(), "gamma delta".into()], &[])).expect("pq")).await;

    // Judge the file without committing, then commit only the bronze half: a crash between the commits.
    let dry = IngestBuilder::new(cfg.clone(), tables.clone()).with_dry_run(true).execute().await.expect("dry");
    let entries = dry.judged.clone();
    let rows = tables.query("SELECT 1").await.expect("query engine up");
    drop(rows);
    let batch = entries[0].batch;
    commit::commit_rows(&tables, batch, vec![bronze_rows_for(&cfg, &w, &entries).await], &entries).await.expect("bronze half");
    assert_eq!(scalar(&tables, "SELECT COUNT(*) FROM ops.ingest_log").await, 0);

    let s = ingest(&cfg, &tables).await;
    assert_eq!(s.recovered_batch, Some(batch));
    assert_eq!(s.files_accepted, 0, "the file was already in bronze; it must not be ingested twice");
    assert_eq!(scalar(&tables, "SELECT COUNT(*) FROM bronze.contributions").await, 2);
    assert_eq!(scalar(&tables, "SELECT COUNT(*) FROM ops.ingest_log WHERE status = 'accepted'").await, 1);
}

/// Re-validate the judged files to rebuild their bronze rows (what the crashed run had in memory).
async fn bronze_rows_for(
    cfg: &Config,
    w: &Warehouse,
    entries: &[tributary_pipeline::ingest::log::LogEntry],
) -> arrow::record_batch::RecordBatch {
    use tributary_pipeline::ingest::validate::{RowContext, validate_file};
    let e = &entries[0];
    let bytes = w.store().get(&object_store::path::Path::from(e.path.as_str())).await.expect("get").bytes().await.expect("bytes");
    let mut sha = [0u8; 32];
    hex::decode_to_slice(e.sha256.as_deref().expect("sha"), &mut sha).expect("hex");
    let ctx = RowContext {
        datanet: "notes".into(),
        contributor: e.contributor.clone().expect("contributor"),
        file_path: e.path.clone(),
        file_sha256: sha,
        epoch: e.epoch,
        ingested_at_micros: e.ingested_at_micros,
        batch: e.batch,
    };
    validate_file(bytes, cfg.datanet("notes").expect("datanet"), &ctx).expect("valid").rows
}

#[tokio::test]
async fn duplicate_files_and_epoch_limits() {
    let mut d = datanet("notes", DatanetKind::Text, false);
    d.daily_row_limit = 3;
    let cfg = config(vec![d]);
    let w = Warehouse::in_memory();
    let tables = Tables::new(w.clone());
    let a = "0x4444444444444444444444444444444444444444";
    let two = parquet_bytes(&text_batch(&["one fine row".into(), "two fine rows".into()], &[])).expect("pq");
    put(&w, &format!("inbox/notes/{a}/a.parquet"), two.clone()).await;
    put(&w, &format!("inbox/notes/{a}/b-same-bytes.parquet"), two).await;
    put(&w, &format!("inbox/notes/{a}/c.parquet"), parquet_bytes(&text_batch(&["third".into(), "fourth".into()], &[])).expect("pq")).await;
    let s = ingest(&cfg, &tables).await;
    let log = log_by_path(&tables).await;
    assert_eq!(log[&format!("inbox/notes/{a}/a.parquet")].0, "accepted");
    assert_eq!(log[&format!("inbox/notes/{a}/b-same-bytes.parquet")].1.as_deref(), Some("duplicate_file"));
    assert_eq!(log[&format!("inbox/notes/{a}/c.parquet")].1.as_deref(), Some("daily_row_limit_exceeded"));
    assert_eq!(s.rows_added, 2);
}
