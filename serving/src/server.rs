//! The HTTP server: routes, handlers, and the server's life from start to a clean shutdown.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/completions` | OpenAI completions, JSON or server-sent events (`stream: true`) |
//! | `POST /v1/chat/completions` | OpenAI chat completions, JSON or server-sent events |
//! | `GET /v1/models` | the base model, every adapter version, and each datanet's alias |
//! | `POST /admin/adapters/load`, `/unload` | move an adapter into / out of memory (bearer token) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | liveness and a few numbers |
//!
//! Responses carry `usage` and, beside it, `attribution`: the contributors whose training rows the
//! answer reproduces, with weights. Shutdown (on [`Server::shutdown`], Ctrl-C or SIGTERM) closes the
//! admission gate, lets accepted requests finish, stops the engine, then flushes the usage meter.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tributary_jobs::compute::Compute;
use tributary_jobs::model::BaseModel;
use tributary_pipeline::{Config, Tables};

use crate::adapter_cache::{self, AdapterKey, BaseIdentity, Loader, Registry};
use crate::error::{Error, Result};
use crate::infer::{Engine, EngineHandle, EngineOptions, EngineParts, EngineReport};
use crate::metering::{Meter, MeterOptions, MeterReport};
use crate::metrics::Metrics;
use crate::queue::{Event, Finished};
use crate::validation::{self, ApiKind, Limits, ValidatedRequest, Validator};

/// Shared state of the handlers.
struct AppState {
    validator: Validator,
    engine: EngineHandle,
    registry: Registry,
    loader: Loader,
    metrics: Arc<Metrics>,
    admin_token: Option<String>,
    admin_token_env: String,
    base_name: String,
}

/// Builds and starts a [`Server`].
pub struct ServingBuilder {
    config: Arc<Config>,
    tables: Tables,
    base: Option<BaseModel>,
    admin_token: Option<Option<String>>,
    bind: Option<String>,
    engine: Option<EngineOptions>,
    meter: Option<MeterOptions>,
}

impl ServingBuilder {
    /// A server for `config.serving` over the warehouse of `tables`.
    pub fn new(config: Arc<Config>, tables: Tables) -> ServingBuilder {
        ServingBuilder { config, tables, base: None, admin_token: None, bind: None, engine: None, meter: None }
    }

    /// Serve this already-loaded base model instead of loading `models/<serving.base_model>/`.
    pub fn with_base_model(mut self, base: BaseModel) -> Self {
        self.base = Some(base);
        self
    }

    /// Listen here instead of `serving.bind` (`127.0.0.1:0` picks a free port).
    pub fn with_bind(mut self, bind: impl Into<String>) -> Self {
        self.bind = Some(bind.into());
        self
    }

    /// Use this admin token instead of reading the variable `serving.admin_token_env` names
    /// (`None` disables the admin API). For embedding the server in a process (tests, the demo).
    pub fn with_admin_token(mut self, token: Option<String>) -> Self {
        self.admin_token = Some(token);
        self
    }

    /// Engine settings instead of those derived from `serving` (benchmarks compare batching modes).
    pub fn with_engine_options(mut self, options: EngineOptions) -> Self {
        self.engine = Some(options);
        self
    }

    /// Meter settings instead of those derived from `serving`.
    pub fn with_meter_options(mut self, options: MeterOptions) -> Self {
        self.meter = Some(options);
        self
    }

    /// Load the model, scan the adapters, start the engine, the meter and the publish watcher, and
    /// listen.
    pub async fn start(self) -> Result<Server> {
        let cfg = &self.config.serving;
        let warehouse = self.tables.warehouse().clone();
        let base = match self.base {
            Some(b) => b,
            None => {
                let compute = Compute::from_str(&cfg.device)?;
                BaseModel::load(&warehouse, &cfg.base_model, &compute.device()?).await?
            }
        };
        let registry = Registry::new(&base.name);
        adapter_cache::publish_new(&registry, &warehouse, &self.tables, &base.tokenizer).await?;
        let metrics = Arc::new(Metrics::default());
        let model = Arc::new(base.model.clone());
        let identity = BaseIdentity { name: base.name.clone(), sha256: base.sha256.clone() };
        let loader = Loader::new(
            warehouse.clone(),
            registry.clone(),
            identity,
            model.clone(),
            cfg.host_cache_adapters,
            cfg.max_lora_rank,
            metrics.clone(),
        );
        let meter = Meter::start(self.tables.clone(), self.config.clone(), self.meter.unwrap_or_else(|| meter_options(&self.config)));
        let options = self.engine.unwrap_or_else(|| engine_options(&self.config));
        let context = model.config.max_position_embeddings;
        let engine = Engine::start(
            EngineParts {
                model,
                tokenizer: base.tokenizer.clone(),
                base_name: base.name.clone(),
                loader: loader.clone(),
                metrics: metrics.clone(),
                usage: meter.sender(),
                runtime: tokio::runtime::Handle::current(),
            },
            options,
        )?;
        let limits = Limits {
            max_prompt_tokens: cfg.max_prompt_tokens.min(context.saturating_sub(1)),
            max_new_tokens: cfg.max_new_tokens.min(context.saturating_sub(1)).max(1),
            context_tokens: context,
        };
        let admin_token = match self.admin_token {
            Some(t) => t,
            None => std::env::var(&cfg.admin_token_env).ok(),
        }
        .filter(|t| !t.is_empty());
        let state = Arc::new(AppState {
            validator: Validator::new(base.tokenizer.clone(), registry.clone(), limits),
            engine: engine.handle(),
            registry: registry.clone(),
            loader,
            metrics: metrics.clone(),
            admin_token,
            admin_token_env: cfg.admin_token_env.clone(),
            base_name: base.name.clone(),
        });
        let watcher = tokio::spawn(adapter_cache::watch(
            registry.clone(),
            warehouse,
            self.tables.clone(),
            base.tokenizer.clone(),
            Duration::from_secs(cfg.publish_poll_secs.max(1)),
        ));
        let bind = self.bind.unwrap_or_else(|| cfg.bind.clone());
        let listener = tokio::net::TcpListener::bind(&bind)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {bind}: {e}")))?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (stopping_tx, stopping_rx) = oneshot::channel::<()>();
        let grace = Duration::from_secs(cfg.shutdown_grace_secs);
        let admission = engine.handle().admission().clone();
        let app = router(state);
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app.into_make_service()).with_graceful_shutdown(async move {
                let _ = stop_rx.await;
                // New requests get 503 from here on; accepted ones run to the end.
                admission.close();
                let _ = stopping_tx.send(());
            });
            let mut http = tokio::spawn(async move { serve.await });
            // The HTTP server finishes once in-flight requests are answered; that wait is bounded
            // by the grace period, counted from the stop (not from the start: the server serves
            // for as long as it is not stopped).
            let served = tokio::select! {
                joined = &mut http => joined.map_err(|e| Error::Internal(format!("http task: {e}")))?.map_err(Error::Io),
                _ = async {
                    if stopping_rx.await.is_err() {
                        // The HTTP server ended without a stop; the other branch completes.
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(grace + Duration::from_secs(5)).await;
                } => {
                    tracing::warn!("in-flight HTTP requests outlived the shutdown grace period; closing them");
                    http.abort();
                    Ok(())
                }
            };
            watcher.abort();
            let engine = engine.shutdown().await?;
            let meter = meter.finish().await?;
            served?;
            Ok(ShutdownReport { engine, meter })
        });
        tracing::info!(%addr, base = %base.name, adapters = registry.len(), "serving");
        Ok(Server { addr, registry, metrics, stop: Some(stop_tx), task })
    }
}

/// The engine settings `config.serving` describes.
pub fn engine_options(config: &Config) -> EngineOptions {
    let s = &config.serving;
    EngineOptions {
        max_batch: s.max_batch.max(1),
        max_queue: s.max_queue,
        max_active_adapters: s.max_active_adapters.max(1),
        prefill_token_budget: s.prefill_token_budget.max(1),
        adapter_cycle: Duration::from_millis(s.adapter_cycle_ms),
        fee_per_token: s.fee_per_token as u128,
        credit_min_span: s.credit_min_span_tokens.max(1),
        shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
        batching: Default::default(),
    }
}

/// The meter settings `config.serving` describes.
pub fn meter_options(config: &Config) -> MeterOptions {
    MeterOptions {
        flush_rows: config.serving.usage_flush_rows.max(1),
        flush_every: Duration::from_millis(config.serving.usage_flush_ms.max(10)),
        ..MeterOptions::default()
    }
}

/// What a clean shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The engine's totals.
    pub engine: EngineReport,
    /// The meter's totals.
    pub meter: MeterReport,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    registry: Registry,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<ShutdownReport>>,
}

impl Server {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The adapter registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stop: refuse new requests, finish accepted ones, stop the engine, flush usage.
    pub async fn shutdown(mut self) -> Result<ShutdownReport> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.map_err(|e| Error::Internal(format!("server task: {e}")))?
    }

    /// Serve until `signal` completes, then shut down cleanly.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<ShutdownReport> {
        signal.await;
        self.shutdown().await
    }
}

/// Completes on Ctrl-C or SIGTERM.
///
/// The handlers are installed when this is called (not when the future is first polled), so a
/// signal arriving between the call and the first poll is not lost, and the process is not killed
/// by the default action of a signal it announced it would handle. Must be called inside a Tokio
/// runtime. A handler that cannot be installed never fires (it does not stop the server).
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(signal = name, error = %e, "cannot install the signal handler");
            None
        }
    };
    let interrupt = install(SignalKind::interrupt(), "SIGINT");
    let terminate = install(SignalKind::terminate(), "SIGTERM");
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(interrupt) => tracing::info!("SIGINT: shutting down"),
            _ = wait(terminate) => tracing::info!("SIGTERM: shutting down"),
        }
    }
}

/// Completes on Ctrl-C (the only shutdown signal outside Unix).
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/admin/adapters/load", post(admin_load))
        .route("/admin/adapters/unload", post(admin_unload))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    state.metrics.request(&route, response.status().as_u16());
    response
}

async fn completions(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response> {
    let request = state.validator.completion(&body)?;
    generate(&state, request).await
}

async fn chat_completions(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response> {
    let request = state.validator.chat(&body)?;
    generate(&state, request).await
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The id the response reports as `model`: the resolved version, or the base model.
fn model_id(state: &AppState, adapter: &Option<AdapterKey>) -> String {
    adapter.as_ref().map_or_else(|| state.base_name.clone(), ToString::to_string)
}

async fn generate(state: &AppState, request: ValidatedRequest) -> Result<Response> {
    let shape = Shape { id: request.id.clone(), api: request.api, token_ids: request.return_token_ids, model: model_id(state, &request.adapter) };
    let stream = request.stream;
    let mut events = state.engine.submit(request)?;
    if stream {
        let sse = Sse::new(sse_stream(events, shape)).keep_alive(KeepAlive::default());
        return Ok(sse.into_response());
    }
    loop {
        match events.recv().await {
            Some(Event::Token(_)) => continue,
            Some(Event::Done(f)) => return Ok(axum::Json(final_body(&shape, &f)).into_response()),
            Some(Event::Failed(e)) => return Err(e),
            None => return Err(Error::Internal("the engine dropped the request".into())),
        }
    }
}

fn usage_json(f: &Finished) -> serde_json::Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
    })
}

/// What shapes a response: its id, API, the model it reports, whether it returns token ids.
#[derive(Debug, Clone)]
struct Shape {
    id: String,
    api: ApiKind,
    model: String,
    token_ids: bool,
}

fn final_body(s: &Shape, f: &Finished) -> serde_json::Value {
    let mut choice = match s.api {
        ApiKind::Completion => json!({"index": 0, "text": f.text, "finish_reason": f.finish_reason.as_str(), "logprobs": null}),
        ApiKind::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": f.text},
            "finish_reason": f.finish_reason.as_str(),
        }),
    };
    if s.token_ids {
        choice["token_ids"] = json!(f.token_ids);
    }
    let object = match s.api {
        ApiKind::Completion => "text_completion",
        ApiKind::Chat => "chat.completion",
    };
    json!({
        "id": s.id,
        "object": object,
        "created": now_secs(),
        "model": s.model,
        "choices": [choice],
        "usage": usage_json(f),
        "attribution": f.attribution,
    })
}

fn chunk(s: &Shape, text: &str, finish: Option<&Finished>) -> serde_json::Value {
    let reason = finish.map(|f| f.finish_reason.as_str());
    let (object, mut choice) = match s.api {
        ApiKind::Completion => ("text_completion", json!({"index": 0, "text": text, "finish_reason": reason, "logprobs": null})),
        ApiKind::Chat => {
            let delta = if finish.is_some() { json!({}) } else { json!({"role": "assistant", "content": text}) };
            ("chat.completion.chunk", json!({"index": 0, "delta": delta, "finish_reason": reason}))
        }
    };
    if let (Some(f), true) = (finish, s.token_ids) {
        choice["token_ids"] = json!(f.token_ids);
    }
    let mut body = json!({"id": s.id, "object": object, "created": now_secs(), "model": s.model, "choices": [choice]});
    if let Some(f) = finish {
        body["usage"] = usage_json(f);
        body["attribution"] = json!(f.attribution);
    }
    body
}

fn sse_stream(events: UnboundedReceiver<Event>, shape: Shape) -> impl Stream<Item = std::result::Result<SseEvent, std::convert::Infallible>> {
    let state = (events, std::collections::VecDeque::<String>::new(), false);
    futures::stream::unfold(state, move |(mut events, mut pending, mut done)| {
        let shape = shape.clone();
        async move {
            if pending.is_empty() && !done {
                match events.recv().await {
                    Some(Event::Token(t)) => pending.push_back(chunk(&shape, &t, None).to_string()),
                    Some(Event::Done(f)) => {
                        pending.push_back(chunk(&shape, "", Some(&f)).to_string());
                        pending.push_back("[DONE]".to_string());
                        done = true;
                    }
                    Some(Event::Failed(e)) => {
                        pending.push_back(e.body().to_string());
                        done = true;
                    }
                    None => {
                        pending.push_back(Error::Internal("the engine dropped the request".into()).body().to_string());
                        done = true;
                    }
                }
            }
            let data = pending.pop_front()?;
            Some((Ok(SseEvent::default().data(data)), (events, pending, done)))
        }
    })
}

#[derive(Debug, Serialize)]
struct ModelCard {
    id: String,
    object: &'static str,
    created: i64,
    owned_by: &'static str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    datanet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alias_of: Option<String>,
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let mut data = vec![ModelCard {
        id: state.base_name.clone(),
        object: "model",
        created: 0,
        owned_by: "tributary",
        kind: "base",
        parent: None,
        datanet: None,
        alias_of: None,
    }];
    let all = state.registry.all();
    let mut datanets: Vec<String> = all.iter().map(|p| p.key.datanet.clone()).collect();
    datanets.dedup();
    for p in &all {
        let created = chrono::DateTime::parse_from_rfc3339(&p.record.created_at).map_or(0, |t| t.timestamp());
        data.push(ModelCard {
            id: p.key.to_string(),
            object: "model",
            created,
            owned_by: "tributary",
            kind: "adapter",
            parent: Some(state.base_name.clone()),
            datanet: Some(p.key.datanet.clone()),
            alias_of: None,
        });
    }
    for d in datanets {
        if let Some(latest) = state.registry.latest(&d) {
            data.push(ModelCard {
                id: d.clone(),
                object: "model",
                created: 0,
                owned_by: "tributary",
                kind: "alias",
                parent: Some(state.base_name.clone()),
                datanet: Some(d),
                alias_of: Some(latest.to_string()),
            });
        }
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// Body of the admin calls.
#[derive(Debug, Deserialize)]
struct AdminAdapter {
    /// `datanet/version` or `datanet`.
    adapter: String,
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<()> {
    let Some(expected) = &state.admin_token else {
        return Err(Error::Unauthorized { reason: "the admin API is disabled (no token in the configured variable)" });
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(Error::Unauthorized { reason: "missing `Authorization: Bearer <token>`" })?;
    // Compare in time independent of where the first difference is.
    let same = given.len() == expected.len()
        && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same { Ok(()) } else { Err(Error::Unauthorized { reason: "invalid bearer token" }) }
}

fn admin_key(state: &AppState, body: &[u8]) -> Result<AdapterKey> {
    let req: AdminAdapter = validation::parse_json(body)?;
    // An operator reloading a version that failed before (after fixing its files) gets a fresh try.
    if let Some((d, v)) = req.adapter.split_once('/') {
        state.registry.clear_failed(&AdapterKey::new(d, v));
    }
    state
        .registry
        .resolve(&req.adapter)
        .map_err(|e| match e {
            Error::UnknownModel { model } => Error::invalid("adapter", "unknown_adapter", format!("no published adapter `{model}`")),
            other => other,
        })?
        .ok_or_else(|| Error::invalid("adapter", "not_an_adapter", "that is the base model, which is always loaded"))
}

async fn admin_load(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Result<Response> {
    authorize(&state, &headers)?;
    let key = admin_key(&state, &body)?;
    let host = state.loader.load(&key).await?;
    state.engine.prefetch(key.clone());
    Ok(axum::Json(json!({
        "adapter": key.to_string(),
        "status": "loaded",
        "rank": host.rank(),
        "targets": host.record.lora.targets,
        "credits_index": host.credits.is_some(),
    }))
    .into_response())
}

async fn admin_unload(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Result<Response> {
    authorize(&state, &headers)?;
    let key = admin_key(&state, &body)?;
    let was_cached = state.loader.evict(&key);
    state.engine.unload(key.clone());
    Ok(axum::Json(json!({"adapter": key.to_string(), "status": "unloaded", "was_in_host_memory": was_cached})).into_response())
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let admission = state.engine.admission();
    let status = if admission.is_closed() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = json!({
        "status": if admission.is_closed() { "shutting_down" } else { "ok" },
        "base_model": state.base_name,
        "adapters": state.registry.len(),
        "adapters_in_host_memory": state.loader.cached_count(),
        "queued": admission.queued(),
        "admin_token_env": state.admin_token_env,
    });
    (status, axum::Json(body)).into_response()
}
