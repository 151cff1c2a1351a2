//! What the jobs read: `gold.training_set` at a recorded Delta version, the datanet's validation
//! set, and the per-contributor counts of submitted and duplicate rows.
//!
//! `gold.training_set` is materialized by the SQL models (accepted, canonical rows). Training for
//! epoch `E` uses every row with `epoch <= E`: an adapter is the model of everything accepted so
//! far, and each epoch's attribution says how much each row helps that model.

use object_store::ObjectStoreExt;
use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use object_store::path::Path as ObjectPath;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};
use tributary_pipeline::config::{DatanetConfig, DatanetKind};
use tributary_pipeline::{TableId, Tables, Warehouse};

use crate::error::{Error, Result};
use crate::tokenizer::{Encoded, Tokenizer};

/// `gold.training_set`.
pub fn training_set_id() -> TableId {
    TableId::new("gold", "training_set")
}

/// One row to train on (or to validate with).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `contribution_id` (empty for validation rows from a file).
    pub contribution_id: String,
    /// Owner's address (empty for validation rows from a file).
    pub contributor: String,
    /// The row's text (for prompt/completion rows, both joined).
    pub text: String,
    /// Prompt, for prompt/completion datanets.
    pub prompt: Option<String>,
    /// Completion, for prompt/completion datanets.
    pub completion: Option<String>,
    /// Epoch the row was contributed in.
    pub epoch: i64,
}

impl Row {
    /// Tokenize per the datanet's kind.
    pub fn encode(&self, tokenizer: &Tokenizer, kind: DatanetKind, max_len: usize) -> Result<Encoded> {
        let mut e = match (kind, &self.prompt, &self.completion) {
            (DatanetKind::PromptCompletion, Some(p), Some(c)) => tokenizer.encode_pair(p, c)?,
            _ => tokenizer.encode_text(&self.text)?,
        };
        e.truncate(max_len);
        Ok(e)
    }
}

/// The rows of one datanet at one version of `gold.training_set`.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// Datanet.
    pub datanet: String,
    /// Delta version read.
    pub version: i64,
    /// Rows of epochs `<= epoch`.
    pub epoch: i64,
    /// Rows, ordered by `contribution_id`.
    pub rows: Vec<Row>,
}

impl TrainingSet {
    /// Hex sha256 over the ordered contribution ids: identifies exactly which rows were used.
    pub fn rows_sha256(&self) -> String {
        let mut h = Sha256::new();
        for r in &self.rows {
            h.update(r.contribution_id.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn string_col(batch: &RecordBatch, name: &str) -> Option<Vec<Option<String>>> {
    let col = batch.column_by_name(name)?;
    let col = arrow::compute::cast(col, &DataType::Utf8).ok()?;
    let s = col.as_string::<i32>();
    Some((0..s.len()).map(|i| (!s.is_null(i)).then(|| s.value(i).to_string())).collect())
}

fn i64_col(batch: &RecordBatch, name: &str) -> Option<Vec<i64>> {
    let col = batch.column_by_name(name)?;
    let col = arrow::compute::cast(col, &DataType::Int64).ok()?;
    let a = col.as_primitive::<arrow::datatypes::Int64Type>();
    Some((0..a.len()).map(|i| if a.is_null(i) { 0 } else { a.value(i) }).collect())
}

/// Run `sql` on `table` (opened at a version) registered as `layer.name`.
async fn query_table(tables: &Tables, id: &TableId, table: &deltalake::DeltaTable, sql: &str) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    tables.register(&ctx, id, table).await?;
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Read `datanet`'s rows of `gold.training_set` at `version` (latest if `None`), keeping epochs
/// `<= epoch` (all if `None`; the set's epoch is then the largest present).
pub async fn read_training_set(
    tables: &Tables,
    datanet: &str,
    epoch: Option<i64>,
    version: Option<i64>,
) -> Result<TrainingSet> {
    let id = training_set_id();
    let table = tables.open_version(&id, version).await?.ok_or_else(|| Error::MissingTable {
        table: id.to_string(),
        hint: "run the SQL models (`tributary sql run`) after ingesting".into(),
    })?;
    let version = table.version().map(|v| v as i64).unwrap_or(0);
    let sql = format!("SELECT * FROM {id} WHERE datanet = {}", sql_str(datanet));
    let batches = query_table(tables, &id, &table, &sql).await?;
    let mut rows = Vec::new();
    for b in &batches {
        let ids = string_col(b, "contribution_id")
            .ok_or_else(|| Error::data(datanet, "gold.training_set has no contribution_id column"))?;
        let contributors = string_col(b, "contributor")
            .ok_or_else(|| Error::data(datanet, "gold.training_set has no contributor column"))?;
        let texts = string_col(b, "text");
        let prompts = string_col(b, "prompt");
        let completions = string_col(b, "completion");
        let epochs = i64_col(b, "epoch").ok_or_else(|| Error::data(datanet, "gold.training_set has no epoch column"))?;
        for i in 0..b.num_rows() {
            let prompt = prompts.as_ref().and_then(|p| p[i].clone());
            let completion = completions.as_ref().and_then(|c| c[i].clone());
            let text = texts.as_ref().and_then(|t| t[i].clone()).unwrap_or_else(|| match (&prompt, &completion) {
                (Some(p), Some(c)) => format!("{p}\n\n{c}"),
                _ => String::new(),
            });
            rows.push(Row {
                contribution_id: ids[i].clone().unwrap_or_default(),
                contributor: contributors[i].clone().unwrap_or_default(),
                text,
                prompt,
                completion,
                epoch: epochs[i],
            });
        }
    }
    let epoch = match epoch {
        Some(e) => e,
        None => rows.iter().map(|r| r.epoch).max().ok_or_else(|| Error::data(datanet, "gold.training_set has no rows"))?,
    };
    rows.retain(|r| r.epoch <= epoch && !r.contribution_id.is_empty());
    rows.sort_by(|a, b| a.contribution_id.cmp(&b.contribution_id));
    rows.dedup_by(|a, b| a.contribution_id == b.contribution_id);
    if rows.is_empty() {
        return Err(Error::data(datanet, format!("no rows of epoch <= {epoch} in gold.training_set@{version}")));
    }
    Ok(TrainingSet { datanet: datanet.to_string(), version, epoch, rows })
}

/// Where validation rows came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ValidationSource {
    /// The datanet's configured Parquet file under the warehouse.
    File {
        /// Key under the warehouse root.
        path: String,
    },
    /// No validation set configured: a deterministic slice of the training set, held out of
    /// training (and therefore unattributed).
    Holdout {
        /// Rows held out.
        rows: usize,
    },
}

/// Read the datanet's validation Parquet (`prompt` + `completion`, or `text`).
pub async fn read_validation_file(warehouse: &Warehouse, datanet: &DatanetConfig) -> Result<Vec<Row>> {
    let key = datanet.validation_set.trim().trim_start_matches('/');
    let bytes = match warehouse.store().get(&ObjectPath::from(key)).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::data(&datanet.name, format!("validation set `{key}` not found in the warehouse")));
        }
        Err(e) => return Err(e.into()),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::data(&datanet.name, format!("validation set `{key}` is not readable Parquet: {e}")))?
        .build()?;
    let mut rows = Vec::new();
    for b in reader {
        let b = b?;
        let texts = string_col(&b, "text");
        let prompts = string_col(&b, "prompt");
        let completions = string_col(&b, "completion");
        if texts.is_none() && (prompts.is_none() || completions.is_none()) {
            return Err(Error::data(&datanet.name, format!("validation set `{key}` needs `text` or `prompt` + `completion`")));
        }
        for i in 0..b.num_rows() {
            let prompt = prompts.as_ref().and_then(|p| p[i].clone());
            let completion = completions.as_ref().and_then(|c| c[i].clone());
            let text = texts.as_ref().and_then(|t| t[i].clone()).unwrap_or_else(|| {
                format!("{}\n\n{}", prompt.clone().unwrap_or_default(), completion.clone().unwrap_or_default())
            });
            rows.push(Row { contribution_id: String::new(), contributor: String::new(), text, prompt, completion, epoch: 0 });
        }
    }
    if rows.is_empty() {
        return Err(Error::data(&datanet.name, format!("validation set `{key}` has no rows")));
    }
    Ok(rows)
}

/// Split `rows` into (train, held-out validation) when no validation file is configured: the 10%
/// (at least 4, at most 256) of rows with the smallest `sha256(contribution_id)`, so the split is
/// stable as rows are added.
pub fn holdout(rows: Vec<Row>) -> (Vec<Row>, Vec<Row>) {
    let n = ((rows.len() as f64 * 0.1).round() as usize).clamp(4, 256).min(rows.len() / 2);
    let mut keyed: Vec<(String, Row)> =
        rows.into_iter().map(|r| (hex::encode(Sha256::digest(r.contribution_id.as_bytes())), r)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let val: Vec<Row> = keyed.drain(..n).map(|(_, r)| r).collect();
    let mut train: Vec<Row> = keyed.into_iter().map(|(_, r)| r).collect();
    train.sort_by(|a, b| a.contribution_id.cmp(&b.contribution_id));
    (train, val)
}

/// Per-contributor counts: rows submitted (bronze) and rows judged duplicates (silver dedup), for
/// epochs `<= epoch`. Tables that do not exist yet contribute nothing.
pub async fn contributor_counts(tables: &Tables, datanet: &str, epoch: i64) -> Result<BTreeMap<String, (i64, i64)>> {
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let bronze = TableId::new("bronze", "contributions");
    let Some(b) = tables.open(&bronze).await? else { return Ok(out) };
    let ctx = SessionContext::new();
    tables.register(&ctx, &bronze, &b).await?;
    let sql = format!(
        "SELECT contributor, count(*) AS n FROM bronze.contributions WHERE datanet = {} AND epoch <= {epoch} GROUP BY contributor",
        sql_str(datanet)
    );
    for batch in ctx.sql(&sql).await?.collect().await? {
        let (c, n) = (string_col(&batch, "contributor"), i64_col(&batch, "n"));
        if let (Some(c), Some(n)) = (c, n) {
            for (c, n) in c.into_iter().zip(n) {
                out.entry(c.unwrap_or_default()).or_default().0 = n;
            }
        }
    }
    let dedup = TableId::new("silver", "contributions_dedup");
    if let Some(d) = tables.open(&dedup).await? {
        tables.register(&ctx, &dedup, &d).await?;
        let sql = format!(
            "SELECT b.contributor, count(*) AS n FROM silver.contributions_dedup d \
             JOIN bronze.contributions b ON d.contribution_id = b.contribution_id \
             WHERE d.dedup_kind <> 'unique' AND b.datanet = {} AND b.epoch <= {epoch} GROUP BY b.contributor",
            sql_str(datanet)
        );
        for batch in ctx.sql(&sql).await?.collect().await? {
            let (c, n) = (string_col(&batch, "contributor"), i64_col(&batch, "n"));
            if let (Some(c), Some(n)) = (c, n) {
                for (c, n) in c.into_iter().zip(n) {
                    out.entry(c.unwrap_or_default()).or_default().1 = n;
                }
            }
        }
    }
    Ok(out)
}

/// Write a sample validation set for `datanet` at its configured `validation_set` key, unless one
/// is there already: `rows` held-out facts from the sample generator (`prompt` + `completion`, or
/// `text` for text datanets). Returns whether it wrote one. The demo uses this.
pub async fn ensure_sample_validation(warehouse: &Warehouse, datanet: &DatanetConfig, seed: u64, rows: usize) -> Result<bool> {
    use rand::SeedableRng;
    use tributary_pipeline::sample;
    let key = datanet.validation_set.trim().trim_start_matches('/');
    if key.is_empty() {
        return Ok(false);
    }
    let path = ObjectPath::from(key);
    match warehouse.store().head(&path).await {
        Ok(_) => return Ok(false),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pairs: Vec<(String, String)> = (0..rows).map(|_| sample::fact_text(&mut rng)).collect();
    let batch = match datanet.kind {
        DatanetKind::PromptCompletion => sample::prompt_completion_batch(&pairs),
        DatanetKind::Text => sample::text_batch(&pairs.iter().map(|(p, c)| format!("{p} {c}")).collect::<Vec<_>>(), &[]),
    };
    let bytes = sample::parquet_bytes(&batch)?;
    warehouse.store().put(&path, object_store::PutPayload::from_bytes(bytes)).await?;
    Ok(true)
}
