//! `graddot`: the plain gradient dot product `τ(i, v) = g_v · g_i` (no curvature), the baseline
//! every other method must beat. Self-influence is `‖g_i‖²`.

use super::grads::GradBlocks;
use super::Scores;
use crate::error::Result;

/// Version tag recorded with results.
pub const VERSION: &str = "graddot/1";

/// Scores of `train` rows on `val` rows.
pub fn scores(train: &GradBlocks, val: &GradBlocks) -> Result<Scores> {
    let n = train.rows();
    let mut acc = Scores::accumulator(train, val);
    for (j, v) in train.blocks.iter().zip(&val.blocks) {
        acc.add(j.clone().matmul(v.clone().transpose()), j.clone().powi_scalar(2).sum_dim(1));
    }
    acc.finish(1.0 / n.max(1) as f64)
}
