//! The adapter tiers: bad adapters fail alone, a published version is picked up without a restart
//! while running requests finish on theirs, and a small active set rotates without mixing anyone up.

use std::time::{Duration, Instant};

use serde_json::json;
use tributary_jobs::adapter_store::{AdapterDir, files};
use tributary_jobs::model::LoraTarget;
use tributary_serving::synthetic;

use crate::common::{Fixture, assert_greedy, client, merged, token_ids};

#[tokio::test]
async fn a_bad_adapter_fails_alone_with_a_clear_reason() {
    let f = Fixture::new(|_| {}).await;
    f.adapter("good", "v1", 8, &LoraTarget::ATTENTION, 1).await;
    // Truncated weights.
    f.adapter("truncated", "v1", 8, &LoraTarget::ATTENTION, 2).await;
    let dir = AdapterDir::new(&f.warehouse, "truncated", "v1");
    let bytes = dir.get(files::WEIGHTS).await.expect("get").expect("present");
    dir.put(files::WEIGHTS, bytes[..bytes.len() / 2].to_vec()).await.expect("put");
    // Trained on another base model.
    let other = synthetic::random_adapter(&f.base.model, 8, 16.0, &LoraTarget::ATTENTION, 0.5, 3);
    let mut record = synthetic::record(&f.base, "foreign", "v1", &other, 0, 0);
    record.base_model.sha256 = "ab".repeat(32);
    synthetic::publish(&f.warehouse, &record, &other).await.expect("publish");
    // A tensor of the wrong shape (rank 8 declared, rank 4 stored).
    let small = synthetic::random_adapter(&f.base.model, 4, 8.0, &LoraTarget::ATTENTION, 0.5, 4);
    let mut record = synthetic::record(&f.base, "misshapen", "v1", &small, 0, 0);
    record.lora.rank = 8;
    synthetic::publish(&f.warehouse, &record, &small).await.expect("publish");
    // A record that does not parse.
    AdapterDir::new(&f.warehouse, "garbled", "v1").put(files::RECORD, b"{not json".to_vec()).await.expect("put");

    let server = f.start().await;
    let http = client(&server);
    let expectations = [
        ("truncated", "checkpoint"),
        ("foreign", "trained on base model"),
        ("misshapen", "shape"),
        ("garbled/v1", "adapter.json"),
    ];
    for (model, reason) in expectations {
        for attempt in 0..2 {
            let r = http.complete(model, "hello", json!({"max_tokens": 4})).await.expect("request");
            assert_eq!(r.status, 422, "{model} attempt {attempt}: {}", r.body);
            assert_eq!(r.body["error"]["code"], "adapter_invalid");
            let message = r.body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(reason), "{model}: `{message}` names the problem ({reason})");
            // Everything else keeps serving in between.
            let ok = http.complete("good", "hello", json!({"max_tokens": 4})).await.expect("request");
            assert_eq!(ok.status, 200, "{}", ok.body);
        }
    }
    let base = http.complete("", "hello", json!({"max_tokens": 4})).await.expect("request");
    assert_eq!(base.status, 200);
    let (_, metrics) = http.get_text("/metrics").await.expect("metrics");
    assert!(metrics.contains("tributary_adapter_cache_load_failures_total{tier=\"host\"} 3"), "{metrics}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_published_version_moves_the_alias_while_running_requests_finish_on_theirs() {
    let f = Fixture::new(|c| c.serving.publish_poll_secs = 1).await;
    let v1 = f.adapter("notes", "e0-v1-aaaa", 8, &LoraTarget::ATTENTION, 31).await;
    let server = f.start().await;
    let http = client(&server);
    let prompt = "notes about the valley";
    let r = http.complete("notes", prompt, json!({"max_tokens": 8, "temperature": 0})).await.expect("request");
    assert_eq!(r.body["model"], "notes/e0-v1-aaaa");

    // A long request starts on v1, then v2 is published while it runs.
    let long = {
        let http = http.clone();
        tokio::spawn(async move {
            http.stream(
                "/v1/completions",
                &json!({"model": "notes", "prompt": prompt, "max_tokens": 60, "temperature": 0, "stream": true, "return_token_ids": true}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let v2 = synthetic::random_adapter(&f.base.model, 8, 16.0, &LoraTarget::ATTENTION, 0.5, 32);
    let mut record = synthetic::record(&f.base, "notes", "e0-v2-bbbb", &v2, 0, 1);
    record.training_set.delta_version = 2;
    synthetic::publish(&f.warehouse, &record, &v2).await.expect("publish v2");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http.complete("notes", prompt, json!({"max_tokens": 8, "temperature": 0, "return_token_ids": true})).await.expect("request");
        assert_eq!(r.status, 200);
        if r.body["model"] == "notes/e0-v2-bbbb" {
            let reference = merged(&f.base.model, &v2);
            assert_greedy(&reference, f.base.tokenizer.eot(), &f.prompt(prompt), &token_ids(&r.body), 8, "served by v2's weights");
            break;
        }
        assert!(Instant::now() < deadline, "the alias never moved to v2");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, events) = long.await.expect("task").expect("stream");
    assert_eq!(status, 200);
    let last: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).expect("final chunk");
    assert_eq!(last["model"], "notes/e0-v1-aaaa", "the running request finished on the version it started with");
    let reference = merged(&f.base.model, &v1);
    assert_greedy(&reference, f.base.tokenizer.eot(), &f.prompt(prompt), &token_ids(&last), 60, "…with v1's weights throughout");
    // The old version stays addressable by its full id.
    let old = http.complete("notes/e0-v1-aaaa", prompt, json!({"max_tokens": 2})).await.expect("request");
    assert_eq!(old.status, 200);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_small_active_set_rotates_adapters_and_keeps_every_answer_right() {
    let f = Fixture::new(|c| {
        c.serving.max_active_adapters = 2;
        c.serving.max_batch = 4;
        c.serving.adapter_cycle_ms = 50;
    })
    .await;
    let mut adapters = Vec::new();
    for i in 0..6 {
        adapters.push(f.adapter(&format!("d{i}"), "v1", 8, &LoraTarget::ATTENTION, 100 + i).await);
    }
    let server = f.start().await;
    let http = client(&server);
    let mut jobs = Vec::new();
    for round in 0..3 {
        for i in 0..6 {
            let http = http.clone();
            let prompt = format!("question {round} for {i}");
            jobs.push(tokio::spawn(async move {
                let r = http.complete(&format!("d{i}"), &prompt, json!({"max_tokens": 6, "temperature": 0, "return_token_ids": true})).await;
                (i, prompt, r)
            }));
        }
    }
    for j in jobs {
        let (i, prompt, r) = j.await.expect("task");
        let r = r.expect("request");
        assert_eq!(r.status, 200, "{}", r.body);
        let reference = merged(&f.base.model, &adapters[i]);
        assert_greedy(&reference, f.base.tokenizer.eot(), &f.prompt(&prompt), &token_ids(&r.body), 6, &format!("d{i} on {prompt:?}"));
    }
    let m = server.metrics();
    assert!(m.adapter_count("evictions", "active") >= 4, "six adapters rotated through two slots");
    assert_eq!(m.adapter_count("misses", "host"), 6, "each adapter read from the store once");
    server.shutdown().await.expect("shutdown");
}
