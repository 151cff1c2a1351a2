//! Waiting requests: the admission gate (bounded, 429 with `Retry-After` beyond it) and the
//! per-adapter FIFO queues the scheduler draws from.
//!
//! The gate is checked by HTTP handlers before a request is handed to the engine thread, so a full
//! server refuses work in O(1) without touching the engine. The queues live on the engine thread.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::adapter_cache::AdapterKey;
use crate::credits::Attribution;
use crate::error::{Error, Result};
use crate::validation::ValidatedRequest;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The end-of-text token or a stop string.
    Stop,
    /// `max_tokens` or the model's context.
    Length,
}

impl FinishReason {
    /// OpenAI's string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A finished request.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The full generated text (stop string excluded).
    pub text: String,
    /// The generated token ids (the end-of-text token excluded).
    pub token_ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// The adapter version it ran on.
    pub adapter: Option<AdapterKey>,
    /// Contributors whose rows the answer reproduces.
    pub attribution: Attribution,
    /// Seconds waiting before admission.
    pub queue_secs: f64,
    /// Seconds from arrival to the first token.
    pub ttft_secs: f64,
}

/// What the engine tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// Newly generated text that is safe to show (streaming).
    Token(String),
    /// The request finished (and was metered).
    Done(Box<Finished>),
    /// The request failed.
    Failed(Error),
}

/// A request waiting for (or in) the engine.
#[derive(Debug)]
pub struct Entry {
    /// The validated request.
    pub request: ValidatedRequest,
    /// Where its events go. A closed channel means the client went away.
    pub events: UnboundedSender<Event>,
    /// When it arrived.
    pub arrived: Instant,
}

impl Entry {
    /// Tell the handler; a handler that went away needs nothing more.
    pub fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

/// The bounded admission gate.
#[derive(Debug)]
pub struct Admission {
    queued: AtomicUsize,
    max: usize,
    closed: AtomicBool,
    finished: Mutex<VecDeque<Instant>>,
}

/// Window over which the completion rate (for `Retry-After`) is measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);

impl Admission {
    /// A gate letting at most `max` requests wait.
    pub fn new(max: usize) -> Admission {
        Admission { queued: AtomicUsize::new(0), max, closed: AtomicBool::new(false), finished: Mutex::default() }
    }

    /// Take a place in the queue, or refuse (full: 429; closed: 503).
    pub fn try_acquire(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let mut current = self.queued.load(Ordering::SeqCst);
        loop {
            if current >= self.max {
                return Err(Error::QueueFull { queued: current, retry_after_secs: self.retry_after(current) });
            }
            match self.queued.compare_exchange(current, current + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok(()),
                Err(now) => current = now,
            }
        }
    }

    /// Give a place back (the request was admitted into the batch, or failed while waiting).
    pub fn release(&self) {
        let _ = self.queued.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(n.saturating_sub(1)));
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Record a completion (feeds the `Retry-After` estimate).
    pub fn completed(&self) {
        let now = Instant::now();
        let mut f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        f.push_back(now);
        while f.front().is_some_and(|t| now.duration_since(*t) > RATE_WINDOW) {
            f.pop_front();
        }
    }

    /// Seconds until a place is likely free: the waiting requests over the recent completion rate,
    /// between 1 and 60.
    pub fn retry_after(&self, queued: usize) -> u64 {
        let f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let recent = f.iter().filter(|t| t.elapsed() <= RATE_WINDOW).count();
        if recent == 0 {
            return 1;
        }
        let rate = recent as f64 / RATE_WINDOW.as_secs_f64();
        ((queued as f64 / rate).ceil() as u64).clamp(1, 60)
    }

    /// Refuse everything from now on (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether the gate is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Per-target FIFO queues: the base model's, and one per adapter (looked up by key without
/// building an `Option<AdapterKey>`, which would clone the key's two strings: the scheduler asks
/// about every pending adapter on every step, a thousand of them when a thousand adapters wait).
#[derive(Debug, Default)]
pub struct Queues {
    base: VecDeque<Entry>,
    adapters: HashMap<AdapterKey, VecDeque<Entry>>,
    len: usize,
}

impl Queues {
    fn queue(&self, target: Option<&AdapterKey>) -> Option<&VecDeque<Entry>> {
        match target {
            None => Some(&self.base),
            Some(k) => self.adapters.get(k),
        }
    }

    /// Append a request to its target's queue.
    pub fn push(&mut self, entry: Entry) {
        match &entry.request.adapter {
            None => self.base.push_back(entry),
            Some(k) => self.adapters.entry(k.clone()).or_default().push_back(entry),
        }
        self.len += 1;
    }

    /// The oldest request for `target`.
    pub fn pop(&mut self, target: &Option<AdapterKey>) -> Option<Entry> {
        let e = match target {
            None => self.base.pop_front()?,
            Some(k) => {
                let q = self.adapters.get_mut(k)?;
                let e = q.pop_front()?;
                if q.is_empty() {
                    self.adapters.remove(k);
                }
                e
            }
        };
        self.len -= 1;
        Some(e)
    }

    /// Every request waiting for `target`.
    pub fn drain(&mut self, target: &Option<AdapterKey>) -> Vec<Entry> {
        let out: Vec<Entry> = match target {
            None => self.base.drain(..).collect(),
            Some(k) => self.adapters.remove(k).map(Vec::from).unwrap_or_default(),
        };
        self.len -= out.len();
        out
    }

    /// Requests waiting for adapter `key`.
    pub fn waiting_for(&self, key: &AdapterKey) -> usize {
        self.queue(Some(key)).map_or(0, VecDeque::len)
    }

    /// The oldest request for `target`, without taking it.
    pub fn front(&self, target: &Option<AdapterKey>) -> Option<&Entry> {
        self.queue(target.as_ref())?.front()
    }

    /// Take the requests matching `pred`, in queue order per target.
    pub fn take_where(&mut self, pred: impl Fn(&Entry) -> bool) -> Vec<Entry> {
        let mut out = Vec::new();
        // Called every engine step over a queue that can be thousands deep: only a queue holding a
        // match is rebuilt, the others are only read.
        for q in std::iter::once(&mut self.base).chain(self.adapters.values_mut()).filter(|q| q.iter().any(&pred)) {
            let (take, keep): (VecDeque<Entry>, VecDeque<Entry>) = q.drain(..).partition(|e| pred(e));
            *q = keep;
            out.extend(take);
        }
        if !out.is_empty() {
            self.adapters.retain(|_, q| !q.is_empty());
        }
        self.len -= out.len();
        out
    }

    /// Requests waiting in all queues.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Take every waiting request (shutdown).
    pub fn take_all(&mut self) -> Vec<Entry> {
        self.len = 0;
        let mut out: Vec<Entry> = self.base.drain(..).collect();
        out.extend(self.adapters.drain().flat_map(|(_, q)| q));
        out
    }
}
