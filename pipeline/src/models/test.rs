//! `tributary sql test`: compile every model against the current tables and run every audit
//! against the committed data.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::tables::Tables;

use super::audit;
use super::compile;
use super::dag::Dag;
use super::project::Project;
use super::session;

/// One line of the test report.
#[derive(Debug, Serialize)]
pub struct TestResult {
    /// The model.
    pub model: String,
    /// `compile` for the compile check, else the audit as declared.
    pub check: String,
    /// Whether a failure is blocking.
    pub blocking: bool,
    /// `pass`, `fail`, `error` or `not_built`.
    pub status: String,
    /// Failing rows (audits).
    pub failing_rows: usize,
    /// First failing rows, or the error.
    pub detail: String,
}

impl TestResult {
    /// Whether this result should fail `sql test`.
    pub fn is_failure(&self) -> bool {
        self.status == "error" || (self.status == "fail" && self.blocking)
    }
}

/// Compile every model and run every audit on the committed tables.
pub async fn test(project: &Project, config: &Config, tables: &Tables) -> Result<Vec<TestResult>> {
    let dag = Dag::build(project)?;
    let (ctx, snapshot) = session::open(tables, config, &BTreeMap::new()).await?;
    let mut out = Vec::new();
    for id in &dag.order {
        let Some(model) = project.models.get(id) else { continue };
        let name = id.to_string();
        let missing: Vec<String> =
            model.inputs.iter().filter(|i| !snapshot.versions.contains_key(&i.table)).map(|i| i.table.to_string()).collect();
        let result = |check: &str, blocking, status: &str, failing_rows, detail: String| TestResult {
            model: name.clone(),
            check: check.into(),
            blocking,
            status: status.into(),
            failing_rows,
            detail,
        };
        if !missing.is_empty() {
            out.push(result("compile", true, "not_built", 0, format!("inputs not built yet: {}", missing.join(", "))));
            continue;
        }
        let sql = compile::model_sql(project, model, model.is_incremental().then_some(0))?;
        match ctx.sql(&sql).await {
            Ok(_) => out.push(result("compile", true, "pass", 0, String::new())),
            Err(e) => {
                out.push(result("compile", true, "error", 0, compile::locate(&model.file, &sql, e).to_string()));
                continue;
            }
        }
        if !snapshot.versions.contains_key(id) {
            out.push(result("audits", true, "not_built", 0, format!("{name} has not been built yet")));
            continue;
        }
        match audit::run(&ctx, project, model, &name).await {
            Ok(outcomes) => {
                for a in outcomes {
                    let status = if a.passed() { "pass" } else { "fail" };
                    out.push(result(&a.audit, a.blocking, status, a.failing_rows, a.sample));
                }
            }
            Err(e @ Error::Model { .. }) => out.push(result("audits", true, "error", 0, e.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
