//! Which requests join the running batch, and which adapters hold a compute-memory slot.
//!
//! Modeled on LoRAX's scheduler. Adapters with waiting requests are either **active** (resident in
//! a slot of the active set; their requests may be admitted) or **pending** (waiting, FIFO, for a
//! slot; their weights are loaded asynchronously once they get one). Admission is round-robin over
//! the active adapters (and the base model), one request per adapter per turn, so one popular
//! adapter cannot starve the rest of the batch.
//!
//! Slots are bounded (`serving.max_active_adapters`). When adapters are pending and no slot is
//! free, idle residents (nothing running, nothing waiting) are evicted, least recently used first;
//! if none is idle, adapters resident for longer than the cycle time stop admitting (they drain)
//! and are evicted once their running rows finish, going to the back of the pending line if they
//! still have waiting requests. So every adapter gets its turn and slots rotate.
//!
//! The scheduler is plain bookkeeping on the engine thread: it returns [`Action`]s (load into a
//! slot, evict a slot) that the engine carries out, and never blocks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::adapter_cache::AdapterKey;
use crate::queue::{Entry, Queues};

/// A target of requests: an adapter version, or `None` for the base model.
pub type Target = Option<AdapterKey>;

#[derive(Debug, Clone)]
enum Residency {
    /// Waiting for a slot.
    Pending,
    /// Its weights are being loaded into `slot`.
    Loading { slot: usize },
    /// Resident in `slot`.
    Active { slot: usize, running: usize, since: Instant, last_admit: Instant, draining: bool },
}

/// Something the engine must do for the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Load `key`'s weights (asynchronously) and install them in `slot`.
    Load {
        /// The adapter.
        key: AdapterKey,
        /// Its slot.
        slot: usize,
    },
    /// `key` no longer holds `slot`.
    Evict {
        /// The adapter.
        key: AdapterKey,
        /// Its former slot.
        slot: usize,
    },
}

/// A request admitted into the batch.
#[derive(Debug)]
pub struct Admitted {
    /// The request.
    pub entry: Entry,
    /// Its adapter's slot (0 = base model).
    pub slot: usize,
}

/// The scheduler's state.
#[derive(Debug)]
pub struct Scheduler {
    queues: Queues,
    adapters: HashMap<AdapterKey, Residency>,
    pending: VecDeque<AdapterKey>,
    rotation: VecDeque<Target>,
    free_slots: Vec<usize>,
    cycle: Duration,
    unload: HashSet<AdapterKey>,
    prefetch: HashSet<AdapterKey>,
    /// Whether a pending adapter may have lost its last waiting request other than by admission
    /// (a cancellation, an admin unload), so the pending line needs sweeping.
    pending_dirty: bool,
}

impl Scheduler {
    /// A scheduler over slots `1..=slots`, rotating adapters resident longer than `cycle` when
    /// others wait.
    pub fn new(slots: usize, cycle: Duration) -> Scheduler {
        Scheduler {
            queues: Queues::default(),
            adapters: HashMap::new(),
            pending: VecDeque::new(),
            rotation: VecDeque::from([None]),
            free_slots: (1..=slots).rev().collect(),
            cycle,
            unload: HashSet::new(),
            prefetch: HashSet::new(),
            pending_dirty: false,
        }
    }

    /// Queue a request. Returns whether its adapter is already resident (a compute-tier hit).
    pub fn push(&mut self, entry: Entry) -> bool {
        let hit = match &entry.request.adapter {
            None => true,
            Some(key) => match self.adapters.get(key) {
                Some(Residency::Active { .. }) => true,
                Some(_) => false,
                None => {
                    self.adapters.insert(key.clone(), Residency::Pending);
                    self.pending.push_back(key.clone());
                    false
                }
            },
        };
        self.queues.push(entry);
        hit
    }

    /// Load `key` into a slot ahead of requests (admin load).
    pub fn prefetch(&mut self, key: AdapterKey) {
        self.unload.remove(&key);
        if !self.adapters.contains_key(&key) {
            self.adapters.insert(key.clone(), Residency::Pending);
            self.pending.push_back(key.clone());
        }
        self.prefetch.insert(key);
    }

    /// Evict `key` from its slot as soon as nothing runs on it (admin unload).
    pub fn unload(&mut self, key: AdapterKey) {
        self.prefetch.remove(&key);
        self.pending_dirty = true;
        self.unload.insert(key);
    }

    fn wanted(&self, key: &AdapterKey) -> bool {
        wants(&self.queues, &self.prefetch, key)
    }

    fn evict(&mut self, key: &AdapterKey, out: &mut Vec<Action>) {
        if let Some(Residency::Active { slot, .. }) = self.adapters.remove(key) {
            self.free_slots.push(slot);
            self.rotation.retain(|t| t.as_ref() != Some(key));
            out.push(Action::Evict { key: key.clone(), slot });
            self.unload.remove(key);
            if self.wanted(key) {
                self.adapters.insert(key.clone(), Residency::Pending);
                self.pending.push_back(key.clone());
            }
        }
    }

    /// Assign slots to pending adapters, evicting and rotating as needed.
    pub fn plan(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        // Drained (or unloaded) residents leave their slot once nothing runs on them.
        let done: Vec<AdapterKey> = self
            .residents()
            .filter_map(|(k, r)| match r {
                Residency::Active { running: 0, draining, .. } if *draining || self.unload.contains(k) => Some(k.clone()),
                _ => None,
            })
            .collect();
        for key in done {
            self.evict(&key, &mut out);
        }
        // Sweep the pending line (a thousand adapters when a thousand wait) only when one of them
        // may have lost its requests: pending adapters nobody wants any more (their requests
        // failed or went away) are dropped.
        if std::mem::take(&mut self.pending_dirty) {
            let (queues, prefetch, adapters) = (&self.queues, &self.prefetch, &mut self.adapters);
            self.pending.retain(|k| {
                if !matches!(adapters.get(k), Some(Residency::Pending)) {
                    return false;
                }
                let wanted = wants(queues, prefetch, k);
                if !wanted {
                    adapters.remove(k);
                }
                wanted
            });
        }

        while let Some(key) = self.pending.front().cloned() {
            if self.free_slots.is_empty() && !self.evict_idle(&mut out) {
                break;
            }
            let Some(slot) = self.free_slots.pop() else { break };
            self.pending.pop_front();
            self.adapters.insert(key.clone(), Residency::Loading { slot });
            out.push(Action::Load { key, slot });
        }
        if !self.pending.is_empty() {
            self.start_draining(now);
        }
        out
    }

    /// The adapters holding a slot with their weights in it (the rotation's adapters): at most
    /// `slots` of them, where `adapters` also holds every pending one.
    fn residents(&self) -> impl Iterator<Item = (&AdapterKey, &Residency)> {
        self.rotation.iter().flatten().filter_map(|k| self.adapters.get_key_value(k))
    }

    /// Evict the least recently admitted idle resident. Returns whether one was evicted.
    fn evict_idle(&mut self, out: &mut Vec<Action>) -> bool {
        let victim = self
            .residents()
            .filter_map(|(k, r)| match r {
                Residency::Active { running: 0, last_admit, .. } if !self.wanted(k) => Some((*last_admit, k.clone())),
                _ => None,
            })
            .min();
        match victim {
            Some((_, key)) => {
                self.evict(&key, out);
                true
            }
            None => false,
        }
    }

    /// Residents older than the cycle time stop admitting, one per pending adapter, oldest first.
    fn start_draining(&mut self, now: Instant) {
        let draining = self.residents().filter(|(_, r)| matches!(r, Residency::Active { draining: true, .. })).count();
        let mut need = self.pending.len().saturating_sub(draining);
        let mut old: Vec<(Instant, AdapterKey)> = self
            .residents()
            .filter_map(|(k, r)| match r {
                Residency::Active { since, draining: false, .. } if now.duration_since(*since) >= self.cycle => {
                    Some((*since, k.clone()))
                }
                _ => None,
            })
            .collect();
        old.sort();
        for (_, key) in old {
            if need == 0 {
                break;
            }
            if let Some(Residency::Active { draining, .. }) = self.adapters.get_mut(&key) {
                *draining = true;
                need -= 1;
            }
        }
    }

    /// A load finished. On success returns the slot to install into; on failure returns the
    /// requests that were waiting for the adapter (to be failed) and frees the slot.
    pub fn loaded(&mut self, key: &AdapterKey, ok: bool, now: Instant) -> Result<usize, Vec<Entry>> {
        let slot = match self.adapters.get(key) {
            Some(Residency::Loading { slot }) => *slot,
            _ => return Err(Vec::new()),
        };
        if ok {
            self.adapters.insert(
                key.clone(),
                Residency::Active { slot, running: 0, since: now, last_admit: now, draining: false },
            );
            self.rotation.push_back(Some(key.clone()));
            self.prefetch.remove(key);
            Ok(slot)
        } else {
            self.adapters.remove(key);
            self.free_slots.push(slot);
            self.prefetch.remove(key);
            Err(self.queues.drain(&Some(key.clone())))
        }
    }

    fn slot_of(&self, target: &Target) -> Option<usize> {
        match target {
            None => Some(0),
            Some(k) => match self.adapters.get(k) {
                Some(Residency::Active { slot, draining: false, .. }) => Some(*slot),
                _ => None,
            },
        }
    }

    /// Admit up to `free` requests whose prompts total at most `token_budget` tokens (at least one
    /// request is always admitted if any is admissible), round-robin over resident adapters.
    ///
    /// `single` restricts admission to one target (same-adapter-only batching, the benchmark's
    /// baseline): `Some(Some(t))` admits only `t`'s requests, `Some(None)` admits from the first
    /// target that has any.
    pub fn admit(&mut self, free: usize, token_budget: usize, now: Instant, single: Option<Option<Target>>) -> Vec<Admitted> {
        let mut out: Vec<Admitted> = Vec::new();
        let (restricted, locked) = match single {
            None => (false, None),
            // An empty batch takes the target with the oldest waiting request (first come, first
            // served), so the baseline is fair too.
            Some(None) => {
                let oldest = self
                    .rotation
                    .iter()
                    .filter(|t| self.slot_of(t).is_some())
                    .filter_map(|t| self.queues.front(t).map(|e| (e.arrived, t.clone())))
                    .min_by_key(|(arrived, _)| *arrived);
                match oldest {
                    Some((_, t)) => (true, Some(t)),
                    None => return Vec::new(),
                }
            }
            Some(Some(t)) => (true, Some(t)),
        };
        let mut tokens = 0;
        let mut idle_turns = 0;
        while out.len() < free && idle_turns < self.rotation.len() {
            let Some(target) = self.rotation.pop_front() else { break };
            self.rotation.push_back(target.clone());
            let allowed = !restricted || locked.as_ref().is_none_or(|l| *l == target);
            let slot = if allowed { self.slot_of(&target) } else { None };
            let Some(slot) = slot else {
                idle_turns += 1;
                continue;
            };
            let Some(next_len) = self.queues.front(&target).map(|e| e.request.prompt_tokens.len()) else {
                idle_turns += 1;
                continue;
            };
            if !out.is_empty() && tokens + next_len > token_budget {
                break;
            }
            let Some(entry) = self.queues.pop(&target) else { continue };
            idle_turns = 0;
            tokens += entry.request.prompt_tokens.len();
            if let Some(Some(Residency::Active { running, last_admit, .. })) = target.as_ref().map(|k| self.adapters.get_mut(k)) {
                *running += 1;
                *last_admit = now;
            }
            out.push(Admitted { entry, slot });
        }
        out
    }

    /// A row of `target` left the batch.
    pub fn finished(&mut self, target: &Target) {
        if let Some(Some(Residency::Active { running, .. })) = target.as_ref().map(|k| self.adapters.get_mut(k)) {
            *running = running.saturating_sub(1);
        }
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.queues.len()
    }

    /// Adapters holding a slot (resident or loading).
    pub fn resident(&self) -> usize {
        self.adapters.values().filter(|r| !matches!(r, Residency::Pending)).count()
    }

    /// The slot of a resident adapter.
    pub fn slot(&self, key: &AdapterKey) -> Option<usize> {
        match self.adapters.get(key) {
            Some(Residency::Active { slot, .. }) => Some(*slot),
            _ => None,
        }
    }

    /// Take every waiting request (shutdown).
    pub fn take_all(&mut self) -> Vec<Entry> {
        self.queues.take_all()
    }

    /// Take the waiting requests that have been cancelled by their clients.
    pub fn take_cancelled(&mut self) -> Vec<Entry> {
        let cancelled = self.queues.take_where(|e| e.events.is_closed());
        self.pending_dirty |= !cancelled.is_empty();
        cancelled
    }
}

/// Whether `key` has requests waiting or was loaded ahead of them (admin load). A free function so
/// that it can run while the scheduler's other fields are borrowed mutably.
fn wants(queues: &Queues, prefetch: &HashSet<AdapterKey>, key: &AdapterKey) -> bool {
    queues.waiting_for(key) > 0 || (!prefetch.is_empty() && prefetch.contains(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Event;
    use crate::sampling::SamplingParams;
    use crate::validation::{ApiKind, ValidatedRequest};

    fn entry(adapter: Option<&str>) -> (Entry, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let request = ValidatedRequest {
            id: "r".into(),
            model: String::new(),
            adapter: adapter.map(|a| AdapterKey::new(a, "v1")),
            prompt_tokens: vec![1, 2, 3],
            params: SamplingParams::default(),
            stream: false,
            return_token_ids: false,
            api: ApiKind::Completion,
        };
        (Entry { request, events, arrived: Instant::now() }, rx)
    }

    fn key(a: &str) -> AdapterKey {
        AdapterKey::new(a, "v1")
    }

    #[test]
    fn admission_is_round_robin_so_a_popular_adapter_cannot_starve_others() {
        let mut s = Scheduler::new(4, Duration::from_secs(60));
        let mut keep = Vec::new();
        for a in ["a", "a", "a", "a", "a", "a", "b", "c"] {
            let (e, rx) = entry(Some(a));
            keep.push(rx);
            s.push(e);
        }
        let now = Instant::now();
        let loads = s.plan(now);
        assert_eq!(loads.len(), 3, "three adapters get slots: {loads:?}");
        for a in ["a", "b", "c"] {
            assert!(s.loaded(&key(a), true, now).is_ok());
        }
        let admitted: Vec<String> =
            s.admit(3, 1000, now, None).iter().map(|x| x.entry.request.adapter.as_ref().map(|k| k.datanet.clone()).unwrap_or_default()).collect();
        let mut sorted = admitted.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "b", "c"], "one request per adapter per turn");
        // Same-adapter-only admission takes one adapter's requests.
        let only: Vec<_> = s.admit(8, 1000, now, Some(Some(Some(key("a"))))).into_iter().map(|x| x.entry.request.adapter).collect();
        assert_eq!(only.len(), 5);
        assert!(only.iter().all(|k| k.as_ref() == Some(&key("a"))));
    }

    #[test]
    fn residents_rotate_out_when_others_wait_past_the_cycle_time() {
        let mut s = Scheduler::new(1, Duration::from_millis(0));
        let mut keep = Vec::new();
        for a in ["a", "a", "b"] {
            let (e, rx) = entry(Some(a));
            keep.push(rx);
            s.push(e);
        }
        let now = Instant::now();
        assert_eq!(s.plan(now), vec![Action::Load { key: key("a"), slot: 1 }]);
        assert_eq!(s.loaded(&key("a"), true, now).ok(), Some(1));
        assert_eq!(s.admit(1, 1000, now, None).len(), 1);
        // `b` waits and `a` is past its cycle: `a` drains (admits nothing more)…
        assert!(s.plan(now).is_empty());
        assert!(s.admit(1, 1000, now, None).is_empty());
        // …and once its row finishes it yields the slot, going back in line for its last request.
        s.finished(&Some(key("a")));
        assert_eq!(
            s.plan(now),
            vec![Action::Evict { key: key("a"), slot: 1 }, Action::Load { key: key("b"), slot: 1 }]
        );
        // A failed load fails the waiting requests and frees the slot.
        let failed = s.loaded(&key("b"), false, now).expect_err("waiting requests returned");
        assert_eq!(failed.len(), 1);
        assert_eq!(s.plan(now), vec![Action::Load { key: key("a"), slot: 1 }]);
    }

    #[test]
    fn a_pending_adapter_whose_requests_were_cancelled_is_never_loaded() {
        let mut s = Scheduler::new(1, Duration::from_secs(60));
        let (ea, _keep_a) = entry(Some("a"));
        let (eb, rx_b) = entry(Some("b"));
        let (ec, _keep_c) = entry(Some("c"));
        s.push(ea);
        s.push(eb);
        s.push(ec);
        let now = Instant::now();
        assert_eq!(s.plan(now), vec![Action::Load { key: key("a"), slot: 1 }]);
        assert_eq!(s.loaded(&key("a"), true, now).ok(), Some(1));
        assert_eq!(s.admit(1, 1000, now, None).len(), 1);
        // `b`'s only client goes away while `b` waits for the slot.
        drop(rx_b);
        let cancelled = s.take_cancelled();
        assert_eq!(cancelled.len(), 1);
        assert_eq!(cancelled[0].request.adapter, Some(key("b")));
        // When `a` frees the slot, it goes to `c`: `b` left the pending line with its request.
        s.finished(&Some(key("a")));
        assert_eq!(
            s.plan(now),
            vec![Action::Evict { key: key("a"), slot: 1 }, Action::Load { key: key("c"), slot: 1 }]
        );
        assert_eq!(s.resident(), 1);
    }
}
