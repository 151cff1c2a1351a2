//! `tributary attribute`: the influence of every training row on the datanet's validation loss.
//!
//! All methods work from gradients of the LoRA parameters only, per example ([`grads`]), grouped in
//! one block per adapted projection:
//!
//! | method | file | influence `τ(i, v)` of training row `i` on validation row `v` |
//! |---|---|---|
//! | `exact-block` (default) | [`exact_block`] | `Σ_l g_vᵀ (G_l + λ_l I)⁻¹ g_i`, exact per-block inverse of the damped Gauss–Newton block |
//! | `datainf` | [`datainf`] | same, inverse replaced by Kwon et al.'s closed form |
//! | `tracin` | [`tracin`] | `Σ_c η_c/B · g_v(θ_c)·g_i(θ_c)` over the epoch checkpoints |
//! | `graddot` | [`graddot`] | `g_v · g_i` (baseline) |
//!
//! Scale and sign: `τ` is divided by the number of training rows `N`, so a row's `influence`
//! (the mean of `τ(i, ·)` over the validation rows) estimates, to first order, how much the mean
//! validation loss would *rise* if the row were removed: positive means the row helps.
//! `self_influence` is `g_iᵀ H⁻¹ g_i / N` (or the method's analogue): large for rows the model
//! finds surprising, such as mislabeled ones.
//!
//! The [`AttributeJob`] reads the adapter's record, re-reads exactly the rows it was trained on
//! (same Delta version, checked by hash), computes gradients chunk by chunk — saving each chunk in
//! the adapter folder so a killed run resumes where it stopped — and replaces the epoch's rows of
//! `gold.example_influence` and `gold.contributor_attribution` for this method in one commit each.

pub mod datainf;
pub mod exact_block;
pub mod grads;
pub mod graddot;
pub mod group;
pub mod linalg;
pub mod tracin;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use burn::tensor::Tensor;
use deltalake::protocol::SaveMode;
use serde::Serialize;
use tributary_pipeline::config::Config;
use tributary_pipeline::tables::defs;
use tributary_pipeline::{TableDef, Tables};

use crate::adapter_store::{self, AdapterDir, AdapterRecord};
use crate::aggregate::{self, ContributorShare, RowInfluence};
use crate::batch::Targets;
use crate::compute::Compute;
use crate::dataset::{self, Row, ValidationSource};
use crate::error::{Error, Result};
use crate::model::safetensors_io::{self, HostTensor};
use crate::model::{Adapter, BaseModel, LlamaModel, LoraTarget};
use crate::tokenizer::Encoded;
use grads::GradBlocks;

/// An attribution method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Exact per-block inverse of the damped Gauss–Newton matrix (the true Fisher, estimated from
    /// gradients with model-sampled targets).
    ExactBlock,
    /// DataInf's closed-form approximation.
    DataInf,
    /// TracIn-CP over epoch checkpoints.
    TracIn,
    /// Gradient dot product.
    GradDot,
}

impl Method {
    /// Every method, default first.
    pub const ALL: [Method; 4] = [Method::ExactBlock, Method::DataInf, Method::TracIn, Method::GradDot];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Method::ExactBlock => "exact-block",
            Method::DataInf => "datainf",
            Method::TracIn => "tracin",
            Method::GradDot => "graddot",
        }
    }

    /// The method's default damping (relative to the block's mean curvature).
    pub fn default_damping(self) -> f64 {
        match self {
            Method::ExactBlock => 0.1,
            Method::DataInf => 0.1,
            Method::TracIn | Method::GradDot => 0.0,
        }
    }

    fn version_tag(self) -> &'static str {
        match self {
            Method::ExactBlock => exact_block::VERSION,
            Method::DataInf => datainf::VERSION,
            Method::TracIn => tracin::VERSION,
            Method::GradDot => graddot::VERSION,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown method `{s}` (exact-block, datainf, tracin, graddot)")))
    }
}

/// Where `exact-block` takes its curvature `G` from: which rows, and whose targets.
///
/// Targets *sampled from the model* give the Gauss–Newton matrix (the true Fisher), which depends
/// on the inputs and the model but not on any label; the rows' observed labels give the empirical
/// Fisher, which mislabeled rows dominate (and, once inverted, hide). The default estimates the
/// Gauss–Newton matrix on the validation rows: held-out inputs of the same task, a pass over far
/// fewer rows than the training set, and — unlike estimating it on a sample of the training rows —
/// no training row's own gradient is part of the curvature that scores it. The measured comparison
/// is recorded beside [`FISHER_SEED`] and in the README (`tributary attribute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Curvature {
    /// Gauss–Newton from the training rows (one extra gradient pass over them: about twice the
    /// default's cost).
    TrainSampled,
    /// Empirical Fisher of the training rows (their gradients are computed anyway: no extra pass).
    TrainObserved,
    /// Gauss–Newton from the validation rows (an extra pass over the validation rows only). Best
    /// with a validation set that covers the task (the benchmark's has 64 rows for 240 training
    /// rows); with only a handful of validation rows, prefer `TrainSampled`.
    #[default]
    ValSampled,
    /// Empirical Fisher of the validation rows (no extra pass).
    ValObserved,
}

impl Curvature {
    /// Every choice.
    pub const ALL: [Curvature; 4] = [Curvature::TrainSampled, Curvature::TrainObserved, Curvature::ValSampled, Curvature::ValObserved];

    /// Name on the command line and in the method version.
    pub fn name(self) -> &'static str {
        match self {
            Curvature::TrainSampled => "train-sampled",
            Curvature::TrainObserved => "train-observed",
            Curvature::ValSampled => "val-sampled",
            Curvature::ValObserved => "val-observed",
        }
    }
}

impl fmt::Display for Curvature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Curvature {
    type Err = Error;
    fn from_str(s: &str) -> Result<Curvature> {
        Curvature::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            Error::InvalidArgument(format!("unknown curvature `{s}` (train-sampled, train-observed, val-sampled, val-observed)"))
        })
    }
}

/// Rows per gradient pass by default. With the rows sorted by length ([`grads::length_chunks`]), a
/// smaller chunk pads less and keeps its per-row outer products in cache: on the attribution bench
/// (`cargo bench -p tributary-jobs --bench attribution`, 240 rows, 2 cores) chunks of 8, 16, 32, 64
/// and 128 rows took 0.211, 0.209, 0.245, 0.306 and 0.372 s. A smaller chunk also loses less
/// work when a run is killed.
pub const DEFAULT_CHUNK: usize = 16;

/// How to attribute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributionConfig {
    /// Method.
    pub method: Method,
    /// Damping (`None` = the method's default).
    pub damping: Option<f64>,
    /// Rows per gradient pass ([`DEFAULT_CHUNK`]).
    pub chunk: usize,
    /// `exact-block` only: where the curvature comes from.
    pub curvature: Curvature,
}

impl AttributionConfig {
    /// The default settings of `method`.
    pub fn new(method: Method) -> AttributionConfig {
        AttributionConfig { method, damping: None, chunk: DEFAULT_CHUNK, curvature: Curvature::default() }
    }

    /// Check the settings before any gradient is computed: a damping that is zero, negative or not
    /// finite would make the damped curvature singular or indefinite (or DataInf divide by zero),
    /// which would otherwise surface only minutes later, as a failed factorization or as scores
    /// that mean nothing.
    pub fn validate(&self) -> Result<()> {
        if let Some(d) = self.damping
            && !(d > 0.0 && d.is_finite())
        {
            return Err(Error::InvalidArgument(format!("damping {d} must be a positive finite number")));
        }
        if self.chunk == 0 {
            return Err(Error::InvalidArgument("rows per gradient pass (chunk) must be positive".into()));
        }
        Ok(())
    }

    /// The damping in effect.
    pub fn damping(&self) -> f64 {
        self.damping.unwrap_or_else(|| self.method.default_damping())
    }

    /// The method version recorded in `gold.example_influence` (method, algorithm version, damping,
    /// and the curvature when it is not the default).
    pub fn method_version(&self) -> String {
        match self.method {
            Method::ExactBlock if self.curvature != Curvature::default() => {
                format!("{} damping={} curvature={}", self.method.version_tag(), self.damping(), self.curvature)
            }
            Method::ExactBlock | Method::DataInf => format!("{} damping={}", self.method.version_tag(), self.damping()),
            Method::TracIn | Method::GradDot => self.method.version_tag().to_string(),
        }
    }

    /// Rows of the extra gradient pass the curvature takes, given the training and validation rows.
    pub fn curvature_rows(&self, train: usize, val: usize) -> usize {
        match (self.method, self.curvature) {
            (Method::ExactBlock, Curvature::TrainSampled) => train,
            (Method::ExactBlock, Curvature::ValSampled) => val,
            _ => 0,
        }
    }
}

/// Influence scores of `N` training rows on `M` validation rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Training rows.
    pub n_train: usize,
    /// Validation rows.
    pub n_val: usize,
    /// `τ(i, v)`, row-major `[N, M]`.
    pub pair: Vec<f64>,
    /// Self-influence of each training row.
    pub self_influence: Vec<f64>,
}

impl Scores {
    fn accumulator(train: &GradBlocks, val: &GradBlocks) -> ScoreAcc {
        ScoreAcc { pair: None, selfi: None, n: train.rows(), m: val.rows() }
    }

    /// `τ(i, v)`.
    pub fn pair(&self, i: usize, v: usize) -> f64 {
        self.pair[i * self.n_val + v]
    }

    /// Each training row's influence on the mean validation loss.
    pub fn row_influence(&self) -> Vec<f64> {
        (0..self.n_train)
            .map(|i| self.pair[i * self.n_val..(i + 1) * self.n_val].iter().sum::<f64>() / self.n_val.max(1) as f64)
            .collect()
    }
}

/// Sums per-block contributions to the scores on the device, downloads once.
struct ScoreAcc {
    pair: Option<Tensor<2>>,
    selfi: Option<Tensor<2>>,
    n: usize,
    m: usize,
}

impl ScoreAcc {
    fn add(&mut self, pair: Tensor<2>, selfi: Tensor<2>) {
        self.pair = Some(match self.pair.take() {
            Some(p) => p + pair,
            None => pair,
        });
        self.selfi = Some(match self.selfi.take() {
            Some(s) => s + selfi,
            None => selfi,
        });
    }

    fn finish(self, scale: f64) -> Result<Scores> {
        let (Some(pair), Some(selfi)) = (self.pair, self.selfi) else {
            return Err(Error::Internal("no gradient blocks to score".into()));
        };
        Ok(Scores {
            n_train: self.n,
            n_val: self.m,
            pair: linalg::to_vec(&pair)?.into_iter().map(|x| f64::from(x) * scale).collect(),
            self_influence: linalg::to_vec(&selfi)?.into_iter().map(|x| f64::from(x) * scale).collect(),
        })
    }
}

/// Cache of gradient chunks, keyed `<phase>-<chunk size>x<chunk index>`: lets a killed attribution resume.
pub trait GradCache {
    /// A chunk of `rows` rows computed earlier, if any (one saved with another row count is not it).
    fn load(&mut self, key: &str, rows: usize) -> Option<GradBlocks>;
    /// A chunk just computed.
    fn store(&mut self, key: &str, grads: &GradBlocks) -> Result<()>;
    /// Polled between chunks; `true` stops with [`Error::Cancelled`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// A cache that keeps nothing (the benchmark).
pub struct NoCache;
impl GradCache for NoCache {
    fn load(&mut self, _: &str, _: usize) -> Option<GradBlocks> {
        None
    }
    fn store(&mut self, _: &str, _: &GradBlocks) -> Result<()> {
        Ok(())
    }
}

/// Seed of the targets sampled for `exact-block`'s Gauss–Newton estimate (fixed, so results are
/// reproducible; row `i` of the rows the curvature is taken from draws from stream `FISHER_SEED + i`).
///
/// The curvature choices compared on the attribution benchmark
/// (`cargo run --release -p tributary-jobs --example eval_attribution -- N`, 240 rows, 20% falsified,
/// 64 validation rows, adapters trained with the default settings; `TRIBUTARY_EVAL_CURVATURE`
/// selects the curvature), as train→val AUC, example LDS and contributor LDS (corrupted / clean),
/// cost in training epochs:
///
/// - Gauss–Newton on the validation rows (default; 50 subsets): AUC 0.93, example LDS
///   0.70 / 0.76, contributor LDS 0.56 / 0.58, 1.81 epochs (run first, so with the warm-up; 1.41
///   after another method). On the same 20 subsets as the next line: 0.93, 0.69 / 0.75,
///   0.65 / 0.44, 1.41 epochs.
/// - Gauss–Newton on the training rows (20 subsets): 0.94, 0.71 / 0.78, 0.63 / 0.34, 2.9 epochs
///   (50 subsets, before: 0.94, 0.73 / 0.79, 0.56 / 0.51, 2.6 epochs). As good, at twice the cost.
/// - Gauss–Newton on a random 128 of the training rows: 1.8 epochs but AUC 0.87 — the inverse
///   shrinks the sampled rows, whose own gradients span part of the curvature, and not the others.
/// - Empirical Fisher of the training rows (20 subsets): 0.91, 0.71 / 0.72, 0.56 / −0.02 at
///   1.2 epochs: its inverse shrinks exactly the large gradients of mislabeled rows.
/// - Empirical Fisher of the validation rows (2 subsets only): AUC 0.96 but example LDS 0.44 / 0.41.
const FISHER_SEED: u64 = 0x6a09_e667_f3bc_c908;

/// Per-example gradients of `rows` with model-sampled targets, drawn as the Gauss–Newton
/// curvature draws them (row `i` from stream [`FISHER_SEED`]` + i`): `Σ gᵢgᵢᵀ` over them estimates
/// the Gauss–Newton matrix, where the observed-label gradients give the empirical Fisher.
pub fn sampled_grads(model: &LlamaModel, adapter: &Adapter, rows: &[Encoded], pad: u32, chunk: usize) -> Result<GradBlocks> {
    cached_grads(model, adapter, rows, pad, chunk, "sampled", Draw::Sampled(FISHER_SEED), &mut NoCache)
}

/// How [`cached_grads`] draws targets: the rows' own, or sampled with row `i` (its index in the
/// rows passed) drawing from stream `seed + i`, whatever the chunk size and order.
#[derive(Debug, Clone, Copy)]
enum Draw {
    Observed,
    Sampled(u64),
}

/// Per-example gradients of `rows`, chunk by chunk ([`grads::length_chunks`]), each chunk loaded
/// from `cache` when an interrupted run saved it and saved there when computed. A chunk's key
/// names its phase, the chunk size and its index, so chunks saved under another chunk size (or by
/// a version that formed chunks in row order, keyed without the size) are never taken for these.
#[allow(clippy::too_many_arguments)]
fn cached_grads(
    model: &LlamaModel,
    adapter: &Adapter,
    rows: &[Encoded],
    pad: u32,
    chunk: usize,
    phase: &str,
    draw: Draw,
    cache: &mut dyn GradCache,
) -> Result<GradBlocks> {
    grads::in_length_chunks(rows, chunk, |k, ids| {
        if cache.cancelled() {
            return Err(Error::Cancelled);
        }
        let key = format!("{phase}-{}x{k:05}", chunk.max(1));
        if let Some(g) = cache.load(&key, ids.len()) {
            return Ok(g);
        }
        let streams: Vec<u64>;
        let targets = match draw {
            Draw::Observed => Targets::Observed,
            Draw::Sampled(seed) => {
                streams = ids.iter().map(|&i| seed.wrapping_add(i as u64)).collect();
                Targets::Sampled(&streams)
            }
        };
        let g = grads::chunk_grads_with(model, adapter, &grads::pick(rows, ids), pad, targets)?;
        cache.store(&key, &g)?;
        Ok(g)
    })
}

/// Compute `cfg.method`'s scores of `train` on `val`. `checkpoints` (adapter, mean learning rate)
/// are needed by `tracin` only; `batch_size` is the training batch size (TracIn's step weight).
#[allow(clippy::too_many_arguments)]
pub fn attribute(
    model: &LlamaModel,
    adapter: &Adapter,
    checkpoints: &[(Adapter, f64)],
    train: &[Encoded],
    val: &[Encoded],
    pad: u32,
    batch_size: usize,
    cfg: &AttributionConfig,
    cache: &mut dyn GradCache,
) -> Result<Scores> {
    cfg.validate()?;
    if train.is_empty() || val.is_empty() {
        return Err(Error::InvalidArgument("attribution needs training and validation rows".into()));
    }
    let grads_of = |a: &Adapter, rows: &[Encoded], phase: &str, cache: &mut dyn GradCache| {
        cached_grads(model, a, rows, pad, cfg.chunk, phase, Draw::Observed, cache)
    };
    match cfg.method {
        Method::ExactBlock | Method::DataInf | Method::GradDot => {
            let tg = grads_of(adapter, train, "final-train", cache)?;
            let vg = grads_of(adapter, val, "final-val", cache)?;
            match cfg.method {
                Method::ExactBlock => {
                    let sampled = |rows: &[Encoded], phase: &str, cache: &mut dyn GradCache| {
                        cached_grads(model, adapter, rows, pad, cfg.chunk, phase, Draw::Sampled(FISHER_SEED), cache)
                    };
                    let fg = match cfg.curvature {
                        Curvature::TrainSampled => sampled(train, "fisher", cache)?,
                        Curvature::ValSampled => sampled(val, "fisher-val", cache)?,
                        Curvature::TrainObserved => tg.clone(),
                        Curvature::ValObserved => vg.clone(),
                    };
                    exact_block::scores(&tg, &fg, &vg, cfg.damping())
                }
                Method::DataInf => datainf::scores(&tg, &vg, cfg.damping()),
                _ => graddot::scores(&tg, &vg),
            }
        }
        Method::TracIn => {
            let mut per = Vec::new();
            for (c, (a, lr)) in checkpoints.iter().enumerate() {
                let tg = grads_of(a, train, &format!("ckpt{c}-train"), cache)?;
                let vg = grads_of(a, val, &format!("ckpt{c}-val"), cache)?;
                per.push((tg, vg, lr / batch_size.max(1) as f64));
            }
            tracin::scores(&per)
        }
    }
}

/// Serialize a gradient chunk.
fn grads_to_bytes(g: &GradBlocks) -> Result<Vec<u8>> {
    let mut tensors = BTreeMap::new();
    for (i, b) in g.blocks.iter().enumerate() {
        tensors.insert(format!("b{i:03}"), HostTensor::from_tensor(b)?);
    }
    let keys: Vec<(usize, String)> = g.keys.iter().map(|(l, t)| (*l, t.module_name().to_string())).collect();
    let md = HashMap::from([("tributary.grad_keys".to_string(), serde_json::to_string(&keys)?)]);
    safetensors_io::write(&tensors, Some(md))
}

fn grads_from_bytes(bytes: &[u8], path: &str, device: &burn::tensor::Device) -> Result<GradBlocks> {
    let (tensors, md) = safetensors_io::read(bytes, path)?;
    let keys: Vec<(usize, String)> = serde_json::from_str(
        md.get("tributary.grad_keys").ok_or_else(|| Error::checkpoint(path, "not a gradient chunk"))?,
    )?;
    let keys = keys
        .into_iter()
        .map(|(l, t)| LoraTarget::parse(&t).map(|t| (l, t)).ok_or_else(|| Error::checkpoint(path, format!("bad module {t}"))))
        .collect::<Result<Vec<_>>>()?;
    let blocks: Vec<Tensor<2>> = tensors.values().map(|t| t.to_tensor2(device)).collect();
    if blocks.len() != keys.len() {
        return Err(Error::checkpoint(path, "block count does not match its keys"));
    }
    Ok(GradBlocks { keys, blocks })
}

/// Outcome of [`AttributeJob::execute`].
#[derive(Debug, Clone, Serialize)]
pub struct AttributeSummary {
    /// Datanet.
    pub datanet: String,
    /// Epoch.
    pub epoch: i64,
    /// Method.
    pub method: Method,
    /// Method version recorded.
    pub method_version: String,
    /// Adapter version attributed.
    pub adapter_version: String,
    /// Training-set Delta version.
    pub training_set_version: i64,
    /// Rows attributed.
    pub rows: usize,
    /// Validation rows.
    pub validation_rows: usize,
    /// Gradient chunks reused from an interrupted run.
    pub chunks_resumed: usize,
    /// `true` when results for this adapter and method version already existed.
    pub already_done: bool,
    /// Per-contributor attribution.
    pub contributors: Vec<ContributorShare>,
    /// Seconds spent.
    pub seconds: f64,
}

/// Progress events of [`AttributeJob`].
#[derive(Debug, Clone)]
pub enum AttributeEvent {
    /// A gradient chunk finished (or was reused).
    Chunk {
        /// Chunks done.
        done: usize,
        /// Chunks planned.
        total: usize,
    },
}

/// Progress callback of [`AttributeJob`].
pub type AttributeProgressFn = Arc<dyn Fn(AttributeEvent) + Send + Sync>;

/// The `attribute` job: adapter + `gold.training_set` → `gold.example_influence`,
/// `gold.contributor_attribution`.
pub struct AttributeJob {
    config: Arc<Config>,
    tables: Tables,
    datanet: String,
    epoch: Option<i64>,
    adapter_version: Option<String>,
    attribution: AttributionConfig,
    compute: Compute,
    force: bool,
    progress: Option<AttributeProgressFn>,
    cancel: Option<Arc<AtomicBool>>,
}

impl AttributeJob {
    /// Attribute `datanet`'s latest adapter with the default method.
    pub fn new(config: Arc<Config>, tables: Tables, datanet: impl Into<String>) -> AttributeJob {
        AttributeJob {
            config,
            tables,
            datanet: datanet.into(),
            epoch: None,
            adapter_version: None,
            attribution: AttributionConfig::new(Method::ExactBlock),
            compute: Compute::Cpu,
            force: false,
            progress: None,
            cancel: None,
        }
    }

    /// The epoch whose adapter to attribute (default: the newest adapter).
    pub fn with_epoch(mut self, epoch: Option<i64>) -> Self {
        self.epoch = epoch;
        self
    }

    /// A specific adapter version.
    pub fn with_adapter_version(mut self, version: Option<String>) -> Self {
        self.adapter_version = version;
        self
    }

    /// Method and its settings.
    pub fn with_attribution(mut self, cfg: AttributionConfig) -> Self {
        self.attribution = cfg;
        self
    }

    /// Compute backend.
    pub fn with_compute(mut self, compute: Compute) -> Self {
        self.compute = compute;
        self
    }

    /// Recompute even if results for this adapter and method version exist.
    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Progress callback.
    pub fn with_progress(mut self, f: AttributeProgressFn) -> Self {
        self.progress = Some(f);
        self
    }

    /// Cancellation flag: stops between chunks (finished chunks are kept).
    pub fn with_cancel(mut self, cancel: Arc<AtomicBool>) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Run the job.
    pub async fn execute(self) -> Result<AttributeSummary> {
        let started = Instant::now();
        self.attribution.validate()?;
        let warehouse = self.tables.warehouse().clone();
        let datanet_cfg = self
            .config
            .datanets
            .iter()
            .find(|d| d.name == self.datanet)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("datanet `{}` is not declared in the config", self.datanet)))?;
        let record = adapter_store::find(&warehouse, &self.datanet, self.epoch, self.adapter_version.as_deref()).await?;
        let method_version = self.attribution.method_version();
        let counts = dataset::contributor_counts(&self.tables, &self.datanet, record.epoch).await?;
        if !self.force
            && let Some(rows) = existing_influence(&self.tables, &record, self.attribution.method, &method_version).await?
        {
            let contributors = aggregate::aggregate(&rows, &counts);
            return Ok(self.summary(&record, method_version, (rows.len(), record.validation.rows), contributors, started));
        }

        let device = self.compute.device()?;
        let base = BaseModel::load(&warehouse, &record.base_model.name, &device).await?;
        if base.sha256 != record.base_model.sha256 {
            return Err(Error::data(
                &self.datanet,
                format!("base model `{}` changed since adapter {} was trained", base.name, record.version),
            ));
        }
        let dir = AdapterDir::new(&warehouse, &self.datanet, &record.version);
        let adapter = dir.load_adapter(&record, &base.model).await?;
        let checkpoints =
            if self.attribution.method == Method::TracIn { dir.load_checkpoints(&record, &base.model).await? } else { Vec::new() };
        let (train_rows, val_rows) = training_rows(&self.tables, &warehouse, &datanet_cfg, &record).await?;
        let max_len = record.train.max_seq_len;
        let encode = |rows: &[Row]| -> Result<Vec<Encoded>> {
            rows.iter().map(|r| r.encode(&base.tokenizer, datanet_cfg.kind, max_len)).collect()
        };
        let train_enc = encode(&train_rows)?;
        let val_enc = encode(&val_rows)?;

        // Chunks saved by an interrupted run of this method on this adapter.
        let work = format!("attribution/{}", self.attribution.method.name());
        let mut cached = BTreeMap::new();
        let listing = warehouse
            .store()
            .list_with_delimiter(Some(&dir.key(&work)))
            .await
            .map(|l| l.objects)
            .unwrap_or_default();
        for obj in listing {
            let Some(name) = obj.location.filename().map(str::to_string) else { continue };
            let Some(key) = name.strip_suffix(".safetensors") else { continue };
            if let Some(bytes) = dir.get(&format!("{work}/{name}")).await? {
                cached.insert(key.to_string(), grads_from_bytes(&bytes, obj.location.as_ref(), &device)?);
            }
        }
        let per_pass = train_enc.len().div_ceil(self.attribution.chunk.max(1)) + val_enc.len().div_ceil(self.attribution.chunk.max(1));
        let passes = if self.attribution.method == Method::TracIn { checkpoints.len().max(1) } else { 1 };
        // `exact-block`'s curvature may take one more pass, over the training or validation rows.
        let fisher_pass = self.attribution.curvature_rows(train_enc.len(), val_enc.len()).div_ceil(self.attribution.chunk.max(1));

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
        let model = base.model.clone();
        let cfg = self.attribution.clone();
        let pad = base.tokenizer.eot();
        let batch_size = record.train.batch_size;
        let progress = self.progress.clone();
        let cancel = self.cancel.clone();
        let total = per_pass * passes + fisher_pass;
        let mut handle = tokio::task::spawn_blocking(move || {
            let mut cache = JobCache { cached, tx, progress, cancel, done: 0, total, resumed: 0 };
            let scores = attribute(&model, &adapter, &checkpoints, &train_enc, &val_enc, pad, batch_size, &cfg, &mut cache);
            scores.map(|s| (s, cache.resumed))
        });
        let (scores, chunks_resumed) = loop {
            tokio::select! {
                Some((key, bytes)) = rx.recv() => dir.put(&format!("{work}/{key}.safetensors"), bytes).await?,
                joined = &mut handle => {
                    while let Ok((key, bytes)) = rx.try_recv() {
                        dir.put(&format!("{work}/{key}.safetensors"), bytes).await?;
                    }
                    break joined.map_err(|e| Error::Internal(format!("attribution thread: {e}")))??;
                }
            }
        };

        let influence = scores.row_influence();
        let rows: Vec<RowInfluence> = train_rows
            .iter()
            .zip(&influence)
            .map(|(r, inf)| RowInfluence { contribution_id: r.contribution_id.clone(), contributor: r.contributor.clone(), influence: *inf })
            .collect();
        let contributors = aggregate::aggregate(&rows, &counts);
        write_influence(&self.tables, &record, &cfg_method_version(&self.attribution), &rows, &scores.self_influence, self.attribution.method).await?;
        write_contributors(&self.tables, &record, self.attribution.method, &contributors).await?;
        // The chunks are no longer needed once the results are committed.
        for key in self.chunk_keys(&warehouse, &dir, &work).await? {
            dir.delete(&key).await?;
        }
        Ok(AttributeSummary {
            chunks_resumed,
            already_done: false,
            ..self.summary(&record, method_version, (rows.len(), val_rows.len()), contributors, started)
        })
    }

    /// The summary of attributing `record`: `(rows, validation rows)` scored; results that already
    /// existed unless the caller overrides `already_done`.
    fn summary(
        &self,
        record: &AdapterRecord,
        method_version: String,
        (rows, validation_rows): (usize, usize),
        contributors: Vec<ContributorShare>,
        started: Instant,
    ) -> AttributeSummary {
        AttributeSummary {
            datanet: self.datanet.clone(),
            epoch: record.epoch,
            method: self.attribution.method,
            method_version,
            adapter_version: record.version.clone(),
            training_set_version: record.training_set.delta_version,
            rows,
            validation_rows,
            chunks_resumed: 0,
            already_done: true,
            contributors,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    async fn chunk_keys(&self, warehouse: &tributary_pipeline::Warehouse, dir: &AdapterDir, work: &str) -> Result<Vec<String>> {
        let listing = warehouse.store().list_with_delimiter(Some(&dir.key(work))).await?;
        Ok(listing.objects.iter().filter_map(|o| o.location.filename().map(|f| format!("{work}/{f}"))).collect())
    }
}

fn cfg_method_version(cfg: &AttributionConfig) -> String {
    cfg.method_version()
}

struct JobCache {
    cached: BTreeMap<String, GradBlocks>,
    tx: tokio::sync::mpsc::UnboundedSender<(String, Vec<u8>)>,
    progress: Option<AttributeProgressFn>,
    cancel: Option<Arc<AtomicBool>>,
    done: usize,
    total: usize,
    /// Chunks taken from `cached`.
    resumed: usize,
}

impl JobCache {
    fn tick(&mut self) {
        self.done += 1;
        if let Some(p) = &self.progress {
            p(AttributeEvent::Chunk { done: self.done, total: self.total });
        }
    }
}

impl GradCache for JobCache {
    fn load(&mut self, key: &str, rows: usize) -> Option<GradBlocks> {
        let g = self.cached.remove(key).filter(|g| g.rows() == rows);
        if g.is_some() {
            self.resumed += 1;
            self.tick();
        }
        g
    }
    fn store(&mut self, key: &str, grads: &GradBlocks) -> Result<()> {
        let bytes = grads_to_bytes(grads)?;
        // A closed channel means the job future was dropped; the chunk is simply recomputed next time.
        let _ = self.tx.send((key.to_string(), bytes));
        self.tick();
        Ok(())
    }
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst))
    }
}

/// The rows the adapter was trained on (and its validation rows), re-read at the recorded version
/// and checked against the recorded hash.
async fn training_rows(
    tables: &Tables,
    warehouse: &tributary_pipeline::Warehouse,
    datanet: &tributary_pipeline::config::DatanetConfig,
    record: &AdapterRecord,
) -> Result<(Vec<Row>, Vec<Row>)> {
    let set =
        dataset::read_training_set(tables, &record.datanet, Some(record.epoch), Some(record.training_set.delta_version)).await?;
    let (train, val) = match &record.validation.source {
        ValidationSource::Holdout { .. } => dataset::holdout(set.rows.clone()),
        ValidationSource::File { .. } => (set.rows.clone(), dataset::read_validation_file(warehouse, datanet).await?),
    };
    let check = dataset::TrainingSet { rows: train.clone(), ..set };
    if check.rows_sha256() != record.training_set.rows_sha256 {
        return Err(Error::data(
            &record.datanet,
            format!(
                "rows of gold.training_set@{} no longer match adapter {} (was the table vacuumed or rewritten?)",
                record.training_set.delta_version, record.version
            ),
        ));
    }
    Ok((train, val))
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Influence rows already written for this adapter, method and method version.
async fn existing_influence(
    tables: &Tables,
    record: &AdapterRecord,
    method: Method,
    method_version: &str,
) -> Result<Option<Vec<RowInfluence>>> {
    let def = defs::gold_example_influence();
    let Some(table) = tables.open(&def.id).await? else { return Ok(None) };
    let ctx = datafusion::prelude::SessionContext::new();
    tables.register(&ctx, &def.id, &table).await?;
    let sql = format!(
        "SELECT contribution_id, contributor, influence FROM gold.example_influence WHERE epoch = {} AND datanet = {} \
         AND method = {} AND adapter_version = {} AND method_version = {} ORDER BY contribution_id",
        record.epoch,
        sql_str(&record.datanet),
        sql_str(method.name()),
        sql_str(&record.version),
        sql_str(method_version)
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut out = Vec::new();
    for b in batches {
        use arrow::array::AsArray;
        let ids = tributary_pipeline::tables::strings(b.column(0))?;
        let cs = tributary_pipeline::tables::strings(b.column(1))?;
        let inf = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            out.push(RowInfluence {
                contribution_id: ids.value(i).to_string(),
                contributor: cs.value(i).to_string(),
                influence: inf.value(i),
            });
        }
    }
    Ok((out.len() == record.training_set.rows).then_some(out))
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn replace_rows(tables: &Tables, def: &TableDef, batch: RecordBatch, predicate: String) -> Result<()> {
    let table = tables.open_or_create(def).await?;
    table
        .write(vec![batch])
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(predicate)
        .await
        .map_err(|e| Error::delta(def.id.to_string(), e))?;
    Ok(())
}

async fn write_influence(
    tables: &Tables,
    record: &AdapterRecord,
    method_version: &str,
    rows: &[RowInfluence],
    self_influence: &[f64],
    method: Method,
) -> Result<()> {
    let def = defs::gold_example_influence();
    let n = rows.len();
    let now = now_micros();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![record.epoch; n])),
        Arc::new(StringArray::from(vec![record.datanet.as_str(); n])),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.contribution_id.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.contributor.as_str()))),
        Arc::new(StringArray::from(vec![method.name(); n])),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.influence))),
        Arc::new(Float64Array::from_iter_values(self_influence.iter().copied())),
        Arc::new(StringArray::from(vec![record.version.as_str(); n])),
        Arc::new(Int64Array::from(vec![record.training_set.delta_version; n])),
        Arc::new(StringArray::from(vec![method_version; n])),
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(def.schema.clone(), cols)?;
    let predicate =
        format!("epoch = {} AND datanet = {} AND method = {}", record.epoch, sql_str(&record.datanet), sql_str(method.name()));
    replace_rows(tables, &def, batch, predicate).await
}

async fn write_contributors(tables: &Tables, record: &AdapterRecord, method: Method, rows: &[ContributorShare]) -> Result<()> {
    let def = defs::gold_contributor_attribution();
    let n = rows.len();
    let now = now_micros();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![record.epoch; n])),
        Arc::new(StringArray::from(vec![record.datanet.as_str(); n])),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.contributor.as_str()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.rows_submitted))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.rows_accepted))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.duplicates))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.influence_sum))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.positive_influence))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.share))),
        Arc::new(StringArray::from(vec![method.name(); n])),
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(def.schema.clone(), cols)?;
    let predicate =
        format!("epoch = {} AND datanet = {} AND method = {}", record.epoch, sql_str(&record.datanet), sql_str(method.name()));
    replace_rows(tables, &def, batch, predicate).await
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::attribute::grads::max_diff;
    use crate::base_model::{Preset, init_model};
    use crate::model::LoraConfig;

    /// A cache that keeps every chunk in memory and counts the chunks it hands back.
    #[derive(Default)]
    struct MemCache {
        chunks: BTreeMap<String, GradBlocks>,
        hits: usize,
    }

    impl GradCache for MemCache {
        fn load(&mut self, key: &str, rows: usize) -> Option<GradBlocks> {
            let g = self.chunks.get(key).filter(|g| g.rows() == rows).cloned();
            self.hits += usize::from(g.is_some());
            g
        }
        fn store(&mut self, key: &str, grads: &GradBlocks) -> Result<()> {
            self.chunks.insert(key.to_string(), grads.clone());
            Ok(())
        }
    }

    #[test]
    fn saved_chunks_are_reused_only_under_the_same_chunk_size_and_sampled_targets_follow_the_row() {
        let device = Device::flex();
        let model = init_model(&Preset::Tiny.config(97, 0), 5, &device);
        let adapter = Adapter::init(&model, &LoraConfig::default(), 1).expect("adapter");
        let mut rng = StdRng::seed_from_u64(3);
        let rows: Vec<Encoded> = (0..7)
            .map(|i| {
                let len = 5 + (i * 7) % 11;
                Encoded { tokens: (0..len).map(|_| rng.random_range(1..97)).collect(), loss_mask: (0..len).map(|j| j > 1).collect() }
            })
            .collect();
        let draw = Draw::Sampled(FISHER_SEED);
        let mut cache = MemCache::default();
        let first = cached_grads(&model, &adapter, &rows, 0, 3, "fisher", draw, &mut cache).expect("first");
        assert_eq!((cache.chunks.len(), cache.hits), (3, 0));
        // The same chunk size: every chunk comes from the cache, and the result is the same.
        let again = cached_grads(&model, &adapter, &rows, 0, 3, "fisher", draw, &mut cache).expect("again");
        assert_eq!(cache.hits, 3);
        assert_eq!(max_diff(&first, &again).0, 0.0);
        // Another chunk size: chunks of other rows, so nothing is reused; each row still draws its
        // own targets, so its gradients do not change.
        let other = cached_grads(&model, &adapter, &rows, 0, 2, "fisher", draw, &mut cache).expect("other size");
        assert_eq!(cache.hits, 3, "no chunk saved under size 3 is taken for size 2");
        let (worst, scale) = max_diff(&first, &other);
        assert!(scale > 0.0 && worst <= 1e-4 * scale, "sampled gradients moved by {worst} (scale {scale}) with the chunking");
        // A saved chunk of the wrong length (an older layout under the same key) is recomputed:
        // chunk 3 of seven rows in twos holds one row.
        let two_rows = cache.chunks["fisher-2x00000"].clone();
        cache.chunks.insert("fisher-2x00003".into(), two_rows);
        let hits = cache.hits;
        let fixed = cached_grads(&model, &adapter, &rows, 0, 2, "fisher", draw, &mut cache).expect("stale chunk");
        assert_eq!(cache.hits, hits + 3, "chunks 0–2 (two rows each) reused; chunk 3 saved with the wrong row count is not");
        assert_eq!(max_diff(&other, &fixed).0, 0.0);
        assert_eq!(cache.chunks["fisher-2x00003"].rows(), 1, "the recomputed chunk replaced the stale one");
    }

    #[test]
    fn settings_that_cannot_work_are_refused_up_front() {
        for damping in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            let cfg = AttributionConfig { damping: Some(damping), ..AttributionConfig::new(Method::DataInf) };
            let err = cfg.validate().expect_err("refused").to_string();
            assert!(err.contains("damping") && err.contains("positive"), "{damping}: {err}");
        }
        let cfg = AttributionConfig { chunk: 0, ..AttributionConfig::new(Method::GradDot) };
        assert!(cfg.validate().expect_err("refused").to_string().contains("chunk"));
        for m in Method::ALL {
            AttributionConfig::new(m).validate().expect("defaults are valid");
            AttributionConfig { damping: Some(1e-3), ..AttributionConfig::new(m) }.validate().expect("small positive damping");
        }
    }
}
