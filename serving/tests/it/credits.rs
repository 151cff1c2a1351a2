//! Per-inference attribution: the index is built when the adapter is published, stored beside it,
//! and an answer that reproduces training rows credits their contributors, in the response and in
//! `gold.inference_usage`.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::protocol::SaveMode;
use serde_json::json;
use tributary_jobs::model::LoraTarget;
use tributary_pipeline::{TableDef, TableId};
use tributary_serving::adapter_cache::AdapterKey;
use tributary_serving::metering::read_usage;
use tributary_serving::{credits, synthetic};

use crate::common::{Fixture, client};

const A: &str = "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "0xcccccccccccccccccccccccccccccccccccccccc";

/// Write `gold.training_set` rows `(id, contributor, text)` of datanet `kb`; returns the version.
async fn training_set(f: &Fixture, rows: &[(&str, &str, String)]) -> i64 {
    let schema = Arc::new(Schema::new(vec![
        Field::new("contribution_id", DataType::Utf8, false),
        Field::new("datanet", DataType::Utf8, false),
        Field::new("contributor", DataType::Utf8, false),
        Field::new("epoch", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
    ]));
    let def = TableDef {
        id: TableId::new("gold", "training_set"),
        schema: schema.clone(),
        partition_columns: vec![],
        description: "test training set".into(),
    };
    let table = f.tables.open_or_create(&def).await.expect("create");
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "kb"))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|_| 0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2.as_str()))),
        ],
    )
    .expect("batch");
    let table = table.write(vec![batch]).with_save_mode(SaveMode::Append).await.expect("write");
    table.version().expect("version") as i64
}

#[tokio::test]
async fn answers_that_reproduce_training_rows_credit_their_contributors() {
    let f = Fixture::new(|c| c.serving.credit_min_span_tokens = 4).await;
    let adapter = synthetic::random_adapter(&f.base.model, 8, 16.0, &LoraTarget::ATTENTION, 0.5, 77);
    // First, what the adapter answers (served without an index: no training set yet).
    let record = synthetic::record(&f.base, "kb", "e0-v0-0000", &adapter, 0, 0);
    synthetic::publish(&f.warehouse, &record, &adapter).await.expect("publish");
    let server = f.start().await;
    let http = client(&server);
    let mut found = None;
    for prompt in ["the history of", "tell me about", "notes on the river", "a list of", "what is", "the capital"] {
        let r = http.complete("kb", prompt, json!({"max_tokens": 24, "temperature": 0})).await.expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(r.body["attribution"]["status"], "no_index");
        let text = r.body["choices"][0]["text"].as_str().unwrap_or_default().to_string();
        if f.base.tokenizer.encode(&text).expect("encode").len() >= 12 {
            found = Some((prompt.to_string(), text));
            break;
        }
    }
    let (prompt, text) = found.expect("some prompt gives a long answer");
    server.shutdown().await.expect("shutdown");

    // Contributors A and C both hold rows that open with exactly that answer; B's row is unrelated.
    let rows = [
        ("c1", A, format!("{text} and then the row goes on with other words")),
        ("c2", B, "an unrelated row about mountains and lakes and nothing the model says".into()),
        ("c3", C, text.clone()),
    ];
    let version = training_set(&f, &rows).await;
    // The same weights published as a new version trained on that training set.
    let mut record = synthetic::record(&f.base, "kb", "e0-v1-cafe", &adapter, 0, version);
    record.training_set.delta_version = version;
    synthetic::publish(&f.warehouse, &record, &adapter).await.expect("publish");

    let server = f.start().await;
    // The index was built when the version was picked up, and stored beside the adapter.
    let key = AdapterKey::new("kb", "e0-v1-cafe");
    let index = credits::load(&f.warehouse, &key).await.expect("readable").expect("built");
    assert_eq!(index.header().rows, 3);
    assert_eq!(index.header().contributors, vec![A.to_string(), B.to_string(), C.to_string()]);
    let canonical = f.base.tokenizer.encode(&text).expect("encode");
    // ∞-gram counts are occurrences, not rows: every 6-token span of the answer is counted exactly
    // as often as a brute-force scan of the indexed rows finds it. (The tiny test model's answers
    // are often repetitive, so a span may occur several times inside one row.)
    let row_tokens: Vec<Vec<u32>> = rows.iter().map(|r| f.base.tokenizer.encode(&r.2).expect("encode")).collect();
    let occurrences = |span: &[u32], within: &[u32]| within.windows(span.len()).filter(|w| *w == span).count();
    for span in canonical.windows(6) {
        let expected: usize = row_tokens.iter().map(|t| occurrences(span, t)).sum();
        assert_eq!(index.count(span), expected, "∞-gram count of {span:?}");
    }
    // A span that occurs once in the answer occurs in exactly the two rows that reproduce it.
    let unique = canonical.windows(6).find(|w| occurrences(w, &canonical) == 1);
    if let Some(span) = unique {
        assert_eq!(index.count(span), 2, "the span {span:?} occurs in two rows (∞-gram count)");
    }
    assert_eq!(index.count(&canonical), 2, "the whole answer occurs in two rows (∞-gram count)");

    let http = client(&server);
    let r = http.complete("kb", &prompt, json!({"max_tokens": 24, "temperature": 0})).await.expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["model"], "kb/e0-v1-cafe");
    assert_eq!(r.body["choices"][0]["text"].as_str(), Some(text.as_str()), "same weights, same answer");
    let attribution = &r.body["attribution"];
    assert_eq!(attribution["status"], "matched");
    let contributors = attribution["contributors"].as_array().expect("list");
    let weight = |who: &str| contributors.iter().find(|c| c["address"] == who).and_then(|c| c["weight"].as_f64());
    let (wa, wc) = (weight(A).expect("A credited"), weight(C).expect("C credited"));
    assert!(weight(B).is_none(), "the unrelated row earns nothing");
    assert!((wa - wc).abs() < 1e-9, "identical reproductions share equally: {wa} vs {wc}");
    assert!(wa + wc > 0.8 && wa + wc <= 1.0 + 1e-9, "the answer is reproduced: {}", wa + wc);
    let request_id = r.body["id"].as_str().expect("id").to_string();

    let base = http.complete("", &prompt, json!({"max_tokens": 4})).await.expect("request");
    assert_eq!(base.body["attribution"]["status"], "base_model");
    let base_id = base.body["id"].as_str().expect("id").to_string();

    server.shutdown().await.expect("shutdown");
    let rows = read_usage(&f.tables).await.expect("usage");
    let row = rows.iter().find(|u| u.request_id == request_id).expect("metered");
    assert_eq!(row.datanet.as_deref(), Some("kb"));
    assert_eq!(row.adapter, "kb/e0-v1-cafe");
    let credits = row.credits.as_ref().expect("credits recorded");
    let stored: Vec<(&str, f64)> = credits.iter().map(|c| (c.address.as_str(), c.weight)).collect();
    let answered: Vec<(&str, f64)> =
        contributors.iter().map(|c| (c["address"].as_str().unwrap_or_default(), c["weight"].as_f64().unwrap_or_default())).collect();
    assert_eq!(stored, answered, "the usage row carries the response's credits");
    let base_row = rows.iter().find(|u| u.request_id == base_id).expect("metered");
    assert!(base_row.credits.is_none() && base_row.datanet.is_none());
}
