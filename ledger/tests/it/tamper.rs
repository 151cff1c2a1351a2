//! Rewriting a Delta table's data files behind its back (what a malicious operator with write
//! access to the bucket could do), to show `epoch verify` notices.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Rewrite every Parquet file under `dir` in place with each `amount` set to "1".
pub fn rewrite_amounts(dir: &Path) {
    let mut rewritten = 0;
    for entry in std::fs::read_dir(dir).expect("table dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let file = std::fs::File::open(&path).expect("open parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet").build().expect("reader");
        let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        let schema = batches[0].schema();
        let out = std::fs::File::create(&path).expect("rewrite");
        let mut w = ArrowWriter::try_new(out, schema.clone(), None).expect("writer");
        for b in batches {
            let idx = schema.index_of("amount").expect("amount column");
            let mut cols: Vec<ArrayRef> = b.columns().to_vec();
            let ones: ArrayRef = Arc::new(StringArray::from(vec!["1"; b.num_rows()]));
            cols[idx] = arrow::compute::cast(&ones, schema.field(idx).data_type()).expect("cast to the file's string type");
            w.write(&RecordBatch::try_new(schema.clone(), cols).expect("batch")).expect("write");
        }
        w.close().expect("close");
        rewritten += 1;
    }
    assert!(rewritten > 0, "no parquet file under {}", dir.display());
}
