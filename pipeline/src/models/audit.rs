//! Audits: SELECTs that return failing rows.
//!
//! Built-ins (dbt/SQLMesh names): `unique(col, …)`, `not_null(col, …)`,
//! `accepted_values(col, 'v1', 'v2', …)`, `accepted_range(col, min, max)` and
//! `relationships(col, ref('model') | source('layer', 'table'), to_col)`. A custom audit is a file
//! `sql/audits/<name>.sql` whose SELECT uses `@this` for the audited table and `@<arg>` for named
//! arguments (`my_audit(threshold = 0.5)`). A model's `unique_key` adds an implicit blocking
//! `unique(…)` audit.
//!
//! The runner audits the *staged* result of a build (write–audit–publish): a failing blocking audit
//! stops the model before its Delta commit; `tributary sql test` audits the committed tables.

use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::error::{Error, Result};

use super::compile;
use super::parse::{AuditArg, AuditSpec};
use super::project::{Model, Project};

/// Names of the built-in audits.
pub const BUILTINS: &[&str] = &["unique", "not_null", "accepted_values", "accepted_range", "relationships"];

/// Failing rows shown per audit.
pub const SAMPLE_ROWS: usize = 10;

/// The result of one audit.
#[derive(Debug, Clone, Serialize)]
pub struct AuditOutcome {
    /// The declaration as written (`unique(contribution_id)`).
    pub audit: String,
    /// Whether a failure stops the commit.
    pub blocking: bool,
    /// Failing rows found.
    pub failing_rows: usize,
    /// The first failing rows, pretty-printed (empty when it passed).
    pub sample: String,
    /// The compiled SQL that was run.
    pub sql: String,
}

impl AuditOutcome {
    /// Whether the audit found no failing rows.
    pub fn passed(&self) -> bool {
        self.failing_rows == 0
    }
}

/// A model's audits with their blocking flag, including the implicit `unique(unique_key)`.
pub fn declared(model: &Model) -> Vec<(AuditSpec, bool)> {
    let mut out: Vec<(AuditSpec, bool)> = Vec::new();
    let h = &model.header;
    if !h.unique_key.is_empty() {
        let implied = format!("unique({})", h.unique_key.join(", "));
        let already = h.audits.iter().chain(&h.warn_audits).any(|a| {
            a.name == "unique" && a.args.iter().map(arg_text).collect::<Vec<_>>() == h.unique_key
        });
        if !already {
            out.push((
                AuditSpec {
                    name: "unique".into(),
                    args: h.unique_key.iter().map(|k| AuditArg::Ident(k.clone())).collect(),
                    text: implied,
                    line: 1,
                },
                true,
            ));
        }
    }
    out.extend(h.audits.iter().cloned().map(|a| (a, true)));
    out.extend(h.warn_audits.iter().cloned().map(|a| (a, false)));
    out
}

fn arg_text(a: &AuditArg) -> String {
    match a {
        AuditArg::Ident(s) | AuditArg::Literal(s) | AuditArg::Table(s) => s.clone(),
        AuditArg::Named(k, v) => format!("{k} = {v}"),
    }
}

/// The SQL of `spec` over table `this`, and the file its errors belong to.
pub fn audit_sql(project: &Project, model: &Model, spec: &AuditSpec, this: &str) -> Result<(String, String)> {
    let bad = |m: &str| Error::Model {
        file: model.file.clone(),
        line: Some(spec.line),
        message: format!("audit `{}`: {m}", spec.text),
    };
    let idents = |args: &[AuditArg]| -> Result<Vec<String>> {
        args.iter()
            .map(|a| match a {
                AuditArg::Ident(c) => Ok(c.clone()),
                other => Err(bad(&format!("`{}` is not a column name", arg_text(other)))),
            })
            .collect()
    };
    let literal = |a: &AuditArg| -> Result<String> {
        match a {
            AuditArg::Literal(v) => Ok(v.clone()),
            other => Err(bad(&format!("`{}` is not a literal (quote strings: 'value')", arg_text(other)))),
        }
    };
    let args = &spec.args;
    let sql = match spec.name.as_str() {
        "unique" => {
            let cols = idents(args)?;
            if cols.is_empty() {
                return Err(bad("unique() needs at least one column"));
            }
            let list = cols.join(", ");
            let not_null = cols.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ");
            format!("SELECT {list}, count(*) AS occurrences FROM {this} WHERE {not_null} GROUP BY {list} HAVING count(*) > 1")
        }
        "not_null" => {
            let cols = idents(args)?;
            if cols.is_empty() {
                return Err(bad("not_null() needs at least one column"));
            }
            let any_null = cols.iter().map(|c| format!("{c} IS NULL")).collect::<Vec<_>>().join(" OR ");
            format!("SELECT * FROM {this} WHERE {any_null}")
        }
        "accepted_values" => {
            let [AuditArg::Ident(col), values @ ..] = args.as_slice() else {
                return Err(bad("accepted_values(column, value, …) starts with a column"));
            };
            if values.is_empty() {
                return Err(bad("accepted_values() needs at least one value"));
            }
            let vals = values.iter().map(literal).collect::<Result<Vec<_>>>()?.join(", ");
            format!("SELECT * FROM {this} WHERE {col} IS NOT NULL AND {col} NOT IN ({vals})")
        }
        "accepted_range" => {
            let [AuditArg::Ident(col), min, max] = args.as_slice() else {
                return Err(bad("accepted_range(column, min, max) takes a column and two bounds"));
            };
            let (min, max) = (literal(min)?, literal(max)?);
            format!("SELECT * FROM {this} WHERE {col} < {min} OR {col} > {max}")
        }
        "relationships" => {
            let [AuditArg::Ident(col), AuditArg::Table(to), AuditArg::Ident(to_col)] = args.as_slice() else {
                return Err(bad("relationships(column, ref('model') or source('layer', 'table'), to_column)"));
            };
            let to = compile::table_expr(project, &model.file, spec.line, to)?;
            format!(
                "SELECT * FROM {this} AS child WHERE child.{col} IS NOT NULL AND NOT EXISTS \
                 (SELECT 1 FROM {to} AS parent WHERE parent.{to_col} = child.{col})"
            )
        }
        custom => {
            let audit = project.audits.get(custom).ok_or_else(|| bad("unknown audit"))?;
            let named = args
                .iter()
                .map(|a| match a {
                    AuditArg::Named(k, v) => Ok((k.clone(), v.clone())),
                    other => Err(bad(&format!("custom audits take named arguments (`name = value`), got `{}`", arg_text(other)))),
                })
                .collect::<Result<Vec<_>>>()?;
            let sql = compile::audit_sql(project, &audit.file, &audit.sql, this, &named)?;
            return Ok((sql, audit.file.clone()));
        }
    };
    Ok((sql, model.file.clone()))
}

/// Run every audit of `model` against table `this` in `ctx`.
pub async fn run(ctx: &SessionContext, project: &Project, model: &Model, this: &str) -> Result<Vec<AuditOutcome>> {
    let mut out = Vec::new();
    for (spec, blocking) in declared(model) {
        let (sql, file) = audit_sql(project, model, &spec, this)?;
        let locate = |e: datafusion::error::DataFusionError| match compile::locate(&file, &sql, e) {
            // Built-in audits are generated: point at the declaration, not at generated SQL.
            Error::Model { message, .. } if file == model.file => Error::Model {
                file: model.file.clone(),
                line: Some(spec.line),
                message: format!("audit `{}`: {message}", spec.text),
            },
            other => other,
        };
        let df = ctx.sql(&sql).await.map_err(locate)?;
        let failing = df.clone().count().await.map_err(locate)?;
        let sample = if failing > 0 {
            let rows = df.limit(0, Some(SAMPLE_ROWS)).map_err(locate)?.collect().await.map_err(locate)?;
            arrow::util::pretty::pretty_format_batches(&rows)?.to_string()
        } else {
            String::new()
        };
        out.push(AuditOutcome { audit: spec.text.clone(), blocking, failing_rows: failing, sample, sql });
    }
    Ok(out)
}
