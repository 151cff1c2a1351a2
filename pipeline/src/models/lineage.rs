//! Lineage: the DAG, and a manifest of every model with its compiled SQL, dependencies and the
//! Delta versions its last build read and wrote (`tributary sql lineage`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::now;
use crate::error::Result;
use crate::tables::Tables;

use super::audit;
use super::compile;
use super::dag::Dag;
use super::parse::Materialized;
use super::project::Project;
use super::state::{InputRead, State};

/// The manifest of a project.
#[derive(Debug, Serialize)]
pub struct Manifest {
    /// When it was written (RFC 3339).
    pub generated_at: String,
    /// The project directory (`None` for the built-in models).
    pub project_dir: Option<String>,
    /// Tables read with `source()`, with their current Delta version.
    pub sources: BTreeMap<String, Option<i64>>,
    /// Models in build order.
    pub models: Vec<ManifestModel>,
}

/// One model in the manifest.
#[derive(Debug, Serialize)]
pub struct ManifestModel {
    /// `layer.name`.
    pub name: String,
    /// File, relative to the project.
    pub file: String,
    /// Description from the header.
    pub description: String,
    /// `table` or `incremental`.
    pub materialized: Materialized,
    /// Row key.
    pub unique_key: Vec<String>,
    /// Delta partition columns.
    pub partition_by: Vec<String>,
    /// SQL hash.
    pub sql_hash: String,
    /// Models it refs.
    pub depends_on: Vec<String>,
    /// Sources it reads.
    pub sources: Vec<String>,
    /// Models that ref it.
    pub dependents: Vec<String>,
    /// Audits, with their blocking flag.
    pub audits: Vec<(String, bool)>,
    /// SQL with refs resolved (`@epoch` left in place for incremental models).
    pub compiled_sql: String,
    /// The table's current Delta version, if it exists.
    pub table_version: Option<i64>,
    /// Builds recorded in the ops catalog: one entry for a table, one per epoch otherwise.
    pub builds: Vec<BuildEntry>,
}

/// A recorded build in the manifest.
#[derive(Debug, Serialize)]
pub struct BuildEntry {
    /// The epoch (incremental models).
    pub epoch: Option<i64>,
    /// Delta version written.
    pub version_written: i64,
    /// Rows written.
    pub rows: i64,
    /// Inputs with the versions read.
    pub inputs: Vec<InputRead>,
    /// SQL hash it was built from.
    pub sql_hash: String,
    /// The run.
    pub run_id: Option<i64>,
    /// When.
    pub built_at: String,
}

/// Build the manifest.
pub async fn manifest(project: &Project, tables: &Tables, state: &State) -> Result<Manifest> {
    let dag = Dag::build(project)?;
    let versions = tables.list().await?;
    let mut sources = BTreeMap::new();
    let mut models = Vec::new();
    for id in &dag.order {
        let Some(m) = project.models.get(id) else { continue };
        for s in m.inputs.iter().filter(|i| !i.is_model) {
            sources.insert(s.table.to_string(), versions.get(&s.table).copied());
        }
        let name = id.to_string();
        let builds = if m.is_incremental() {
            state
                .epoch_builds(&name)?
                .into_iter()
                .map(|(e, b)| BuildEntry {
                    epoch: Some(e),
                    version_written: b.version,
                    rows: b.rows,
                    inputs: b.inputs,
                    sql_hash: b.sql_hash,
                    run_id: b.run_id,
                    built_at: b.built_at,
                })
                .collect()
        } else {
            state
                .table_build(&name)?
                .into_iter()
                .map(|b| BuildEntry {
                    epoch: None,
                    version_written: b.version,
                    rows: b.rows,
                    inputs: b.inputs,
                    sql_hash: b.sql_hash,
                    run_id: b.run_id,
                    built_at: b.built_at,
                })
                .collect()
        };
        models.push(ManifestModel {
            name: name.clone(),
            file: m.file.clone(),
            description: m.header.description.clone(),
            materialized: m.header.materialized,
            unique_key: m.header.unique_key.clone(),
            partition_by: m.header.partition_by.clone(),
            sql_hash: m.sql_hash.clone(),
            depends_on: m.deps().map(ToString::to_string).collect(),
            sources: m.inputs.iter().filter(|i| !i.is_model).map(|i| i.table.to_string()).collect(),
            dependents: dag.dependents.get(id).into_iter().flatten().map(ToString::to_string).collect(),
            audits: audit::declared(m).into_iter().map(|(a, b)| (a.text, b)).collect(),
            compiled_sql: compile::model_sql(project, m, None)?,
            table_version: versions.get(id).copied(),
            builds,
        });
    }
    Ok(Manifest {
        generated_at: now(),
        project_dir: project.dir.as_ref().map(|d| d.display().to_string()),
        sources,
        models,
    })
}

impl Manifest {
    /// The DAG as text, one model per line in build order: `model [kind] ← inputs`.
    pub fn render_dag(&self) -> String {
        let mut out = String::new();
        let width = self.models.iter().map(|m| m.name.len()).chain(self.sources.keys().map(String::len)).max().unwrap_or(0);
        for (s, v) in &self.sources {
            let v = v.map(|v| format!("v{v}")).unwrap_or_else(|| "missing".into());
            out.push_str(&format!("{s:width$}  [source, {v}]\n"));
        }
        for m in &self.models {
            let mut inputs: Vec<String> = m.depends_on.clone();
            inputs.extend(m.sources.iter().cloned());
            let v = m.table_version.map(|v| format!("v{v}")).unwrap_or_else(|| "not built".into());
            out.push_str(&format!("{:width$}  [{}, {v}]  ← {}\n", m.name, m.materialized.as_str(), inputs.join(", ")));
        }
        out
    }
}
