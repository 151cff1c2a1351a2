//! The table registry: every Delta table of the warehouse, its schema, and how to open it.
//!
//! Table names and schemas are the shared vocabulary of the workspace (DESIGN.md, "Tables every
//! part may rely on"), so they live here, in the lowest crate. [`Tables`] creates a table with its
//! schema on first use, opens it at the latest version or at a recorded one (time travel), and
//! registers every table in a DataFusion [`SessionContext`] as `layer.table`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::prelude::SessionContext;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::storage::{Warehouse, prefix};

/// A table's place in the warehouse: `tables/<layer>/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    /// `bronze`, `silver`, `gold` or `ops`.
    pub layer: String,
    /// Table name within the layer.
    pub name: String,
}

impl TableId {
    /// Build an id from its parts.
    pub fn new(layer: impl Into<String>, name: impl Into<String>) -> Self {
        TableId { layer: layer.into(), name: name.into() }
    }

    /// Parse `layer.table`.
    pub fn parse(qualified: &str) -> Option<Self> {
        let (layer, name) = qualified.split_once('.')?;
        let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        (ok(layer) && ok(name)).then(|| TableId::new(layer, name))
    }

    /// The key prefix of the table under the warehouse root.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", prefix::TABLES, self.layer, self.name)
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.layer, self.name)
    }
}

/// A table's definition: id, Arrow schema, partition columns.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Where it lives.
    pub id: TableId,
    /// Its columns.
    pub schema: SchemaRef,
    /// Partition columns (a subset of the schema's columns).
    pub partition_columns: Vec<String>,
    /// One line for `tributary tables` and the Delta table description.
    pub description: String,
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn i64f(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn f64f(name: &str) -> Field {
    Field::new(name, DataType::Float64, false)
}

/// The definitions of the tables DESIGN.md fixes. SQL models create the `silver`/`gold` tables
/// they materialize from their query's schema; the ones below are written by Rust code.
pub mod defs {
    use super::*;

    /// `bronze.contributions`: one row per accepted contributed row.
    pub fn bronze_contributions() -> TableDef {
        TableDef {
            id: TableId::new("bronze", "contributions"),
            schema: Arc::new(Schema::new(vec![
                utf8("contribution_id", false),
                utf8("datanet", false),
                utf8("contributor", false),
                utf8("file_path", false),
                utf8("file_sha256", false),
                i64f("row_index"),
                i64f("epoch"),
                Field::new("ingested_at", ts(), false),
                utf8("text", false),
                utf8("prompt", true),
                utf8("completion", true),
                utf8("label", true),
                utf8("license", true),
                utf8("source", true),
                utf8("content_hash", false),
                i64f("text_bytes"),
                i64f("ingest_batch"),
            ])),
            partition_columns: vec!["datanet".into()],
            description: "contributed rows, exactly once per (file sha256, row index)".into(),
        }
    }

    /// `ops.ingest_log`: one row per inbox file version seen, accepted or quarantined.
    pub fn ops_ingest_log() -> TableDef {
        TableDef {
            id: TableId::new("ops", "ingest_log"),
            schema: Arc::new(Schema::new(vec![
                utf8("path", false),
                utf8("datanet", true),
                utf8("contributor", true),
                i64f("size"),
                utf8("etag", true),
                utf8("sha256", true),
                utf8("status", false),
                utf8("reason", true),
                utf8("detail", true),
                i64f("rows"),
                i64f("bytes"),
                i64f("epoch"),
                i64f("ingest_batch"),
                Field::new("ingested_at", ts(), false),
            ])),
            partition_columns: vec![],
            description: "every inbox file version seen by ingest, with status and reason code".into(),
        }
    }

    /// `gold.example_influence`: influence of each training row on validation loss.
    pub fn gold_example_influence() -> TableDef {
        TableDef {
            id: TableId::new("gold", "example_influence"),
            schema: Arc::new(Schema::new(vec![
                i64f("epoch"),
                utf8("datanet", false),
                utf8("contribution_id", false),
                utf8("contributor", false),
                utf8("method", false),
                f64f("influence"),
                f64f("self_influence"),
                utf8("adapter_version", false),
                i64f("training_set_version"),
                utf8("method_version", false),
                Field::new("computed_at", ts(), false),
            ])),
            partition_columns: vec![],
            description: "per-row influence on the datanet's validation loss".into(),
        }
    }

    /// `gold.contributor_attribution`: influence aggregated per contributor.
    pub fn gold_contributor_attribution() -> TableDef {
        TableDef {
            id: TableId::new("gold", "contributor_attribution"),
            schema: Arc::new(Schema::new(vec![
                i64f("epoch"),
                utf8("datanet", false),
                utf8("contributor", false),
                i64f("rows_submitted"),
                i64f("rows_accepted"),
                i64f("duplicates"),
                f64f("influence_sum"),
                f64f("positive_influence"),
                f64f("share"),
                utf8("method", false),
                Field::new("computed_at", ts(), false),
            ])),
            partition_columns: vec![],
            description: "per-contributor influence and reward share".into(),
        }
    }

    /// The `credits` column type: a list of (contributor, weight).
    pub fn credits_type() -> DataType {
        DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(Fields::from(vec![utf8("contributor", false), f64f("weight")])),
            true,
        )))
    }

    /// `gold.inference_usage`: one row per finished inference request.
    pub fn gold_inference_usage() -> TableDef {
        TableDef {
            id: TableId::new("gold", "inference_usage"),
            schema: Arc::new(Schema::new(vec![
                utf8("request_id", false),
                Field::new("ts", ts(), false),
                i64f("epoch"),
                utf8("adapter", false),
                utf8("datanet", true),
                i64f("tokens_in"),
                i64f("tokens_out"),
                utf8("fee", false),
                Field::new("credits", credits_type(), true),
            ])),
            partition_columns: vec![],
            description: "metered inference requests with per-contributor credits".into(),
        }
    }

    /// `gold.epoch_payouts`: the payout leaves of each epoch.
    pub fn gold_epoch_payouts() -> TableDef {
        TableDef {
            id: TableId::new("gold", "epoch_payouts"),
            schema: Arc::new(Schema::new(vec![
                i64f("epoch"),
                i64f("index"),
                utf8("contributor", false),
                utf8("amount", false),
                utf8("breakdown", false),
            ])),
            partition_columns: vec![],
            description: "payout leaves: (epoch, index, contributor, amount in base units)".into(),
        }
    }

    /// Every table written by Rust code (SQL models add their own).
    pub fn all() -> Vec<TableDef> {
        vec![
            bronze_contributions(),
            ops_ingest_log(),
            gold_example_influence(),
            gold_contributor_attribution(),
            gold_inference_usage(),
            gold_epoch_payouts(),
        ]
    }
}

/// Opens, creates and registers the warehouse's Delta tables.
#[derive(Clone, Debug)]
pub struct Tables {
    warehouse: Warehouse,
}

impl Tables {
    /// A registry over `warehouse`.
    pub fn new(warehouse: Warehouse) -> Self {
        Tables { warehouse }
    }

    /// The warehouse the tables live in.
    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    fn builder(&self, id: &TableId) -> Result<DeltaTableBuilder> {
        let url = self.warehouse.url_of(&id.key())?;
        Ok(DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| Error::delta(id.to_string(), e))?
            .with_storage_backend(self.warehouse.root_store().clone(), url))
    }

    /// Open `id` at its latest version, or `None` if it does not exist yet.
    pub async fn open(&self, id: &TableId) -> Result<Option<DeltaTable>> {
        self.open_version(id, None).await
    }

    /// Open `id` at `version` (or the latest), or `None` if the table does not exist.
    pub async fn open_version(&self, id: &TableId, version: Option<i64>) -> Result<Option<DeltaTable>> {
        let mut b = self.builder(id)?;
        if let Some(v) = version {
            let v = u64::try_from(v).map_err(|_| Error::NotFound(format!("{id} at negative version {v}")))?;
            b = b.with_version(v);
        }
        match b.load().await {
            Ok(t) => Ok(Some(t)),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(DeltaTableError::InvalidTableLocation(_)) => Ok(None),
            // delta-kernel reports a missing local table directory as its own InvalidTableLocation.
            Err(DeltaTableError::KernelError(k)) if format!("{k:?}").starts_with("InvalidTableLocation") => Ok(None),
            Err(DeltaTableError::InvalidVersion(v)) => Err(Error::NotFound(format!("{id} has no version {v}"))),
            Err(e) => Err(Error::delta(id.to_string(), e)),
        }
    }

    /// Open `def`'s table, creating it with its schema if it does not exist.
    pub async fn open_or_create(&self, def: &TableDef) -> Result<DeltaTable> {
        if let Some(t) = self.open(&def.id).await? {
            return Ok(t);
        }
        let name = def.id.to_string();
        let kernel: StructType =
            def.schema.as_ref().try_into_kernel().map_err(|e| Error::Internal(format!("schema of {name}: {e}")))?;
        if let Some(dir) = self.warehouse.local_dir() {
            // delta-kernel refuses a local table location that does not exist yet.
            std::fs::create_dir_all(dir.join(def.id.key()))?;
        }
        let table = self.builder(&def.id)?.build().map_err(|e| Error::delta(&name, e))?;
        let created = table
            .create()
            .with_table_name(name.clone())
            .with_comment(def.description.clone())
            .with_columns(kernel.fields().cloned())
            .with_partition_columns(def.partition_columns.clone())
            .await;
        match created {
            Ok(t) => Ok(t),
            // Another process created it between our open and our create: use theirs.
            Err(e) => match self.open(&def.id).await? {
                Some(t) => Ok(t),
                None => Err(Error::delta(name, e)),
            },
        }
    }

    /// Every table present in the warehouse, with its latest version.
    pub async fn list(&self) -> Result<BTreeMap<TableId, i64>> {
        let store = self.warehouse.store();
        let mut out = BTreeMap::new();
        let root = object_store::path::Path::from(prefix::TABLES);
        let layers = store.list_with_delimiter(Some(&root)).await?;
        for layer in layers.common_prefixes {
            let tables = store.list_with_delimiter(Some(&layer)).await?;
            for t in tables.common_prefixes {
                let parts: Vec<_> = t.parts().map(|p| p.as_ref().to_string()).collect();
                let [_, layer_name, table_name] = parts.as_slice() else { continue };
                let id = TableId::new(layer_name.clone(), table_name.clone());
                if let Some(table) = self.open(&id).await? {
                    out.insert(id, table.version().map_or(0, |v| v as i64));
                }
            }
        }
        Ok(out)
    }

    /// A DataFusion session with every existing table registered as `layer.table` at its latest
    /// version, or at the version given in `pinned`.
    pub async fn session(&self, pinned: &BTreeMap<TableId, i64>) -> Result<SessionContext> {
        let ctx = SessionContext::new();
        self.register_all(&ctx, pinned).await?;
        Ok(ctx)
    }

    /// Register every existing table in `ctx` (see [`Tables::session`]).
    pub async fn register_all(&self, ctx: &SessionContext, pinned: &BTreeMap<TableId, i64>) -> Result<()> {
        for id in self.list().await?.into_keys() {
            let version = pinned.get(&id).copied();
            if let Some(table) = self.open_version(&id, version).await? {
                self.register(ctx, &id, &table).await?;
            }
        }
        Ok(())
    }

    /// Register one opened table in `ctx` as `layer.name` (replacing any earlier registration).
    pub async fn register(&self, ctx: &SessionContext, id: &TableId, table: &DeltaTable) -> Result<()> {
        table.update_datafusion_session(&ctx.state()).map_err(|e| Error::delta(id.to_string(), e))?;
        register_provider(ctx, id, table.table_provider().await?)
    }

    /// Run `sql` against every table and collect the result.
    pub async fn query(&self, sql: &str) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        let ctx = self.session(&BTreeMap::new()).await?;
        Ok(ctx.sql(sql).await?.collect().await?)
    }
}

/// Register `provider` in `ctx` as `layer.name` (creating the layer's schema, replacing any
/// earlier registration of the name).
pub fn register_provider(
    ctx: &SessionContext,
    id: &TableId,
    provider: Arc<dyn datafusion::catalog::TableProvider>,
) -> Result<()> {
    let catalog =
        ctx.catalog("datafusion").ok_or_else(|| Error::Internal("default DataFusion catalog missing".into()))?;
    if catalog.schema(&id.layer).is_none() {
        catalog.register_schema(&id.layer, Arc::new(MemorySchemaProvider::new()))?;
    }
    let name = datafusion::common::TableReference::partial(id.layer.clone(), id.name.clone());
    ctx.deregister_table(name.clone())?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// The commit history of a table, newest first, limited to `limit` entries.
pub async fn history(table: &DeltaTable, limit: usize) -> Result<Vec<deltalake::kernel::CommitInfo>> {
    table
        .history(Some(limit))
        .try_collect()
        .await
        .map_err(|e| Error::delta(table.table_url().to_string(), e))
}

/// A string column as a plain `StringArray`, whatever string encoding the engine chose
/// (DataFusion reads Parquet strings as `Utf8View` by default).
pub fn strings(array: &arrow::array::ArrayRef) -> Result<arrow::array::StringArray> {
    use arrow::array::AsArray;
    let cast = arrow::compute::cast(array, &DataType::Utf8)?;
    Ok(cast.as_string::<i32>().clone())
}
