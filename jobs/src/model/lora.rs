//! Low-rank adapters (LoRA) and the hook through which the model applies them.
//!
//! A projection `y = x·W` becomes `y = x·W + s·(x·A)·B` with `A: [in, r]`, `B: [r, out]` and
//! `s = alpha / r`. The low-rank path is always computed on its own, after the base matmul, and
//! never merged into `W`: one base model serves any number of adapters, and a batch may carry a
//! different adapter per row ([`LoraWeights::PerRow`], the gathered "BGMV" form). Other hooks build
//! on the same call: serving's stacked multi-adapter hook, and attribution's probes, which read
//! every row's gradient off one backward pass (`attribute::grads`).
//!
//! On disk an adapter uses PEFT's tensor names and orientation
//! (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` is `[r, in]`,
//! `…lora_B.weight` is `[out, r]`), so adapters move freely between Tributary and Python PEFT.

use std::collections::BTreeMap;
use std::fmt;

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::llama::{LlamaModel, matmul_2d};
use super::safetensors_io::{self, HostTensor};
use crate::error::{Error, Result};

/// A projection a LoRA pair can attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LoraTarget {
    /// `self_attn.q_proj`.
    #[serde(rename = "q_proj")]
    Q,
    /// `self_attn.k_proj`.
    #[serde(rename = "k_proj")]
    K,
    /// `self_attn.v_proj`.
    #[serde(rename = "v_proj")]
    V,
    /// `self_attn.o_proj`.
    #[serde(rename = "o_proj")]
    O,
    /// `mlp.gate_proj`.
    #[serde(rename = "gate_proj")]
    Gate,
    /// `mlp.up_proj`.
    #[serde(rename = "up_proj")]
    Up,
    /// `mlp.down_proj`.
    #[serde(rename = "down_proj")]
    Down,
}

impl LoraTarget {
    /// The four attention projections.
    pub const ATTENTION: [LoraTarget; 4] = [LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O];
    /// Every projection (the default targets).
    pub const ALL: [LoraTarget; 7] =
        [LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O, LoraTarget::Gate, LoraTarget::Up, LoraTarget::Down];

    /// PEFT's module name (`q_proj`, …, `down_proj`).
    pub fn module_name(self) -> &'static str {
        match self {
            LoraTarget::Q => "q_proj",
            LoraTarget::K => "k_proj",
            LoraTarget::V => "v_proj",
            LoraTarget::O => "o_proj",
            LoraTarget::Gate => "gate_proj",
            LoraTarget::Up => "up_proj",
            LoraTarget::Down => "down_proj",
        }
    }

    /// Path inside a decoder layer (`self_attn.q_proj`, `mlp.up_proj`).
    pub fn layer_path(self) -> &'static str {
        match self {
            LoraTarget::Q => "self_attn.q_proj",
            LoraTarget::K => "self_attn.k_proj",
            LoraTarget::V => "self_attn.v_proj",
            LoraTarget::O => "self_attn.o_proj",
            LoraTarget::Gate => "mlp.gate_proj",
            LoraTarget::Up => "mlp.up_proj",
            LoraTarget::Down => "mlp.down_proj",
        }
    }

    /// Parse `q_proj` (or the short `q`, `gate`, …).
    pub fn parse(s: &str) -> Option<LoraTarget> {
        let s = s.trim();
        LoraTarget::ALL.into_iter().find(|t| t.module_name() == s || t.module_name().trim_end_matches("_proj") == s)
    }
}

impl fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.module_name())
    }
}

/// What the model asks at each projection: the low-rank update `s·(x·A)·B` for `x`, or `None`.
///
/// Implementations decide where the factors come from: one adapter for the whole batch
/// ([`LoraSet`] over [`LoraWeights::Shared`]), one per row ([`LoraWeights::PerRow`]), or
/// anything a serving tier needs.
pub trait LoraHook {
    /// The update for projection `target` of layer `layer`, given its input `x: [batch, seq, in]`.
    fn delta(&self, layer: usize, target: LoraTarget, x: &Tensor<3>) -> Option<Tensor<3>>;
}

/// The low-rank factors of one projection.
#[derive(Debug, Clone)]
#[expect(clippy::large_enum_variant, reason = "a few per forward pass; boxing would only add an indirection")]
pub enum LoraWeights {
    /// One adapter for every row: `a: [in, r]`, `b: [r, out]`.
    Shared {
        /// Down-projection.
        a: Tensor<2>,
        /// Up-projection.
        b: Tensor<2>,
        /// `alpha / r`.
        scale: f64,
    },
    /// One adapter per batch row (gathered BGMV): `a: [batch, in, r]`, `b: [batch, r, out]`,
    /// `scale: [batch, 1, 1]`. Adapters of different ranks are zero-padded to the largest rank.
    PerRow {
        /// Down-projections.
        a: Tensor<3>,
        /// Up-projections.
        b: Tensor<3>,
        /// Per-row `alpha / r`.
        scale: Tensor<3>,
    },
}

impl LoraWeights {
    /// `s·(x·A)·B` for `x: [batch, seq, in]`.
    pub fn apply(&self, x: &Tensor<3>) -> Tensor<3> {
        match self {
            LoraWeights::Shared { a, b, scale } => matmul_2d(matmul_2d(x.clone(), a), b).mul_scalar(*scale),
            LoraWeights::PerRow { a, b, scale } => x.clone().matmul(a.clone()).matmul(b.clone()) * scale.clone(),
        }
    }
}

/// A set of LoRA factors keyed by (layer, projection), with optional input dropout (training).
#[derive(Debug, Clone, Default)]
pub struct LoraSet {
    /// The factors.
    pub weights: BTreeMap<(usize, LoraTarget), LoraWeights>,
    /// `(probability, seed)`: drop each input element of the low-rank path with this probability,
    /// with masks drawn deterministically from the seed, the layer and the projection.
    pub dropout: Option<(f64, u64)>,
}

impl LoraHook for LoraSet {
    fn delta(&self, layer: usize, target: LoraTarget, x: &Tensor<3>) -> Option<Tensor<3>> {
        let w = self.weights.get(&(layer, target))?;
        match self.dropout {
            Some((p, seed)) if p > 0.0 => {
                let dims = x.dims();
                let n = dims.iter().product::<usize>();
                let mut rng = StdRng::seed_from_u64(seed ^ ((layer as u64) << 32) ^ ((target as u64) << 48));
                let keep = 1.0 / (1.0 - p);
                let mask: Vec<f32> = (0..n).map(|_| if rng.random::<f64>() < p { 0.0 } else { keep as f32 }).collect();
                let mask = Tensor::<3>::from_data(TensorData::new(mask, dims), &x.device());
                Some(w.apply(&(x.clone() * mask)))
            }
            _ => Some(w.apply(x)),
        }
    }
}

/// An adapter's hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank `r`.
    pub rank: usize,
    /// Scaling numerator: the update is scaled by `alpha / r`.
    pub alpha: f64,
    /// Dropout on the low-rank path's input during training.
    pub dropout: f64,
    /// Projections that carry an adapter (PEFT's `target_modules`).
    #[serde(rename = "target_modules")]
    pub targets: Vec<LoraTarget>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: LoraTarget::ALL.to_vec() }
    }
}

impl LoraConfig {
    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank.max(1) as f64
    }

    /// Check the values are usable.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::InvalidArgument("LoRA rank must be positive".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidArgument(format!("LoRA dropout {} must be in [0, 1)", self.dropout)));
        }
        if self.targets.is_empty() {
            return Err(Error::InvalidArgument("LoRA needs at least one target module".into()));
        }
        Ok(())
    }
}

/// One trained (or freshly initialized) adapter: `(A, B)` per (layer, projection), stored in the
/// model's orientation (`A: [in, r]`, `B: [r, out]`).
#[derive(Debug, Clone)]
pub struct Adapter {
    /// Hyper-parameters.
    pub config: LoraConfig,
    /// The factors.
    pub weights: BTreeMap<(usize, LoraTarget), (Tensor<2>, Tensor<2>)>,
}

/// PEFT's name of the `A` (or `B`) factor of `target` in layer `layer`.
pub fn peft_name(layer: usize, target: LoraTarget, factor: char) -> String {
    format!("base_model.model.model.layers.{layer}.{}.lora_{factor}.weight", target.layer_path())
}

impl Adapter {
    /// A fresh adapter for `model`: `A` from PEFT's default Kaiming-uniform (bound `1/√in`), `B = 0`,
    /// so the adapted model starts exactly equal to the base. Deterministic in `seed`.
    pub fn init(model: &LlamaModel, config: &LoraConfig, seed: u64) -> Result<Adapter> {
        config.validate()?;
        let device = model.device();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut weights = BTreeMap::new();
        for layer in 0..model.config.num_hidden_layers {
            for &target in &config.targets {
                let (din, dout) = model.projection_dims(target);
                let bound = 1.0 / (din as f64).sqrt();
                let a: Vec<f32> = (0..din * config.rank).map(|_| rng.random_range(-bound..bound) as f32).collect();
                let a = Tensor::<2>::from_data(TensorData::new(a, [din, config.rank]), &device);
                let b = Tensor::<2>::zeros([config.rank, dout], &device);
                weights.insert((layer, target), (a, b));
            }
        }
        Ok(Adapter { config: config.clone(), weights })
    }

    /// Trainable weights.
    pub fn num_params(&self) -> usize {
        self.weights.values().map(|(a, b)| a.dims().iter().product::<usize>() + b.dims().iter().product::<usize>()).sum()
    }

    /// A hook applying this adapter to every row (no dropout).
    pub fn hook(&self) -> LoraSet {
        self.hook_with_dropout(None)
    }

    /// A hook applying this adapter, with input dropout `(p, seed)` when training.
    pub fn hook_with_dropout(&self, dropout: Option<(f64, u64)>) -> LoraSet {
        let scale = self.config.scale();
        let weights = self
            .weights
            .iter()
            .map(|(k, (a, b))| (*k, LoraWeights::Shared { a: a.clone(), b: b.clone(), scale }))
            .collect();
        LoraSet { weights, dropout }
    }

    /// Host copies of the factors under PEFT's names and orientation.
    pub fn to_host(&self) -> Result<BTreeMap<String, HostTensor>> {
        let mut out = BTreeMap::new();
        for (&(layer, target), (a, b)) in &self.weights {
            out.insert(peft_name(layer, target, 'A'), HostTensor::from_tensor(a)?.transposed());
            out.insert(peft_name(layer, target, 'B'), HostTensor::from_tensor(b)?.transposed());
        }
        Ok(out)
    }

    /// Serialize as a PEFT-compatible safetensors file.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors_io::write(&self.to_host()?, Some(meta))
    }

    /// Parse a PEFT-named safetensors file for `model`, checking every expected tensor is present
    /// with the right shape.
    pub fn from_safetensors(bytes: &[u8], path: &str, config: &LoraConfig, model: &LlamaModel) -> Result<Adapter> {
        config.validate()?;
        let (tensors, _) = safetensors_io::read(bytes, path)?;
        Self::from_host(&tensors, path, config, model, &model.device())
    }

    /// Build from host tensors under PEFT's names.
    pub fn from_host(
        tensors: &BTreeMap<String, HostTensor>,
        path: &str,
        config: &LoraConfig,
        model: &LlamaModel,
        device: &Device,
    ) -> Result<Adapter> {
        let mut weights = BTreeMap::new();
        for layer in 0..model.config.num_hidden_layers {
            for &target in &config.targets {
                let (din, dout) = model.projection_dims(target);
                let get = |factor: char, shape: [usize; 2]| -> Result<Tensor<2>> {
                    let name = peft_name(layer, target, factor);
                    let t = tensors.get(&name).ok_or_else(|| Error::checkpoint(path, format!("missing tensor {name}")))?;
                    if t.shape != shape {
                        return Err(Error::checkpoint(
                            path,
                            format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape),
                        ));
                    }
                    Ok(t.transposed().to_tensor2(device))
                };
                let a = get('A', [config.rank, din])?;
                let b = get('B', [dout, config.rank])?;
                weights.insert((layer, target), (a, b));
            }
        }
        Ok(Adapter { config: config.clone(), weights })
    }
}
