//! Loading a project: every model and custom audit under a `sql/` directory.
//!
//! Layout: `sql/<layer>/<name>.sql` is the model of table `<layer>.<name>`; `sql/audits/<name>.sql`
//! is a custom audit. Nothing else is allowed, so a typo in a folder name is an error rather than a
//! silently ignored model. `bronze` and `ops` belong to ingestion: models cannot write them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::tables::TableId;

use super::parse::{self, Header, Materialized, Token};
use super::udf::UDF_VERSION;

/// Layers models may not write (they are written by Rust code).
pub const RESERVED_LAYERS: &[&str] = &["bronze", "ops", "config"];
/// The folder of custom audits.
pub const AUDITS_DIR: &str = "audits";

/// A table a model reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Input {
    /// The table.
    pub table: TableId,
    /// True for `ref()` (another model), false for `source()`.
    pub is_model: bool,
    /// The first line mentioning it.
    pub line: usize,
}

/// One model: a SQL file and what it declares.
#[derive(Debug, Clone)]
pub struct Model {
    /// The table it materializes.
    pub id: TableId,
    /// Its file, relative to the project directory (`silver/contributions_dedup.sql`).
    pub file: String,
    /// The file's text.
    pub sql: String,
    /// The parsed header.
    pub header: Header,
    /// Tables it reads via `ref()` and `source()`, deduplicated, in first-use order.
    pub inputs: Vec<Input>,
    /// Macros it uses (`epoch`, …).
    pub macros: BTreeSet<String>,
    /// Hex sha256 over the SQL body, the materialization settings and the UDF version: a change
    /// means the stored result no longer matches the definition.
    pub sql_hash: String,
}

impl Model {
    /// Models this one refs.
    pub fn deps(&self) -> impl Iterator<Item = &TableId> {
        self.inputs.iter().filter(|i| i.is_model).map(|i| &i.table)
    }

    /// Whether it is built one epoch at a time.
    pub fn is_incremental(&self) -> bool {
        self.header.materialized == Materialized::Incremental
    }
}

/// A custom audit file.
#[derive(Debug, Clone)]
pub struct CustomAudit {
    /// The audit's name (file stem).
    pub name: String,
    /// Its file, relative to the project directory.
    pub file: String,
    /// Its SQL (a SELECT returning failing rows; `@this` is the audited table).
    pub sql: String,
    /// Its description (the `description` key of an optional `/* @model` header, or empty).
    pub description: String,
}

/// Every model and custom audit of a project.
#[derive(Debug, Clone)]
pub struct Project {
    /// Where the files came from (`None` for the built-in copy).
    pub dir: Option<PathBuf>,
    /// The models by table.
    pub models: BTreeMap<TableId, Model>,
    /// Custom audits by name.
    pub audits: BTreeMap<String, CustomAudit>,
}

/// The models shipped with Tributary (the repository's `sql/` directory), embedded in the binary
/// so `tributary demo` works from any directory.
pub const BUILTIN: &[(&str, &str)] = &[
    ("silver/contributions_dedup.sql", include_str!("../../../sql/silver/contributions_dedup.sql")),
    ("silver/quality_scores.sql", include_str!("../../../sql/silver/quality_scores.sql")),
    ("gold/training_set.sql", include_str!("../../../sql/gold/training_set.sql")),
    ("gold/contributor_stats.sql", include_str!("../../../sql/gold/contributor_stats.sql")),
    ("audits/canonical_is_earliest.sql", include_str!("../../../sql/audits/canonical_is_earliest.sql")),
    ("audits/accepted_rows_are_canonical.sql", include_str!("../../../sql/audits/accepted_rows_are_canonical.sql")),
    ("audits/stats_add_up.sql", include_str!("../../../sql/audits/stats_add_up.sql")),
];

impl Project {
    /// Load every `.sql` file under `dir`.
    pub fn load(dir: &Path) -> Result<Project> {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::Config(format!("cannot read the SQL project directory {}: {e}", dir.display())))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if !path.is_dir() {
                if path.extension().is_some_and(|e| e == "sql") {
                    return Err(Error::Model {
                        file: rel(dir, &path),
                        line: None,
                        message: "models live in <layer>/<name>.sql (e.g. silver/my_model.sql)".into(),
                    });
                }
                continue;
            }
            for f in std::fs::read_dir(&path)? {
                let f = f?.path();
                if f.is_dir() {
                    return Err(Error::Model {
                        file: rel(dir, &f),
                        line: None,
                        message: "nested folders are not allowed: models live in <layer>/<name>.sql".into(),
                    });
                }
                if f.extension().is_some_and(|e| e == "sql") {
                    let text = std::fs::read_to_string(&f)?;
                    files.push((rel(dir, &f), text));
                }
            }
        }
        let mut p = Self::from_files(files)?;
        p.dir = Some(dir.to_path_buf());
        Ok(p)
    }

    /// The built-in models (see [`BUILTIN`]).
    pub fn builtin() -> Result<Project> {
        Self::from_files(BUILTIN.iter().map(|(f, t)| (f.to_string(), t.to_string())).collect())
    }

    /// Build a project from `(relative path, text)` pairs.
    pub fn from_files(mut files: Vec<(String, String)>) -> Result<Project> {
        files.sort();
        let mut audits = BTreeMap::new();
        let mut pending = Vec::new();
        for (file, text) in files {
            let Some((layer, stem)) =
                file.strip_suffix(".sql").and_then(|f| f.split_once('/')).map(|(l, s)| (l.to_string(), s.to_string()))
            else {
                return Err(Error::Model {
                    file,
                    line: None,
                    message: "models live in <layer>/<name>.sql".into(),
                });
            };
            if layer == AUDITS_DIR {
                let header = parse::parse_header(&file, &text)?;
                audits.insert(
                    stem.clone(),
                    CustomAudit { name: stem, file: file.clone(), description: header.description, sql: text },
                );
                continue;
            }
            let Some(id) = TableId::parse(&format!("{layer}.{stem}")) else {
                return Err(Error::Model {
                    file,
                    line: None,
                    message: "layer and model names must be lower-case letters, digits and `_`".into(),
                });
            };
            if RESERVED_LAYERS.contains(&layer.as_str()) {
                return Err(Error::Model {
                    file,
                    line: None,
                    message: format!("layer `{layer}` is written by Tributary itself; put models in silver/, gold/ or another layer"),
                });
            }
            let header = parse::parse_header(&file, &text)?;
            pending.push((id, file, text, header));
        }
        let ids: Vec<TableId> = pending.iter().map(|p| p.0.clone()).collect();
        let mut models = BTreeMap::new();
        for (id, file, text, header) in pending {
            let mut inputs: Vec<Input> = Vec::new();
            let mut macros = BTreeSet::new();
            parse::expand(&file, &text, |tok, line| {
                let (table, is_model) = match tok {
                    Token::Ref(name) => (resolve_ref(&ids, &file, name, line)?, true),
                    Token::Source(layer, name) => (
                        TableId::parse(&format!("{layer}.{name}")).ok_or_else(|| Error::Model {
                            file: file.clone(),
                            line: Some(line),
                            message: format!("source('{layer}', '{name}') is not a valid table name"),
                        })?,
                        false,
                    ),
                    Token::Macro(m) => {
                        macros.insert(m.to_ascii_lowercase());
                        return Ok(String::new());
                    }
                };
                if !is_model && ids.contains(&table) {
                    return Err(Error::Model {
                        file: file.clone(),
                        line: Some(line),
                        message: format!("`{table}` is a model of this project: use ref('{table}') so it is built first"),
                    });
                }
                if table == id {
                    return Err(Error::Cycle { cycle: vec![id.to_string(), id.to_string()] });
                }
                if !inputs.iter().any(|i| i.table == table) {
                    inputs.push(Input { table, is_model, line });
                }
                Ok(String::new())
            })?;
            check_macros(&file, &text, &header, &macros)?;
            let sql_hash = hash_model(&text, &header);
            models.insert(id.clone(), Model { id, file, sql: text, header, inputs, macros, sql_hash });
        }
        let project = Project { dir: None, models, audits };
        project.check_audits()?;
        Ok(project)
    }

    /// The model named `name` (`layer.name`, or a bare name if unambiguous).
    pub fn model(&self, name: &str) -> Result<&Model> {
        let ids: Vec<TableId> = self.models.keys().cloned().collect();
        let id = resolve_name(&ids, name).map_err(|suggestion| {
            Error::NotFound(format!(
                "model `{name}`{}",
                suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
            ))
        })?;
        self.models.get(&id).ok_or_else(|| Error::Internal(format!("resolved model {id} is missing")))
    }

    fn check_audits(&self) -> Result<()> {
        for m in self.models.values() {
            for a in m.header.audits.iter().chain(&m.header.warn_audits) {
                if super::audit::BUILTINS.contains(&a.name.as_str()) || self.audits.contains_key(&a.name) {
                    continue;
                }
                let names = super::audit::BUILTINS.iter().map(|s| s.to_string()).chain(self.audits.keys().cloned());
                let best = names.min_by_key(|n| parse::edit_distance(n, &a.name));
                return Err(Error::Model {
                    file: m.file.clone(),
                    line: Some(a.line),
                    message: format!(
                        "unknown audit `{}` (not a built-in, and there is no {AUDITS_DIR}/{}.sql){}",
                        a.name,
                        a.name,
                        best.map(|b| format!("; did you mean `{b}`?")).unwrap_or_default()
                    ),
                });
            }
        }
        Ok(())
    }
}

fn rel(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir).unwrap_or(p).to_string_lossy().replace('\\', "/")
}

fn check_macros(file: &str, text: &str, header: &Header, macros: &BTreeSet<String>) -> Result<()> {
    let line_of = |m: &str| {
        text.find(&format!("@{m}")).map(|p| 1 + text[..p].matches('\n').count())
    };
    for m in macros {
        let ok = match m.as_str() {
            "epoch" => header.materialized == Materialized::Incremental,
            _ => false,
        };
        if !ok {
            let message = if m == "epoch" {
                "@epoch is only defined in incremental models (materialized = \"incremental\")".to_string()
            } else {
                format!("unknown macro @{m} (models know @epoch)")
            };
            return Err(Error::Model { file: file.into(), line: line_of(m), message });
        }
    }
    if header.materialized == Materialized::Incremental && !macros.contains("epoch") {
        return Err(Error::Model {
            file: file.into(),
            line: Some(header.body_line),
            message: "an incremental model must restrict its rows to the epoch being built with @epoch \
                      (e.g. `WHERE epoch = @epoch`)"
                .into(),
        });
    }
    Ok(())
}

/// Resolve a `ref()` name against the project's models.
fn resolve_ref(ids: &[TableId], file: &str, name: &str, line: usize) -> Result<TableId> {
    resolve_name(ids, name).map_err(|suggestion| Error::UnknownRef {
        file: file.into(),
        line,
        name: name.into(),
        suggestion,
    })
}

/// `layer.name` or a bare `name` that only one layer has; on failure, the closest model name.
fn resolve_name(ids: &[TableId], name: &str) -> std::result::Result<TableId, Option<String>> {
    if let Some(id) = TableId::parse(name) {
        if ids.contains(&id) {
            return Ok(id);
        }
    } else {
        let matches: Vec<&TableId> = ids.iter().filter(|i| i.name == name).collect();
        if let [one] = matches.as_slice() {
            return Ok((*one).clone());
        }
    }
    let best = ids
        .iter()
        .map(|id| {
            let full = id.to_string();
            let d = parse::edit_distance(name, &full).min(parse::edit_distance(name, &id.name));
            (d, full)
        })
        .min();
    Err(best.filter(|(d, _)| *d <= name.len().max(3) / 2 + 2).map(|(_, s)| s))
}

fn hash_model(text: &str, header: &Header) -> String {
    let mut h = Sha256::new();
    h.update(format!("udf-v{UDF_VERSION}\n"));
    h.update(format!("{}|{:?}|{:?}\n", header.materialized.as_str(), header.unique_key, header.partition_by));
    // The body only: editing the description or the audits does not invalidate the data. Lines
    // are right-trimmed so trailing whitespace changes nothing either.
    let body: Vec<&str> = text.lines().skip(header.body_line.saturating_sub(1)).map(str::trim_end).collect();
    h.update(body.join("\n").trim().as_bytes());
    hex::encode(h.finalize())
}
