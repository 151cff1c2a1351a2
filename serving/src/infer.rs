//! The engine: a dedicated thread that owns the model, the running batch and its KV cache, and
//! runs continuous batching.
//!
//! Each iteration: take messages (new requests, finished adapter loads, admin prefetch/unload),
//! let the scheduler assign adapter slots and admit requests, prefill the admitted prompts in one
//! forward pass (left-padded, masked) and merge their cache into the batch, then run one decode step
//! for every running row. Requests join and leave between decode steps; a row whose sampler picks
//! the end-of-text token, hits a stop string or `max_tokens` leaves the batch, is metered, and its
//! handler gets the answer with its attribution.
//!
//! Every forward pass carries a [`BatchLora`](crate::batch_lora::BatchLora) hook with each row's
//! adapter slot, so rows of different adapters share the pass. Adapter loads happen on the async
//! runtime; the engine only copies finished loads into their slot between steps.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use burn::tensor::{Int, Tensor, TensorData};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tributary_jobs::model::{KvCache, LlamaModel, ModelInput};
use tributary_jobs::tokenizer::Tokenizer;

use crate::adapter_cache::{AdapterKey, HostAdapter, Loader};
use crate::batch_lora::ActiveSet;
use crate::credits::Attribution;
use crate::error::{Error, Result};
use crate::kv::{BatchKv, prefill_mask};
use crate::metering::UsageRecord;
use crate::metrics::Metrics;
use crate::queue::{Admission, Entry, Event, FinishReason, Finished};
use crate::sampling::{Sampler, TextStep, TextStream};
use crate::scheduler::{Action, Admitted, Scheduler, Target};
use crate::validation::ValidatedRequest;

/// How rows may share a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batching {
    /// Rows of any adapters share a pass (the point of this crate).
    #[default]
    Heterogeneous,
    /// Only rows of one adapter share a pass (the baseline the benchmark compares against).
    SameAdapter,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Most rows in the running batch.
    pub max_batch: usize,
    /// Most requests waiting (beyond: 429).
    pub max_queue: usize,
    /// Adapter slots in compute memory.
    pub max_active_adapters: usize,
    /// Most prompt tokens prefilled in one iteration (at least one request is always admitted).
    pub prefill_token_budget: usize,
    /// An adapter resident this long yields its slot when others wait.
    pub adapter_cycle: Duration,
    /// Fee per generated token, in token base units.
    pub fee_per_token: u128,
    /// Shortest generated span credited to a training row.
    pub credit_min_span: usize,
    /// How long shutdown waits for accepted requests to finish.
    pub shutdown_grace: Duration,
    /// Heterogeneous or same-adapter-only batching.
    pub batching: Batching,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_batch: 32,
            max_queue: 256,
            max_active_adapters: 64,
            prefill_token_budget: 4096,
            adapter_cycle: Duration::from_secs(2),
            fee_per_token: 1_000_000_000,
            credit_min_span: 8,
            shutdown_grace: Duration::from_secs(30),
            batching: Batching::Heterogeneous,
        }
    }
}

/// Messages to the engine thread.
#[derive(Debug)]
enum Msg {
    Submit(Box<Entry>),
    Loaded { key: AdapterKey, result: Result<Arc<HostAdapter>> },
    Prefetch(AdapterKey),
    Unload(AdapterKey),
    Shutdown,
}

/// What the engine did over its life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineReport {
    /// Requests that ran to the end (metered).
    pub finished: usize,
    /// Requests that failed or were refused after being accepted.
    pub failed: usize,
    /// Tokens generated.
    pub tokens_out: usize,
    /// Decode steps run.
    pub decode_steps: usize,
    /// Prefill passes run.
    pub prefills: usize,
}

/// A cheap, cloneable handle for submitting work to the engine.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    tx: Sender<Msg>,
    admission: Arc<Admission>,
}

impl EngineHandle {
    /// Queue a validated request; its events arrive on the returned channel. Refused with 429 when
    /// the queue is full and 503 when shutting down.
    pub fn submit(&self, request: ValidatedRequest) -> Result<UnboundedReceiver<Event>> {
        self.admission.try_acquire()?;
        let (events, rx) = unbounded_channel();
        let entry = Entry { request, events, arrived: Instant::now() };
        if self.tx.send(Msg::Submit(Box::new(entry))).is_err() {
            self.admission.release();
            return Err(Error::ShuttingDown);
        }
        Ok(rx)
    }

    /// Load an adapter into a compute slot ahead of requests.
    pub fn prefetch(&self, key: AdapterKey) {
        let _ = self.tx.send(Msg::Prefetch(key));
    }

    /// Evict an adapter from its compute slot once nothing runs on it.
    pub fn unload(&self, key: AdapterKey) {
        let _ = self.tx.send(Msg::Unload(key));
    }

    /// The admission gate (shared with the HTTP layer).
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }
}

/// The engine thread.
#[derive(Debug)]
pub struct Engine {
    handle: EngineHandle,
    thread: JoinHandle<EngineReport>,
}

/// What the engine needs to run.
pub struct EngineParts {
    /// The base model (shared with the loader, which reads its shapes).
    pub model: Arc<LlamaModel>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The base model's name (the `adapter` of base-model usage rows).
    pub base_name: String,
    /// Fills the host tier.
    pub loader: Loader,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Where usage records go.
    pub usage: UnboundedSender<UsageRecord>,
    /// The runtime adapter loads run on.
    pub runtime: tokio::runtime::Handle,
}

impl Engine {
    /// Start the engine thread.
    pub fn start(parts: EngineParts, options: EngineOptions) -> Result<Engine> {
        let (tx, rx) = std::sync::mpsc::channel();
        let admission = Arc::new(Admission::new(options.max_queue));
        let handle = EngineHandle { tx: tx.clone(), admission: admission.clone() };
        let thread = std::thread::Builder::new()
            .name("tributary-engine".into())
            .spawn(move || {
                let mut w = Worker::new(parts, options, admission, tx, rx);
                w.run();
                w.report
            })
            .map_err(|e| Error::Internal(format!("spawning the engine thread: {e}")))?;
        Ok(Engine { handle, thread })
    }

    /// A handle for submitting work.
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Stop taking requests, finish the accepted ones (within the grace period), and wait for the
    /// thread. Usage of every finished request has been handed to the meter when this returns.
    pub async fn shutdown(self) -> Result<EngineReport> {
        self.handle.admission.close();
        let _ = self.handle.tx.send(Msg::Shutdown);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| Error::Internal(format!("joining the engine: {e}")))?
            .map_err(|_| Error::Internal("the engine thread panicked".into()))
    }
}

struct Row {
    entry: Entry,
    slot: usize,
    host: Option<Arc<HostAdapter>>,
    generated: Vec<u32>,
    /// The token the next decode step feeds (the last one sampled).
    last: u32,
    /// The position of `last` in the row's sequence (rotary position of the next decode input).
    pos: usize,
    sampler: Sampler,
    text: TextStream,
    queue_secs: f64,
    first_token: Option<Instant>,
}

impl Row {
    fn target(&self) -> Target {
        self.entry.request.adapter.clone()
    }
}

struct Worker {
    model: Arc<LlamaModel>,
    tokenizer: Tokenizer,
    base_name: String,
    loader: Loader,
    metrics: Arc<Metrics>,
    usage: UnboundedSender<UsageRecord>,
    runtime: tokio::runtime::Handle,
    options: EngineOptions,
    admission: Arc<Admission>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    scheduler: Scheduler,
    active: ActiveSet,
    slot_hosts: Vec<Option<Arc<HostAdapter>>>,
    rows: Vec<Row>,
    kv: BatchKv,
    shutdown_at: Option<Instant>,
    /// When the queues were last scanned for cancelled requests.
    cancel_scan: Instant,
    report: EngineReport,
    eot: u32,
    context: usize,
}

/// How often the waiting queues are scanned for requests whose clients went away. The scan reads
/// every waiting request (thousands when the server is saturated), so it runs at most this often
/// rather than on every decode step.
const CANCEL_SCAN_EVERY: Duration = Duration::from_millis(10);

/// The result of feeding one sampled token to a row.
enum Advance {
    Continue,
    Finish(FinishReason),
}

impl Worker {
    fn new(parts: EngineParts, options: EngineOptions, admission: Arc<Admission>, tx: Sender<Msg>, rx: Receiver<Msg>) -> Worker {
        let slots = options.max_active_adapters.max(1);
        let active = ActiveSet::new(&parts.model, slots);
        let eot = parts.tokenizer.eot();
        let context = parts.model.config.max_position_embeddings;
        Worker {
            scheduler: Scheduler::new(slots, options.adapter_cycle),
            active,
            slot_hosts: vec![None; slots + 1],
            rows: Vec::new(),
            kv: BatchKv::default(),
            shutdown_at: None,
            cancel_scan: Instant::now(),
            report: EngineReport::default(),
            eot,
            context,
            model: parts.model,
            tokenizer: parts.tokenizer,
            base_name: parts.base_name,
            loader: parts.loader,
            metrics: parts.metrics,
            usage: parts.usage,
            runtime: parts.runtime,
            options,
            admission,
            tx,
            rx,
        }
    }

    fn run(&mut self) {
        loop {
            if self.rows.is_empty() {
                match self.rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(m) => self.handle(m),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => self.shutdown_at = self.shutdown_at.or(Some(Instant::now())),
                }
            }
            while let Ok(m) = self.rx.try_recv() {
                self.handle(m);
            }
            if let Some(at) = self.shutdown_at {
                if self.rows.is_empty() && self.scheduler.queued() == 0 {
                    break;
                }
                if at.elapsed() > self.options.shutdown_grace {
                    self.abandon();
                    break;
                }
            }
            let now = Instant::now();
            if now.duration_since(self.cancel_scan) >= CANCEL_SCAN_EVERY {
                self.cancel_scan = now;
                for e in self.scheduler.take_cancelled() {
                    self.admission.release();
                    self.report.failed += 1;
                    drop(e);
                }
            }
            for action in self.scheduler.plan(now) {
                self.act(action);
            }
            let free = self.options.max_batch.saturating_sub(self.rows.len());
            if free > 0 {
                let admitted = self.admit(free, now);
                if !admitted.is_empty() {
                    self.prefill(admitted);
                }
            }
            if !self.rows.is_empty() {
                self.decode();
            }
            self.metrics.gauges(self.scheduler.queued(), self.rows.len(), self.scheduler.resident());
        }
        self.metrics.gauges(0, 0, 0);
    }

    fn admit(&mut self, free: usize, now: Instant) -> Vec<Admitted> {
        let budget = self.options.prefill_token_budget;
        match self.options.batching {
            Batching::Heterogeneous => self.scheduler.admit(free, budget, now, None),
            Batching::SameAdapter => {
                let only = self.rows.first().map(Row::target);
                self.scheduler.admit(free, budget, now, Some(only))
            }
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Submit(entry) => {
                let is_adapter = entry.request.adapter.is_some();
                if self.scheduler.push(*entry) && is_adapter {
                    self.metrics.adapter_hit("active");
                }
            }
            Msg::Loaded { key, result } => self.loaded(&key, result),
            Msg::Prefetch(key) => self.scheduler.prefetch(key),
            Msg::Unload(key) => self.scheduler.unload(key),
            Msg::Shutdown => self.shutdown_at = self.shutdown_at.or(Some(Instant::now())),
        }
    }

    /// An adapter the scheduler asked for is in host memory (or failed to load): install it in
    /// its slot, or fail the requests waiting for it.
    fn loaded(&mut self, key: &AdapterKey, result: Result<Arc<HostAdapter>>) {
        let now = Instant::now();
        match result {
            Ok(host) => {
                if let Ok(slot) = self.scheduler.loaded(key, true, now) {
                    self.active.install(slot, &host);
                    self.slot_hosts[slot] = Some(host);
                    self.metrics.adapter_loaded("active");
                }
            }
            Err(e) => {
                if let Err(waiting) = self.scheduler.loaded(key, false, now) {
                    for entry in waiting {
                        self.admission.release();
                        self.report.failed += 1;
                        entry.send(Event::Failed(e.for_another()));
                    }
                }
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            // A host-memory hit is a lookup: installed at once, on this thread. Only a miss, which
            // reads the object store, goes to a task (waking a runtime thread for every load was
            // about a sixth of the extra CPU that 1,024 adapters in rotation cost over one).
            Action::Load { key, slot: _ } => match self.loader.cached(&key) {
                Some(host) => self.loaded(&key, Ok(host)),
                None => {
                    let loader = self.loader.clone();
                    let tx = self.tx.clone();
                    self.runtime.spawn(async move {
                        let result = loader.load(&key).await;
                        let _ = tx.send(Msg::Loaded { key, result });
                    });
                }
            },
            Action::Evict { key: _, slot } => {
                self.active.clear(slot);
                self.slot_hosts[slot] = None;
                self.metrics.adapter_evicted("active");
            }
        }
    }

    /// Shutdown grace ran out: refuse what waits, end what runs now (metered as it stands).
    fn abandon(&mut self) {
        for e in self.scheduler.take_all() {
            self.admission.release();
            self.report.failed += 1;
            e.send(Event::Failed(Error::ShuttingDown));
        }
        let rows = std::mem::take(&mut self.rows);
        for row in rows {
            self.finish(row, FinishReason::Length);
        }
        self.kv = BatchKv::default();
    }

    fn host_logits(&self, logits: Tensor<3>) -> Option<Vec<f32>> {
        match logits.try_into_vec_as::<f32>() {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(error = ?e, "reading logits back failed");
                None
            }
        }
    }

    fn prefill(&mut self, admitted: Vec<Admitted>) {
        let now = Instant::now();
        let device = self.model.device();
        let n = admitted.len();
        let prompts: Vec<&[u32]> = admitted.iter().map(|a| a.entry.request.prompt_tokens.as_slice()).collect();
        let slots: Vec<usize> = admitted.iter().map(|a| a.slot).collect();
        let (logits, mut kv) = prefill_pass(&self.model, &self.active, &prompts, &slots, self.eot);
        self.report.prefills += 1;
        self.metrics.batch_size.observe(n as f64);
        let Some(logits) = self.host_logits(logits) else {
            for a in admitted {
                self.admission.release();
                self.scheduler.finished(&a.entry.request.adapter);
                self.report.failed += 1;
                a.entry.send(Event::Failed(Error::Internal("reading logits back failed".into())));
            }
            return;
        };
        let vocab = logits.len() / n;
        let mut keep = Vec::with_capacity(n);
        let mut joined = Vec::with_capacity(n);
        for (i, a) in admitted.into_iter().enumerate() {
            self.admission.release();
            let queue_secs = now.duration_since(a.entry.arrived).as_secs_f64();
            self.metrics.queue_time.observe(queue_secs);
            let prompt_len = a.entry.request.prompt_tokens.len();
            let mut row = Row {
                sampler: Sampler::new(&a.entry.request.params),
                text: TextStream::new(&a.entry.request.params.stop),
                host: if a.slot == 0 { None } else { self.slot_hosts[a.slot].clone() },
                slot: a.slot,
                entry: a.entry,
                generated: Vec::new(),
                // The prompt fills positions `0..prompt_len`; `advance` moves `pos` to the sampled
                // token's position (`prompt_len`) before the first decode step feeds it.
                last: 0,
                pos: prompt_len.saturating_sub(1),
                queue_secs,
                first_token: None,
            };
            let token = row.sampler.sample(&logits[i * vocab..(i + 1) * vocab]);
            let first = Instant::now();
            row.first_token = Some(first);
            self.metrics.ttft.observe(first.duration_since(row.entry.arrived).as_secs_f64());
            match self.advance(&mut row, token) {
                Advance::Continue => {
                    keep.push(i);
                    joined.push(row);
                }
                Advance::Finish(reason) => self.finish(row, reason),
            }
        }
        kv.retain(&keep, &device);
        self.kv.append(kv);
        self.rows.extend(joined);
    }

    fn decode(&mut self) {
        let device = self.model.device();
        let b = self.rows.len();
        let tokens: Vec<u32> = self.rows.iter().map(|r| r.last).collect();
        let positions: Vec<usize> = self.rows.iter().map(|r| r.pos).collect();
        let slots: Vec<usize> = self.rows.iter().map(|r| r.slot).collect();
        let logits = decode_pass(&self.model, &self.active, &mut self.kv, &tokens, &positions, &slots);
        self.report.decode_steps += 1;
        self.metrics.batch_size.observe(b as f64);
        let Some(logits) = self.host_logits(logits) else {
            self.abort_running("reading logits back failed");
            return;
        };
        let vocab = logits.len() / b;
        let rows = std::mem::take(&mut self.rows);
        let mut keep = Vec::with_capacity(b);
        for (i, mut row) in rows.into_iter().enumerate() {
            if row.entry.events.is_closed() {
                // The client went away: stop spending compute on it (what ran is still metered).
                self.finish(row, FinishReason::Length);
                continue;
            }
            let token = row.sampler.sample(&logits[i * vocab..(i + 1) * vocab]);
            match self.advance(&mut row, token) {
                Advance::Continue => {
                    keep.push(i);
                    self.rows.push(row);
                }
                Advance::Finish(reason) => self.finish(row, reason),
            }
        }
        self.kv.retain(&keep, &device);
    }

    fn abort_running(&mut self, why: &str) {
        for row in std::mem::take(&mut self.rows) {
            self.scheduler.finished(&row.target());
            self.report.failed += 1;
            row.entry.send(Event::Failed(Error::Internal(why.to_string())));
        }
        self.kv = BatchKv::default();
    }

    fn advance(&mut self, row: &mut Row, token: u32) -> Advance {
        if token == self.eot && !row.entry.request.params.ignore_eos {
            return Advance::Finish(FinishReason::Stop);
        }
        row.generated.push(token);
        let step = match row.text.push(&self.tokenizer, token) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "detokenizing failed");
                return Advance::Finish(FinishReason::Stop);
            }
        };
        let stream = row.entry.request.stream;
        match step {
            TextStep::Emit(s) => {
                if stream && !s.is_empty() {
                    row.entry.send(Event::Token(s));
                }
            }
            TextStep::Stop(s) => {
                if stream && !s.is_empty() {
                    row.entry.send(Event::Token(s));
                }
                return Advance::Finish(FinishReason::Stop);
            }
        }
        if row.generated.len() >= row.entry.request.params.max_tokens || row.pos + 1 >= self.context {
            return Advance::Finish(FinishReason::Length);
        }
        row.last = token;
        row.pos += 1;
        Advance::Continue
    }

    fn finish(&mut self, mut row: Row, reason: FinishReason) {
        let now = Instant::now();
        self.scheduler.finished(&row.target());
        let rest = row.text.finish();
        if row.entry.request.stream && !rest.is_empty() {
            row.entry.send(Event::Token(rest));
        }
        let req = &row.entry.request;
        let attribution = match (&req.adapter, &row.host) {
            (None, _) => Attribution::none("base_model"),
            (Some(_), Some(h)) => match &h.credits {
                // Match the text's canonical tokenization (what the index holds), not the sampled
                // ids: a model may spell the same text with other token boundaries.
                Some(index) => {
                    let canonical = self.tokenizer.encode(row.text.text()).unwrap_or_else(|_| row.generated.clone());
                    index.attribute(&canonical, self.options.credit_min_span)
                }
                None => Attribution::none("no_index"),
            },
            (Some(_), None) => Attribution::none("no_index"),
        };
        let n = row.generated.len();
        let usage = UsageRecord {
            request_id: req.id.clone(),
            ts: chrono::Utc::now(),
            adapter: req.adapter.as_ref().map_or_else(|| self.base_name.clone(), ToString::to_string),
            datanet: req.adapter.as_ref().map(|k| k.datanet.clone()),
            tokens_in: req.prompt_tokens.len(),
            tokens_out: n,
            fee: self.options.fee_per_token * n as u128,
            credits: (attribution.status == "matched").then(|| attribution.contributors.clone()),
        };
        // Metered before answering: an answered request always has its usage row.
        if self.usage.send(usage).is_err() {
            tracing::error!(request = %req.id, "usage meter is gone; this request is not metered");
        }
        self.metrics.tokens(req.prompt_tokens.len(), n);
        if let Some(first) = row.first_token
            && n > 1
        {
            self.metrics.tpot.observe(now.duration_since(first).as_secs_f64() / (n - 1) as f64);
        }
        self.admission.completed();
        self.report.finished += 1;
        self.report.tokens_out += n;
        let ttft_secs = row.first_token.map_or(0.0, |t| t.duration_since(row.entry.arrived).as_secs_f64());
        let finished = Finished {
            text: row.text.text().to_string(),
            token_ids: row.generated.clone(),
            finish_reason: reason,
            prompt_tokens: req.prompt_tokens.len(),
            completion_tokens: n,
            adapter: req.adapter.clone(),
            attribution,
            queue_secs: row.queue_secs,
            ttft_secs,
        };
        row.entry.send(Event::Done(Box::new(finished)));
    }
}

fn int2(data: Vec<i64>, shape: [usize; 2], device: &burn::tensor::Device) -> Tensor<2, Int> {
    Tensor::<2, Int>::from_data(TensorData::new(data, shape), device)
}

/// One prefill forward pass: `prompts` (row `i` using adapter slot `slots[i]`) left-padded with
/// `pad` to a common length and masked. Returns the logits of each prompt's last position,
/// `[rows, 1, vocab]`, and the rows' cache.
pub fn prefill_pass(model: &LlamaModel, active: &ActiveSet, prompts: &[&[u32]], slots: &[usize], pad: u32) -> (Tensor<3>, BatchKv) {
    let device = model.device();
    let n = prompts.len();
    let len = prompts.iter().map(|p| p.len()).max().unwrap_or(1).max(1);
    let mut tokens = Vec::with_capacity(n * len);
    let mut positions = Vec::with_capacity(n * len);
    let mut start = Vec::with_capacity(n);
    for p in prompts {
        let s = len - p.len();
        start.push(s);
        tokens.extend(std::iter::repeat_n(pad as i64, s).chain(p.iter().map(|t| *t as i64)));
        positions.extend((0..len).map(|c| c.saturating_sub(s) as i64));
    }
    let input = ModelInput {
        tokens: int2(tokens, [n, len], &device),
        positions: int2(positions, [n, len], &device),
        mask: Some(prefill_mask(&start, len, &device)),
    };
    let mut cache = KvCache::new();
    let hook = active.hook(slots);
    let hidden = model.forward(input, Some(&mut cache), hook.as_ref().map(|h| h as _));
    let [_, _, width] = hidden.dims();
    let last = hidden.narrow(1, len - 1, 1).reshape([n, 1, width]);
    (model.logits(last), BatchKv::from_prefill(cache, start))
}

/// One decode forward pass: row `i` feeds `tokens[i]` at `positions[i]` with adapter slot
/// `slots[i]`, appending to `kv`. Returns the logits `[rows, 1, vocab]`.
pub fn decode_pass(
    model: &LlamaModel,
    active: &ActiveSet,
    kv: &mut BatchKv,
    tokens: &[u32],
    positions: &[usize],
    slots: &[usize],
) -> Tensor<3> {
    let device = model.device();
    let b = tokens.len();
    let input = ModelInput {
        tokens: int2(tokens.iter().map(|t| *t as i64).collect(), [b, 1], &device),
        positions: int2(positions.iter().map(|p| *p as i64).collect(), [b, 1], &device),
        mask: Some(kv.decode_mask(&device)),
    };
    let mut cache = kv.take_cache();
    let hook = active.hook(slots);
    let logits = model.forward_logits(input, Some(&mut cache), hook.as_ref().map(|h| h as _));
    kv.put_cache(cache);
    logits
}
