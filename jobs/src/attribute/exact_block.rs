//! `exact-block`: the exact inverse of each block of the damped empirical Fisher (Gauss–Newton).
//!
//! For block `l` (one adapted projection) with per-example gradients `J: [N, p]`,
//! `G = Jᵀ J / N`, `λ = damping · tr(G) / p`, and `τ(i, v) = Σ_l g_vᵀ (G + λ I)⁻¹ g_i`.
//! Self-influence is `Σ_l g_iᵀ (G + λ I)⁻¹ g_i`.
//!
//! Each block is solved exactly, in whichever form is smaller:
//!
//! - **primal** (`p ≤ N`): Cholesky `G + λI = L Lᵀ`, whiten both sides once (`W = J L⁻ᵀ`), then
//!   `τ = W_train W_valᵀ`. Cost `p³/2 + (N + M)·p² + N·M·p`.
//! - **dual** (`p > N`, Woodbury): with the Gram matrix `K = J Jᵀ` and `A = NλI + K`,
//!   `(G + λI)⁻¹ = (I − Jᵀ A⁻¹ J)/λ`, which simplifies to `τ = N · A⁻¹ (J Vᵀ)` and
//!   `self_i = N · (A⁻¹ K)_{ii}`. Cost `N³/2 + N²·p + N·M·p`.
//!
//! So the cost is cubic only in `min(N, p)`, where `p = r·(in + out)` is small for LoRA; the two
//! forms are the same matrix identity, checked against each other in the unit test below.

use burn::tensor::Tensor;

use super::Scores;
use super::grads::GradBlocks;
use super::linalg::Square;
use crate::error::Result;

/// Version tag recorded with results.
pub const VERSION: &str = "exact-block/1";

/// Scores of `train` rows on `val` rows.
pub fn scores(train: &GradBlocks, val: &GradBlocks, damping: f64) -> Result<Scores> {
    let n = train.rows();
    let mut acc = Scores::accumulator(train, val);
    for (j, v) in train.blocks.iter().zip(&val.blocks) {
        let (pair, selfi) = if j.dims()[1] <= n { primal(j, v, damping)? } else { dual(j, v, damping)? };
        acc.add(pair, selfi);
    }
    acc.finish(1.0 / n.max(1) as f64)
}

/// `(τ [N, M], self [N, 1])` of one block through the `p × p` inverse.
pub fn primal(j: &Tensor<2>, v: &Tensor<2>, damping: f64) -> Result<(Tensor<2>, Tensor<2>)> {
    let device = j.device();
    let [n, p] = j.dims();
    let g = j.clone().transpose().matmul(j.clone()).div_scalar(n.max(1) as f64);
    let mut g = Square::from_tensor(&g)?;
    let lambda = damping * g.trace() / p.max(1) as f64;
    // A block whose gradients are all zero (an untouched projection) still needs a positive pivot.
    g.add_diagonal(lambda.max(1e-12));
    let linv_t = g.cholesky()?.lower_inverse().to_tensor(&device).transpose();
    let wj = j.clone().matmul(linv_t.clone());
    let wv = v.clone().matmul(linv_t);
    Ok((wj.clone().matmul(wv.transpose()), wj.powi_scalar(2).sum_dim(1)))
}

/// `(τ [N, M], self [N, 1])` of one block through the `N × N` Woodbury form.
pub fn dual(j: &Tensor<2>, v: &Tensor<2>, damping: f64) -> Result<(Tensor<2>, Tensor<2>)> {
    let device = j.device();
    let [n, p] = j.dims();
    let k = j.clone().matmul(j.clone().transpose());
    let mut a = Square::from_tensor(&k)?;
    // N·λ = damping · tr(G)·N / p = damping · tr(K) / p.
    let n_lambda = damping * a.trace() / p.max(1) as f64;
    a.add_diagonal(n_lambda.max(1e-12));
    // A⁻¹ = Wᵀ W with W = L⁻¹.
    let w = a.cholesky()?.lower_inverse().to_tensor(&device);
    let t = j.clone().matmul(v.clone().transpose()); // J Vᵀ: [N, M]
    let pair = w.clone().transpose().matmul(w.clone().matmul(t)).mul_scalar(n as f64);
    let selfi = (w.clone() * w.matmul(k)).sum_dim(0).transpose().mul_scalar(n as f64);
    Ok((pair, selfi))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;
    use crate::attribute::linalg::to_vec;

    fn random(rows: usize, cols: usize, seed: u64) -> Tensor<2> {
        let mut s = seed;
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        Tensor::from_data(TensorData::new(v, [rows, cols]), &Device::flex())
    }

    #[test]
    fn primal_and_dual_forms_agree() {
        for (n, p) in [(12, 30), (30, 12), (20, 20)] {
            let (j, v) = (random(n, p, 1 + n as u64), random(5, p, 99));
            let (pp, ps) = primal(&j, &v, 0.1).expect("primal");
            let (dp, ds) = dual(&j, &v, 0.1).expect("dual");
            for (a, b) in [(pp, dp), (ps, ds)] {
                let (a, b) = (to_vec(&a).expect("a"), to_vec(&b).expect("b"));
                let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max).max(1e-6);
                let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst / scale < 1e-3, "n={n} p={p}: forms differ by {worst} (scale {scale})");
            }
        }
    }
}
