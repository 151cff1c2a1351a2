//! `datainf`: the closed-form inverse approximation of Kwon et al. (2023), "DataInf: Efficiently
//! Estimating Data Influence in LoRA-tuned LLMs and Diffusion Models".
//!
//! Per block, the inverse of the damped Fisher is replaced by the average of rank-one
//! Sherman–Morrison inverses:
//! `(G_l + λ_l I)⁻¹ ≈ (1/λ_l) · (1/N) Σ_k (I − g_k g_kᵀ / (λ_l + ‖g_k‖²))`, with
//! `λ_l = damping · (1/(N·p_l)) Σ_k ‖g_k‖²` (the paper's heuristic, damping 0.1). Everything is
//! matrix products of the gradients — `O(N·M·p_l)` per block, no `p_l × p_l` matrix at all — which
//! is why it is the method for adapters too large for `exact-block`.

use super::grads::GradBlocks;
use super::Scores;
use crate::error::Result;

/// Version tag recorded with results.
pub const VERSION: &str = "datainf/1";

/// Scores of `train` rows on `val` rows.
pub fn scores(train: &GradBlocks, val: &GradBlocks, damping: f64) -> Result<Scores> {
    let n = train.rows().max(1) as f64;
    let mut acc = Scores::accumulator(train, val);
    for (j, v) in train.blocks.iter().zip(&val.blocks) {
        let p = j.dims()[1].max(1) as f64;
        let norms = j.clone().powi_scalar(2).sum_dim(1); // [N, 1]
        let mean_norm = super::linalg::to_vec(&norms.clone().mean())?.first().copied().unwrap_or(0.0) as f64;
        let lambda = (damping * mean_norm / p).max(1e-12);
        let denom = norms.clone().add_scalar(lambda); // [N, 1]
        // h_v = (g_v − (1/N) Σ_k g_k (g_k·g_v)/(λ+‖g_k‖²)) / λ, for all v at once.
        let kv = j.clone().matmul(v.clone().transpose()); // [N, M]
        let r = kv / denom.clone(); // [N, M]
        let h = (v.clone() - r.transpose().matmul(j.clone()).div_scalar(n)).div_scalar(lambda); // [M, p]
        let pair = j.clone().matmul(h.transpose()); // [N, M]
        // Self-influence: (‖g_i‖² − (1/N) Σ_k (g_k·g_i)² / (λ+‖g_k‖²)) / λ.
        let kk = j.clone().matmul(j.clone().transpose()); // [N, N]
        let corr = (kk.powi_scalar(2) / denom.transpose()).sum_dim(1).div_scalar(n); // [N, 1]
        let selfi = (norms - corr).div_scalar(lambda);
        acc.add(pair, selfi);
    }
    acc.finish(1.0 / n)
}
