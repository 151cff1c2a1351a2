//! AdamW with decoupled weight decay, global-norm gradient clipping and a warmup-then-linear-decay
//! learning-rate schedule, over named rank-2 tensors.
//!
//! Written out rather than taken from `burn-optim` so that its whole state (moments and step) is a
//! handful of named tensors that a checkpoint stores and restores exactly, which is what makes a
//! resumed training run bit-identical to an uninterrupted one.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::safetensors_io::HostTensor;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// AdamW state: the step count and both moments of every parameter.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// Updates applied so far.
    pub step: u64,
    m: BTreeMap<String, Tensor<2>>,
    v: BTreeMap<String, Tensor<2>>,
}

impl AdamW {
    /// Fresh state.
    pub fn new(config: AdamWConfig) -> AdamW {
        AdamW { config, step: 0, m: BTreeMap::new(), v: BTreeMap::new() }
    }

    /// Apply one update with learning rate `lr`: `params[name] -= lr · (m̂ / (√v̂ + ε) + wd · p)`.
    /// Parameters without a gradient are left alone. Inputs and outputs carry no autodiff graph.
    pub fn step(&mut self, lr: f64, params: &mut BTreeMap<String, Tensor<2>>, grads: &BTreeMap<String, Tensor<2>>) {
        self.step += 1;
        let c = &self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (name, p) in params.iter_mut() {
            let Some(g) = grads.get(name) else { continue };
            let g = g.clone();
            let m = match self.m.remove(name) {
                Some(m) => m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1),
                None => g.clone().mul_scalar(1.0 - c.beta1),
            };
            let v = match self.v.remove(name) {
                Some(v) => v.mul_scalar(c.beta2) + g.clone().powi_scalar(2).mul_scalar(1.0 - c.beta2),
                None => g.powi_scalar(2).mul_scalar(1.0 - c.beta2),
            };
            let update = m.clone().div_scalar(bc1) / v.clone().div_scalar(bc2).sqrt().add_scalar(c.eps);
            let mut next = p.clone();
            if c.weight_decay > 0.0 {
                next = next.clone() - next.mul_scalar(lr * c.weight_decay);
            }
            *p = next - update.mul_scalar(lr);
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
    }

    /// Host copies of the moments (`m.<name>`, `v.<name>`), for checkpoints.
    pub fn to_host(&self) -> Result<BTreeMap<String, HostTensor>> {
        let mut out = BTreeMap::new();
        for (n, t) in &self.m {
            out.insert(format!("m.{n}"), HostTensor::from_tensor(t)?);
        }
        for (n, t) in &self.v {
            out.insert(format!("v.{n}"), HostTensor::from_tensor(t)?);
        }
        Ok(out)
    }

    /// Restore from [`AdamW::to_host`] output and the step count.
    pub fn from_host(config: AdamWConfig, step: u64, tensors: &BTreeMap<String, HostTensor>, device: &Device) -> Result<AdamW> {
        let mut opt = AdamW::new(config);
        opt.step = step;
        for (name, t) in tensors {
            if t.shape.len() != 2 {
                return Err(Error::checkpoint("optimizer state", format!("{name} is not rank 2")));
            }
            if let Some(n) = name.strip_prefix("m.") {
                opt.m.insert(n.to_string(), t.to_tensor2(device));
            } else if let Some(n) = name.strip_prefix("v.") {
                opt.v.insert(n.to_string(), t.to_tensor2(device));
            }
        }
        Ok(opt)
    }
}

/// Scale `grads` so their global L2 norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_global_norm(grads: &mut BTreeMap<String, Tensor<2>>, max_norm: f64) -> f64 {
    let mut sq = 0.0f64;
    for g in grads.values() {
        sq += g.clone().powi_scalar(2).sum().into_scalar::<f32>() as f64;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-12);
        for g in grads.values_mut() {
            *g = g.clone().mul_scalar(s);
        }
    }
    norm
}

/// Linear warmup to `peak` over `warmup` steps, then linear decay to `peak · floor` at `total`.
pub fn lr_at(step: usize, total: usize, warmup: usize, peak: f64, floor: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let rest = total.saturating_sub(warmup).max(1);
    let done = (step.saturating_sub(warmup)) as f64 / rest as f64;
    peak * (1.0 - (1.0 - floor) * done.min(1.0))
}
