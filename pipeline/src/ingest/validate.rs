//! Validating one contribution file and turning its rows into `bronze.contributions` rows.
//!
//! The whole file is accepted or quarantined: a file with one bad row is refused with that row's
//! index in the detail, so a contributor fixes and re-drops it, and bronze never holds half a file.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{CastOptions, cast_with_options, concat};
use arrow::datatypes::DataType;
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::config::{DatanetConfig, DatanetKind};
use crate::ids::{content_hashes_hex, contribution_ids_hex};
use crate::reason::ReasonCode;
use crate::tables::defs;

/// Optional columns copied to bronze when present.
pub const OPTIONAL_COLUMNS: [&str; 3] = ["label", "license", "source"];

/// Where the rows come from; copied onto every row.
#[derive(Debug, Clone)]
pub struct RowContext {
    /// Datanet name.
    pub datanet: String,
    /// Contributor address (lower case).
    pub contributor: String,
    /// Inbox key of the file.
    pub file_path: String,
    /// The file's sha256.
    pub file_sha256: [u8; 32],
    /// Epoch the rows are ingested in.
    pub epoch: i64,
    /// Ingestion time, µs since the Unix epoch.
    pub ingested_at_micros: i64,
    /// The ingest batch number.
    pub batch: i64,
}

/// Accepted rows of one file.
#[derive(Debug, Clone)]
pub struct Validated {
    /// Rows in the `bronze.contributions` schema.
    pub rows: RecordBatch,
    /// Bytes of content (sum of `text_bytes`).
    pub content_bytes: u64,
}

type Refusal = (ReasonCode, String);

fn refuse<T>(code: ReasonCode, detail: impl Into<String>) -> Result<T, Refusal> {
    Err((code, detail.into()))
}

/// Check the Parquet magic numbers before decoding: distinguishes "not Parquet at all" (e.g. a CSV
/// renamed `.parquet`) from "Parquet, but truncated or corrupt".
pub fn check_magic(bytes: &[u8]) -> Result<(), Refusal> {
    let head = bytes.len() >= 4 && &bytes[..4] == b"PAR1";
    let tail = bytes.len() >= 8 && &bytes[bytes.len() - 4..] == b"PAR1";
    match (head, tail) {
        (true, true) => Ok(()),
        (true, false) => refuse(ReasonCode::CorruptParquet, "Parquet header without footer (truncated?)"),
        _ => refuse(ReasonCode::NotParquet, "no PAR1 magic: not a Parquet file"),
    }
}

fn is_stringish(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => true,
        DataType::Dictionary(_, v) => is_stringish(v),
        _ => false,
    }
}

fn is_scalar(t: &DataType) -> bool {
    t.is_primitive() || matches!(t, DataType::Boolean) || is_stringish(t)
}

/// A string column of 64-character hex digests laid end to end in `digits`.
fn hex_column(digits: Vec<u8>) -> Result<ArrayRef, Refusal> {
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(64, digits.len() / 64));
    let array = StringArray::try_new(offsets, digits.into(), None)
        .map_err(|e| (ReasonCode::WrongColumnType, format!("internal: digest column: {e}")))?;
    Ok(Arc::new(array))
}

/// Decode and validate `bytes` for `datanet`; on success return the bronze rows.
pub fn validate_file(bytes: Bytes, datanet: &DatanetConfig, ctx: &RowContext) -> Result<Validated, Refusal> {
    check_magic(&bytes)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .or_else(|e| refuse(ReasonCode::CorruptParquet, format!("cannot read footer: {e}")))?;

    // A small file can decompress to a huge one: refuse before decoding anything.
    let uncompressed: i64 = builder.metadata().row_groups().iter().map(|rg| rg.total_byte_size()).sum();
    let cap = datanet.max_file_bytes.saturating_mul(4);
    if uncompressed.max(0) as u64 > cap {
        return refuse(ReasonCode::FileTooLarge, format!("{uncompressed} bytes uncompressed, over 4× max_file_bytes"));
    }

    let schema = builder.schema().clone();
    let content_cols: Vec<&str> = match datanet.kind {
        DatanetKind::Text => vec!["text"],
        DatanetKind::PromptCompletion => vec!["prompt", "completion"],
    };
    let mut wanted: Vec<String> = content_cols.iter().map(|s| s.to_string()).collect();
    for extra in &datanet.required_columns {
        if !wanted.contains(extra) {
            wanted.push(extra.clone());
        }
    }
    for col in &wanted {
        let Ok(field) = schema.field_with_name(col) else {
            return refuse(ReasonCode::MissingColumn, format!("required column `{col}` is missing"));
        };
        let ok = if content_cols.contains(&col.as_str()) { is_stringish(field.data_type()) } else { is_scalar(field.data_type()) };
        if !ok {
            return refuse(ReasonCode::WrongColumnType, format!("column `{col}` has type {}, expected string", field.data_type()));
        }
    }
    for col in OPTIONAL_COLUMNS {
        if let Ok(field) = schema.field_with_name(col) {
            if !is_scalar(field.data_type()) {
                return refuse(ReasonCode::WrongColumnType, format!("column `{col}` has type {}, expected a scalar", field.data_type()));
            }
            if !wanted.iter().any(|w| w == col) {
                wanted.push(col.to_string());
            }
        }
    }

    // Read only the columns we keep; nested garbage in other columns is never decoded.
    let parquet_schema = builder.parquet_schema();
    let roots: Vec<usize> = wanted.iter().filter_map(|w| schema.index_of(w).ok()).collect();
    let mask = ProjectionMask::roots(parquet_schema, roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .or_else(|e| refuse(ReasonCode::CorruptParquet, format!("cannot plan read: {e}")))?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.or_else(|e| refuse(ReasonCode::CorruptParquet, format!("cannot decode pages: {e}")))?);
    }
    let num_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if num_rows == 0 {
        return refuse(ReasonCode::ZeroRows, "the file holds no rows");
    }

    let column = |name: &str| -> Result<Option<StringArray>, Refusal> {
        let Some(idx) = batches[0].schema().index_of(name).ok() else { return Ok(None) };
        let joined = match batches.as_slice() {
            // The usual case (a file of at most one reader batch): no copy.
            [only] => only.column(idx).clone(),
            _ => {
                let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(idx).as_ref()).collect();
                concat(&parts).or_else(|e| refuse(ReasonCode::CorruptParquet, format!("column `{name}`: {e}")))?
            }
        };
        let strict = CastOptions { safe: false, ..Default::default() };
        let as_str = cast_with_options(&joined, &DataType::Utf8, &strict)
            .or_else(|e| refuse(ReasonCode::TextNotUtf8, format!("column `{name}` is not valid UTF-8: {e}")))?;
        let arr = as_str
            .as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .ok_or_else(|| (ReasonCode::WrongColumnType, format!("column `{name}` did not cast to string")))?;
        Ok(Some(arr))
    };

    let (text_arr, prompt, completion) = match datanet.kind {
        DatanetKind::Text => (column("text")?, None, None),
        DatanetKind::PromptCompletion => (None, column("prompt")?, column("completion")?),
    };
    let optional: Vec<Option<StringArray>> = OPTIONAL_COLUMNS.iter().map(|c| column(c)).collect::<Result<_, _>>()?;

    let mut text_b = StringBuilder::with_capacity(if text_arr.is_none() { num_rows } else { 0 }, 0);
    let mut text_bytes = Vec::with_capacity(num_rows);
    let mut content_bytes = 0u64;
    let mut joined = String::new();
    for i in 0..num_rows {
        let text: &str = match (&text_arr, &prompt, &completion) {
            (Some(t), _, _) => {
                if t.is_null(i) {
                    return refuse(ReasonCode::EmptyText, format!("row {i}: text is null"));
                }
                t.value(i)
            }
            (None, Some(p), Some(c)) => {
                if p.is_null(i) || c.is_null(i) || p.value(i).trim().is_empty() || c.value(i).trim().is_empty() {
                    return refuse(ReasonCode::EmptyText, format!("row {i}: prompt or completion is empty"));
                }
                joined.clear();
                joined.push_str(p.value(i));
                joined.push_str("\n\n");
                joined.push_str(c.value(i));
                &joined
            }
            _ => return Err((ReasonCode::MissingColumn, "content columns missing".into())),
        };
        if text.trim().is_empty() {
            return refuse(ReasonCode::EmptyText, format!("row {i}: text is empty"));
        }
        if text.len() as u64 > datanet.max_text_bytes {
            return refuse(
                ReasonCode::TextTooLong,
                format!("row {i}: {} bytes, over max_text_bytes {}", text.len(), datanet.max_text_bytes),
            );
        }
        content_bytes += text.len() as u64;
        text_bytes.push(text.len() as i64);
        if text_arr.is_none() {
            text_b.append_value(text);
        }
    }
    // A text datanet's `text` column is stored as read (no copy); prompt/completion rows store the
    // joined text built above.
    let text_col = match &text_arr {
        Some(t) => t.clone(),
        None => text_b.finish(),
    };
    // The two digest columns are 64 hex digits per row, the whole file's rows hashed at once (sixteen
    // at a time where the CPU allows) and laid end to end, so each array is built once, with one
    // UTF-8 check per column instead of one per value. Every row's text was checked non-null above.
    let ids = contribution_ids_hex(&ctx.file_sha256, num_rows);
    let hashes = content_hashes_hex((0..num_rows).map(|i| text_col.value(i)));

    let n = num_rows;
    let repeat = |s: &str| -> ArrayRef { Arc::new(StringArray::from_iter_values(std::iter::repeat_n(s, n))) };
    let null_str = || -> ArrayRef { Arc::new(StringArray::new_null(n)) };
    let opt = |a: Option<StringArray>| -> ArrayRef { a.map(|a| Arc::new(a) as ArrayRef).unwrap_or_else(null_str) };
    let file_sha_hex = hex::encode(ctx.file_sha256);
    let [label, license, source] = <[Option<StringArray>; 3]>::try_from(optional)
        .map_err(|_| (ReasonCode::WrongColumnType, "optional columns".to_string()))?;
    let columns: Vec<ArrayRef> = vec![
        hex_column(ids)?,
        repeat(&ctx.datanet),
        repeat(&ctx.contributor),
        repeat(&ctx.file_path),
        repeat(&file_sha_hex),
        Arc::new(Int64Array::from_iter_values(0..n as i64)),
        Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(ctx.epoch, n))),
        Arc::new(TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(ctx.ingested_at_micros, n)).with_timezone("UTC")),
        Arc::new(text_col),
        opt(prompt),
        opt(completion),
        opt(label),
        opt(license),
        opt(source),
        hex_column(hashes)?,
        Arc::new(Int64Array::from(text_bytes)),
        Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(ctx.batch, n))),
    ];
    let rows = RecordBatch::try_new(defs::bronze_contributions().schema, columns)
        .map_err(|e| (ReasonCode::WrongColumnType, format!("internal: building bronze rows: {e}")))?;
    Ok(Validated { rows, content_bytes })
}
