//! The HTTP API: validation errors name the field, streaming equals the plain answer, stop strings,
//! the model list, admin authentication, metrics.

use serde_json::{Value, json};
use tributary_jobs::model::LoraTarget;
use tributary_serving::client::Client;

use crate::common::{Fixture, TOKEN, client};

struct Case {
    name: &'static str,
    path: &'static str,
    body: String,
    status: u16,
    param: &'static str,
    code: &'static str,
}

fn case(name: &'static str, path: &'static str, body: impl Into<String>, status: u16, param: &'static str, code: &'static str) -> Case {
    Case { name, path, body: body.into(), status, param, code }
}

#[tokio::test]
async fn bad_requests_get_precise_errors() {
    let f = Fixture::new(|c| c.serving.max_prompt_tokens = 40).await;
    f.adapter("alpha", "v1", 8, &LoraTarget::ATTENTION, 1).await;
    let server = f.start().await;
    let http = client(&server);
    let long_prompt = "word ".repeat(200);
    let cases = [
        case("malformed json", "/v1/completions", r#"{"prompt": "x", "#, 400, "body", "invalid_json"),
        case("not an object", "/v1/completions", "[1, 2]", 400, "body", "invalid_json"),
        case("missing prompt", "/v1/completions", r#"{"model": ""}"#, 400, "prompt", "invalid_field"),
        case("prompt wrong type", "/v1/completions", r#"{"prompt": 5}"#, 400, "prompt", "invalid_type"),
        case("two prompts", "/v1/completions", r#"{"prompt": ["a", "b"]}"#, 400, "prompt", "unsupported"),
        case("temperature", "/v1/completions", r#"{"prompt": "x", "temperature": 3.5}"#, 400, "temperature", "out_of_range"),
        case("negative temperature", "/v1/completions", r#"{"prompt": "x", "temperature": -1}"#, 400, "temperature", "out_of_range"),
        case("top_p zero", "/v1/completions", r#"{"prompt": "x", "top_p": 0}"#, 400, "top_p", "out_of_range"),
        case("top_p above one", "/v1/completions", r#"{"prompt": "x", "top_p": 1.5}"#, 400, "top_p", "out_of_range"),
        case("max_tokens zero", "/v1/completions", r#"{"prompt": "x", "max_tokens": 0}"#, 400, "max_tokens", "out_of_range"),
        case("max_tokens huge", "/v1/completions", r#"{"prompt": "x", "max_tokens": 100000}"#, 400, "max_tokens", "out_of_range"),
        case("max_tokens negative", "/v1/completions", r#"{"prompt": "x", "max_tokens": -3}"#, 400, "max_tokens", "invalid_type"),
        case("seed string", "/v1/completions", r#"{"prompt": "x", "seed": "abc"}"#, 400, "seed", "invalid_type"),
        case("n", "/v1/completions", r#"{"prompt": "x", "n": 3}"#, 400, "n", "unsupported"),
        case("empty stop", "/v1/completions", r#"{"prompt": "x", "stop": ["ok", ""]}"#, 400, "stop[1]", "out_of_range"),
        case("too many stops", "/v1/completions", r#"{"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}"#, 400, "stop", "out_of_range"),
        case("prompt too long", "/v1/completions", json!({"prompt": long_prompt}).to_string(), 400, "prompt", "prompt_too_long"),
        case("unknown adapter", "/v1/completions", r#"{"prompt": "x", "model": "nope"}"#, 404, "model", "model_not_found"),
        case("unknown version", "/v1/completions", r#"{"prompt": "x", "model": "alpha/v9"}"#, 404, "model", "model_not_found"),
        case("chat without messages", "/v1/chat/completions", r#"{"messages": []}"#, 400, "messages", "invalid_field"),
        case("chat bad role", "/v1/chat/completions", r#"{"messages": [{"role": "robot", "content": "x"}]}"#, 400, "messages[0].role", "invalid_field"),
        case(
            "chat bad part",
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
            400,
            "messages[0].content[0].type",
            "unsupported",
        ),
        case("chat content type", "/v1/chat/completions", r#"{"messages": [{"role": "user", "content": 7}]}"#, 400, "messages[0].content", "invalid_type"),
    ];
    for c in &cases {
        let r = http.post_raw(c.path, c.body.clone()).await.expect("request");
        assert_eq!(r.status, c.status, "{}: {}", c.name, r.body);
        assert_eq!(r.body["error"]["param"].as_str(), Some(c.param), "{}: {}", c.name, r.body);
        assert_eq!(r.body["error"]["code"].as_str(), Some(c.code), "{}: {}", c.name, r.body);
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", c.name);
    }
    // Nothing above reached the engine; the server still answers.
    let ok = http.complete("alpha", "fine", json!({"max_tokens": 3})).await.expect("request");
    assert_eq!(ok.status, 200, "{}", ok.body);
    server.shutdown().await.expect("shutdown");
}

fn streamed_text(events: &[String], field: &str) -> (String, Value) {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "stream ends with [DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).expect("chunk is JSON")).collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            let choice = &c["choices"][0];
            match field {
                "text" => choice["text"].as_str().map(str::to_string),
                _ => choice["delta"]["content"].as_str().map(str::to_string),
            }
        })
        .collect();
    (text, chunks.last().cloned().unwrap_or(Value::Null))
}

#[tokio::test]
async fn streaming_matches_plain_answers_and_stop_strings_cut() {
    let f = Fixture::new(|_| {}).await;
    f.adapter("alpha", "v1", 8, &LoraTarget::ATTENTION, 3).await;
    let server = f.start().await;
    let http = client(&server);
    let body = json!({"model": "alpha", "prompt": "the rivers of", "max_tokens": 24, "temperature": 0});
    let plain = http.post("/v1/completions", &body).await.expect("request");
    assert_eq!(plain.status, 200);
    let plain_text = plain.body["choices"][0]["text"].as_str().expect("text").to_string();
    assert_eq!(plain.body["model"].as_str(), Some("alpha/v1"), "the alias resolves to the version that ran");
    assert!(plain.body["attribution"].is_object(), "attribution beside usage");

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let (status, events) = http.stream("/v1/completions", &streaming).await.expect("stream");
    assert_eq!(status, 200);
    assert!(events.len() >= 3, "several chunks: {events:?}");
    let (text, last) = streamed_text(&events, "text");
    assert_eq!(text, plain_text);
    assert_eq!(last["usage"], plain.body["usage"]);
    assert_eq!(last["choices"][0]["finish_reason"], plain.body["choices"][0]["finish_reason"]);
    assert!(last["attribution"].is_object());

    // Chat, streamed and not. Chat renders its messages in the prompt/completion layout training
    // uses (the prompt, then a newline), while `/v1/completions` continues its prompt as is: a
    // one-message chat is the completion of the message followed by a newline.
    let as_prompt = json!({"model": "alpha", "prompt": "the rivers of\n", "max_tokens": 24, "temperature": 0});
    let p = http.post("/v1/completions", &as_prompt).await.expect("request");
    assert_eq!(p.status, 200, "{}", p.body);
    let prompt_text = p.body["choices"][0]["text"].as_str().expect("text").to_string();
    let chat = json!({"model": "alpha", "messages": [{"role": "user", "content": "the rivers of"}], "max_tokens": 24, "temperature": 0});
    let c = http.post("/v1/chat/completions", &chat).await.expect("chat");
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["object"], "chat.completion");
    assert_eq!(c.body["usage"]["prompt_tokens"], p.body["usage"]["prompt_tokens"], "the same prompt tokens");
    assert_eq!(
        c.body["choices"][0]["message"]["content"].as_str(),
        Some(prompt_text.as_str()),
        "one message renders as the prompt followed by a newline"
    );
    let mut chat_stream = chat.clone();
    chat_stream["stream"] = json!(true);
    let (_, events) = http.stream("/v1/chat/completions", &chat_stream).await.expect("stream");
    assert_eq!(streamed_text(&events, "delta").0, prompt_text);

    // A stop string taken from the middle of the answer cuts it there.
    let words: Vec<&str> = plain_text.split_whitespace().collect();
    if words.len() >= 3 {
        let stop = words[words.len() / 2];
        let cut = plain_text.find(stop).expect("stop occurs");
        let mut stopped = body.clone();
        stopped["stop"] = json!([stop]);
        let r = http.post("/v1/completions", &stopped).await.expect("request");
        assert_eq!(r.body["choices"][0]["text"].as_str(), Some(&plain_text[..cut]));
        assert_eq!(r.body["choices"][0]["finish_reason"], "stop");
        stopped["stream"] = json!(true);
        let (_, events) = http.stream("/v1/completions", &stopped).await.expect("stream");
        assert_eq!(streamed_text(&events, "text").0, &plain_text[..cut], "no text past the stop string is ever streamed");
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn models_admin_and_metrics() {
    let f = Fixture::new(|_| {}).await;
    f.adapter("alpha", "v1", 8, &LoraTarget::ATTENTION, 4).await;
    f.adapter("beta", "v1", 8, &LoraTarget::ATTENTION, 5).await;
    let server = f.start().await;
    let http = client(&server);

    let models = http.get("/v1/models").await.expect("models");
    let ids: Vec<&str> = models.body["data"].as_array().expect("list").iter().filter_map(|m| m["id"].as_str()).collect();
    for id in ["test-base", "alpha/v1", "beta/v1", "alpha", "beta"] {
        assert!(ids.contains(&id), "{id} listed in {ids:?}");
    }

    let load = json!({"adapter": "beta"});
    let anonymous = http.post("/admin/adapters/load", &load).await.expect("request");
    assert_eq!(anonymous.status, 401);
    let wrong = Client::new(server.url()).expect("client").with_token("not-it");
    assert_eq!(wrong.post("/admin/adapters/load", &load).await.expect("request").status, 401);
    assert_eq!(wrong.post("/admin/adapters/unload", &load).await.expect("request").status, 401);
    let admin = Client::new(server.url()).expect("client").with_token(TOKEN);
    let ok = admin.post("/admin/adapters/load", &load).await.expect("request");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["adapter"], "beta/v1");
    assert_eq!(ok.body["rank"], 8);
    let unknown = admin.post("/admin/adapters/load", &json!({"adapter": "nope"})).await.expect("request");
    assert_eq!((unknown.status, unknown.body["error"]["param"].as_str()), (400, Some("adapter")));
    let bad = admin.post_raw("/admin/adapters/load", "{").await.expect("request");
    assert_eq!(bad.status, 400);
    let r = http.complete("beta", "hello", json!({"max_tokens": 4})).await.expect("request");
    assert_eq!(r.status, 200);
    let unload = admin.post("/admin/adapters/unload", &load).await.expect("request");
    assert_eq!(unload.status, 200, "{}", unload.body);
    assert_eq!(unload.body["was_in_host_memory"], true);
    // Unloaded adapters load again on demand.
    let r = http.complete("beta", "hello", json!({"max_tokens": 4})).await.expect("request");
    assert_eq!(r.status, 200);

    let health = http.get("/healthz").await.expect("healthz");
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")));
    let (status, text) = http.get_text("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    for name in [
        "tributary_requests_total{route=\"/v1/completions\",status=\"200\"} 2",
        "tributary_requests_total{route=\"/admin/adapters/load\",status=\"401\"}",
        "tributary_queue_time_seconds_count",
        "tributary_time_to_first_token_seconds_bucket",
        "tributary_time_per_output_token_seconds_sum",
        "tributary_batch_size_bucket",
        "tributary_tokens_in_total",
        "tributary_tokens_out_total",
        "tributary_adapter_cache_hits_total{tier=\"host\"}",
        "tributary_adapter_cache_misses_total",
        "tributary_adapter_cache_loads_total{tier=\"active\"}",
        "tributary_adapter_cache_evictions_total{tier=\"host\"} 1",
    ] {
        assert!(text.contains(name), "metrics expose {name}:\n{text}");
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_server_keeps_serving_longer_than_the_shutdown_grace() {
    // The grace period bounds how long a stop waits for in-flight requests; it is counted from the
    // stop, so a server that is not stopped serves on past it.
    let f = Fixture::new(|c| c.serving.shutdown_grace_secs = 0).await;
    let server = f.start().await;
    let http = client(&server);
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let health = http.get("/healthz").await.expect("healthz");
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")), "{}", health.body);
    let r = http.complete("", "still here", json!({"max_tokens": 3})).await.expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    let report = server.shutdown().await.expect("shutdown");
    assert_eq!(report.engine.finished, 1);
}
