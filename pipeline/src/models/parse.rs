//! Reading one model file: its `/* @model … */` header and the macros in its SQL.
//!
//! A model file is one SELECT, optionally opened by a header: a block comment starting with
//! `@model` whose body is TOML (so the file stays valid SQL for any other engine):
//!
//! ```sql
//! /* @model
//! description  = "One row per contribution with its canonical row."
//! materialized = "incremental"          # "table" (default) or "incremental" (by epoch)
//! unique_key   = ["contribution_id"]
//! audits       = ["unique(contribution_id)", "not_null(canonical_id)"]   # blocking
//! warn_audits  = ["accepted_range(jaccard, 0, 1)"]                       # reported only
//! */
//! SELECT … FROM ref('silver.other') JOIN source('bronze', 'contributions') … WHERE epoch = @epoch
//! ```
//!
//! In the SQL, `ref('name')` names another model, `source('layer', 'table')` a table written
//! outside the project (ingest), and `@name` a macro: `@epoch` is the epoch being built by an
//! incremental model, `@this` the audited table in an audit. The scanner skips comments, string
//! literals and quoted identifiers, and replacements never add or remove lines, so a line number in
//! an engine's error message is a line of the file.

use serde::Deserialize;

use crate::error::{Error, Result};

/// How a model's result is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Materialized {
    /// The whole table is replaced by each build, in one Delta commit.
    #[default]
    Table,
    /// Built one epoch at a time; a build replaces exactly the epochs it built, in one commit.
    Incremental,
}

impl Materialized {
    /// `table` or `incremental`.
    pub fn as_str(self) -> &'static str {
        match self {
            Materialized::Table => "table",
            Materialized::Incremental => "incremental",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    description: Option<String>,
    materialized: Option<Materialized>,
    unique_key: Option<OneOrMany>,
    partition_by: Option<Vec<String>>,
    audits: Option<Vec<String>>,
    warn_audits: Option<Vec<String>>,
}

/// A model's header, with defaults applied.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Header {
    /// One line for `lineage` and the Delta table description.
    pub description: String,
    /// `table` or `incremental`.
    pub materialized: Materialized,
    /// Columns that identify a row (checked by an implicit `unique` audit).
    pub unique_key: Vec<String>,
    /// Delta partition columns (default `["epoch"]` for incremental models, none for tables).
    pub partition_by: Vec<String>,
    /// Blocking audits: a failure stops the commit.
    pub audits: Vec<AuditSpec>,
    /// Non-blocking audits: failures are reported, the commit goes ahead.
    pub warn_audits: Vec<AuditSpec>,
    /// The 1-based line the SQL body starts on (after the header).
    pub body_line: usize,
}

/// One argument of an audit call.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum AuditArg {
    /// A bare identifier: a column name.
    Ident(String),
    /// A SQL literal, kept as written (`'exact'`, `0`, `1.5`, `true`).
    Literal(String),
    /// `ref('model')` or `source('layer', 'table')`, kept as written.
    Table(String),
    /// `name = value` (custom audits), the value as written.
    Named(String, String),
}

/// An audit as declared in a header: `name(arg, …)` or `name`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditSpec {
    /// The audit's name: a built-in or a file `audits/<name>.sql`.
    pub name: String,
    /// Its arguments.
    pub args: Vec<AuditArg>,
    /// The declaration as written.
    pub text: String,
    /// The 1-based line of the declaration.
    pub line: usize,
}

/// Split a header off `sql`. Returns the header (defaults when there is none). Custom audits may
/// open with `/* @audit description = "…" */` instead.
pub fn parse_header(file: &str, sql: &str) -> Result<Header> {
    let trimmed = sql.trim_start();
    let lead = &sql[..sql.len() - trimmed.len()];
    let start_line = 1 + lead.matches('\n').count();
    let Some(rest) = trimmed.strip_prefix("/*") else {
        return Ok(Header { body_line: start_line, ..Header::default() });
    };
    let after = rest.trim_start_matches([' ', '\t']);
    let Some(body) = after.strip_prefix("@model").or_else(|| after.strip_prefix("@audit")) else {
        return Ok(Header { body_line: start_line, ..Header::default() });
    };
    let Some(end) = body.find("*/") else {
        return Err(Error::Model {
            file: file.into(),
            line: Some(start_line),
            message: "the `/* @model` header is not closed by `*/`".into(),
        });
    };
    let toml_text = &body[..end];
    let header_lines = toml_text.matches('\n').count();
    let raw: RawHeader = toml::from_str(toml_text).map_err(|e| {
        let line = e.span().map(|s| start_line + toml_text[..s.start.min(toml_text.len())].matches('\n').count());
        Error::Model { file: file.into(), line, message: format!("invalid @model header: {}", e.message()) }
    })?;
    let materialized = raw.materialized.unwrap_or_default();
    let partition_by = raw.partition_by.unwrap_or_else(|| match materialized {
        Materialized::Incremental => vec!["epoch".into()],
        Materialized::Table => vec![],
    });
    let line_of = |needle: &str| {
        toml_text.find(needle).map(|p| start_line + toml_text[..p].matches('\n').count()).unwrap_or(start_line)
    };
    let parse_list = |list: Option<Vec<String>>| -> Result<Vec<AuditSpec>> {
        list.unwrap_or_default().iter().map(|a| parse_audit(file, a, line_of(a))).collect()
    };
    Ok(Header {
        description: raw.description.unwrap_or_default().trim().to_string(),
        materialized,
        unique_key: raw.unique_key.map(OneOrMany::into_vec).unwrap_or_default(),
        partition_by,
        audits: parse_list(raw.audits)?,
        warn_audits: parse_list(raw.warn_audits)?,
        body_line: start_line + header_lines,
    })
}

/// Parse an audit declaration such as `accepted_values(kind, 'a', 'b')`.
pub fn parse_audit(file: &str, text: &str, line: usize) -> Result<AuditSpec> {
    let bad = |m: String| Error::Model { file: file.into(), line: Some(line), message: format!("audit `{text}`: {m}") };
    let t = text.trim();
    let (name, args_text) = match t.find('(') {
        Some(p) => {
            let inner = t[p + 1..].strip_suffix(')').ok_or_else(|| bad("missing closing `)`".into()))?;
            (t[..p].trim(), Some(inner))
        }
        None => (t, None),
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(bad("the audit name must be letters, digits and `_`".into()));
    }
    let mut args = Vec::new();
    if let Some(inner) = args_text {
        for raw in split_args(inner).map_err(bad)? {
            let a = raw.trim();
            if a.is_empty() {
                return Err(bad("empty argument".into()));
            }
            let lower = a.to_ascii_lowercase();
            let arg = if lower.starts_with("ref(") || lower.starts_with("source(") {
                AuditArg::Table(a.to_string())
            } else if let Some((k, v)) = a.split_once('=').filter(|(k, _)| is_ident(k.trim())) {
                AuditArg::Named(k.trim().to_string(), v.trim().to_string())
            } else if is_ident(a) && !matches!(lower.as_str(), "true" | "false" | "null") {
                AuditArg::Ident(a.to_string())
            } else {
                AuditArg::Literal(a.to_string())
            };
            args.push(arg);
        }
    }
    Ok(AuditSpec { name: name.to_string(), args, text: t.to_string(), line })
}

fn is_ident(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Split on top-level commas, respecting quotes and parentheses.
fn split_args(s: &str) -> std::result::Result<Vec<&str>, String> {
    let (mut out, mut depth, mut start, mut quote) = (Vec::new(), 0i32, 0, None::<char>);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quote.is_some() {
        return Err("unterminated string".into());
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    if !s.trim().is_empty() {
        out.push(&s[start..]);
    }
    Ok(out)
}

/// A `ref()`, `source()` or `@macro` found in SQL, and what replaces it.
#[derive(Debug, Clone, PartialEq)]
pub enum Token<'a> {
    /// `ref('name')`.
    Ref(&'a str),
    /// `source('layer', 'table')`.
    Source(&'a str, &'a str),
    /// `@name`.
    Macro(&'a str),
}

/// Scan `sql`, calling `f(token, line)` for every `ref()`, `source()` and `@macro` outside
/// comments, strings and quoted identifiers, and return `sql` with each replaced by what `f`
/// returns. The header comment is skipped like any other comment.
pub fn expand(
    file: &str,
    sql: &str,
    mut f: impl FnMut(Token<'_>, usize) -> Result<String>,
) -> Result<String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let (mut i, mut copied, mut line) = (0usize, 0usize, 1usize);
    let err = |line: usize, m: &str| Error::Model { file: file.into(), line: Some(line), message: m.into() };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let start = line;
                i += 2;
                loop {
                    if i + 1 >= b.len() {
                        return Err(err(start, "unterminated /* comment"));
                    }
                    if b[i] == b'*' && b[i + 1] == b'/' {
                        i += 2;
                        break;
                    }
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
            b'\'' | b'"' => {
                let start = line;
                i += 1;
                loop {
                    if i >= b.len() {
                        return Err(err(start, "unterminated quoted string or identifier"));
                    }
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    if b[i] == c {
                        // A doubled quote is an escaped quote.
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
            }
            b'@' if b.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_') => {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let rep = f(Token::Macro(&sql[start + 1..i]), line)?;
                out.push_str(&sql[copied..start]);
                out.push_str(&rep);
                copied = i;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &sql[start..i];
                let preceded_by_dot = start > 0 && b[start - 1] == b'.';
                let lower = word.to_ascii_lowercase();
                if preceded_by_dot || !(lower == "ref" || lower == "source") {
                    continue;
                }
                let mut j = i;
                while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                    j += 1;
                }
                if b.get(j) != Some(&b'(') {
                    continue;
                }
                let close = sql[j..].find(')').map(|p| j + p).ok_or_else(|| err(line, &format!("`{word}(` is not closed")))?;
                let inner = &sql[j + 1..close];
                if inner.contains('\n') {
                    return Err(err(line, &format!("write `{word}(...)` on one line")));
                }
                let args = split_args(inner).map_err(|m| err(line, &format!("{word}(): {m}")))?;
                let lits: Vec<&str> = args
                    .iter()
                    .map(|a| {
                        let a = a.trim();
                        a.strip_prefix('\'').and_then(|a| a.strip_suffix('\'')).ok_or_else(|| {
                            err(line, &format!("{word}() takes quoted names, e.g. {word}('{}')", a.trim_matches('"')))
                        })
                    })
                    .collect::<Result<_>>()?;
                let token = match (lower.as_str(), lits.as_slice()) {
                    ("ref", [name]) => Token::Ref(name),
                    ("source", [layer, table]) => Token::Source(layer, table),
                    ("ref", _) => return Err(err(line, "ref() takes one model name: ref('layer.name') or ref('name')")),
                    _ => return Err(err(line, "source() takes two names: source('layer', 'table')")),
                };
                let rep = f(token, line)?;
                out.push_str(&sql[copied..start]);
                out.push_str(&rep);
                i = close + 1;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// Levenshtein distance (for "did you mean" suggestions).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_toml_in_a_comment() {
        let sql = "\n/* @model\ndescription = \"d\"\nmaterialized = \"incremental\"\nunique_key = \"id\"\naudits = [\"unique(id)\", \"accepted_values(k, 'a', 'b')\"]\n*/\nSELECT 1";
        let h = parse_header("m.sql", sql).expect("parses");
        assert_eq!(h.materialized, Materialized::Incremental);
        assert_eq!(h.unique_key, vec!["id"]);
        assert_eq!(h.partition_by, vec!["epoch"]);
        assert_eq!(h.audits[1].args, vec![
            AuditArg::Ident("k".into()),
            AuditArg::Literal("'a'".into()),
            AuditArg::Literal("'b'".into())
        ]);
        assert_eq!(h.audits[0].line, 6);
        assert_eq!(h.body_line, 7);
        let e = parse_header("m.sql", "/* @model\nmaterialised = \"table\"\n*/ SELECT 1").expect_err("typo");
        assert!(matches!(e, Error::Model { line: Some(2), .. }), "{e}");
        assert_eq!(parse_header("m.sql", "-- plain\nSELECT 1").expect("ok").materialized, Materialized::Table);
    }

    #[test]
    fn expand_skips_comments_and_strings_and_keeps_lines() {
        let sql = "-- ref('no')\nSELECT 'ref(''x'')' , @epoch\nFROM ref('a') JOIN source('bronze', 'c') /* @nope */\n";
        let mut seen = Vec::new();
        let out = expand("f.sql", sql, |t, line| {
            seen.push((format!("{t:?}"), line));
            Ok(match t {
                Token::Ref(n) => format!("silver.{n}"),
                Token::Source(l, n) => format!("{l}.{n}"),
                Token::Macro(_) => "7".into(),
            })
        })
        .expect("expands");
        assert_eq!(out, "-- ref('no')\nSELECT 'ref(''x'')' , 7\nFROM silver.a JOIN bronze.c /* @nope */\n");
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1].1, 3);
        assert!(expand("f.sql", "SELECT ref(a)", |_, _| Ok(String::new())).is_err());
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("contribution_dedup", "contributions_dedup"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
