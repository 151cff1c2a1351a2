//! Publishing a model's staged result to Delta in one atomic commit.
//!
//! A `table` model (and a full build of an incremental one) overwrites the whole table, schema
//! included. An incremental build replaces exactly the epochs it built: one Delta overwrite with a
//! `replaceWhere` predicate `epoch IN (…)`, which removes the old files of those epochs and adds the
//! new ones in the same commit, so readers see either the old epochs or the new ones, never both
//! or neither. A table that does not exist yet is created by that same commit.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use deltalake::DeltaTableBuilder;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;

use crate::error::{Error, Result};
use crate::tables::Tables;

use super::project::Model;

/// Commit-info key holding the build record.
pub const META_MODEL: &str = "tributary.model";

/// The type a column is stored as: view types become their plain forms and unsigned integers the
/// next signed type that holds them (Delta has neither; readers such as polars refuse a UInt64
/// Parquet column under a `long` Delta column). `UInt64` becomes `Int64`; a value above
/// `i64::MAX` fails the cast rather than wrapping (see [`to_storage`]).
pub fn storage_type(t: &DataType) -> DataType {
    match t {
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Dictionary(_, v) => storage_type(v),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
            DataType::List(Arc::new(storage_field(f)))
        }
        DataType::Struct(fields) => DataType::Struct(Fields::from(fields.iter().map(|f| storage_field(f)).collect::<Vec<_>>())),
        other => other.clone(),
    }
}

fn storage_field(f: &Field) -> Field {
    // Every column is nullable in model tables: DataFusion's inferred nullability can differ
    // between two builds of the same SQL, and Delta would refuse the second commit.
    Field::new(f.name(), storage_type(f.data_type()), true)
}

/// The schema a model's result is stored with.
pub fn storage_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(schema.fields().iter().map(|f| storage_field(f)).collect::<Vec<_>>()))
}

/// Cast `batch` to `schema` (see [`storage_schema`]).
pub fn to_storage(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                // Not `safe`: a value that does not fit is an error, never a silent null.
                let options = arrow::compute::CastOptions { safe: false, ..Default::default() };
                arrow::compute::cast_with_options(c, f.data_type(), &options)
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// How the staged rows replace the table's.
#[derive(Debug, Clone)]
pub enum Replace {
    /// Replace the whole table (and its schema).
    All,
    /// Replace exactly these epochs.
    Epochs(Vec<i64>),
}

/// Commit `batches` (already in `schema`) as the new content of `model`'s table; returns the
/// Delta version written.
pub async fn publish(
    tables: &Tables,
    model: &Model,
    schema: SchemaRef,
    mut batches: Vec<RecordBatch>,
    replace: &Replace,
    record: serde_json::Value,
) -> Result<i64> {
    let id = &model.id;
    let name = id.to_string();
    for p in &model.header.partition_by {
        if schema.field_with_name(p).is_err() {
            return Err(Error::Model {
                file: model.file.clone(),
                line: None,
                message: format!("partition_by column `{p}` is not a column of the model's result"),
            });
        }
    }
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema.clone()));
    }
    let table = match tables.open(id).await? {
        Some(t) => t,
        None => {
            if let Some(dir) = tables.warehouse().local_dir() {
                // delta-kernel refuses a local table location that does not exist yet.
                std::fs::create_dir_all(dir.join(id.key()))?;
            }
            let url = tables.warehouse().url_of(&id.key())?;
            DeltaTableBuilder::from_url(url.clone())
                .map_err(|e| Error::delta(&name, e))?
                .with_storage_backend(tables.warehouse().root_store().clone(), url)
                .build()
                .map_err(|e| Error::delta(&name, e))?
        }
    };
    let exists = table.version().is_some();
    let props = CommitProperties::default().with_metadata([(META_MODEL.to_string(), record)]);
    let mut write = table
        .write(batches)
        .with_save_mode(SaveMode::Overwrite)
        .with_partition_columns(model.header.partition_by.clone())
        .with_table_name(name.clone())
        .with_description(model.header.description.clone())
        .with_commit_properties(props);
    match replace {
        Replace::All => write = write.with_schema_mode(SchemaMode::Overwrite),
        Replace::Epochs(epochs) if exists => {
            if epochs.is_empty() {
                return Err(Error::Internal(format!("{name}: an incremental commit with no epochs")));
            }
            let list = epochs.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
            write = write.with_replace_where(format!("epoch IN ({list})"));
        }
        Replace::Epochs(_) => {}
    }
    let t = write.await.map_err(|e| Error::delta(&name, e))?;
    t.version().map(|v| v as i64).ok_or_else(|| Error::Internal(format!("{name}: no version after commit")))
}
