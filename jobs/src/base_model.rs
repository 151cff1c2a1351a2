//! `tributary base-model init`: make the project's own base model, since none can be downloaded.
//!
//! Generates a corpus in the demo's domain ([`crate::corpus::base_corpus`]), trains a byte-level
//! BPE tokenizer on it, trains a small Llama-style decoder from scratch (every weight, AdamW) for a
//! bounded number of steps or seconds, and writes `models/<name>/` in the Hugging Face layout —
//! the same files, and the same loader, as a downloaded SmolLM-class checkpoint.

use object_store::ObjectStoreExt;
use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tributary_pipeline::Warehouse;

use crate::batch::{Batch, per_example_loss};
use crate::corpus;
use crate::error::{Error, Result};
use crate::model::config::TokenIds;
use crate::model::llama::{Attention, DecoderLayer, Linear, Mlp, RmsNorm};
use crate::model::loader::{self, files};
use crate::model::{LlamaConfig, LlamaModel, ModelFiles};
use crate::optim::{AdamW, AdamWConfig, clip_global_norm, lr_at};
use crate::tokenizer::{Encoded, Tokenizer};

/// Model sizes `base-model init` can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// ≈0.15 M weights (vocab 512, width 64, 2 layers): what the demo, the tests and the
    /// attribution benchmark use, so that one adapter trains in about a second on one CPU core.
    #[default]
    Tiny,
    /// ≈3.5 M weights (vocab 2048, width 256, 4 layers): the "few million" SmolLM-like shape.
    Small,
}

impl Preset {
    /// Parse `tiny` or `small`.
    pub fn parse(s: &str) -> Result<Preset> {
        match s {
            "tiny" => Ok(Preset::Tiny),
            "small" => Ok(Preset::Small),
            other => Err(Error::InvalidArgument(format!("unknown preset `{other}` (tiny or small)"))),
        }
    }

    /// Tokenizer vocabulary to train.
    pub fn vocab_size(self) -> usize {
        match self {
            Preset::Tiny => 512,
            Preset::Small => 2048,
        }
    }

    /// The model shape for a tokenizer of `vocab` tokens.
    pub fn config(self, vocab: usize, eot: u32) -> LlamaConfig {
        let (d, layers, heads, kv, ffn) = match self {
            Preset::Tiny => (64, 2, 4, 2, 176),
            Preset::Small => (256, 4, 8, 4, 704),
        };
        LlamaConfig {
            vocab_size: vocab,
            hidden_size: d,
            intermediate_size: ffn,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv),
            head_dim: None,
            max_position_embeddings: 256,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            bos_token_id: Some(TokenIds::One(eot)),
            eos_token_id: Some(TokenIds::One(eot)),
            hidden_act: "silu".into(),
            model_type: "llama".into(),
            architectures: vec!["LlamaForCausalLM".into()],
            torch_dtype: Some("float32".into()),
            rope_scaling: None,
            sliding_window: None,
            use_sliding_window: None,
        }
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModelSpec {
    /// Name under `models/`.
    pub name: String,
    /// Size.
    pub preset: Preset,
    /// Seed of the corpus, the initialization and the batch order.
    pub seed: u64,
    /// Documents in the generated corpus.
    pub docs: usize,
    /// Optimizer steps (upper bound).
    pub steps: usize,
    /// Wall-clock bound in seconds; training stops at whichever bound comes first.
    pub max_seconds: f64,
    /// Documents per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
}

impl Default for BaseModelSpec {
    fn default() -> Self {
        BaseModelSpec {
            name: "tributary-base".into(),
            preset: Preset::Tiny,
            seed: 1,
            docs: 6000,
            steps: 500,
            max_seconds: 120.0,
            batch_size: 32,
            lr: 3e-3,
        }
    }
}

/// Progress of base-model training.
#[derive(Debug, Clone)]
pub enum BaseProgress {
    /// The tokenizer is trained.
    Tokenizer {
        /// Its vocabulary.
        vocab: usize,
    },
    /// One optimizer step finished.
    Step {
        /// Steps done.
        step: usize,
        /// Planned steps.
        total: usize,
        /// Batch loss.
        loss: f64,
    },
}

/// The provenance record written as `models/<name>/tributary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseModelReport {
    /// The spec it was built from.
    pub spec: BaseModelSpec,
    /// Weights.
    pub params: usize,
    /// Steps actually run.
    pub steps_done: usize,
    /// Whether the time bound stopped training before `spec.steps`.
    pub stopped_by_time: bool,
    /// Mean loss of the last 20 steps.
    pub final_train_loss: f64,
    /// Loss on held-out documents.
    pub heldout_loss: f64,
    /// Training seconds.
    pub seconds: f64,
    /// Hex sha256 of `model.safetensors`.
    pub sha256: String,
    /// Compute backend.
    pub backend: String,
}

/// Outcome of `base-model init`.
#[derive(Debug, Clone, Serialize)]
pub struct BaseModelSummary {
    /// Name under `models/`.
    pub name: String,
    /// Whether it already existed (nothing was trained).
    pub existed: bool,
    /// The provenance record (absent for a model Tributary did not make).
    pub report: Option<BaseModelReport>,
}

/// Whether `models/<name>/` exists in `warehouse`.
pub async fn exists(warehouse: &Warehouse, name: &str) -> Result<bool> {
    let key = object_store::path::Path::from(format!("{}/{name}/{}", tributary_pipeline::storage::prefix::MODELS, files::WEIGHTS));
    match warehouse.store().head(&key).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Build the base model into `models/<spec.name>/` unless it exists (or `force`).
pub async fn init(
    warehouse: &Warehouse,
    spec: &BaseModelSpec,
    device: &Device,
    backend: &str,
    force: bool,
    progress: &mut (dyn FnMut(BaseProgress) + Send),
) -> Result<BaseModelSummary> {
    if !force && exists(warehouse, &spec.name).await? {
        let report = read_report(warehouse, &spec.name).await?;
        return Ok(BaseModelSummary { name: spec.name.clone(), existed: true, report });
    }
    let (model, tokenizer, mut report) = train(spec, device, progress)?;
    report.backend = backend.to_string();
    let files = loader::model_files(&model, &tokenizer)?;
    report.sha256 = files.weights_sha256();
    let provenance = serde_json::to_string_pretty(&report)?;
    files.write_warehouse(warehouse, &spec.name, &[(files::PROVENANCE, provenance)]).await?;
    Ok(BaseModelSummary { name: spec.name.clone(), existed: false, report: Some(report) })
}

async fn read_report(warehouse: &Warehouse, name: &str) -> Result<Option<BaseModelReport>> {
    let key = object_store::path::Path::from(format!("{}/{name}/{}", tributary_pipeline::storage::prefix::MODELS, files::PROVENANCE));
    match warehouse.store().get(&key).await {
        Ok(r) => Ok(serde_json::from_slice(&r.bytes().await?).ok()),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Normal(0, std) samples (Box–Muller), deterministic in `rng`.
fn normal(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(1e-12);
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}

/// A freshly initialized model: weights N(0, 0.02), output projections scaled down by
/// `1/√(2·layers)` (GPT-2 style), norms at 1.
pub fn init_model(config: &LlamaConfig, seed: u64, device: &Device) -> LlamaModel {
    let mut rng = StdRng::seed_from_u64(seed);
    let std = 0.02;
    let out_std = std / (2.0 * config.num_hidden_layers as f64).sqrt();
    let mut mat = |rows: usize, cols: usize, s: f64| {
        Tensor::<2>::from_data(TensorData::new(normal(&mut rng, rows * cols, s), [rows, cols]), device)
    };
    let d = config.hidden_size;
    let embed = mat(config.vocab_size, d, std);
    let ones = |n: usize| Tensor::<2>::ones([1, n], device);
    let mut layers = Vec::new();
    for _ in 0..config.num_hidden_layers {
        let lin = |w: Tensor<2>| Linear { weight: w, bias: None };
        layers.push(DecoderLayer {
            input_layernorm: RmsNorm { weight: ones(d), eps: config.rms_norm_eps },
            self_attn: Attention {
                q_proj: lin(mat(d, config.q_dim(), std)),
                k_proj: lin(mat(d, config.kv_dim(), std)),
                v_proj: lin(mat(d, config.kv_dim(), std)),
                o_proj: lin(mat(config.q_dim(), d, out_std)),
            },
            post_attention_layernorm: RmsNorm { weight: ones(d), eps: config.rms_norm_eps },
            mlp: Mlp {
                gate_proj: lin(mat(d, config.intermediate_size, std)),
                up_proj: lin(mat(d, config.intermediate_size, std)),
                down_proj: lin(mat(config.intermediate_size, d, out_std)),
            },
        });
    }
    let lm_head = (!config.tie_word_embeddings).then(|| mat(d, config.vocab_size, std));
    LlamaModel::from_parts(config.clone(), embed, layers, RmsNorm { weight: ones(d), eps: config.rms_norm_eps }, lm_head)
}

/// Train tokenizer and model (no I/O).
pub fn train(
    spec: &BaseModelSpec,
    device: &Device,
    progress: &mut (dyn FnMut(BaseProgress) + Send),
) -> Result<(LlamaModel, Tokenizer, BaseModelReport)> {
    if spec.docs < 20 || spec.batch_size == 0 || spec.steps == 0 {
        return Err(Error::InvalidArgument("base model needs ≥ 20 documents, a batch size and steps".into()));
    }
    let corpus = corpus::base_corpus(spec.seed, spec.docs);
    let tokenizer = Tokenizer::train(&corpus, spec.preset.vocab_size())?;
    progress(BaseProgress::Tokenizer { vocab: tokenizer.vocab_size() });
    let config = spec.preset.config(tokenizer.vocab_size(), tokenizer.eot());
    let mut model = init_model(&config, spec.seed, device);

    let encoded: Vec<Encoded> = corpus.iter().map(|d| tokenizer.encode_text(d)).collect::<Result<_>>()?;
    let held = (encoded.len() / 20).max(1);
    let (heldout, train_docs) = encoded.split_at(held);

    let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.01, ..AdamWConfig::default() });
    let mut params: BTreeMap<String, Tensor<2>> = BTreeMap::new();
    model.visit_weights_mut(&mut |name, _, t| {
        params.insert(name.to_string(), t.clone());
    });
    let mut rng = StdRng::seed_from_u64(spec.seed ^ 0x5eed);
    let mut order: Vec<usize> = (0..train_docs.len()).collect();
    let mut cursor = order.len();
    let started = Instant::now();
    let warmup = (spec.steps / 10).max(1);
    let mut recent = Vec::new();
    let mut steps_done = 0;
    let mut stopped_by_time = false;
    for step in 0..spec.steps {
        if started.elapsed().as_secs_f64() > spec.max_seconds {
            stopped_by_time = true;
            break;
        }
        if cursor + spec.batch_size > order.len() {
            order.shuffle(&mut rng);
            cursor = 0;
        }
        let rows: Vec<&Encoded> = order[cursor..cursor + spec.batch_size.min(order.len())].iter().map(|&i| &train_docs[i]).collect();
        cursor += spec.batch_size;
        // Every weight becomes a gradient leaf for this step.
        model.visit_weights_mut(&mut |name, _, t| {
            if let Some(p) = params.get(name) {
                *t = p.clone().autodiff().require_grad();
            }
        });
        let batch = Batch::new(&rows, tokenizer.eot(), device);
        let loss = per_example_loss(&model, &batch, None).mean();
        let loss_value = loss.clone().into_scalar::<f32>() as f64;
        if !loss_value.is_finite() {
            return Err(Error::Diverged { step, loss: loss_value });
        }
        let grads = loss.backward();
        let mut g = BTreeMap::new();
        model.visit_weights_mut(&mut |name, _, t| {
            if let Some(gr) = t.grad(&grads) {
                g.insert(name.to_string(), gr);
            }
        });
        clip_global_norm(&mut g, 1.0);
        opt.step(lr_at(step, spec.steps, warmup, spec.lr, 0.1), &mut params, &g);
        recent.push(loss_value);
        if recent.len() > 20 {
            recent.remove(0);
        }
        steps_done = step + 1;
        progress(BaseProgress::Step { step: steps_done, total: spec.steps, loss: loss_value });
    }
    model.visit_weights_mut(&mut |name, _, t| {
        if let Some(p) = params.get(name) {
            *t = p.clone();
        }
    });
    let heldout_losses = crate::batch::losses(&model, heldout, None, tokenizer.eot(), 64)?;
    let report = BaseModelReport {
        spec: spec.clone(),
        params: config.num_params(),
        steps_done,
        stopped_by_time,
        final_train_loss: recent.iter().sum::<f64>() / recent.len().max(1) as f64,
        heldout_loss: heldout_losses.iter().sum::<f64>() / heldout_losses.len().max(1) as f64,
        seconds: started.elapsed().as_secs_f64(),
        sha256: String::new(),
        backend: String::new(),
    };
    Ok((model, tokenizer, report))
}

/// Load a base model's files from a local directory into the warehouse (for real checkpoints).
pub async fn import_dir(warehouse: &Warehouse, name: &str, dir: &std::path::Path, device: &Device) -> Result<()> {
    let files = ModelFiles::read_dir(dir)?;
    // Validate by loading before publishing.
    crate::model::BaseModel::from_files(name, &files, device)?;
    files.write_warehouse(warehouse, name, &[]).await
}
