//! Adapters in three tiers: the object store, host memory, and the compute backend's memory.
//!
//! - **Object store** (`adapters/<datanet>/<version>/` in the warehouse): every published version.
//!   The [`Registry`] knows them all (refreshed by [`watch`], so a newly published version is seen
//!   without a restart and the `datanet` alias moves to it) and resolves what a request names.
//! - **Host memory**: [`HostCache`], an LRU of parsed, validated adapters ([`HostAdapter`]) bounded
//!   by `serving.host_cache_adapters`. [`Loader::load`] fills it asynchronously from the store.
//! - **Compute memory**: the bounded active set, `serving.max_active_adapters` slots of stacked
//!   factors owned by the engine thread (`batch_lora::ActiveSet`); the scheduler decides which
//!   adapters hold a slot.
//!
//! Loads run on the async runtime, never on the engine thread, so a slow or failing load stalls
//! nothing that is running. A corrupt or mismatched adapter fails its own load with a precise
//! reason ([`Error::AdapterInvalid`]), is remembered as failed, and everything else keeps serving.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use burn::tensor::Device;
use object_store::path::Path as ObjectPath;
use tributary_jobs::adapter_store::{AdapterDir, AdapterRecord, FORMAT, files};
use tributary_jobs::model::safetensors_io;
use tributary_jobs::model::{Adapter, LlamaModel};
use tributary_pipeline::storage::prefix;
use tributary_pipeline::{Tables, Warehouse};

use crate::credits::{self, CreditIndex};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// One published adapter version: `datanet/version`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdapterKey {
    /// The datanet it was trained on.
    pub datanet: String,
    /// The version folder.
    pub version: String,
}

impl AdapterKey {
    /// A key from its parts.
    pub fn new(datanet: impl Into<String>, version: impl Into<String>) -> AdapterKey {
        AdapterKey { datanet: datanet.into(), version: version.into() }
    }

    /// The adapter's folder in the warehouse.
    pub fn dir(&self, warehouse: &Warehouse) -> AdapterDir {
        AdapterDir::new(warehouse, &self.datanet, &self.version)
    }
}

impl fmt::Display for AdapterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.datanet, self.version)
    }
}

/// A published version as the registry knows it.
#[derive(Debug, Clone)]
pub struct Published {
    /// Which one.
    pub key: AdapterKey,
    /// Its `adapter.json`.
    pub record: AdapterRecord,
}

#[derive(Debug, Default)]
struct RegistryInner {
    /// Per datanet, versions oldest → newest (the last one is what the alias names).
    datanets: BTreeMap<String, Vec<Published>>,
    /// Versions that cannot be served, with the reason.
    failed: HashMap<AdapterKey, String>,
}

/// Every published adapter version and the alias of each datanet. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Registry {
    base_model: String,
    inner: Arc<RwLock<RegistryInner>>,
}

/// The order of versions of one datanet: the alias names the greatest (same order as
/// `tributary_jobs::adapter_store::list`).
fn version_order(r: &AdapterRecord) -> (i64, i64, String) {
    (r.epoch, r.training_set.delta_version, r.created_at.clone())
}

impl Registry {
    /// An empty registry for a server of `base_model`.
    pub fn new(base_model: impl Into<String>) -> Registry {
        Registry { base_model: base_model.into(), inner: Arc::default() }
    }

    /// The base model's name (what `model` may say to get no adapter).
    pub fn base_model(&self) -> &str {
        &self.base_model
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RegistryInner> {
        // A panic while holding the lock cannot leave the maps half-updated (each write is one
        // insert or remove), so a poisoned lock is still consistent.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RegistryInner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a published version (idempotent). Returns whether it was new.
    pub fn insert(&self, published: Published) -> bool {
        let mut inner = self.write();
        let versions = inner.datanets.entry(published.key.datanet.clone()).or_default();
        if versions.iter().any(|p| p.key == published.key) {
            return false;
        }
        versions.push(published);
        versions.sort_by_key(|p| version_order(&p.record));
        true
    }

    /// Whether `key` is known (published, possibly failed).
    pub fn contains(&self, key: &AdapterKey) -> bool {
        let inner = self.read();
        inner.failed.contains_key(key)
            || inner.datanets.get(&key.datanet).is_some_and(|v| v.iter().any(|p| p.key == *key))
    }

    /// The record of `key`.
    pub fn record(&self, key: &AdapterKey) -> Option<AdapterRecord> {
        self.read().datanets.get(&key.datanet)?.iter().find(|p| p.key == *key).map(|p| p.record.clone())
    }

    /// Remember that `key` cannot be served.
    pub fn mark_failed(&self, key: &AdapterKey, reason: &str) {
        self.write().failed.insert(key.clone(), reason.to_string());
    }

    /// Forget a failure (an operator reloads after fixing the files).
    pub fn clear_failed(&self, key: &AdapterKey) {
        self.write().failed.remove(key);
    }

    /// Why `key` cannot be served, if it cannot.
    pub fn failure(&self, key: &AdapterKey) -> Option<String> {
        self.read().failed.get(key).cloned()
    }

    /// The newest version of `datanet`.
    pub fn latest(&self, datanet: &str) -> Option<AdapterKey> {
        self.read().datanets.get(datanet)?.last().map(|p| p.key.clone())
    }

    /// Resolve a request's `model`: `None` for the base model (empty or its name), the exact
    /// version for `datanet/version`, the newest version for the alias `datanet`.
    pub fn resolve(&self, model: &str) -> Result<Option<AdapterKey>> {
        let model = model.trim();
        if model.is_empty() || model == self.base_model {
            return Ok(None);
        }
        let key = match model.split_once('/') {
            Some((datanet, version)) => {
                let key = AdapterKey::new(datanet, version);
                if !self.contains(&key) {
                    return Err(Error::UnknownModel { model: model.to_string() });
                }
                key
            }
            None => self.latest(model).ok_or_else(|| Error::UnknownModel { model: model.to_string() })?,
        };
        if let Some(reason) = self.failure(&key) {
            return Err(Error::AdapterInvalid { adapter: key.to_string(), reason });
        }
        Ok(Some(key))
    }

    /// Every version, per datanet, oldest → newest.
    pub fn all(&self) -> Vec<Published> {
        self.read().datanets.values().flat_map(|v| v.iter().cloned()).collect()
    }

    /// Versions known.
    pub fn len(&self) -> usize {
        self.read().datanets.values().map(Vec::len).sum()
    }

    /// Whether no adapter is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scan `adapters/` and register every complete version not yet known. Versions whose
    /// `adapter.json` is unreadable are registered as failed (so requests get a 422 naming the
    /// problem instead of a 404). Returns the newly seen keys.
    pub async fn refresh(&self, warehouse: &Warehouse) -> Result<Vec<AdapterKey>> {
        let store = warehouse.store();
        let root = ObjectPath::from(prefix::ADAPTERS);
        let mut new = Vec::new();
        for datanet_dir in store.list_with_delimiter(Some(&root)).await?.common_prefixes {
            let Some(datanet) = datanet_dir.filename().map(str::to_string) else { continue };
            for version_dir in store.list_with_delimiter(Some(&datanet_dir)).await?.common_prefixes {
                let Some(version) = version_dir.filename() else { continue };
                let key = AdapterKey::new(&datanet, version);
                if self.contains(&key) {
                    continue;
                }
                let dir = key.dir(warehouse);
                // `adapter.json` is written last: without it the version is still being written.
                let Some(bytes) = dir.get(files::RECORD).await? else { continue };
                match parse_record(&bytes, &key) {
                    Ok(record) => {
                        self.insert(Published { key: key.clone(), record });
                    }
                    Err(reason) => {
                        tracing::warn!(adapter = %key, %reason, "unreadable adapter record");
                        self.mark_failed(&key, &reason);
                    }
                }
                new.push(key);
            }
        }
        Ok(new)
    }
}

fn parse_record(bytes: &[u8], key: &AdapterKey) -> std::result::Result<AdapterRecord, String> {
    let record: AdapterRecord = serde_json::from_slice(bytes).map_err(|e| format!("{}: {e}", files::RECORD))?;
    if record.format != FORMAT {
        return Err(format!("{}: format `{}` is not `{FORMAT}`", files::RECORD, record.format));
    }
    if record.datanet != key.datanet || record.version != key.version {
        return Err(format!(
            "{} describes {}/{} but lives in {key}",
            files::RECORD,
            record.datanet,
            record.version
        ));
    }
    Ok(record)
}

/// An adapter parsed and checked against the base model, in host memory, ready to be copied into
/// an active-set slot.
#[derive(Debug)]
pub struct HostAdapter {
    /// Which version.
    pub key: AdapterKey,
    /// Its record.
    pub record: AdapterRecord,
    /// The factors on the host (CPU) device, model orientation (`A: [in, r]`, `B: [r, out]`).
    pub adapter: Adapter,
    /// The credits index built from its training rows, when there is one.
    pub credits: Option<Arc<CreditIndex>>,
}

impl HostAdapter {
    /// Rank.
    pub fn rank(&self) -> usize {
        self.adapter.config.rank
    }
}

/// What the server checks an adapter against.
#[derive(Debug, Clone)]
pub struct BaseIdentity {
    /// Name under `models/`.
    pub name: String,
    /// Hex sha256 of the weights.
    pub sha256: String,
}

/// A least-recently-used map bounded by entry count.
///
/// Every operation is O(log n): each entry carries the tick of its last use and `order` maps
/// ticks back to keys, so the least recently used is `order`'s first entry. (A recency list
/// scanned on every hit made each lookup a pass over thousands of keys.)
#[derive(Debug)]
struct Lru<K, V> {
    capacity: usize,
    entries: HashMap<K, (V, u64)>,
    order: BTreeMap<u64, K>,
    tick: u64,
}

impl<K: Clone + Eq + std::hash::Hash, V: Clone> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Lru { capacity: capacity.max(1), entries: HashMap::new(), order: BTreeMap::new(), tick: 0 }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let (value, used) = self.entries.get_mut(key)?;
        let previous = std::mem::replace(used, self.tick);
        let hit = value.clone();
        if let Some(k) = self.order.remove(&previous) {
            self.order.insert(self.tick, k);
        }
        Some(hit)
    }

    /// Insert (or replace) `key`, then evict from the least recently used end down to capacity.
    /// Returns how many entries were evicted.
    fn insert(&mut self, key: K, value: V) -> usize {
        self.tick += 1;
        if let Some((_, used)) = self.entries.insert(key.clone(), (value, self.tick)) {
            self.order.remove(&used);
        }
        self.order.insert(self.tick, key);
        let mut evicted = 0;
        while self.entries.len() > self.capacity {
            let Some((_, old)) = self.order.pop_first() else { break };
            self.entries.remove(&old);
            evicted += 1;
        }
        evicted
    }

    fn remove(&mut self, key: &K) -> bool {
        match self.entries.remove(key) {
            Some((_, used)) => {
                self.order.remove(&used);
                true
            }
            None => false,
        }
    }

    fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Host-memory LRU of parsed adapters.
#[derive(Debug)]
pub struct HostCache {
    entries: Lru<AdapterKey, Arc<HostAdapter>>,
}

impl HostCache {
    /// An empty cache holding at most `capacity` adapters (at least 1).
    pub fn new(capacity: usize) -> HostCache {
        HostCache { entries: Lru::new(capacity) }
    }

    /// The adapter, marking it most recently used.
    pub fn get(&mut self, key: &AdapterKey) -> Option<Arc<HostAdapter>> {
        self.entries.get(key)
    }

    /// Insert, evicting least recently used entries beyond capacity. Returns how many were evicted.
    pub fn insert(&mut self, adapter: Arc<HostAdapter>) -> usize {
        self.entries.insert(adapter.key.clone(), adapter)
    }

    /// Drop `key`. Returns whether it was cached.
    pub fn remove(&mut self, key: &AdapterKey) -> bool {
        self.entries.remove(key)
    }

    /// Adapters cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }
}

/// Fills the host tier from the object store. Cheap to clone (shared).
#[derive(Clone)]
pub struct Loader {
    warehouse: Warehouse,
    registry: Registry,
    base: BaseIdentity,
    /// The model, for shapes only (layer count and projection widths).
    model: Arc<LlamaModel>,
    max_rank: usize,
    cache: Arc<Mutex<HostCache>>,
    metrics: Arc<Metrics>,
}

impl Loader {
    /// A loader over `warehouse` for adapters of `base`.
    pub fn new(
        warehouse: Warehouse,
        registry: Registry,
        base: BaseIdentity,
        model: Arc<LlamaModel>,
        host_capacity: usize,
        max_rank: usize,
        metrics: Arc<Metrics>,
    ) -> Loader {
        Loader {
            warehouse,
            registry,
            base,
            model,
            max_rank,
            cache: Arc::new(Mutex::new(HostCache::new(host_capacity))),
            metrics,
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HostCache> {
        // Every cache operation completes or leaves the maps unchanged: poisoning is harmless.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registry this loader resolves against.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether `key` is in host memory.
    pub fn is_cached(&self, key: &AdapterKey) -> bool {
        self.cache().entries.contains(key)
    }

    /// Adapters in host memory.
    pub fn cached_count(&self) -> usize {
        self.cache().len()
    }

    /// The adapter if it is in host memory (a hit, marking it recently used); never reads the
    /// object store, so the engine can take a host hit without waiting on a task.
    pub fn cached(&self, key: &AdapterKey) -> Option<Arc<HostAdapter>> {
        let hit = self.cache().get(key)?;
        self.metrics.adapter_hit("host");
        Some(hit)
    }

    /// Drop `key` from host memory. Returns whether it was there.
    pub fn evict(&self, key: &AdapterKey) -> bool {
        let removed = self.cache().remove(key);
        if removed {
            self.metrics.adapter_evicted("host");
        }
        removed
    }

    /// The adapter in host memory, reading it from the object store on a miss. A failure marks
    /// the version failed in the registry (requests for it then get the reason at once).
    pub async fn load(&self, key: &AdapterKey) -> Result<Arc<HostAdapter>> {
        if let Some(hit) = self.cached(key) {
            return Ok(hit);
        }
        self.metrics.adapter_miss();
        match self.read(key).await {
            Ok(adapter) => {
                let adapter = Arc::new(adapter);
                let evicted = self.cache().insert(adapter.clone());
                self.metrics.adapter_loaded("host");
                for _ in 0..evicted {
                    self.metrics.adapter_evicted("host");
                }
                Ok(adapter)
            }
            Err(e) => {
                self.metrics.adapter_load_failed();
                tracing::warn!(adapter = %key, error = %e, "adapter load failed");
                Err(match e {
                    Error::AdapterInvalid { adapter, reason } => {
                        self.registry.mark_failed(key, &reason);
                        Error::AdapterInvalid { adapter, reason }
                    }
                    e @ Error::UnknownModel { .. } => e,
                    // The store failed, not the adapter: a later request may succeed.
                    other => Error::AdapterUnavailable { adapter: key.to_string(), reason: other.to_string() },
                })
            }
        }
    }

    async fn read(&self, key: &AdapterKey) -> Result<HostAdapter> {
        let invalid = |reason: String| Error::AdapterInvalid { adapter: key.to_string(), reason };
        let dir = key.dir(&self.warehouse);
        let record = match self.registry.record(key) {
            Some(r) => r,
            None => {
                let bytes = dir.get(files::RECORD).await?.ok_or_else(|| Error::UnknownModel { model: key.to_string() })?;
                parse_record(&bytes, key).map_err(invalid)?
            }
        };
        if record.base_model.sha256 != self.base.sha256 {
            return Err(invalid(format!(
                "trained on base model `{}` (weights sha256 {}…), but this server serves `{}` ({}…)",
                record.base_model.name,
                short(&record.base_model.sha256),
                self.base.name,
                short(&self.base.sha256)
            )));
        }
        if record.lora.rank > self.max_rank {
            return Err(invalid(format!("rank {} exceeds serving.max_lora_rank {}", record.lora.rank, self.max_rank)));
        }
        record.lora.validate().map_err(|e| invalid(e.to_string()))?;
        let bytes = dir.get(files::WEIGHTS).await?.ok_or_else(|| invalid(format!("{} is missing", files::WEIGHTS)))?;
        let path = dir.key(files::WEIGHTS).to_string();
        let model = self.model.clone();
        let lora = record.lora.clone();
        // Parsing and checking shapes is CPU work: keep it off the async workers.
        let adapter = tokio::task::spawn_blocking(move || -> std::result::Result<Adapter, String> {
            let (tensors, _) = safetensors_io::read(&bytes, &path).map_err(|e| e.to_string())?;
            let adapter = Adapter::from_host(&tensors, &path, &lora, &model, &Device::flex()).map_err(|e| e.to_string())?;
            check_finite(&tensors)?;
            Ok(adapter)
        })
        .await
        .map_err(|e| Error::Internal(format!("adapter parse task: {e}")))?
        .map_err(invalid)?;
        let credits = match credits::load(&self.warehouse, key).await {
            Ok(index) => index.map(Arc::new),
            Err(e) => {
                // Serving without attribution beats not serving; the reason is logged and the
                // missing index shows in each response's attribution status.
                tracing::error!(adapter = %key, error = %e, "credits index unusable");
                None
            }
        };
        Ok(HostAdapter { key: key.clone(), record, adapter, credits })
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn check_finite(tensors: &BTreeMap<String, safetensors_io::HostTensor>) -> std::result::Result<(), String> {
    for (name, t) in tensors {
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(format!("tensor {name} holds a non-finite value at element {i}"));
        }
    }
    Ok(())
}

/// Keep `registry` in step with the warehouse: every `every`, register new versions (building
/// their credits index first when it is missing, so the alias moves only once attribution is
/// ready). Runs until the task is aborted.
pub async fn watch(
    registry: Registry,
    warehouse: Warehouse,
    tables: Tables,
    tokenizer: tributary_jobs::tokenizer::Tokenizer,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = publish_new(&registry, &warehouse, &tables, &tokenizer).await {
            tracing::warn!(error = %e, "adapter publish scan failed");
        }
    }
}

/// One scan: index and register every newly published version. Returns the keys registered.
pub async fn publish_new(
    registry: &Registry,
    warehouse: &Warehouse,
    tables: &Tables,
    tokenizer: &tributary_jobs::tokenizer::Tokenizer,
) -> Result<Vec<AdapterKey>> {
    // Scan into a scratch registry first, so versions become visible only after indexing.
    let scratch = Registry::new(registry.base_model());
    {
        let inner = registry.read();
        let mut s = scratch.write();
        s.datanets = inner.datanets.clone();
        s.failed = inner.failed.clone();
    }
    let new = scratch.refresh(warehouse).await?;
    for key in &new {
        if let Some(reason) = scratch.failure(key) {
            registry.mark_failed(key, &reason);
            continue;
        }
        let Some(record) = scratch.record(key) else { continue };
        match credits::ensure(warehouse, tables, tokenizer, &record).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(adapter = %key, error = %e, "no credits index; serving without attribution"),
        }
        registry.insert(Published { key: key.clone(), record });
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn lru_evicts_the_least_recently_used_and_counts_evictions() {
        let mut lru = Lru::new(3);
        for k in 1..=3 {
            assert_eq!(lru.insert(k, k * 10), 0);
        }
        // A hit makes 1 the most recent, so 2 is now the oldest.
        assert_eq!(lru.get(&1), Some(10));
        assert_eq!(lru.insert(4, 40), 1);
        assert!(!lru.contains(&2), "the least recently used entry goes first");
        assert!(lru.contains(&1) && lru.contains(&3) && lru.contains(&4));
        // Replacing a key is not an eviction and does not leave a stale recency entry behind.
        assert_eq!(lru.insert(3, 31), 0);
        assert_eq!(lru.get(&3), Some(31));
        assert_eq!(lru.len(), 3);
        // 1 (hit before 4 came) is now the oldest; then 4.
        assert_eq!(lru.insert(5, 50), 1);
        assert!(!lru.contains(&1));
        assert!(lru.remove(&4));
        assert!(!lru.remove(&4));
        assert_eq!(lru.insert(6, 60), 0, "a removed entry frees its place");
        assert_eq!(lru.insert(7, 70), 1);
        assert!(!lru.contains(&3), "3 was the oldest left");
        assert_eq!(lru.order.len(), lru.entries.len(), "one recency entry per key");
        // A miss changes nothing.
        assert_eq!(lru.get(&99), None);
        assert_eq!(lru.len(), 3);
    }

    #[test]
    fn lru_capacity_is_at_least_one() {
        let mut lru = Lru::new(0);
        assert_eq!(lru.insert("a", 1), 0);
        assert_eq!(lru.insert("b", 2), 1);
        assert_eq!(lru.get(&"b"), Some(2));
        assert_eq!(lru.get(&"a"), None);
    }
}
