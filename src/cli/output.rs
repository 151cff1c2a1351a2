//! Printing results: human-readable tables by default, JSON for scripts.

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

/// Output format of tabular results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned, human-readable tables.
    Table,
    /// One JSON document on stdout.
    Json,
}

/// A simple table to print.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
    for r in rows {
        t.add_row(r);
    }
    t
}

/// Print Arrow record batches as a table, or as JSON rows.
pub fn print_batches(batches: &[arrow::record_batch::RecordBatch], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Table => println!("{}", arrow::util::pretty::pretty_format_batches(batches)?),
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(Vec::new());
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            println!("{}", String::from_utf8_lossy(&w.into_inner()));
        }
    }
    Ok(())
}
