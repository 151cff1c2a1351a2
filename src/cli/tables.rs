//! `tributary tables`: the warehouse's Delta tables and their latest versions.

use std::process::ExitCode;

use super::{App, Format, output};

/// Arguments of `tributary tables`.
#[derive(Debug, clap::Args)]
pub struct TablesArgs {}

pub async fn run(app: &App, _args: TablesArgs) -> anyhow::Result<ExitCode> {
    let tables = app.tables()?;
    let list = tables.list().await?;
    match app.format {
        Format::Json => {
            let v: Vec<_> = list.iter().map(|(id, v)| serde_json::json!({"table": id.to_string(), "version": v})).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let rows = list.iter().map(|(id, v)| vec![id.to_string(), v.to_string()]).collect();
            println!("{}", output::table(&["table", "version"], rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}
