//! What has been built: per model (and per epoch for incremental models) the SQL hash it was built
//! from, the Delta version it wrote, and the inputs it read. Kept in the ops catalog (SQLite).
//!
//! The Delta commit is the source of truth for the data, and it carries the same record in its
//! commit info (`tributary.model`). The catalog row is written after the commit: if the process
//! dies in between, the next run sees the epoch as unbuilt and rebuilds it, which replaces the
//! same rows again. Nothing is lost or duplicated.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, now};
use crate::error::{Error, Result};

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE IF NOT EXISTS model_tables (
    model       TEXT PRIMARY KEY,
    sql_hash    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    rows        INTEGER NOT NULL,
    inputs      TEXT NOT NULL,
    run_id      INTEGER,
    built_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_epochs (
    model       TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    sql_hash    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    rows        INTEGER NOT NULL,
    inputs      TEXT NOT NULL,
    run_id      INTEGER,
    built_at    TEXT NOT NULL,
    PRIMARY KEY (model, epoch)
);
"#];

/// One input as read by a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRead {
    /// `layer.table` (or `config.datanets`).
    pub table: String,
    /// Delta version read (None for config tables).
    pub version: Option<i64>,
    /// Rows of the built epoch in this input, for inputs with an `epoch` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_rows: Option<i64>,
    /// Content hash (config tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// A recorded build of a model (or of one epoch of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// SQL hash of the model when built.
    pub sql_hash: String,
    /// Delta version written.
    pub version: i64,
    /// Rows written (for the epoch, for incremental models).
    pub rows: i64,
    /// Inputs read.
    pub inputs: Vec<InputRead>,
    /// The `runs` row of the build.
    pub run_id: Option<i64>,
    /// When (RFC 3339).
    pub built_at: String,
}

/// Build records in the ops catalog.
#[derive(Debug, Clone)]
pub struct State {
    catalog: Arc<Catalog>,
}

impl State {
    /// Open the records (creating their tables on first use).
    pub fn open(catalog: Arc<Catalog>) -> Result<State> {
        catalog.migrate("models", MIGRATIONS)?;
        Ok(State { catalog })
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The last build of a `table` model.
    pub fn table_build(&self, model: &str) -> Result<Option<Build>> {
        self.catalog.with_conn(|c| {
            c.query_row(
                "SELECT sql_hash, version, rows, inputs, run_id, built_at FROM model_tables WHERE model = ?1",
                [model],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()?
            .map(|(sql_hash, version, rows, inputs, run_id, built_at)| {
                Ok(Build { sql_hash, version, rows, inputs: parse_inputs(&inputs)?, run_id, built_at })
            })
            .transpose()
        })
    }

    /// Every built epoch of an incremental model.
    pub fn epoch_builds(&self, model: &str) -> Result<BTreeMap<i64, Build>> {
        self.catalog.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT epoch, sql_hash, version, rows, inputs, run_id, built_at FROM model_epochs WHERE model = ?1",
            )?;
            let rows = stmt
                .query_map([model], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(e, sql_hash, version, rows, inputs, run_id, built_at)| {
                    Ok((e, Build { sql_hash, version, rows, inputs: parse_inputs(&inputs)?, run_id, built_at }))
                })
                .collect()
        })
    }

    /// Record a `table` model's build.
    pub fn record_table(&self, model: &str, b: &Build) -> Result<()> {
        let inputs = inputs_json(&b.inputs)?;
        self.catalog.with_conn(|c| {
            c.execute(
                "INSERT INTO model_tables(model, sql_hash, version, rows, inputs, run_id, built_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(model) DO UPDATE SET sql_hash = excluded.sql_hash, version = excluded.version,
                   rows = excluded.rows, inputs = excluded.inputs, run_id = excluded.run_id, built_at = excluded.built_at",
                params![model, b.sql_hash, b.version, b.rows, inputs, b.run_id, b.built_at],
            )?;
            Ok(())
        })
    }

    /// Record built epochs; with `replace_all`, forget every other epoch of the model (a full
    /// rebuild replaced the whole table).
    pub fn record_epochs(&self, model: &str, builds: &BTreeMap<i64, Build>, replace_all: bool) -> Result<()> {
        let rows: Vec<(i64, &Build, String)> =
            builds.iter().map(|(e, b)| Ok((*e, b, inputs_json(&b.inputs)?))).collect::<Result<_>>()?;
        self.catalog.with_conn(|c| {
            let tx = c.transaction()?;
            if replace_all {
                tx.execute("DELETE FROM model_epochs WHERE model = ?1", [model])?;
            }
            for (e, b, inputs) in &rows {
                tx.execute(
                    "INSERT INTO model_epochs(model, epoch, sql_hash, version, rows, inputs, run_id, built_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(model, epoch) DO UPDATE SET sql_hash = excluded.sql_hash,
                       version = excluded.version, rows = excluded.rows, inputs = excluded.inputs,
                       run_id = excluded.run_id, built_at = excluded.built_at",
                    params![model, e, b.sql_hash, b.version, b.rows, inputs, b.run_id, b.built_at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }
}

/// A new build record stamped now.
pub fn build(sql_hash: &str, version: i64, rows: i64, inputs: Vec<InputRead>, run_id: Option<i64>) -> Build {
    Build { sql_hash: sql_hash.into(), version, rows, inputs, run_id, built_at: now() }
}

fn inputs_json(inputs: &[InputRead]) -> Result<String> {
    serde_json::to_string(inputs).map_err(|e| Error::Internal(format!("encoding inputs: {e}")))
}

fn parse_inputs(s: &str) -> Result<Vec<InputRead>> {
    serde_json::from_str(s).map_err(|e| Error::Internal(format!("model state inputs are not valid JSON: {e}")))
}
