//! Compiling model and audit SQL: `ref()`/`source()` become table names, macros become values,
//! and engine errors are mapped back to the file and line they come from.

use datafusion::error::DataFusionError;

use crate::error::{Error, Result};

use super::parse::{self, Token};
use super::project::{Model, Project};

/// Compile `model` for `epoch` (incremental models) or for a full build (`None`). With `None`, an
/// incremental model's `@epoch` stays as written (for `lineage`).
pub fn model_sql(project: &Project, model: &Model, epoch: Option<i64>) -> Result<String> {
    parse::expand(&model.file, &model.sql, |tok, line| match tok {
        Token::Ref(_) | Token::Source(..) => resolve(project, model, &tok, line),
        Token::Macro(m) if m.eq_ignore_ascii_case("epoch") => {
            Ok(epoch.map(|e| e.to_string()).unwrap_or_else(|| "@epoch".into()))
        }
        Token::Macro(m) => Err(Error::Model { file: model.file.clone(), line: Some(line), message: format!("unknown macro @{m}") }),
    })
}

fn resolve(project: &Project, model: &Model, tok: &Token<'_>, line: usize) -> Result<String> {
    match tok {
        Token::Ref(name) => {
            let m = project.model(name).map_err(|_| Error::UnknownRef {
                file: model.file.clone(),
                line,
                name: name.to_string(),
                suggestion: None,
            })?;
            Ok(m.id.to_string())
        }
        Token::Source(layer, name) => Ok(format!("{layer}.{name}")),
        Token::Macro(_) => Err(Error::Internal("macro passed to resolve".into())),
    }
}

/// Compile an audit's SQL: `ref()`/`source()` as in models, `@this` = `this`, `@<arg>` = the
/// named argument's value.
pub fn audit_sql(project: &Project, file: &str, sql: &str, this: &str, named: &[(String, String)]) -> Result<String> {
    parse::expand(file, sql, |tok, line| match tok {
        Token::Ref(name) => Ok(project
            .model(name)
            .map_err(|_| Error::UnknownRef { file: file.into(), line, name: name.into(), suggestion: None })?
            .id
            .to_string()),
        Token::Source(layer, name) => Ok(format!("{layer}.{name}")),
        Token::Macro(m) if m.eq_ignore_ascii_case("this") => Ok(this.to_string()),
        Token::Macro(m) => named
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(m))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::Model {
                file: file.into(),
                line: Some(line),
                message: format!("audit macro @{m} has no value: pass it as `{m} = …` in the audit declaration"),
            }),
    })
}

/// Compile a table expression written in an audit declaration (`ref('x')`, `source('a', 'b')`).
pub fn table_expr(project: &Project, file: &str, line: usize, text: &str) -> Result<String> {
    parse::expand(file, text, |tok, _| resolve_any(project, file, line, &tok))
}

fn resolve_any(project: &Project, file: &str, line: usize, tok: &Token<'_>) -> Result<String> {
    match tok {
        Token::Ref(name) => Ok(project
            .model(name)
            .map_err(|_| Error::UnknownRef { file: file.into(), line, name: name.to_string(), suggestion: None })?
            .id
            .to_string()),
        Token::Source(layer, name) => Ok(format!("{layer}.{name}")),
        Token::Macro(m) => Err(Error::Model { file: file.into(), line: Some(line), message: format!("unexpected macro @{m}") }),
    }
}

/// Turn an engine error on the compiled SQL of `file` into an error naming the file and line.
///
/// Lines are exact because compiling never adds or removes lines. The line comes from, in order:
/// DataFusion's diagnostic span (planning errors such as an unknown column, when spans are
/// collected), the parser's `Line: N` (syntax errors), or the first line of the file mentioning the
/// identifier the message names.
pub fn locate(file: &str, compiled: &str, e: DataFusionError) -> Error {
    let mut line = e.diagnostic().and_then(|d| d.span).map(|s| s.start.line as usize).filter(|l| *l > 0);
    let message = e.strip_backtrace();
    if line.is_none() {
        line = parser_line(&message);
    }
    if line.is_none() {
        line = named_identifier(&message).and_then(|id| find_line(compiled, &id));
    }
    let message = message
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("SQL error: ")
        .to_string();
    Error::Model { file: file.into(), line, message }
}

fn parser_line(message: &str) -> Option<usize> {
    let p = message.find("Line: ")?;
    let digits: String = message[p + 6..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|l| *l > 0)
}

/// The identifier an error message is about, if it names one in quotes.
fn named_identifier(message: &str) -> Option<String> {
    for marker in ["No field named ", "table '", "Invalid function '", "column '", "function '"] {
        if let Some(p) = message.find(marker) {
            let rest = message[p + marker.len()..].trim_start_matches(['"', '\'']);
            let id: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.').collect();
            let id = id.trim_end_matches('.').rsplit('.').next().unwrap_or("").to_string();
            if !id.is_empty() {
                return Some(id);
            }
        }
    }
    None
}

/// The first line where `ident` appears as a whole word outside comments.
fn find_line(sql: &str, ident: &str) -> Option<usize> {
    let ident = ident.to_ascii_lowercase();
    let mut in_block = false;
    for (n, raw) in sql.lines().enumerate() {
        let mut line = raw.to_ascii_lowercase();
        if in_block {
            match line.find("*/") {
                Some(p) => {
                    line = line[p + 2..].to_string();
                    in_block = false;
                }
                None => continue,
            }
        }
        if let Some(p) = line.find("/*") {
            if !line[p..].contains("*/") {
                in_block = true;
            }
            line.truncate(p);
        }
        if let Some(p) = line.find("--") {
            line.truncate(p);
        }
        let b = line.as_bytes();
        let mut from = 0;
        while let Some(p) = line[from..].find(&ident) {
            let s = from + p;
            let e = s + ident.len();
            let word = |i: usize| b.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
            if (s == 0 || !word(s - 1)) && !word(e) {
                return Some(n + 1);
            }
            from = e;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_from_messages() {
        assert_eq!(parser_line("sql parser error: Expected: end of statement, found: FORM at Line: 4, Column: 3"), Some(4));
        assert_eq!(named_identifier("Schema error: No field named qualty_score. Valid fields are a, b."), Some("qualty_score".into()));
        let sql = "/* qualty_score */\n-- qualty_score\nSELECT\n  qualty_score FROM t";
        assert_eq!(find_line(sql, "qualty_score"), Some(4));
    }
}
