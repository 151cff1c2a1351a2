//! Scale-out: two serving replicas that share nothing but one object store (each opens the
//! warehouse on its own, as two processes behind a load balancer would). Both serve the adapters
//! published there, both see a version published while they run, and their usage rows land in
//! the one `gold.inference_usage` table, each answered request exactly once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tributary_jobs::model::LoraTarget;
use tributary_pipeline::{Config, Tables, Warehouse};
use tributary_serving::client::Client;
use tributary_serving::metering::read_usage;
use tributary_serving::{Server, ServingBuilder};

use crate::common::{Fixture, TOKEN, test_config};

fn replica_config(dir: &str) -> Config {
    let mut c = test_config();
    c.warehouse = format!("file://{dir}/warehouse");
    // Both replicas flush while the other is writing too: concurrent Delta appends.
    c.serving.usage_flush_rows = 3;
    c.serving.usage_flush_ms = 50;
    c
}

/// A replica: its own warehouse handle, its own base-model load, its own port.
async fn replica(config: &Arc<Config>) -> Server {
    let tables = Tables::new(Warehouse::open(config).expect("warehouse"));
    ServingBuilder::new(config.clone(), tables)
        .with_bind("127.0.0.1:0")
        .with_admin_token(Some(TOKEN.into()))
        .start()
        .await
        .expect("replica starts")
}

/// The version `alias` points at on the server behind `http`, if listed.
async fn alias_target(http: &Client, alias: &str) -> Option<String> {
    let models = http.get("/v1/models").await.expect("models");
    assert_eq!(models.status, 200);
    models.body["data"].as_array()?.iter().find(|m| m["id"] == alias && m["kind"] == "alias")?["alias_of"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_one_store_serve_the_same_adapters_and_meter_into_one_table() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = Arc::new(replica_config(tmp.path().to_str().expect("utf-8 path")));
    let f = Fixture::in_warehouse(Warehouse::open(&config).expect("warehouse"), |_| {}).await;
    f.adapter("geo", "v1", 8, &LoraTarget::ATTENTION, 11).await;
    f.adapter("notes", "v1", 8, &LoraTarget::ATTENTION, 12).await;

    let (a, b) = (replica(&config).await, replica(&config).await);
    let (ha, hb) = (Client::new(a.url()).expect("client"), Client::new(b.url()).expect("client"));

    // Requests spread over both replicas at once.
    let mut jobs = Vec::new();
    for i in 0..24 {
        let http = if i % 2 == 0 { ha.clone() } else { hb.clone() };
        let model = ["geo", "notes", ""][i % 3].to_string();
        jobs.push(tokio::spawn(async move {
            http.complete(&model, &format!("replica request {i}"), json!({"max_tokens": 6, "temperature": 0.7, "seed": i})).await
        }));
    }
    let mut answered = BTreeSet::new();
    for j in jobs {
        let r = j.await.expect("task").expect("request");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(answered.insert(r.body["id"].as_str().expect("id").to_string()), "request ids are unique across replicas");
    }
    // The replicas are interchangeable: the same request gets the same answer from either.
    for model in ["geo", "notes", ""] {
        let mut texts = Vec::new();
        for http in [&ha, &hb] {
            let r = http.complete(model, "the same question", json!({"max_tokens": 8, "temperature": 0})).await.expect("request");
            assert_eq!(r.status, 200, "{}", r.body);
            answered.insert(r.body["id"].as_str().expect("id").to_string());
            texts.push(r.body["choices"][0]["text"].as_str().expect("text").to_string());
        }
        assert_eq!(texts[0], texts[1], "both replicas answer {model:?} alike");
    }

    // A version published while both run (by a third party: a training job) reaches both.
    f.adapter("geo", "v2", 8, &LoraTarget::ATTENTION, 13).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for http in [&ha, &hb] {
        while alias_target(http, "geo").await.as_deref() != Some("geo/v2") {
            assert!(Instant::now() < deadline, "a replica never saw geo/v2");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = http.complete("geo", "after the publish", json!({"max_tokens": 4})).await.expect("request");
        assert_eq!(r.status, 200, "{}", r.body);
        answered.insert(r.body["id"].as_str().expect("id").to_string());
    }

    let (ra, rb) = (a.shutdown().await.expect("replica a stops"), b.shutdown().await.expect("replica b stops"));
    assert_eq!(ra.meter.rows + rb.meter.rows, answered.len(), "each replica metered what it answered");
    assert!(ra.meter.rows > 0 && rb.meter.rows > 0, "both replicas served");

    // Read back through a fresh handle on the store: one table, every request exactly once.
    let reader = Tables::new(Warehouse::open(&config).expect("warehouse"));
    let rows = read_usage(&reader).await.expect("usage table");
    let ids: BTreeSet<String> = rows.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(rows.len(), ids.len(), "no duplicates");
    assert_eq!(ids, answered, "no request lost");
    assert!(rows.iter().any(|r| r.adapter == "geo/v2"), "the new version was served and metered");
}
