//! `exact-block`: the exact inverse of each block of the damped empirical Fisher (Gauss–Newton).
//!
//! For block `l` (one adapted projection) with per-example gradients `J_l: [N, p_l]`,
//! `G_l = J_lᵀ J_l / N`, `λ_l = damping · tr(G_l) / p_l`, and
//! `τ(i, v) = Σ_l g_{v,l}ᵀ (G_l + λ_l I)⁻¹ g_{i,l}`. With the Cholesky factor `G_l + λ_l I = L Lᵀ`,
//! `τ(i, v) = Σ_l (L⁻¹ g_{v,l}) · (L⁻¹ g_{i,l})`: whiten both sides once, then one matrix product.
//! Self-influence is `Σ_l ‖L⁻¹ g_{i,l}‖²`. Cost per block: `p_l³/3` for the factor and inverse,
//! `(N + M)·p_l²` for whitening, `N·M·p_l` for the scores — cheap while `p_l = r·(in + out)` is a
//! few thousand at most, which is when this method is the default.

use super::grads::GradBlocks;
use super::linalg::Square;
use super::Scores;
use crate::error::Result;

/// Version tag recorded with results.
pub const VERSION: &str = "exact-block/1";

/// Scores of `train` rows on `val` rows.
pub fn scores(train: &GradBlocks, val: &GradBlocks, damping: f64) -> Result<Scores> {
    let n = train.rows();
    let mut acc = Scores::accumulator(train, val);
    for (j, v) in train.blocks.iter().zip(&val.blocks) {
        let device = j.device();
        let p = j.dims()[1];
        let g = j.clone().transpose().matmul(j.clone()).div_scalar(n.max(1) as f64);
        let mut g = Square::from_tensor(&g)?;
        let lambda = damping * g.trace() / p.max(1) as f64;
        // A block whose gradients are all zero (an untouched projection) still needs a positive pivot.
        g.add_diagonal(lambda.max(1e-12));
        let linv_t = g.cholesky()?.lower_inverse().to_tensor(&device).transpose();
        let wj = j.clone().matmul(linv_t.clone());
        let wv = v.clone().matmul(linv_t);
        acc.add(wj.clone().matmul(wv.transpose()), wj.powi_scalar(2).sum_dim(1));
    }
    acc.finish(1.0 / n.max(1) as f64)
}
