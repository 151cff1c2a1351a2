//! Per-example gradients of the LoRA parameters, one forward and one backward pass per chunk of rows.
//!
//! LoRA gradients are low-rank outer products: for a projection with update `y = s·(x·A)·B`,
//! row `n`'s gradients are `∂B_n = s·H_nᵀ ΔY_n` and `∂A_n = X_nᵀ ΔH_n`, where `X_n` (the
//! projection's input), `H_n = X_n A` and `ΔY_n`, `ΔH_n` (the loss's gradients at the update and
//! at `H`) are `[tokens, ·]` matrices of that row alone. So the chunk runs through the model with
//! the adapter *shared* — ordinary 2-D products, as in training — while a hook ([`Probes`]) keeps
//! `X` and `H` of every adapted projection and adds two zero-valued gradient leaves ("probes"), one
//! to `H` and one to the update. One backward pass of the *sum* of the rows' losses fills the
//! probes with `ΔH` and `ΔY` for every token; rows do not interact, so the slice of row `n` is
//! exactly the gradient of row `n`'s own loss. The per-row products `X_nᵀ ΔH_n` and `H_nᵀ ΔY_n`
//! are then one batched product each. Nothing of size `in × out` is formed, and — unlike giving
//! every row its own copy of the factors as gradient leaves — the forward and backward passes do
//! no per-row work at all.
//!
//! The gradients are grouped in blocks, one per adapted projection (layer × module), each row of a
//! block being the flattened `(∂A, ∂B)` of one example: `[rows, r·(in + out)]`. The blocks are
//! what `exact-block` inverts one at a time.

use std::cell::RefCell;
use std::collections::BTreeMap;

use burn::tensor::{Int, Tensor, TensorData};

use crate::batch::{Batch, Targets, per_example_loss_with};
use crate::error::{Error, Result};
use crate::model::llama::matmul_2d;
use crate::model::{Adapter, LlamaModel, LoraHook, LoraTarget};
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

    /// Put back in the rows' own order the chunks computed for `chunks` ([`length_chunks`]):
    /// `parts[k]` holds the rows `chunks[k]`, in that order, and `chunks` covers `0..rows` once.
    pub fn assemble(parts: Vec<GradBlocks>, chunks: &[Vec<usize>]) -> Result<GradBlocks> {
        if parts.len() != chunks.len() {
            return Err(Error::Internal(format!("{} gradient chunks for {} chunks of rows", parts.len(), chunks.len())));
        }
        let order: Vec<usize> = chunks.concat();
        let mut at = vec![usize::MAX; order.len()];
        for (k, &i) in order.iter().enumerate() {
            if i >= at.len() || at[i] != usize::MAX {
                return Err(Error::Internal(format!("row {i} is not in the chunks exactly once")));
            }
            at[i] = k;
        }
        if let Some((part, ids)) = parts.iter().zip(chunks).find(|(p, ids)| p.rows() != ids.len()) {
            return Err(Error::Internal(format!("a gradient chunk of {} rows for {} rows", part.rows(), ids.len())));
        }
        let stacked = GradBlocks::concat(parts)?;
        if order.iter().enumerate().all(|(k, &i)| k == i) {
            return Ok(stacked);
        }
        let Some(first) = stacked.blocks.first() else { return Ok(stacked) };
        let device = first.device();
        let at: Vec<i64> = at.into_iter().map(|k| k as i64).collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(at, [order.len()]), &device);
        let blocks = stacked.blocks.into_iter().map(|b| b.select(0, index.clone())).collect();
        Ok(GradBlocks { keys: stacked.keys, blocks })
    }

    /// Per-block width `r·(in + out)`.
    pub fn widths(&self) -> Vec<usize> {
        self.blocks.iter().map(|b| b.dims()[1]).collect()
    }
}

/// Gradients of every row of `rows` under `model` + `adapter`, `chunk` rows per backward pass, in
/// the order of `rows` (the passes take them shortest first: [`length_chunks`]).
pub fn per_example_grads(
    model: &LlamaModel,
    adapter: &Adapter,
    rows: &[Encoded],
    pad: u32,
    chunk: usize,
) -> Result<GradBlocks> {
    in_length_chunks(rows, chunk, |_, ids| chunk_grads_with(model, adapter, &pick(rows, ids), pad, Targets::Observed))
}

/// Gradients of every row of `rows`, in their order, from `grads_of(k, ids)`: the gradients of the
/// rows `ids` of chunk `k` of [`length_chunks`]`(rows, chunk)`, in that order.
pub fn in_length_chunks(
    rows: &[Encoded],
    chunk: usize,
    mut grads_of: impl FnMut(usize, &[usize]) -> Result<GradBlocks>,
) -> Result<GradBlocks> {
    let chunks = length_chunks(rows, chunk);
    let mut parts = Vec::with_capacity(chunks.len());
    for (k, ids) in chunks.iter().enumerate() {
        parts.push(grads_of(k, ids)?);
    }
    GradBlocks::assemble(parts, &chunks)
}

/// The indices of `rows` in chunks of at most `chunk`, shortest rows first (ties in index order).
///
/// A pass pads every row of its chunk to the chunk's longest, so chunks of rows in their own order
/// spend much of each pass on padding when lengths vary: on the attribution benchmark's datanet a
/// one-fact answer is about half as long as an overview, and nearly every 16-row chunk holds an
/// overview (36% of the tokens padding, against 3% sorted; `cargo bench -p tributary-jobs --bench
/// attribution`). Sorting by length first keeps the padding to the few tokens between neighbours.
pub fn length_chunks(rows: &[Encoded], chunk: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].tokens.len());
    order.chunks(chunk.max(1)).map(<[usize]>::to_vec).collect()
}

/// `rows[ids]`, by reference.
pub fn pick<'a>(rows: &'a [Encoded], ids: &[usize]) -> Vec<&'a Encoded> {
    ids.iter().map(|&i| &rows[i]).collect()
}

/// Gradients of one chunk of rows (one forward + backward pass).
pub fn chunk_grads(model: &LlamaModel, adapter: &Adapter, rows: &[Encoded], pad: u32) -> Result<GradBlocks> {
    chunk_grads_with(model, adapter, &rows.iter().collect::<Vec<_>>(), pad, Targets::Observed)
}

/// [`chunk_grads`] with observed or model-sampled targets.
pub fn chunk_grads_with(
    model: &LlamaModel,
    adapter: &Adapter,
    rows: &[&Encoded],
    pad: u32,
    targets: Targets<'_>,
) -> Result<GradBlocks> {
    let device = model.device();
    let n = rows.len();
    let scale = adapter.config.scale();
    let probes = Probes { adapter, scale, taps: RefCell::new(BTreeMap::new()) };
    let batch = Batch::new(rows, pad, &device);
    let loss = per_example_loss_with(model, &batch, Some(&probes), targets)?.sum();
    let grads = loss.backward();
    let taps = probes.taps.into_inner();
    let mut keys = Vec::with_capacity(taps.len());
    let mut blocks = Vec::with_capacity(taps.len());
    for (key, tap) in taps {
        let missing = || Error::Internal(format!("no gradient reached the LoRA probes of {key:?}"));
        let dh = tap.dh.grad(&grads).ok_or_else(missing)?;
        let dy = tap.dy.grad(&grads).ok_or_else(missing)?;
        let [_, _, din] = tap.x.dims();
        let [_, _, r] = tap.h.dims();
        let [_, _, dout] = dy.dims();
        // ∂A_n = X_nᵀ ΔH_n: [n, in, r];  ∂B_n = s·H_nᵀ ΔY_n: [n, r, out].
        let ga = tap.x.swap_dims(1, 2).matmul(dh).reshape([n, din * r]);
        let gb = tap.h.swap_dims(1, 2).matmul(dy).mul_scalar(scale).reshape([n, r * dout]);
        keys.push(key);
        blocks.push(Tensor::cat(vec![ga, gb], 1));
    }
    if keys.len() != adapter.weights.len() {
        return Err(Error::Internal(format!("the model reached {} of the adapter's {} projections", keys.len(), adapter.weights.len())));
    }
    Ok(GradBlocks { keys, blocks })
}

/// What [`Probes`] keeps of one adapted projection.
struct Tap {
    /// The projection's input `X`, `[rows, tokens, in]` (no autodiff).
    x: Tensor<3>,
    /// `H = X·A`, `[rows, tokens, r]` (no autodiff).
    h: Tensor<3>,
    /// Zero leaf added to `H`; its gradient is `ΔH`.
    dh: Tensor<3>,
    /// Zero leaf added to the update; its gradient is `ΔY`.
    dy: Tensor<3>,
}

/// The hook of [`chunk_grads_with`]: applies `adapter` to every row, keeping each projection's
/// `X` and `H` and adding the zero probes whose gradients are `ΔH` and `ΔY`.
struct Probes<'a> {
    adapter: &'a Adapter,
    scale: f64,
    taps: RefCell<BTreeMap<(usize, LoraTarget), Tap>>,
}

impl LoraHook for Probes<'_> {
    fn delta(&self, layer: usize, target: LoraTarget, x: &Tensor<3>) -> Option<Tensor<3>> {
        let (a, b) = self.adapter.weights.get(&(layer, target))?;
        let device = x.device();
        let h = matmul_2d(x.clone(), a);
        let dh = Tensor::<3>::zeros(h.dims(), &device).autodiff().require_grad();
        let y = matmul_2d(h.clone() + dh.clone(), b).mul_scalar(self.scale);
        let dy = Tensor::<3>::zeros(y.dims(), &device).autodiff().require_grad();
        let tap = Tap { x: x.clone().inner(), h: h.inner(), dh, dy: dy.clone() };
        self.taps.borrow_mut().insert((layer, target), tap);
        Some(y + dy)
    }
}

/// The largest absolute difference between two gradient sets of the same shape, and the largest
/// absolute entry of `a` (the scale to judge it by).
#[cfg(test)]
pub(crate) fn max_diff(a: &GradBlocks, b: &GradBlocks) -> (f32, f32) {
    use super::linalg::to_vec;
    let (mut worst, mut scale) = (0f32, 0f32);
    for (x, y) in a.blocks.iter().zip(&b.blocks) {
        let (x, y) = (to_vec(x).expect("x"), to_vec(y).expect("y"));
        assert_eq!(x.len(), y.len(), "blocks of different shapes");
        scale = x.iter().map(|v| v.abs()).fold(scale, f32::max);
        worst = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(worst, f32::max);
    }
    (worst, scale)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::attribute::linalg::to_vec;
    use crate::base_model::{Preset, init_model};
    use crate::batch::per_example_loss;
    use crate::model::LoraConfig;

    /// Rows of different lengths (so the chunk is padded), loss on the second half of each.
    fn rows(rng: &mut StdRng, n: usize, vocab: u32) -> Vec<Encoded> {
        (0..n)
            .map(|i| {
                let len = 6 + (i * 5) % 9;
                let tokens: Vec<u32> = (0..len).map(|_| rng.random_range(1..vocab)).collect();
                let loss_mask = (0..len).map(|j| j >= len / 2).collect();
                Encoded { tokens, loss_mask }
            })
            .collect()
    }

    #[test]
    fn chunks_of_similar_lengths_give_each_row_its_own_gradients_in_row_order() {
        let device = Device::flex();
        let config = Preset::Tiny.config(97, 0);
        let model = init_model(&config, 5, &device);
        let mut rng = StdRng::seed_from_u64(4);
        let adapter = Adapter::init(&model, &LoraConfig::default(), 1).expect("adapter");
        let rows = rows(&mut rng, 9, 97);
        let chunks = length_chunks(&rows, 4);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 1]);
        let order = chunks.concat();
        assert!(order.windows(2).all(|w| rows[w[0]].tokens.len() <= rows[w[1]].tokens.len()), "shortest first: {order:?}");
        assert_ne!(order, (0..9).collect::<Vec<_>>(), "the rows' lengths are not already sorted, so the order is tested");
        // All rows in one pass, in their own order, against length-sorted chunks put back in order.
        let whole = chunk_grads(&model, &adapter, &rows, 0).expect("one pass");
        let sorted = per_example_grads(&model, &adapter, &rows, 0, 4).expect("sorted chunks");
        assert_eq!(sorted.keys, whole.keys);
        let (worst, scale) = max_diff(&whole, &sorted);
        assert!(scale > 0.0 && worst <= 1e-4 * scale, "off by {worst} (scale {scale})");
        // Chunks that do not cover the rows exactly once are refused.
        let part = |n: usize| chunk_grads(&model, &adapter, &rows[..n], 0).expect("part");
        assert!(GradBlocks::assemble(vec![part(2), part(1)], &[vec![0, 1], vec![1]]).is_err());
        assert!(GradBlocks::assemble(vec![part(2)], &[vec![0, 1, 2]]).is_err(), "row count must match");
    }

    #[test]
    fn probe_gradients_equal_each_rows_own_backward_pass() {
        let device = Device::flex();
        let config = Preset::Tiny.config(97, 0);
        let model = init_model(&config, 5, &device);
        let mut rng = StdRng::seed_from_u64(9);
        let mut adapter = Adapter::init(&model, &LoraConfig::default(), 1).expect("adapter");
        // A non-zero B, so that the gradients of A are not all zero.
        for (_, b) in adapter.weights.values_mut() {
            let [r, o] = b.dims();
            let v: Vec<f32> = (0..r * o).map(|_| rng.random_range(-0.3f32..0.3)).collect();
            *b = Tensor::from_data(TensorData::new(v, [r, o]), &device);
        }
        let rows = rows(&mut rng, 5, 97);
        let chunked = chunk_grads(&model, &adapter, &rows, 0).expect("probe gradients");
        assert_eq!(chunked.keys.len(), adapter.weights.len());

        for (i, row) in rows.iter().enumerate() {
            // The reference: this row alone, the factors themselves as gradient leaves (as training does).
            let mut leafy = adapter.clone();
            for (a, b) in leafy.weights.values_mut() {
                *a = a.clone().autodiff().require_grad();
                *b = b.clone().autodiff().require_grad();
            }
            let batch = Batch::new(&[row], 0, &device);
            let grads = per_example_loss(&model, &batch, Some(&leafy.hook())).sum().backward();
            for (k, key) in chunked.keys.iter().enumerate() {
                let (a, b) = &leafy.weights[key];
                let ga = to_vec(&a.grad(&grads).expect("grad A")).expect("A");
                let gb = to_vec(&b.grad(&grads).expect("grad B")).expect("B");
                let want: Vec<f32> = ga.into_iter().chain(gb).collect();
                let width = chunked.blocks[k].dims()[1];
                let got = to_vec(&chunked.blocks[k].clone().slice([i..i + 1, 0..width])).expect("row");
                assert_eq!(got.len(), want.len());
                let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max);
                assert!(scale > 0.0, "row {i} {key:?}: an all-zero reference gradient tests nothing");
                let worst = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-4 * scale.max(1e-3), "row {i} {key:?}: off by {worst} (scale {scale})");
            }
        }
    }
}
