//! Shared helpers: configs, warehouses and table readers for the tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use object_store::path::Path;
use tributary_pipeline::config::{Config, DatanetConfig, DatanetKind};
use tributary_pipeline::ingest::{IngestBuilder, IngestSummary};
use tributary_pipeline::{Tables, Warehouse};

/// A config with the given datanets and a `memory://` warehouse.
pub fn config(datanets: Vec<DatanetConfig>) -> Arc<Config> {
    Arc::new(Config { warehouse: "memory://".into(), datanets, ..Config::default() })
}

pub fn datanet(name: &str, kind: DatanetKind, signed: bool) -> DatanetConfig {
    DatanetConfig { name: name.into(), kind, require_signature: signed, ..DatanetConfig::default() }
}

pub async fn ingest(config: &Arc<Config>, tables: &Tables) -> IngestSummary {
    IngestBuilder::new(config.clone(), tables.clone()).execute().await.expect("ingest runs")
}

pub async fn put(w: &Warehouse, key: &str, bytes: impl Into<Bytes>) {
    w.store().put(&Path::from(key), PutPayload::from_bytes(bytes.into())).await.expect("put");
}

/// Run a query and return the first column of the first row as i64.
pub async fn scalar(tables: &Tables, sql: &str) -> i64 {
    let batches = tables.query(sql).await.expect("query");
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

pub async fn rows(tables: &Tables, sql: &str) -> Vec<RecordBatch> {
    tables.query(sql).await.expect("query")
}

/// Per-path (status, reason) from the ingest log.
pub async fn log_by_path(tables: &Tables) -> BTreeMap<String, (String, Option<String>)> {
    let mut out = BTreeMap::new();
    for b in rows(tables, "SELECT path, status, reason FROM ops.ingest_log").await {
        let str_col = |i: usize| tributary_pipeline::tables::strings(b.column(i)).expect("string column");
        let (p, s, r) = (str_col(0), str_col(1), str_col(2));
        for i in 0..b.num_rows() {
            let reason = (!arrow::array::Array::is_null(&r, i)).then(|| r.value(i).to_string());
            out.insert(p.value(i).to_string(), (s.value(i).to_string(), reason));
        }
    }
    out
}
