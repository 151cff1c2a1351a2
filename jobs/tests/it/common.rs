//! Shared fixtures: the tiny base model (trained once per checkout and cached in the target dir),
//! warehouses with a `gold.training_set`, and configs.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use burn::tensor::Device;
use deltalake::protocol::SaveMode;
use object_store::ObjectStoreExt;
use tributary_jobs::base_model::{self, BaseModelSpec};
use tributary_jobs::corpus::KbRow;
use tributary_jobs::model::{BaseModel, ModelFiles};
use tributary_pipeline::config::{Config, DatanetConfig, DatanetKind};
use tributary_pipeline::{TableDef, TableId, Tables, Warehouse};

/// The CPU device.
pub fn device() -> Device {
    Device::flex()
}

/// The spec of the tests' base model: the demo's tiny preset with a shorter schedule. Bounded by
/// steps only (no wall-clock bound), so the model — and every figure the tests assert on — is the
/// same however loaded the machine is.
pub fn base_spec() -> BaseModelSpec {
    BaseModelSpec { steps: 300, docs: 4000, max_seconds: f64::INFINITY, ..BaseModelSpec::default() }
}

/// The files of the tests' base model, trained on first use and cached under the target dir
/// (training is deterministic, so the cache only saves time).
pub fn base_files() -> &'static ModelFiles {
    static FILES: OnceLock<ModelFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        let spec = base_spec();
        let key = format!("{:?}", spec).bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tributary-test-base-{key:016x}"));
        if let Ok(files) = ModelFiles::read_dir(&dir) {
            return files;
        }
        let (model, tokenizer, report) = base_model::train(&spec, &device(), &mut |_| {}).expect("base model trains");
        assert!(!report.stopped_by_time && report.steps_done == spec.steps, "the tests' base model ran {} steps", report.steps_done);
        let files = tributary_jobs::model::loader::model_files(&model, &tokenizer).expect("files");
        files.write_dir(&dir).expect("cache base model");
        files
    })
}

/// The tests' base model.
pub fn base() -> BaseModel {
    BaseModel::from_files("tributary-base", base_files(), &device()).expect("base model loads")
}

/// A warehouse holding the base model under `models/tributary-base/`.
pub async fn warehouse_with_base(w: &Warehouse) {
    base_files().write_warehouse(w, "tributary-base", &[]).await.expect("write base model");
}

/// `gold.training_set` as the SQL models materialize it (the columns the jobs read).
pub fn training_set_def() -> TableDef {
    TableDef {
        id: TableId::new("gold", "training_set"),
        schema: Arc::new(Schema::new(vec![
            Field::new("contribution_id", DataType::Utf8, false),
            Field::new("datanet", DataType::Utf8, false),
            Field::new("contributor", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, false),
            Field::new("prompt", DataType::Utf8, true),
            Field::new("completion", DataType::Utf8, true),
            Field::new("label", DataType::Utf8, true),
            Field::new("epoch", DataType::Int64, false),
        ])),
        partition_columns: vec![],
        description: "accepted canonical rows per datanet (test fixture)".into(),
    }
}

/// One training-set row.
#[derive(Debug, Clone)]
pub struct TsRow {
    pub id: String,
    pub contributor: String,
    pub prompt: String,
    pub completion: String,
    pub epoch: i64,
}

/// Append rows to `gold.training_set`; returns the new Delta version.
pub async fn append_training_set(tables: &Tables, datanet: &str, rows: &[TsRow]) -> i64 {
    let def = training_set_def();
    let table = tables.open_or_create(&def).await.expect("create gold.training_set");
    let n = rows.len();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.id.as_str()))),
        Arc::new(StringArray::from(vec![datanet; n])),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.contributor.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| format!("{}\n\n{}", r.prompt, r.completion)))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.prompt.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.completion.as_str()))),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.epoch))),
    ];
    let batch = RecordBatch::try_new(def.schema.clone(), cols).expect("batch");
    let t = table.write(vec![batch]).with_save_mode(SaveMode::Append).await.expect("append");
    t.version().map(|v| v as i64).unwrap_or(0)
}

/// A contributor address for index `i`.
pub fn address(i: usize) -> String {
    format!("0x{:040x}", 0xc0ffee_usize * 1000 + i)
}

/// Training-set rows from knowledge-base rows.
pub fn kb_rows(rows: &[KbRow], epoch: i64) -> Vec<TsRow> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| TsRow {
            id: format!("{:064x}", i + 1),
            contributor: address(r.contributor),
            prompt: r.prompt.clone(),
            completion: r.completion.clone(),
            epoch,
        })
        .collect()
}

/// Write a validation Parquet (`prompt`, `completion`) at `key`.
pub async fn put_validation(w: &Warehouse, key: &str, rows: &[KbRow]) {
    let pairs: Vec<(String, String)> = rows.iter().map(|r| (r.prompt.clone(), r.completion.clone())).collect();
    let batch = tributary_pipeline::sample::prompt_completion_batch(&pairs);
    let bytes = tributary_pipeline::sample::parquet_bytes(&batch).expect("parquet");
    w.store()
        .put(&object_store::path::Path::from(key), object_store::PutPayload::from_bytes(bytes))
        .await
        .expect("put validation");
}

/// A config with one prompt/completion datanet over `warehouse_url`.
pub fn config(warehouse_url: &str, datanet: &str, validation_set: &str) -> Arc<Config> {
    Arc::new(Config {
        warehouse: warehouse_url.into(),
        datanets: vec![DatanetConfig {
            name: datanet.into(),
            kind: DatanetKind::PromptCompletion,
            validation_set: validation_set.into(),
            ..DatanetConfig::default()
        }],
        ..Config::default()
    })
}

/// A fresh, private `memory://` warehouse and its tables.
pub fn memory() -> (Warehouse, Tables) {
    let w = Warehouse::in_memory();
    (w.clone(), Tables::new(w))
}
