//! `tracin`: TracIn-CP (Pruthi et al., 2020) over the checkpoints saved at the end of each training
//! epoch: `τ(i, v) = Σ_c (η_c / B) · g_v(θ_c) · g_i(θ_c)`, where `η_c` is the mean learning rate of
//! epoch `c` and `B` the batch size (each row enters one step per epoch with weight `η/B`).
//! Self-influence is `Σ_c (η_c / B) ‖g_i(θ_c)‖²`. Costs one gradient pass per checkpoint.

use super::grads::GradBlocks;
use super::Scores;
use crate::error::{Error, Result};

/// Version tag recorded with results.
pub const VERSION: &str = "tracin-cp/1";

/// Scores from per-checkpoint gradients: `(train grads, val grads, η_c / B)` per checkpoint.
pub fn scores(checkpoints: &[(GradBlocks, GradBlocks, f64)]) -> Result<Scores> {
    let Some((t0, v0, _)) = checkpoints.first() else {
        return Err(Error::InvalidArgument("tracin needs at least one training checkpoint".into()));
    };
    let mut acc = Scores::accumulator(t0, v0);
    for (train, val, weight) in checkpoints {
        for (j, v) in train.blocks.iter().zip(&val.blocks) {
            acc.add(
                j.clone().matmul(v.clone().transpose()).mul_scalar(*weight),
                j.clone().powi_scalar(2).sum_dim(1).mul_scalar(*weight),
            );
        }
    }
    acc.finish(1.0)
}
