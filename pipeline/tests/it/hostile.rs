//! A generated corpus of hostile files: each gets its reason code, nothing panics, and good files
//! in the same batch are ingested.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray, DictionaryArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tributary_pipeline::config::{DatanetConfig, DatanetKind};
use tributary_pipeline::ingest::signature;
use tributary_pipeline::sample::{contributor_key, parquet_bytes, prompt_completion_batch, text_batch};
use tributary_pipeline::{Tables, Warehouse};

use crate::common::*;

fn one_col(name: &str, array: ArrayRef) -> RecordBatch {
    let schema = Schema::new(vec![Field::new(name, array.data_type().clone(), true)]);
    RecordBatch::try_new(Arc::new(schema), vec![array]).expect("batch")
}

fn pq(batch: &RecordBatch) -> Bytes {
    parquet_bytes(batch).expect("parquet")
}

fn texts(v: &[&str]) -> Bytes {
    pq(&text_batch(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[]))
}

#[tokio::test]
async fn hostile_corpus_gets_precise_reasons() {
    let strict = DatanetConfig { name: "strict".into(), max_file_bytes: 10_000, ..DatanetConfig::default() };
    let cfg = config(vec![
        datanet("open", DatanetKind::Text, false),
        datanet("signed", DatanetKind::Text, true),
        datanet("pc", DatanetKind::PromptCompletion, false),
        strict,
    ]);
    let w = Warehouse::in_memory();
    let tables = Tables::new(w.clone());
    let key = contributor_key(99, 0);
    let addr = signature::address_of(&key);
    let other_key = contributor_key(99, 1);
    let open = format!("inbox/open/{addr}");
    let signed = format!("inbox/signed/{addr}");
    let good = texts(&["a perfectly good row of text", "and another one"]);

    let mut expect: Vec<(String, &'static str)> = Vec::new();
    let mut files: Vec<(String, Bytes)> = Vec::new();
    let mut add = |path: String, bytes: Bytes, reason: &'static str| {
        files.push((path.clone(), bytes));
        expect.push((path, reason));
    };

    // Not Parquet at all, or broken Parquet.
    add(format!("{open}/csv-renamed.parquet"), Bytes::from_static(b"text,label\nhello,1\nworld,0\n"), "not_parquet");
    add(format!("{open}/json-renamed.parquet"), Bytes::from_static(b"{\"text\": \"hi\"}"), "not_parquet");
    add(format!("{open}/empty-file.parquet"), Bytes::new(), "not_parquet");
    add(format!("{open}/notes.txt"), Bytes::from_static(b"plain text is not accepted"), "not_parquet");
    add(format!("{open}/truncated-half.parquet"), good.slice(..good.len() / 2), "corrupt_parquet");
    add(format!("{open}/truncated-tail.parquet"), good.slice(..good.len() - 1), "corrupt_parquet");
    add(format!("{open}/header-only.parquet"), Bytes::from_static(b"PAR1"), "corrupt_parquet");
    let mut garbage = b"PAR1".to_vec();
    garbage.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    garbage.extend(b"PAR1");
    add(format!("{open}/random-middle.parquet"), Bytes::from(garbage), "corrupt_parquet");
    let mut flipped = good.to_vec();
    let n = flipped.len();
    for b in &mut flipped[n - 40..n - 8] {
        *b ^= 0xA5;
    }
    add(format!("{open}/corrupt-footer.parquet"), Bytes::from(flipped), "corrupt_parquet");

    // Wrong shapes.
    add(format!("{open}/int-text.parquet"), pq(&one_col("text", Arc::new(Int64Array::from(vec![1, 2])))), "wrong_column_type");
    add(format!("{open}/float-text.parquet"), pq(&one_col("text", Arc::new(Float64Array::from(vec![1.5])))), "wrong_column_type");
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1), Some(2)])]);
    add(format!("{open}/nested-list.parquet"), pq(&one_col("text", Arc::new(list))), "wrong_column_type");
    let st = StructArray::from(vec![(Arc::new(Field::new("a", DataType::Utf8, true)), Arc::new(StringArray::from(vec!["x"])) as ArrayRef)]);
    add(format!("{open}/nested-struct.parquet"), pq(&one_col("text", Arc::new(st.clone()))), "wrong_column_type");
    let with_struct_label = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, true), Field::new("label", st.data_type().clone(), true)])),
        vec![Arc::new(StringArray::from(vec!["fine text"])), Arc::new(st)],
    )
    .expect("batch");
    add(format!("{open}/struct-label.parquet"), pq(&with_struct_label), "wrong_column_type");
    add(format!("{open}/no-text.parquet"), pq(&one_col("body", Arc::new(StringArray::from(vec!["x"])))), "missing_column");
    let only_prompt = one_col("prompt", Arc::new(StringArray::from(vec!["q?"])));
    add(format!("inbox/pc/{addr}/no-completion.parquet"), pq(&only_prompt), "missing_column");
    add(format!("{open}/zero-rows.parquet"), texts(&[]), "zero_rows");

    // Bad content.
    add(format!("{open}/huge-100mb-string.parquet"), texts(&[&"x".repeat(100 * 1024 * 1024)]), "text_too_long");
    add(format!("{open}/long-row.parquet"), texts(&["ok", &"y".repeat(70 * 1024)]), "text_too_long");
    add(format!("{open}/empty-row.parquet"), texts(&["fine", ""]), "empty_text");
    add(format!("{open}/blank-row.parquet"), texts(&["fine", "  \t\n "]), "empty_text");
    add(format!("{open}/null-row.parquet"), pq(&one_col("text", Arc::new(StringArray::from(vec![Some("a"), None])))), "empty_text");
    let bad_utf8 = BinaryArray::from(vec![b"ok".as_ref(), &[0xff, 0xfe, 0x41]]);
    add(format!("{open}/bad-utf8.parquet"), pq(&one_col("text", Arc::new(bad_utf8))), "text_not_utf8");
    add(format!("inbox/pc/{addr}/empty-completion.parquet"), pq(&prompt_completion_batch(&[("q".into(), " ".into())])), "empty_text");

    // Hostile paths.
    add("inbox/open/alice/data.parquet".into(), good.clone(), "invalid_address");
    add("inbox/open/0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD/data.parquet".into(), good.clone(), "invalid_address");
    add("inbox/open/0x1234/data.parquet".into(), good.clone(), "invalid_address");
    add(format!("{open}/..evil.parquet"), good.clone(), "invalid_path");
    add(format!("{open}/bad\nname.parquet"), good.clone(), "invalid_path");
    add(format!("{open}/bell\u{7}.parquet"), good.clone(), "invalid_path");
    add(format!("{open}/sub/dir.parquet"), good.clone(), "invalid_path");
    add("inbox/open/loose.parquet".into(), good.clone(), "invalid_path");
    add(format!("inbox/nope/{addr}/x.parquet"), good.clone(), "unknown_datanet");
    add(format!("inbox/strict/{addr}/big.parquet"), texts(&[&"z".repeat(20_000)]), "file_too_large");

    // Signatures.
    add(format!("{signed}/unsigned.parquet"), texts(&["unsigned but valid"]), "signature_missing");
    add(format!("{signed}/malformed-sig.parquet"), texts(&["malformed sig"]), "signature_malformed");
    add(format!("{signed}/foreign-sig.parquet"), texts(&["signed by a stranger"]), "signature_mismatch");
    add(format!("{signed}/other-file-sig.parquet"), texts(&["signature of other bytes"]), "signature_mismatch");

    // The same file twice under one contributor.
    add(format!("{open}/zz-same-again.parquet"), good.clone(), "duplicate_file");

    let good_files = vec![
        (format!("{open}/good.parquet"), good.clone()),
        (format!("{open}/dict.parquet"), pq(&one_col("text", Arc::new(DictionaryArray::<Int32Type>::from_iter(["dictionary", "encoded", "dictionary"]))))),
        (format!("{signed}/signed-good.parquet"), texts(&["properly signed row"])),
        (format!("inbox/pc/{addr}/qa.parquet"), pq(&prompt_completion_batch(&[("What is 2+2?".into(), "Four.".into())]))),
    ];
    assert!(expect.len() >= 30, "corpus has {} bad files", expect.len());

    for (p, b) in files.iter().chain(good_files.iter()) {
        put(&w, p, b.clone()).await;
    }
    let sig_for = |bytes: &Bytes, k: &k256::ecdsa::SigningKey| signature::sign(k, &hex::encode(Sha256::digest(bytes)));
    let get = |name: &str| files.iter().chain(good_files.iter()).find(|(p, _)| p.ends_with(name)).map(|(_, b)| b.clone()).expect("file");
    put(&w, &format!("{signed}/signed-good.parquet.sig"), sig_for(&get("signed-good.parquet"), &key)).await;
    put(&w, &format!("{signed}/malformed-sig.parquet.sig"), "hello, not a signature").await;
    put(&w, &format!("{signed}/foreign-sig.parquet.sig"), sig_for(&get("foreign-sig.parquet"), &other_key)).await;
    put(&w, &format!("{signed}/other-file-sig.parquet.sig"), sig_for(&get("signed-good.parquet"), &key)).await;

    let s = ingest(&cfg, &tables).await;
    let log = log_by_path(&tables).await;
    let mut wrong = Vec::new();
    for (path, reason) in &expect {
        let stored = object_store::path::Path::from(path.as_str()).to_string();
        match log.get(&stored) {
            Some((_, Some(r))) if r == reason => {}
            other => wrong.push(format!("{path:?}: expected {reason}, got {other:?}")),
        }
    }
    assert!(wrong.is_empty(), "wrong reasons:\n{}", wrong.join("\n"));
    for (path, _) in &good_files {
        assert_eq!(log[path].0, "accepted", "{path}: {:?}", log[path]);
    }
    assert_eq!(s.files_accepted, good_files.len());
    assert_eq!(scalar(&tables, "SELECT COUNT(*) FROM bronze.contributions").await, 2 + 3 + 1 + 1);

    // Bad files are not retried until their bytes change.
    let again = ingest(&cfg, &tables).await;
    assert_eq!((again.files_accepted, again.files_quarantined), (0, 0));
}
