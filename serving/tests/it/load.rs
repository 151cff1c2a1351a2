//! A bounded load test on loopback: overload gets 429 with Retry-After, the server stays up, and
//! every answered request has exactly one usage row.

use std::collections::BTreeSet;

use serde_json::json;
use tributary_jobs::model::LoraTarget;
use tributary_serving::metering::read_usage;

use crate::common::{Fixture, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_429_and_usage_rows_equal_completed_requests() {
    let f = Fixture::new(|c| {
        c.serving.max_queue = 6;
        c.serving.max_batch = 4;
        c.serving.usage_flush_rows = 7;
        c.serving.fee_per_token = 3;
    })
    .await;
    for i in 0..3 {
        f.adapter(&format!("d{i}"), "v1", 8, &LoraTarget::ATTENTION, 40 + i).await;
    }
    let server = f.start().await;
    let http = client(&server);

    // Four waves of 20 requests at once against room for 4 running + 6 waiting.
    let mut jobs = Vec::new();
    for wave in 0..4 {
        for k in 0..20 {
            let http = http.clone();
            let i = wave * 20 + k;
            jobs.push(tokio::spawn(async move {
                let model = if i % 4 == 3 { String::new() } else { format!("d{}", i % 3) };
                http.complete(&model, &format!("load test request {i}"), json!({"max_tokens": 8 + i % 5, "temperature": 0.7, "seed": i}))
                    .await
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let mut ok = BTreeSet::new();
    let (mut rejected, mut tokens_out) = (0, 0u64);
    for j in jobs {
        let r = j.await.expect("task").expect("request");
        match r.status {
            200 => {
                assert!(ok.insert(r.body["id"].as_str().expect("id").to_string()), "ids are unique");
                tokens_out += r.body["usage"]["completion_tokens"].as_u64().expect("usage");
            }
            429 => {
                rejected += 1;
                assert!(r.retry_after.is_some_and(|s| (1..=60).contains(&s)), "429 carries Retry-After: {:?}", r.retry_after);
                assert_eq!(r.body["error"]["code"], "queue_full");
            }
            other => panic!("unexpected status {other}: {}", r.body),
        }
    }
    assert!(rejected > 0, "the overload was refused in part");
    assert!(ok.len() >= 20, "and served in part ({} ok, {rejected} refused)", ok.len());

    // Still up, and admin calls without the token are refused.
    let health = http.get("/healthz").await.expect("healthz");
    assert_eq!(health.status, 200);
    assert_eq!(http.post("/admin/adapters/unload", &json!({"adapter": "d0"})).await.expect("request").status, 401);
    let after = http.complete("d1", "after the storm", json!({"max_tokens": 4})).await.expect("request");
    assert_eq!(after.status, 200);
    ok.insert(after.body["id"].as_str().expect("id").to_string());
    tokens_out += after.body["usage"]["completion_tokens"].as_u64().expect("usage");

    let report = server.shutdown().await.expect("clean shutdown");
    assert_eq!(report.meter.rows, ok.len());
    assert!(report.meter.commits >= 2, "rows were written in several batches");
    let rows = read_usage(&f.tables).await.expect("usage table");
    let ids: BTreeSet<String> = rows.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(rows.len(), ids.len(), "no duplicates");
    assert_eq!(ids, ok, "one usage row per answered request, none lost");
    assert_eq!(rows.iter().map(|r| r.tokens_out as u64).sum::<u64>(), tokens_out);
    for r in &rows {
        assert_eq!(r.fee, 3 * r.tokens_out as u128, "fee = fee_per_token × tokens out");
        assert_eq!(r.datanet.is_none(), r.adapter == "test-base");
    }
}
