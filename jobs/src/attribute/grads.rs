//! Per-example gradients of the LoRA parameters, one backward pass per chunk of rows.
//!
//! The trick: give every row of the chunk its own copy of each adapter factor, as a
//! `[rows, in, r]` / `[rows, r, out]` gradient leaf, and run the model with the per-row
//! ([`LoraWeights::PerRow`]) hook on the *sum* of the rows' losses. Rows do not interact, so the
//! gradient of row `n`'s copy is exactly the gradient of row `n`'s own loss. Backpropagation
//! computes it as the low-rank outer products LoRA gradients are — `∂B_n = s·(X_n A)ᵀ Δ_n`,
//! `∂A_n = s·X_nᵀ (Δ_n Bᵀ)` — so nothing of size `in × out` is ever formed, and the cost is one
//! ordinary forward and backward pass over the chunk.
//!
//! The gradients are grouped in blocks, one per adapted projection (layer × module), each row of a
//! block being the flattened `(∂A, ∂B)` of one example: `[rows, r·(in + out)]`. The blocks are
//! what `exact-block` inverts one at a time.

use std::collections::BTreeMap;

use burn::tensor::Tensor;

use crate::batch::{Batch, Targets, per_example_loss_with};
use crate::error::{Error, Result};
use crate::model::{Adapter, LlamaModel, LoraSet, LoraTarget, LoraWeights};
use crate::tokenizer::Encoded;

/// Per-example gradients, one `[rows, p_block]` matrix per adapted projection.
#[derive(Debug, Clone)]
pub struct GradBlocks {
    /// The projections, in the order of `blocks`.
    pub keys: Vec<(usize, LoraTarget)>,
    /// One matrix per projection.
    pub blocks: Vec<Tensor<2>>,
}

impl GradBlocks {
    /// Rows (examples).
    pub fn rows(&self) -> usize {
        self.blocks.first().map(|b| b.dims()[0]).unwrap_or(0)
    }

    /// Stack chunks computed separately, in order.
    pub fn concat(parts: Vec<GradBlocks>) -> Result<GradBlocks> {
        let Some(first) = parts.first() else { return Err(Error::Internal("no gradient chunks".into())) };
        let keys = first.keys.clone();
        let mut blocks = Vec::with_capacity(keys.len());
        for b in 0..keys.len() {
            blocks.push(Tensor::cat(parts.iter().map(|p| p.blocks[b].clone()).collect(), 0));
        }
        Ok(GradBlocks { keys, blocks })
    }

    /// Per-block width `r·(in + out)`.
    pub fn widths(&self) -> Vec<usize> {
        self.blocks.iter().map(|b| b.dims()[1]).collect()
    }
}

/// Gradients of every row of `rows` under `model` + `adapter`, `chunk` rows per backward pass.
pub fn per_example_grads(
    model: &LlamaModel,
    adapter: &Adapter,
    rows: &[Encoded],
    pad: u32,
    chunk: usize,
) -> Result<GradBlocks> {
    let mut parts = Vec::new();
    for part in rows.chunks(chunk.max(1)) {
        parts.push(chunk_grads(model, adapter, part, pad)?);
    }
    GradBlocks::concat(parts)
}

/// Gradients of one chunk of rows (one forward + backward pass).
pub fn chunk_grads(model: &LlamaModel, adapter: &Adapter, rows: &[Encoded], pad: u32) -> Result<GradBlocks> {
    chunk_grads_with(model, adapter, rows, pad, Targets::Observed)
}

/// [`chunk_grads`] with observed or model-sampled targets.
pub fn chunk_grads_with(model: &LlamaModel, adapter: &Adapter, rows: &[Encoded], pad: u32, targets: Targets) -> Result<GradBlocks> {
    let device = model.device();
    let n = rows.len();
    let scale = adapter.config.scale();
    let mut leaves: BTreeMap<(usize, LoraTarget), (Tensor<3>, Tensor<3>)> = BTreeMap::new();
    let mut set = LoraSet::default();
    for (&key, (a, b)) in &adapter.weights {
        let ar = a.clone().inner().unsqueeze::<3>().repeat_dim(0, n).autodiff().require_grad();
        let br = b.clone().inner().unsqueeze::<3>().repeat_dim(0, n).autodiff().require_grad();
        let s = Tensor::<3>::full([n, 1, 1], scale, &device);
        set.weights.insert(key, LoraWeights::PerRow { a: ar.clone(), b: br.clone(), scale: s });
        leaves.insert(key, (ar, br));
    }
    let refs: Vec<&Encoded> = rows.iter().collect();
    let batch = Batch::new(&refs, pad, &device);
    let loss = per_example_loss_with(model, &batch, Some(&set), targets)?.sum();
    let grads = loss.backward();
    let mut keys = Vec::with_capacity(leaves.len());
    let mut blocks = Vec::with_capacity(leaves.len());
    for (key, (ar, br)) in leaves {
        let [_, din, r] = ar.dims();
        let [_, _, dout] = br.dims();
        let missing = || Error::Internal(format!("no gradient for LoRA factor {key:?}"));
        let ga = ar.grad(&grads).ok_or_else(missing)?.inner().reshape([n, din * r]);
        let gb = br.grad(&grads).ok_or_else(missing)?.inner().reshape([n, r * dout]);
        keys.push(key);
        blocks.push(Tensor::cat(vec![ga, gb], 1));
    }
    Ok(GradBlocks { keys, blocks })
}
