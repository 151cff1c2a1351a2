//! Ad-hoc, read-only SQL over every table of the warehouse, with time travel
//! (`tributary sql query "SQL" --as-of …`).

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::context::SQLOptions;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::tables::{TableId, Tables};

use super::session;

/// The pseudo-file named in query errors.
pub const QUERY_FILE: &str = "<query>";

/// A time-travel pin: `layer.table=VERSION`, or a bare `VERSION` for the one table a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsOf {
    /// The table, or `None` for "the table the query reads".
    pub table: Option<TableId>,
    /// The Delta version.
    pub version: i64,
}

impl std::str::FromStr for AsOf {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let (table, v) = match s.rsplit_once('=') {
            Some((t, v)) => (Some(TableId::parse(t.trim()).ok_or_else(|| format!("`{t}` is not a layer.table name"))?), v),
            None => (None, s),
        };
        let version = v.trim().parse::<i64>().map_err(|_| format!("`{v}` is not a version number"))?;
        if version < 0 {
            return Err("versions start at 0".into());
        }
        Ok(AsOf { table, version })
    }
}

/// Builds and runs one ad-hoc query.
pub struct QueryBuilder {
    tables: Tables,
    config: std::sync::Arc<Config>,
    sql: String,
    as_of: Vec<AsOf>,
}

impl QueryBuilder {
    /// A query of `sql` over the latest version of every table.
    pub fn new(tables: Tables, config: std::sync::Arc<Config>, sql: impl Into<String>) -> Self {
        QueryBuilder { tables, config, sql: sql.into(), as_of: vec![] }
    }

    /// Read tables at these versions.
    pub fn with_as_of(mut self, as_of: Vec<AsOf>) -> Self {
        self.as_of = as_of;
        self
    }

    /// Run the query; returns the result schema and rows.
    pub async fn execute(self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let bad = |m: String| Error::Model { file: QUERY_FILE.into(), line: None, message: m };
        let probe = session::context();
        let state = probe.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(&self.sql, &dialect).map_err(|e| super::compile::locate(QUERY_FILE, &self.sql, e))?;
        let referenced: Vec<TableId> = state
            .resolve_table_references(&statement)?
            .iter()
            .filter_map(|r| Some(TableId::new(r.schema()?.to_string(), r.table().to_string())))
            .collect();
        let existing = self.tables.list().await?;
        let mut pinned = BTreeMap::new();
        for a in &self.as_of {
            let id = match &a.table {
                Some(t) => t.clone(),
                None => {
                    let delta: Vec<&TableId> = referenced.iter().filter(|t| existing.contains_key(*t)).collect();
                    match delta.as_slice() {
                        [one] => (*one).clone(),
                        [] => return Err(bad("--as-of VERSION: the query reads no Delta table".into())),
                        many => {
                            return Err(bad(format!(
                                "--as-of VERSION is ambiguous: the query reads {}; write --as-of layer.table=VERSION",
                                many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                            )));
                        }
                    }
                }
            };
            let Some(latest) = existing.get(&id) else {
                return Err(Error::NotFound(format!("table {id} (for --as-of)")));
            };
            if a.version > *latest {
                return Err(bad(format!("{id} has no version {} (latest is {latest})", a.version)));
            }
            pinned.insert(id, a.version);
        }
        let (ctx, _) = session::open(&self.tables, &self.config, &pinned).await?;
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let df = ctx
            .sql_with_options(&self.sql, options)
            .await
            .map_err(|e| super::compile::locate(QUERY_FILE, &self.sql, e))?;
        let schema: SchemaRef = std::sync::Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(|e| super::compile::locate(QUERY_FILE, &self.sql, e))?;
        Ok((schema, batches))
    }
}

/// How query results are written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of row objects.
    Json,
    /// A Parquet file.
    Parquet,
}

/// Encode query results (an empty result still gets its header or schema).
pub fn encode(schema: &SchemaRef, batches: &[RecordBatch], encoding: Encoding) -> Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::new();
    match encoding {
        Encoding::Table => {
            let text = if batches.iter().all(|b| b.num_rows() == 0) {
                arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(schema.clone())])?
            } else {
                arrow::util::pretty::pretty_format_batches(batches)?
            };
            buf.extend(text.to_string().bytes());
            buf.push(b'\n');
        }
        Encoding::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut buf);
            w.write(&RecordBatch::new_empty(schema.clone()))?;
            for b in batches {
                w.write(b)?;
            }
        }
        Encoding::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut buf);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            drop(w);
            if buf.is_empty() {
                buf.extend(b"[]");
            }
            buf.push(b'\n');
        }
        Encoding::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema.clone(), None)
                .map_err(|e| Error::Internal(format!("parquet writer: {e}")))?;
            for b in batches {
                w.write(b).map_err(|e| Error::Internal(format!("parquet write: {e}")))?;
            }
            w.close().map_err(|e| Error::Internal(format!("parquet close: {e}")))?;
        }
    }
    Ok(buf)
}
