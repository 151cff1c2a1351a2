//! `exact-block`: the exact inverse of each block of the damped Gauss–Newton matrix.
//!
//! For block `l` (one adapted projection), `F: [n, p]` holds per-example gradients of the loss
//! with targets *sampled from the model*, by default on the validation rows (so `FᵀF/n`
//! estimates the Gauss–Newton matrix — the true Fisher — on held-out inputs, rather than the
//! empirical Fisher of the observed labels, which mislabeled rows would dominate and, once
//! inverted, hide; see [`super::Curvature`]), `λ = damping · tr(FᵀF/n) / p`, `H = FᵀF/n + λI`, and
//! `τ(i, v) = Σ_l g_vᵀ H⁻¹ g_i`, `self_i = Σ_l g_iᵀ H⁻¹ g_i` with the observed-label gradients
//! `g`. Passing observed gradients as `F` gives the damped empirical Fisher instead.
//!
//! Each block is solved exactly, in whichever form is smaller:
//!
//! - **primal** (`p ≤ n`): Cholesky `H = L Lᵀ`, whiten once (`W = J L⁻ᵀ`), `τ = W_train W_valᵀ`.
//!   Cost `p³/2 + (N + M)·p² + N·M·p`.
//! - **dual** (`p > n`, Woodbury): `A = nλI + F Fᵀ`, `H⁻¹ = (I − Fᵀ A⁻¹ F)/λ`, so
//!   `τ = (J Vᵀ − (F Jᵀ)ᵀ A⁻¹ (F Vᵀ)) / λ`. Cost `n³/2 + n·(N + M)·p + N·M·p`.
//!
//! The cost is cubic only in `min(n, p)`, where `p = r·(in + out)` is small for LoRA; the two
//! forms are the same identity, checked against each other in the unit test below.

use burn::tensor::Tensor;

use super::Scores;
use super::grads::GradBlocks;
use super::linalg::Square;
use crate::error::Result;

/// Version tag recorded with results (`/3`: the Gauss–Newton matrix estimated on the validation
/// rows by default; `/2` estimated it on the training rows; `/1` used the empirical Fisher of the
/// observed labels). A non-default curvature is appended to the method version.
pub const VERSION: &str = "exact-block/3";

/// Scores of `train` rows on `val` rows, with the curvature estimated from `fisher`.
pub fn scores(train: &GradBlocks, fisher: &GradBlocks, val: &GradBlocks, damping: f64) -> Result<Scores> {
    let n = train.rows();
    let mut acc = Scores::accumulator(train, val);
    for ((j, f), v) in train.blocks.iter().zip(&fisher.blocks).zip(&val.blocks) {
        let (pair, selfi) = if f.dims()[1] <= f.dims()[0] { primal(j, f, v, damping)? } else { dual(j, f, v, damping)? };
        acc.add(pair, selfi);
    }
    acc.finish(1.0 / n.max(1) as f64)
}

/// `(τ [N, M], self [N, 1])` of one block through the `p × p` inverse.
pub fn primal(j: &Tensor<2>, f: &Tensor<2>, v: &Tensor<2>, damping: f64) -> Result<(Tensor<2>, Tensor<2>)> {
    let device = j.device();
    let [n, p] = f.dims();
    let g = f.clone().transpose().matmul(f.clone()).div_scalar(n.max(1) as f64);
    let mut g = Square::from_tensor(&g)?;
    let lambda = damping * g.trace() / p.max(1) as f64;
    // A block whose gradients are all zero (an untouched projection) still needs a positive pivot.
    g.add_diagonal(lambda.max(1e-12));
    let linv_t = g.cholesky()?.lower_inverse().to_tensor(&device).transpose();
    let wj = j.clone().matmul(linv_t.clone());
    let wv = v.clone().matmul(linv_t);
    Ok((wj.clone().matmul(wv.transpose()), wj.powi_scalar(2).sum_dim(1)))
}

/// `(τ [N, M], self [N, 1])` of one block through the `n × n` Woodbury form.
pub fn dual(j: &Tensor<2>, f: &Tensor<2>, v: &Tensor<2>, damping: f64) -> Result<(Tensor<2>, Tensor<2>)> {
    let device = j.device();
    let [n, p] = f.dims();
    let mut a = Square::from_tensor(&f.clone().matmul(f.clone().transpose()))?;
    // n·λ = damping · tr(FᵀF/n)·n / p = damping · tr(F Fᵀ) / p.
    let n_lambda = (damping * a.trace() / p.max(1) as f64).max(1e-12);
    let lambda = n_lambda / n.max(1) as f64;
    a.add_diagonal(n_lambda);
    // A⁻¹ = Wᵀ W with W = L⁻¹.
    let w = a.cholesky()?.lower_inverse().to_tensor(&device);
    let wfj = w.clone().matmul(f.clone().matmul(j.clone().transpose())); // [n, N]
    let wfv = w.matmul(f.clone().matmul(v.clone().transpose())); // [n, M]
    let pair = (j.clone().matmul(v.clone().transpose()) - wfj.clone().transpose().matmul(wfv)).div_scalar(lambda);
    let selfi = (j.clone().powi_scalar(2).sum_dim(1) - wfj.powi_scalar(2).sum_dim(0).transpose()).div_scalar(lambda);
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
            let (j, f, v) = (random(n, p, 1 + n as u64), random(n, p, 7), random(5, p, 99));
            let (pp, ps) = primal(&j, &f, &v, 0.1).expect("primal");
            let (dp, ds) = dual(&j, &f, &v, 0.1).expect("dual");
            for (a, b) in [(pp, dp), (ps, ds)] {
                let (a, b) = (to_vec(&a).expect("a"), to_vec(&b).expect("b"));
                let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max).max(1e-6);
                let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst / scale < 1e-3, "n={n} p={p}: forms differ by {worst} (scale {scale})");
            }
        }
    }
}
