//! Serving metrics in the Prometheus text format (`GET /metrics`).
//!
//! Counters and histograms are plain atomics and small mutex-guarded arrays, updated by the HTTP
//! handlers, the engine thread and the adapter loader; rendering takes a consistent-enough
//! snapshot. Names follow Prometheus conventions (`_total`, `_seconds`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed-bucket histogram.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    state: Mutex<(Vec<u64>, f64, u64)>,
}

/// Buckets for latencies in seconds.
pub const SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Buckets for batch sizes.
pub const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

impl Histogram {
    /// An empty histogram over `bounds` (upper bounds, increasing).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, state: Mutex::new((vec![0; bounds.len()], 0.0, 0)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<u64>, f64, u64)> {
        // Observations are single arithmetic updates; a poisoned lock holds valid numbers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record one value.
    pub fn observe(&self, v: f64) {
        let mut s = self.lock();
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            s.0[i] += 1;
        }
        s.1 += v;
        s.2 += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.lock().2
    }

    /// Sum of the observations.
    pub fn sum(&self) -> f64 {
        self.lock().1
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let s = self.lock();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&s.0) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", s.2, s.1, s.2);
    }
}

/// Every metric of the server.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Seconds from arrival to admission into the running batch.
    pub queue_time: Histogram,
    /// Seconds from arrival to the first generated token.
    pub ttft: Histogram,
    /// Seconds per output token after the first.
    pub tpot: Histogram,
    /// Rows per forward pass.
    pub batch_size: Histogram,
    tokens_in: AtomicU64,
    tokens_out: AtomicU64,
    adapter_events: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    queue_depth: AtomicU64,
    running: AtomicU64,
    active_adapters: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            queue_time: Histogram::new(SECONDS),
            ttft: Histogram::new(SECONDS),
            tpot: Histogram::new(SECONDS),
            batch_size: Histogram::new(BATCH),
            tokens_in: AtomicU64::new(0),
            tokens_out: AtomicU64::new(0),
            adapter_events: Mutex::default(),
            queue_depth: AtomicU64::new(0),
            running: AtomicU64::new(0),
            active_adapters: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Count a finished HTTP request by route and status.
    pub fn request(&self, route: &str, status: u16) {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry((route.to_string(), status)).or_default() += 1;
    }

    /// Requests counted with `status` (all routes).
    pub fn requests_with_status(&self, status: u16) -> u64 {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|((_, s), _)| *s == status).map(|(_, n)| n).sum()
    }

    /// Count prompt and generated tokens of a finished request.
    pub fn tokens(&self, input: usize, output: usize) {
        self.tokens_in.fetch_add(input as u64, Ordering::Relaxed);
        self.tokens_out.fetch_add(output as u64, Ordering::Relaxed);
    }

    fn adapter_event(&self, event: &'static str, tier: &'static str) {
        *self.adapter_events.lock().unwrap_or_else(|e| e.into_inner()).entry((event, tier)).or_default() += 1;
    }

    /// An adapter was found in `tier` (`active` or `host`).
    pub fn adapter_hit(&self, tier: &'static str) {
        self.adapter_event("hits", tier);
    }

    /// An adapter had to be read from the object store.
    pub fn adapter_miss(&self) {
        self.adapter_event("misses", "host");
    }

    /// An adapter was loaded into `tier`.
    pub fn adapter_loaded(&self, tier: &'static str) {
        self.adapter_event("loads", tier);
    }

    /// An adapter was evicted from `tier`.
    pub fn adapter_evicted(&self, tier: &'static str) {
        self.adapter_event("evictions", tier);
    }

    /// An adapter failed to load.
    pub fn adapter_load_failed(&self) {
        self.adapter_event("load_failures", "host");
    }

    /// Count of one adapter event in one tier.
    pub fn adapter_count(&self, event: &str, tier: &str) -> u64 {
        self.adapter_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((e, t), _)| *e == event && *t == tier)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Set the gauges: requests waiting, rows running, adapters in the active set.
    pub fn gauges(&self, queued: usize, running: usize, active: usize) {
        self.queue_depth.store(queued as u64, Ordering::Relaxed);
        self.running.store(running as u64, Ordering::Relaxed);
        self.active_adapters.store(active as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP tributary_requests_total HTTP requests by route and status.\n# TYPE tributary_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "tributary_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        self.queue_time.render(&mut out, "tributary_queue_time_seconds", "Time from arrival to admission into the batch.");
        self.ttft.render(&mut out, "tributary_time_to_first_token_seconds", "Time from arrival to the first token.");
        self.tpot.render(&mut out, "tributary_time_per_output_token_seconds", "Mean time per output token after the first.");
        self.batch_size.render(&mut out, "tributary_batch_size", "Rows in each forward pass.");
        let _ = writeln!(
            out,
            "# HELP tributary_tokens_in_total Prompt tokens of finished requests.\n# TYPE tributary_tokens_in_total counter\ntributary_tokens_in_total {}",
            self.tokens_in.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tributary_tokens_out_total Generated tokens of finished requests.\n# TYPE tributary_tokens_out_total counter\ntributary_tokens_out_total {}",
            self.tokens_out.load(Ordering::Relaxed)
        );
        let events = self.adapter_events.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for event in ["hits", "misses", "loads", "evictions", "load_failures"] {
            let name = format!("tributary_adapter_cache_{event}_total");
            let _ = writeln!(out, "# HELP {name} Adapter cache {event} by tier.\n# TYPE {name} counter");
            for tier in ["active", "host"] {
                let n = events.get(&(event, tier)).copied().unwrap_or(0);
                let _ = writeln!(out, "{name}{{tier=\"{tier}\"}} {n}");
            }
        }
        for (name, help, v) in [
            ("tributary_queue_depth", "Requests waiting.", &self.queue_depth),
            ("tributary_running_requests", "Requests in the running batch.", &self.running),
            ("tributary_active_adapters", "Adapters resident in compute memory.", &self.active_adapters),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", v.load(Ordering::Relaxed));
        }
        out
    }
}
