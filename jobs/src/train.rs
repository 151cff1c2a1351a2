//! `tributary train`: fit a LoRA adapter on a datanet's `gold.training_set`.
//!
//! Two layers: [`train_adapter`] is the pure training loop over encoded rows (the attribution
//! benchmark calls it hundreds of times), and [`TrainJob`] wraps it with the lakehouse: it reads
//! the training set at a recorded Delta version, picks the validation set, resumes an unfinished
//! run from its checkpoint, and writes `adapters/<datanet>/<version>/`.
//!
//! Determinism: the batches of epoch `e` are drawn from `(seed, e)` ([`epoch_batches`]), dropout masks
//! from `(seed, step)`, the adapter's initialization from `seed`, and the optimizer state is saved
//! whole in checkpoints. A run killed and resumed therefore produces the same adapter, bit for
//! bit, as one that was never interrupted (on the same backend).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tributary_pipeline::config::Config;
use tributary_pipeline::{Tables, Warehouse};

use crate::adapter_store::{
    self, AdapterDir, AdapterMetrics, AdapterRecord, BaseModelRef, CheckpointRef, TrainingSetRef, ValidationRef, files,
};
use crate::batch::{Batch, losses, per_example_loss};
use crate::compute::Compute;
use crate::dataset::{self, Row, TrainingSet, ValidationSource};
use crate::error::{Error, Result};
use crate::model::lora::peft_name;
use crate::model::safetensors_io::{self, HostTensor};
use crate::model::{Adapter, BaseModel, LlamaModel, LoraConfig};
use crate::optim::{AdamW, AdamWConfig, clip_global_norm, lr_at};
use crate::tokenizer::Encoded;

/// Training settings. Everything that affects the result is here, and hashed into the version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Adapter shape.
    pub lora: LoraConfig,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per optimizer step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of steps spent warming up linearly.
    pub warmup_frac: f64,
    /// Final learning rate as a fraction of the peak (linear decay).
    pub min_lr_frac: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = none).
    pub grad_clip: f64,
    /// Seed of initialization, batch order and dropout.
    pub seed: u64,
    /// Rows are truncated to this many tokens.
    pub max_seq_len: usize,
    /// Save a resume checkpoint every this many steps (and at every epoch end); 0 = epoch ends only.
    pub checkpoint_every: usize,
    /// Batch rows of similar length together, sorting them within groups of this many batches
    /// (see [`epoch_batches`]); 0 = off, the default. Larger groups pad less, so epochs run
    /// faster, but their batches are less mixed. A run's hash and `adapter.json` carry it only
    /// when on, so the versions of runs without it do not change.
    #[serde(skip_serializing_if = "is_zero")]
    pub group_by_length: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lora: LoraConfig::default(),
            epochs: 8,
            batch_size: 8,
            lr: 1e-2,
            warmup_frac: 0.1,
            min_lr_frac: 0.0,
            weight_decay: 0.0,
            grad_clip: 1.0,
            seed: 17,
            max_seq_len: 128,
            checkpoint_every: 10,
            group_by_length: 0,
        }
    }
}

impl TrainConfig {
    /// Check the values are usable.
    pub fn validate(&self) -> Result<()> {
        self.lora.validate()?;
        if self.epochs == 0 || self.batch_size == 0 || self.max_seq_len < 2 {
            return Err(Error::InvalidArgument("epochs, batch_size and max_seq_len (≥ 2) must be positive".into()));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::InvalidArgument(format!("learning rate {} must be positive", self.lr)));
        }
        Ok(())
    }

    /// Steps per epoch for `rows` training rows.
    pub fn steps_per_epoch(&self, rows: usize) -> usize {
        rows.div_ceil(self.batch_size.max(1))
    }
}

/// Metrics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Mean batch loss over the epoch.
    pub train_loss: f64,
    /// Mean validation loss at the epoch's end.
    pub val_loss: f64,
    /// Mean learning rate over the epoch.
    pub lr: f64,
}

/// One step's progress.
#[derive(Debug, Clone)]
pub struct StepProgress {
    /// Steps done.
    pub step: usize,
    /// Planned steps.
    pub total: usize,
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Batch loss.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// Everything needed to continue training exactly where it stopped.
#[derive(Debug, Clone)]
pub struct TrainState {
    /// Steps done.
    pub step: usize,
    /// The adapter after `step` steps.
    pub adapter: Adapter,
    /// Optimizer state after `step` steps.
    pub opt: AdamW,
    /// Finished epochs.
    pub epochs: Vec<EpochMetrics>,
    /// Adapter at the end of each finished epoch, with that epoch's mean learning rate.
    pub tracin: Vec<(Adapter, f64)>,
    /// Sums over the current epoch so far: (loss, lr, steps).
    pub epoch_acc: (f64, f64, usize),
    /// Validation loss before training.
    pub base_val_loss: f64,
    /// Training seconds so far.
    pub seconds: f64,
}

/// Hooks into the training loop.
pub trait TrainObserver {
    /// After every step.
    fn step(&mut self, _p: &StepProgress) {}
    /// After every epoch.
    fn epoch(&mut self, _m: &EpochMetrics) {}
    /// When a checkpoint is due (every `checkpoint_every` steps, at epoch ends, on cancel).
    fn checkpoint(&mut self, _state: &TrainState) -> Result<()> {
        Ok(())
    }
    /// Polled before every step; `true` stops training with [`Error::Cancelled`] after a checkpoint.
    fn cancelled(&self) -> bool {
        false
    }
}

/// An observer that does nothing.
pub struct Quiet;
impl TrainObserver for Quiet {}

/// A finished training run.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The trained adapter.
    pub adapter: Adapter,
    /// Per-epoch metrics.
    pub epochs: Vec<EpochMetrics>,
    /// TracIn checkpoints: (adapter at the end of each epoch, its mean learning rate).
    pub tracin: Vec<(Adapter, f64)>,
    /// Validation loss before training.
    pub base_val_loss: f64,
    /// Validation loss after training.
    pub final_val_loss: f64,
    /// Steps run (in total, across resumes).
    pub steps: usize,
    /// Training seconds (in total, across resumes).
    pub seconds: f64,
}

fn params_of(adapter: &Adapter) -> BTreeMap<String, Tensor<2>> {
    let mut out = BTreeMap::new();
    for (&(l, t), (a, b)) in &adapter.weights {
        out.insert(peft_name(l, t, 'A'), a.clone());
        out.insert(peft_name(l, t, 'B'), b.clone());
    }
    out
}

fn with_params(adapter: &Adapter, params: &BTreeMap<String, Tensor<2>>, leaf: bool) -> Adapter {
    let prep = |t: &Tensor<2>| if leaf { t.clone().autodiff().require_grad() } else { t.clone() };
    let mut out = adapter.clone();
    for (&(l, t), (a, b)) in out.weights.iter_mut() {
        if let Some(p) = params.get(&peft_name(l, t, 'A')) {
            *a = prep(p);
        }
        if let Some(p) = params.get(&peft_name(l, t, 'B')) {
            *b = prep(p);
        }
    }
    out
}

/// The length groups of `tributary train --group-by-length` without a value, in batches. On the
/// attribution bench's datanet (`cargo bench -p tributary-jobs --bench attribution`, one run),
/// groups of 2, 4 and 50 batches (50 is Hugging Face's) left 18%, 9% and 2% of the tokens padding
/// (32% mixed), ran epochs 1.19, 1.24 and 1.25× faster, and ended at validation loss 0.202, 0.209
/// and 0.242 (0.201 mixed). Past a few batches a group holds rows of one kind as well as of one
/// length, and the batches stop mixing them; 4 takes nearly all the speed.
pub const DEFAULT_LENGTH_GROUP: usize = 4;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The batches of epoch `epoch` (0-based) over rows of token lengths `lens`: row indices, one
/// `Vec` per optimizer step, every row exactly once.
///
/// The rows are shuffled by a permutation drawn from `(seed, epoch)` and cut into `batch_size`
/// rows. With `group_by_length = k > 0` (Hugging Face's `group_by_length`, after its
/// `LengthGroupedSampler`, which fixes `k` at 50), the shuffled rows are first taken in groups of
/// `k` batches, each group is sorted longest first and cut into batches, and the batches are then
/// shuffled by a second draw from `(seed, epoch)`: each batch holds rows of similar length, so
/// little of it is padding, and the order of long and short batches stays random rather than a
/// curriculum.
pub fn epoch_batches(cfg: &TrainConfig, epoch: usize, lens: &[usize]) -> Vec<Vec<usize>> {
    let bs = cfg.batch_size.max(1);
    let mut order: Vec<usize> = (0..lens.len()).collect();
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(epoch as u64 + 1));
    order.shuffle(&mut rng);
    if cfg.group_by_length == 0 {
        return order.chunks(bs).map(<[usize]>::to_vec).collect();
    }
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(lens.len().div_ceil(bs));
    for group in order.chunks_mut(bs.saturating_mul(cfg.group_by_length)) {
        group.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        batches.extend(group.chunks(bs).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Train an adapter on `train`, evaluating on `val` after every epoch. `pad` is the padding token.
/// Starts from `resume` when given (a state saved by an earlier, interrupted call).
pub fn train_adapter(
    model: &LlamaModel,
    train: &[Encoded],
    val: &[Encoded],
    cfg: &TrainConfig,
    pad: u32,
    resume: Option<TrainState>,
    obs: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    if train.is_empty() {
        return Err(Error::InvalidArgument("no training rows".into()));
    }
    let device = model.device();
    let started = Instant::now();
    let eval_chunk = 64;
    let mut state = match resume {
        Some(s) => s,
        None => {
            let adapter = Adapter::init(model, &cfg.lora, cfg.seed)?;
            let base_val_loss =
                if val.is_empty() { f64::NAN } else { mean(&losses(model, val, Some(&adapter.hook()), pad, eval_chunk)?) };
            TrainState {
                step: 0,
                adapter,
                opt: AdamW::new(AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() }),
                epochs: Vec::new(),
                tracin: Vec::new(),
                epoch_acc: (0.0, 0.0, 0),
                base_val_loss,
                seconds: 0.0,
            }
        }
    };
    let seconds_before = state.seconds;
    let spe = cfg.steps_per_epoch(train.len());
    let total = spe * cfg.epochs;
    let warmup = ((total as f64) * cfg.warmup_frac).round() as usize;
    let mut params = params_of(&state.adapter);
    let lens: Vec<usize> = train.iter().map(|r| r.tokens.len()).collect();
    let mut batches_epoch = usize::MAX;
    let mut batches = Vec::new();
    while state.step < total {
        if obs.cancelled() {
            state.seconds = seconds_before + started.elapsed().as_secs_f64();
            state.adapter = with_params(&state.adapter, &params, false);
            obs.checkpoint(&state)?;
            return Err(Error::Cancelled);
        }
        let step = state.step;
        let epoch = step / spe;
        if epoch != batches_epoch {
            batches = epoch_batches(cfg, epoch, &lens);
            batches_epoch = epoch;
        }
        let rows: Vec<&Encoded> = batches[step % spe].iter().map(|&i| &train[i]).collect();
        let lr = lr_at(step, total, warmup, cfg.lr, cfg.min_lr_frac);

        let leaves = with_params(&state.adapter, &params, true);
        let dropout = (cfg.lora.dropout > 0.0).then(|| (cfg.lora.dropout, cfg.seed ^ (step as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)));
        let hook = leaves.hook_with_dropout(dropout);
        let batch = Batch::new(&rows, pad, &device);
        let loss = per_example_loss(model, &batch, Some(&hook)).mean();
        let loss_value = loss.clone().into_scalar::<f32>() as f64;
        if !loss_value.is_finite() {
            return Err(Error::Diverged { step, loss: loss_value });
        }
        let g = loss.backward();
        let leaf_params = params_of(&leaves);
        let mut grads = BTreeMap::new();
        for (name, leaf) in &leaf_params {
            if let Some(gr) = leaf.grad(&g) {
                grads.insert(name.clone(), gr.inner());
            }
        }
        clip_global_norm(&mut grads, cfg.grad_clip);
        state.opt.step(lr, &mut params, &grads);
        state.step += 1;
        state.epoch_acc.0 += loss_value;
        state.epoch_acc.1 += lr;
        state.epoch_acc.2 += 1;
        obs.step(&StepProgress { step: state.step, total, epoch: epoch + 1, loss: loss_value, lr });

        let epoch_done = state.step % spe == 0;
        if epoch_done {
            state.adapter = with_params(&state.adapter, &params, false);
            let val_loss =
                if val.is_empty() { f64::NAN } else { mean(&losses(model, val, Some(&state.adapter.hook()), pad, eval_chunk)?) };
            let (ls, lrs, n) = state.epoch_acc;
            let m = EpochMetrics { epoch: epoch + 1, train_loss: ls / n.max(1) as f64, val_loss, lr: lrs / n.max(1) as f64 };
            state.tracin.push((state.adapter.clone(), m.lr));
            state.epochs.push(m.clone());
            state.epoch_acc = (0.0, 0.0, 0);
            obs.epoch(&m);
        }
        if epoch_done || (cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0) {
            state.adapter = with_params(&state.adapter, &params, false);
            state.seconds = seconds_before + started.elapsed().as_secs_f64();
            obs.checkpoint(&state)?;
        }
    }
    let adapter = with_params(&state.adapter, &params, false);
    let final_val_loss = state.epochs.last().map(|e| e.val_loss).unwrap_or(f64::NAN);
    Ok(TrainOutcome {
        adapter,
        epochs: state.epochs,
        tracin: state.tracin,
        base_val_loss: state.base_val_loss,
        final_val_loss,
        steps: total,
        seconds: seconds_before + started.elapsed().as_secs_f64(),
    })
}

/// Serialized resume state: one safetensors file (so a checkpoint is written atomically).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateMeta {
    step: usize,
    opt_step: u64,
    epochs: Vec<EpochMetrics>,
    tracin_lr: Vec<f64>,
    epoch_acc: (f64, f64, usize),
    base_val_loss: f64,
    seconds: f64,
}

/// Encode a [`TrainState`] as a safetensors file.
pub fn state_to_bytes(state: &TrainState) -> Result<Vec<u8>> {
    let mut tensors: BTreeMap<String, HostTensor> = BTreeMap::new();
    for (n, t) in params_of(&state.adapter) {
        tensors.insert(format!("p.{n}"), HostTensor::from_tensor(&t)?);
    }
    for (n, t) in state.opt.to_host()? {
        tensors.insert(format!("opt.{n}"), t);
    }
    for (i, (a, _)) in state.tracin.iter().enumerate() {
        for (n, t) in params_of(a) {
            tensors.insert(format!("tracin.{i}.{n}"), HostTensor::from_tensor(&t)?);
        }
    }
    let meta = StateMeta {
        step: state.step,
        opt_step: state.opt.step,
        epochs: state.epochs.clone(),
        tracin_lr: state.tracin.iter().map(|(_, lr)| *lr).collect(),
        epoch_acc: state.epoch_acc,
        base_val_loss: state.base_val_loss,
        seconds: state.seconds,
    };
    let md = std::collections::HashMap::from([("tributary.train_state".to_string(), serde_json::to_string(&meta)?)]);
    safetensors_io::write(&tensors, Some(md))
}

/// Decode a [`TrainState`] saved by [`state_to_bytes`] for `model` and `cfg`.
pub fn state_from_bytes(bytes: &[u8], path: &str, model: &LlamaModel, cfg: &TrainConfig) -> Result<TrainState> {
    let (tensors, md) = safetensors_io::read(bytes, path)?;
    let meta: StateMeta = serde_json::from_str(
        md.get("tributary.train_state").ok_or_else(|| Error::checkpoint(path, "not a training checkpoint"))?,
    )?;
    let device = model.device();
    let strip = |prefix: &str| -> BTreeMap<String, HostTensor> {
        tensors.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone()))).collect()
    };
    let to_adapter = |host: &BTreeMap<String, HostTensor>| -> Result<Adapter> {
        let template = Adapter::init(model, &cfg.lora, cfg.seed)?;
        let params: BTreeMap<String, Tensor<2>> = host.iter().map(|(k, v)| (k.clone(), v.to_tensor2(&device))).collect();
        for k in params_of(&template).keys() {
            if !params.contains_key(k) {
                return Err(Error::checkpoint(path, format!("missing tensor {k}")));
            }
        }
        Ok(with_params(&template, &params, false))
    };
    let adapter = to_adapter(&strip("p."))?;
    let opt = AdamW::from_host(AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() }, meta.opt_step, &strip("opt."), &device)?;
    let mut tracin = Vec::new();
    for (i, lr) in meta.tracin_lr.iter().enumerate() {
        tracin.push((to_adapter(&strip(&format!("tracin.{i}.")))?, *lr));
    }
    Ok(TrainState {
        step: meta.step,
        adapter,
        opt,
        epochs: meta.epochs,
        tracin,
        epoch_acc: meta.epoch_acc,
        base_val_loss: meta.base_val_loss,
        seconds: meta.seconds,
    })
}

/// Events reported by [`TrainJob`].
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// Training (re)starts.
    Started {
        /// Adapter version.
        version: String,
        /// Training rows.
        rows: usize,
        /// Planned steps.
        total_steps: usize,
        /// Step resumed from, if any.
        resumed_from: Option<usize>,
    },
    /// A step finished.
    Step(StepProgress),
    /// An epoch finished.
    Epoch(EpochMetrics),
}

/// Progress callback of [`TrainJob`].
pub type TrainProgressFn = Arc<dyn Fn(TrainEvent) + Send + Sync>;

/// Outcome of [`TrainJob::execute`].
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Datanet.
    pub datanet: String,
    /// Adapter version.
    pub version: String,
    /// Epoch.
    pub epoch: i64,
    /// Delta version of `gold.training_set` read.
    pub training_set_version: i64,
    /// Training rows.
    pub rows: usize,
    /// `true` when the adapter already existed (nothing was trained).
    pub already_trained: bool,
    /// Step this run resumed from, if it resumed.
    pub resumed_from: Option<usize>,
    /// The adapter's metrics.
    pub metrics: AdapterMetrics,
}

/// The `train` job: `gold.training_set` → `adapters/<datanet>/<version>/`.
pub struct TrainJob {
    config: Arc<Config>,
    tables: Tables,
    datanet: String,
    epoch: Option<i64>,
    base_model: String,
    train: TrainConfig,
    compute: Compute,
    progress: Option<TrainProgressFn>,
    cancel: Option<Arc<AtomicBool>>,
}

impl TrainJob {
    /// Train `datanet` with the default settings on the configured base model.
    pub fn new(config: Arc<Config>, tables: Tables, datanet: impl Into<String>) -> TrainJob {
        let base_model = config.serving.base_model.clone();
        TrainJob {
            config,
            tables,
            datanet: datanet.into(),
            epoch: None,
            base_model,
            train: TrainConfig::default(),
            compute: Compute::Cpu,
            progress: None,
            cancel: None,
        }
    }

    /// Train for epoch `epoch` (rows of epochs `<=` it); default: the latest epoch present.
    pub fn with_epoch(mut self, epoch: Option<i64>) -> Self {
        self.epoch = epoch;
        self
    }

    /// Use base model `name` (under `models/`).
    pub fn with_base_model(mut self, name: impl Into<String>) -> Self {
        self.base_model = name.into();
        self
    }

    /// Training settings.
    pub fn with_train_config(mut self, train: TrainConfig) -> Self {
        self.train = train;
        self
    }

    /// Compute backend.
    pub fn with_compute(mut self, compute: Compute) -> Self {
        self.compute = compute;
        self
    }

    /// Progress callback.
    pub fn with_progress(mut self, f: TrainProgressFn) -> Self {
        self.progress = Some(f);
        self
    }

    /// Cancellation flag (Ctrl-C): training stops after writing a checkpoint.
    pub fn with_cancel(mut self, cancel: Arc<AtomicBool>) -> Self {
        self.cancel = Some(cancel);
        self
    }

    fn warehouse(&self) -> &Warehouse {
        self.tables.warehouse()
    }

    /// Run the job.
    pub async fn execute(self) -> Result<TrainSummary> {
        self.train.validate()?;
        let datanet_cfg = self
            .config
            .datanets
            .iter()
            .find(|d| d.name == self.datanet)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("datanet `{}` is not declared in the config", self.datanet)))?;
        let device = self.compute.device()?;
        let base = BaseModel::load(self.warehouse(), &self.base_model, &device).await?;
        let mut set = dataset::read_training_set(&self.tables, &self.datanet, self.epoch, None).await?;
        let run_hash = run_hash(&base, &self.train, &datanet_cfg.validation_set);
        // An unfinished run of the same epoch and settings resumes at the version it recorded.
        if let Some(v) = unfinished_run(self.warehouse(), &self.datanet, set.epoch, &run_hash).await?
            && v != set.version
        {
            set = dataset::read_training_set(&self.tables, &self.datanet, Some(set.epoch), Some(v)).await?;
        }
        let version = format!("e{}-v{}-{run_hash}", set.epoch, set.version);
        let dir = AdapterDir::new(self.warehouse(), &self.datanet, &version);
        if let Some(record) = dir.record().await? {
            return Ok(TrainSummary {
                datanet: self.datanet.clone(),
                version,
                epoch: set.epoch,
                training_set_version: set.version,
                rows: record.training_set.rows,
                already_trained: true,
                resumed_from: None,
                metrics: record.metrics,
            });
        }

        let (train_rows, val_rows, source) = if datanet_cfg.validation_set.trim().is_empty() {
            let (t, v) = dataset::holdout(set.rows.clone());
            let n = v.len();
            (t, v, ValidationSource::Holdout { rows: n })
        } else {
            let v = dataset::read_validation_file(self.warehouse(), &datanet_cfg).await?;
            (set.rows.clone(), v, ValidationSource::File { path: datanet_cfg.validation_set.clone() })
        };
        let trained_set = TrainingSet { rows: train_rows, ..set.clone() };
        let encode = |rows: &[Row]| -> Result<Vec<Encoded>> {
            rows.iter().map(|r| r.encode(&base.tokenizer, datanet_cfg.kind, self.train.max_seq_len)).collect()
        };
        let train_enc = encode(&trained_set.rows)?;
        let val_enc = encode(&val_rows)?;

        let resume = match dir.get(files::RESUME).await? {
            Some(bytes) => Some(state_from_bytes(&bytes, dir.key(files::RESUME).as_ref(), &base.model, &self.train)?),
            None => None,
        };
        let resumed_from = resume.as_ref().map(|s| s.step);
        if let Some(p) = &self.progress {
            p(TrainEvent::Started {
                version: version.clone(),
                rows: train_enc.len(),
                total_steps: self.train.steps_per_epoch(train_enc.len()) * self.train.epochs,
                resumed_from,
            });
        }

        // Train on a blocking thread; checkpoints come back over a channel and are written here.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let model = base.model.clone();
        let cfg = self.train.clone();
        let pad = base.tokenizer.eot();
        let progress = self.progress.clone();
        let cancel = self.cancel.clone();
        let mut handle = tokio::task::spawn_blocking(move || {
            let mut obs = JobObserver { tx, progress, cancel, error: None };
            let out = train_adapter(&model, &train_enc, &val_enc, &cfg, pad, resume, &mut obs);
            match obs.error {
                Some(e) => Err(e),
                None => out,
            }
        });
        let outcome = loop {
            tokio::select! {
                Some(bytes) = rx.recv() => dir.put(files::RESUME, bytes).await?,
                joined = &mut handle => {
                    // Drain checkpoints sent just before the end (a cancelled run's last one).
                    while let Ok(bytes) = rx.try_recv() {
                        dir.put(files::RESUME, bytes).await?;
                    }
                    break joined.map_err(|e| Error::Internal(format!("training thread: {e}")))??;
                }
            }
        };

        let mut checkpoints = Vec::new();
        for (i, (a, lr)) in outcome.tracin.iter().enumerate() {
            let file = format!("checkpoints/epoch-{}.safetensors", i + 1);
            dir.put(&file, a.to_safetensors()?).await?;
            checkpoints.push(CheckpointRef { epoch: i + 1, lr: *lr, file });
        }
        let record = AdapterRecord {
            format: adapter_store::FORMAT.into(),
            datanet: self.datanet.clone(),
            version: version.clone(),
            epoch: set.epoch,
            base_model: BaseModelRef { name: base.name.clone(), sha256: base.sha256.clone() },
            lora: self.train.lora.clone(),
            training_set: TrainingSetRef {
                table: dataset::training_set_id().to_string(),
                delta_version: set.version,
                rows: trained_set.rows.len(),
                rows_sha256: trained_set.rows_sha256(),
            },
            validation: ValidationRef { source, rows: val_rows.len() },
            train: self.train.clone(),
            metrics: AdapterMetrics {
                base_val_loss: outcome.base_val_loss,
                final_val_loss: outcome.final_val_loss,
                epochs: outcome.epochs.clone(),
                steps: outcome.steps,
                seconds: outcome.seconds,
            },
            checkpoints,
            backend: self.compute.backend_name().into(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        };
        let weights = outcome.adapter.to_safetensors()?;
        dir.put(files::WEIGHTS, weights.clone()).await?;
        dir.put(files::PEFT_WEIGHTS, weights).await?;
        dir.put(files::PEFT_CONFIG, serde_json::to_vec_pretty(&adapter_store::peft_config(&record))?).await?;
        dir.put(files::RECORD, serde_json::to_vec_pretty(&record)?).await?;
        dir.delete(files::RESUME).await?;
        Ok(TrainSummary {
            datanet: self.datanet.clone(),
            version,
            epoch: set.epoch,
            training_set_version: set.version,
            rows: trained_set.rows.len(),
            already_trained: false,
            resumed_from,
            metrics: record.metrics,
        })
    }
}

struct JobObserver {
    tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    progress: Option<TrainProgressFn>,
    cancel: Option<Arc<AtomicBool>>,
    error: Option<Error>,
}

impl TrainObserver for JobObserver {
    fn step(&mut self, p: &StepProgress) {
        if let Some(f) = &self.progress {
            f(TrainEvent::Step(p.clone()));
        }
    }
    fn epoch(&mut self, m: &EpochMetrics) {
        if let Some(f) = &self.progress {
            f(TrainEvent::Epoch(m.clone()));
        }
    }
    fn checkpoint(&mut self, state: &TrainState) -> Result<()> {
        let bytes = state_to_bytes(state)?;
        // The receiver only goes away if the job itself was dropped; nothing left to save then.
        if self.tx.send(bytes).is_err() {
            self.error = Some(Error::Cancelled);
        }
        Ok(())
    }
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst))
    }
}

/// Eight hex digits identifying the base model, the settings and the validation set.
fn run_hash(base: &BaseModel, train: &TrainConfig, validation_set: &str) -> String {
    let mut h = Sha256::new();
    h.update(base.name.as_bytes());
    h.update(base.sha256.as_bytes());
    h.update(serde_json::to_string(train).unwrap_or_default().as_bytes());
    h.update(validation_set.as_bytes());
    hex::encode(h.finalize())[..8].to_string()
}

/// The training-set version of an unfinished run (a resume checkpoint without `adapter.json`) of
/// `datanet` for `epoch` with settings `hash`, if there is one.
async fn unfinished_run(warehouse: &Warehouse, datanet: &str, epoch: i64, hash: &str) -> Result<Option<i64>> {
    let root = object_store::path::Path::from(format!("{}/{datanet}", tributary_pipeline::storage::prefix::ADAPTERS));
    let listing = warehouse.store().list_with_delimiter(Some(&root)).await?;
    let mut best = None;
    for p in listing.common_prefixes {
        let Some(version) = p.filename() else { continue };
        let mut parts = version.splitn(3, '-');
        let (Some(e), Some(v), Some(h)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if e != format!("e{epoch}") || h != hash {
            continue;
        }
        let Some(Ok(v)) = v.strip_prefix('v').map(str::parse::<i64>) else { continue };
        let dir = AdapterDir::new(warehouse, datanet, version);
        if dir.get(files::RESUME).await?.is_some() && dir.record().await?.is_none() {
            best = best.max(Some(v));
        }
    }
    Ok(best)
}

/// The device a job runs on (exposed for the CLI's `--device`).
pub fn device_of(compute: Compute) -> Result<Device> {
    compute.device()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::padding_share;

    /// Rows of the given token lengths (contents do not matter to batching).
    fn rows(lens: &[usize]) -> Vec<Encoded> {
        lens.iter().map(|&n| Encoded { tokens: vec![0; n], loss_mask: vec![true; n] }).collect()
    }

    fn covers_each_row_once(batches: &[Vec<usize>], n: usize) -> bool {
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        seen == (0..n).collect::<Vec<_>>()
    }

    #[test]
    fn length_grouped_batches_take_every_row_once_pad_less_and_stay_seeded() {
        // 1003 rows of lengths 8..=135 in no order; 8-row batches, so one partial batch.
        let lens: Vec<usize> = (0..1003u64).map(|i| 8 + (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57) as usize).collect();
        let train = rows(&lens);
        let plain = TrainConfig::default();
        let grouped = TrainConfig { group_by_length: 50, ..plain.clone() };
        let small = TrainConfig { group_by_length: DEFAULT_LENGTH_GROUP, ..plain.clone() };
        for cfg in [&plain, &grouped, &small] {
            let b = epoch_batches(cfg, 0, &lens);
            assert_eq!(b.len(), cfg.steps_per_epoch(lens.len()), "one batch per step");
            assert!(covers_each_row_once(&b, lens.len()), "group_by_length {}", cfg.group_by_length);
            assert_eq!(b.iter().filter(|b| b.len() < cfg.batch_size).count(), 1, "one partial batch");
            assert_eq!(b, epoch_batches(cfg, 0, &lens), "the same (seed, epoch) draws the same batches");
            assert_ne!(b, epoch_batches(cfg, 1, &lens), "another epoch draws other batches");
            let reseeded = TrainConfig { seed: cfg.seed + 1, ..cfg.clone() };
            assert_ne!(b, epoch_batches(&reseeded, 0, &lens), "another seed draws other batches");
        }
        // Without grouping, the batches are one permutation cut in order: only the last is partial.
        let b = epoch_batches(&plain, 0, &lens);
        assert!(b[..b.len() - 1].iter().all(|b| b.len() == plain.batch_size));

        let share = |cfg: &TrainConfig| padding_share(&train, &epoch_batches(cfg, 0, &lens));
        let (p, s, g) = (share(&plain), share(&small), share(&grouped));
        assert!(p > 0.3, "mixed batches of lengths 8..=135 are largely padding: {p:.3}");
        assert!(g < 0.05, "batches from length-sorted groups of 50 pad little: {g:.3} (mixed: {p:.3})");
        assert!(g < s && s < p / 2.0, "smaller groups pad more, still far less than mixed: {s:.3} ({g:.3}, {p:.3})");

        // Grouped batches come in random order, not longest first: a sorted order would be a curriculum.
        let longest: Vec<usize> = epoch_batches(&grouped, 0, &lens).iter().map(|b| b.iter().map(|&i| lens[i]).max().unwrap_or(0)).collect();
        assert!(!longest.windows(2).all(|w| w[0] >= w[1]) && !longest.windows(2).all(|w| w[0] <= w[1]), "{longest:?}");
        // Each batch holds rows of one group, a slice of the same shuffle the plain batches cut in
        // order, so the epoch still mixes rows across groups of 50 batches.
        let shuffled: Vec<usize> = epoch_batches(&plain, 0, &lens).concat();
        for cfg in [&grouped, &small] {
            let group = cfg.batch_size * cfg.group_by_length;
            assert!(lens.len() > group, "the test spans more than one group");
            let mut group_of = vec![0; lens.len()];
            for (k, g) in shuffled.chunks(group).enumerate() {
                for &i in g {
                    group_of[i] = k;
                }
            }
            for b in epoch_batches(cfg, 0, &lens) {
                assert!(b.iter().all(|&i| group_of[i] == group_of[b[0]]), "a batch across groups of {group} rows: {b:?}");
            }
        }
        // A group larger than the epoch (any size, up to usize::MAX batches) is the whole epoch.
        let whole = TrainConfig { group_by_length: usize::MAX, ..plain.clone() };
        let sorted_all = TrainConfig { group_by_length: lens.len(), ..plain.clone() };
        assert_eq!(epoch_batches(&whole, 0, &lens), epoch_batches(&sorted_all, 0, &lens));
    }
}
