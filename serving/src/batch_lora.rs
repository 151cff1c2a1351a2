//! Heterogeneous batching: one forward pass serves rows that use different adapters.
//!
//! The [`ActiveSet`] is the compute-memory tier: for every (layer, projection) it holds the `A`
//! and `B` factors of all resident adapters stacked along a slot axis (`A: [slots, in, r]`,
//! `B: [slots, r, out]`, `B` pre-multiplied by `alpha / rank`, ranks zero-padded to the largest
//! resident one). Slot 0 is all zeros and stands for "no adapter".
//!
//! [`BatchLora`] is the [`LoraHook`] for one forward pass. Each row carries a slot index; at every
//! projection the hook gathers the rows' factors from the stacks and computes `(x·A_i)·B_i` as two
//! batched matmuls (the BGMV kernel of Punica / S-LoRA, written as gather + batched matmul), which
//! the decoder adds to `x·W`. Adapters are never merged into `W`. When every row uses the same
//! adapter the gather is skipped (a plain matmul against one slot), and projections no resident
//! row adapts cost nothing.
//!
//! On the CPU backend the set also keeps a host copy of the stacks, and a mixed batch's factors
//! are applied by a fused loop over the rows ([`bgmv`], Punica's BGMV written for the CPU): the
//! gather + batched-matmul form makes one small GEMM call per row for each factor, and on a small
//! model those calls, not the arithmetic (`rows · r · (in + out)` multiply-adds), were a third of
//! a decode step.

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::{Device, Int, Tensor, TensorData};
use tributary_jobs::model::{LlamaModel, LoraHook, LoraTarget};

use crate::adapter_cache::HostAdapter;

type Site = (usize, LoraTarget);

#[derive(Debug, Clone)]
struct Stack {
    a: Tensor<3>,
    b: Tensor<3>,
}

/// Host copy of one site's stacks, row-major like the tensors: `a` is `[slots, in, rank]`, `b` is
/// `[slots, rank, out]` (already scaled).
#[derive(Debug, Clone, Default)]
struct HostStack {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Stacked factors of the adapters resident in compute memory.
#[derive(Debug)]
pub struct ActiveSet {
    device: Device,
    slots: usize,
    rank: usize,
    dims: BTreeMap<LoraTarget, (usize, usize)>,
    stacks: BTreeMap<Site, Stack>,
    /// Host copies of `stacks`, kept on the CPU backend only (see [`bgmv`]).
    host: Option<BTreeMap<Site, HostStack>>,
    slot_sites: Vec<BTreeSet<Site>>,
}

impl ActiveSet {
    /// An empty set with `capacity` adapter slots (plus the zero slot) for `model`.
    pub fn new(model: &LlamaModel, capacity: usize) -> ActiveSet {
        let dims = LoraTarget::ALL.iter().map(|t| (*t, model.projection_dims(*t))).collect();
        let device = model.device();
        let host = (device == Device::flex()).then(BTreeMap::new);
        ActiveSet {
            device,
            slots: capacity + 1,
            rank: 0,
            dims,
            stacks: BTreeMap::new(),
            host,
            slot_sites: vec![BTreeSet::new(); capacity + 1],
        }
    }

    /// Adapter slots (slot 0, "no adapter", not counted).
    pub fn capacity(&self) -> usize {
        self.slots - 1
    }

    /// The padded rank of the stacks.
    pub fn rank(&self) -> usize {
        self.rank
    }

    fn grow_rank(&mut self, rank: usize) {
        let (slots, old) = (self.slots, self.rank);
        for ((_, target), s) in self.stacks.iter_mut() {
            let (din, dout) = self.dims[target];
            let za = Tensor::<3>::zeros([slots, din, rank - old], &self.device);
            let zb = Tensor::<3>::zeros([slots, rank - old, dout], &self.device);
            s.a = Tensor::cat(vec![s.a.clone(), za], 2);
            s.b = Tensor::cat(vec![s.b.clone(), zb], 1);
        }
        if let Some(host) = self.host.as_mut() {
            for ((_, target), h) in host.iter_mut() {
                let (din, dout) = self.dims[target];
                // `a`: every (slot, input) row widens from `old` to `rank` columns; `b`: every
                // slot gains `rank - old` zero rows after its `old` ones.
                let mut a = vec![0.0; slots * din * rank];
                for (new, old_row) in a.chunks_exact_mut(rank).zip(h.a.chunks_exact(old.max(1))) {
                    new[..old].copy_from_slice(&old_row[..old]);
                }
                let mut b = vec![0.0; slots * rank * dout];
                for (new, old_slot) in b.chunks_exact_mut(rank * dout).zip(h.b.chunks_exact((old * dout).max(1))) {
                    new[..old * dout].copy_from_slice(&old_slot[..old * dout]);
                }
                *h = HostStack { a, b };
            }
        }
        self.rank = rank;
    }

    /// Take `site`'s stacks out of the set (all zeros if it has none yet). Owned, a stack is
    /// written in place by `slice_assign`/`slice_fill`; updating it through a `clone()` would make
    /// the backend copy the whole stack (every slot) for a one-slot write, on every adapter load.
    fn take_stack(&mut self, site: Site) -> Stack {
        let (din, dout) = self.dims[&site.1];
        self.stacks.remove(&site).unwrap_or_else(|| Stack {
            a: Tensor::zeros([self.slots, din, self.rank], &self.device),
            b: Tensor::zeros([self.slots, self.rank, dout], &self.device),
        })
    }

    /// Copy `adapter` into `slot` (1-based), replacing whatever was there.
    pub fn install(&mut self, slot: usize, adapter: &HostAdapter) {
        debug_assert!(slot >= 1 && slot < self.slots, "slot 0 is the zero adapter");
        let r = adapter.rank();
        if r > self.rank {
            self.grow_rank(r);
        }
        let rank = self.rank;
        let new_sites: BTreeSet<Site> = adapter.adapter.weights.keys().copied().collect();
        let stale: Vec<Site> = self.slot_sites[slot].difference(&new_sites).copied().collect();
        for site in stale {
            self.zero(slot, site);
        }
        let scale = adapter.adapter.config.scale();
        let device = self.device.clone();
        for (&site, (a, b)) in &adapter.adapter.weights {
            let (din, dout) = self.dims[&site.1];
            let a = pad_cols(a.clone().to_device(&device), rank).reshape([1, din, rank]);
            let b = pad_rows(b.clone().to_device(&device).mul_scalar(scale), rank).reshape([1, rank, dout]);
            if let Some(host) = self.host.as_mut() {
                let h = host.entry(site).or_insert_with(|| HostStack {
                    a: vec![0.0; self.slots * din * rank],
                    b: vec![0.0; self.slots * rank * dout],
                });
                host_write(&mut h.a, slot, &a);
                host_write(&mut h.b, slot, &b);
            }
            let s = self.take_stack(site);
            let s = Stack {
                a: s.a.slice_assign([slot..slot + 1, 0..din, 0..rank], a),
                b: s.b.slice_assign([slot..slot + 1, 0..rank, 0..dout], b),
            };
            self.stacks.insert(site, s);
        }
        self.slot_sites[slot] = new_sites;
    }

    fn zero(&mut self, slot: usize, site: Site) {
        let (din, dout) = self.dims[&site.1];
        let rank = self.rank;
        if let Some(s) = self.stacks.remove(&site) {
            let s = Stack {
                a: s.a.slice_fill([slot..slot + 1, 0..din, 0..rank], 0.0),
                b: s.b.slice_fill([slot..slot + 1, 0..rank, 0..dout], 0.0),
            };
            self.stacks.insert(site, s);
        }
        if let Some(h) = self.host.as_mut().and_then(|h| h.get_mut(&site)) {
            h.a[slot * din * rank..(slot + 1) * din * rank].fill(0.0);
            h.b[slot * rank * dout..(slot + 1) * rank * dout].fill(0.0);
        }
    }

    /// Forget `slot`'s adapter (its factors are zeroed lazily, when the slot is reused).
    pub fn clear(&mut self, slot: usize) {
        let sites: Vec<Site> = std::mem::take(&mut self.slot_sites[slot]).into_iter().collect();
        for site in sites {
            self.zero(slot, site);
        }
    }

    /// The hook for a forward pass whose row `i` uses slot `row_slots[i]` (0 = no adapter).
    pub fn hook(&self, row_slots: &[usize]) -> Option<BatchLora<'_>> {
        let distinct: BTreeSet<usize> = row_slots.iter().copied().filter(|s| *s != 0).collect();
        if distinct.is_empty() {
            return None;
        }
        let sites: BTreeSet<Site> = distinct.iter().flat_map(|s| self.slot_sites[*s].iter().copied()).collect();
        let rows = match (distinct.len(), row_slots.iter().all(|s| *s != 0)) {
            (1, true) => Rows::Uniform(*distinct.first().unwrap_or(&0)),
            _ if self.host.is_some() => Rows::Host(row_slots.to_vec()),
            _ => {
                let idx: Vec<i64> = row_slots.iter().map(|s| *s as i64).collect();
                let n = idx.len();
                Rows::Gathered(Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &self.device))
            }
        };
        Some(BatchLora { set: self, rows, sites })
    }
}

/// Copy `t` (the padded `[1, …]` factor of one slot) into `slot`'s block of a host stack.
fn host_write(stack: &mut [f32], slot: usize, t: &Tensor<3>) {
    let values = t.clone().try_into_vec_as::<f32>().expect("the CPU backend reads tensors back synchronously");
    let n = values.len();
    stack[slot * n..(slot + 1) * n].copy_from_slice(&values);
}

/// `out[i] = (x[i] · A_{slot(i)}) · B_{slot(i)}` for the `rows · t` vectors of `x` (row-major
/// `[rows, t, din]`, every position of row `i` using slot `slots[i]`; slot 0 is the zero adapter and
/// is skipped). `a` is `[slots, din, r]`, `b` is `[slots, r, dout]`. Returns `[rows, t, dout]`.
///
/// Each vector costs `r · (din + dout)` multiply-adds: the `r`-wide and `dout`-wide inner loops
/// vectorize, and no per-row kernel call or gathered copy of the factors is made.
#[allow(clippy::too_many_arguments)]
pub fn bgmv(x: &[f32], slots: &[usize], t: usize, din: usize, r: usize, dout: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; slots.len() * t * dout];
    let s = Shape { t, din, r, dout };
    // The usual ranks get a fixed-size accumulator; other ranks take the general loop.
    match r {
        4 => for_each_vector(x, slots, s, a, b, &mut out, lora_vector_fixed::<4>),
        8 => for_each_vector(x, slots, s, a, b, &mut out, lora_vector_fixed::<8>),
        16 => for_each_vector(x, slots, s, a, b, &mut out, lora_vector_fixed::<16>),
        _ => {
            let mut y = vec![0.0f32; r];
            for_each_vector(x, slots, s, a, b, &mut out, |xv, a, b, o| lora_vector_any(xv, a, b, o, &mut y));
        }
    }
    out
}

#[derive(Clone, Copy)]
struct Shape {
    t: usize,
    din: usize,
    r: usize,
    dout: usize,
}

/// Call `kernel(x_v, A_slot, B_slot, out_v)` for every input vector whose row uses an adapter
/// (slot 0, the zero adapter, is skipped and its output stays zero).
fn for_each_vector(
    x: &[f32],
    slots: &[usize],
    s: Shape,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    mut kernel: impl FnMut(&[f32], &[f32], &[f32], &mut [f32]),
) {
    let Shape { t, din, r, dout } = s;
    for (row, &slot) in slots.iter().enumerate() {
        if slot == 0 {
            continue;
        }
        let a = &a[slot * din * r..(slot + 1) * din * r];
        let b = &b[slot * r * dout..(slot + 1) * r * dout];
        let xs = &x[row * t * din..(row + 1) * t * din];
        let outs = &mut out[row * t * dout..(row + 1) * t * dout];
        for (xv, o) in xs.chunks_exact(din).zip(outs.chunks_exact_mut(dout)) {
            kernel(xv, a, b, o);
        }
    }
}

/// `o += (x · A) · B` for a rank known at compile time: the accumulator is a fixed-size array, so
/// the `x · A` loop is a vector multiply-add per input element and the `· B` loop runs over `dout`.
#[inline(always)]
fn lora_vector_fixed<const R: usize>(xv: &[f32], a: &[f32], b: &[f32], o: &mut [f32]) {
    let mut y = [0.0f32; R];
    for (xk, a_row) in xv.iter().zip(a.chunks_exact(R)) {
        let a_row: &[f32; R] = a_row.try_into().expect("chunks of R");
        for j in 0..R {
            y[j] += xk * a_row[j];
        }
    }
    add_times_b(&y, b, o);
}

/// `o += (x · A) · B` for any rank (`y.len()`), `y` being scratch space.
#[inline(always)]
fn lora_vector_any(xv: &[f32], a: &[f32], b: &[f32], o: &mut [f32], y: &mut [f32]) {
    y.fill(0.0);
    for (xk, a_row) in xv.iter().zip(a.chunks_exact(y.len())) {
        for (yj, aj) in y.iter_mut().zip(a_row) {
            *yj += xk * aj;
        }
    }
    add_times_b(y, b, o);
}

/// `o += y · B` (`B` is `[y.len(), o.len()]`).
#[inline(always)]
fn add_times_b(y: &[f32], b: &[f32], o: &mut [f32]) {
    for (yj, b_row) in y.iter().zip(b.chunks_exact(o.len())) {
        for (oc, bc) in o.iter_mut().zip(b_row) {
            *oc += yj * bc;
        }
    }
}

fn pad_cols(t: Tensor<2>, to: usize) -> Tensor<2> {
    let [r, c] = t.dims();
    if c == to {
        return t;
    }
    let z = Tensor::<2>::zeros([r, to - c], &t.device());
    Tensor::cat(vec![t, z], 1)
}

fn pad_rows(t: Tensor<2>, to: usize) -> Tensor<2> {
    let [r, c] = t.dims();
    if r == to {
        return t;
    }
    let z = Tensor::<2>::zeros([to - r, c], &t.device());
    Tensor::cat(vec![t, z], 0)
}

#[derive(Debug, Clone)]
enum Rows {
    /// Every row uses this slot.
    Uniform(usize),
    /// Row `i` uses slot `idx[i]`.
    Gathered(Tensor<1, Int>),
    /// Row `i` uses slot `slots[i]`, applied on the host by [`bgmv`] (CPU backend).
    Host(Vec<usize>),
}

/// The multi-adapter LoRA hook of one forward pass.
#[derive(Debug)]
pub struct BatchLora<'a> {
    set: &'a ActiveSet,
    rows: Rows,
    sites: BTreeSet<Site>,
}

impl LoraHook for BatchLora<'_> {
    fn delta(&self, layer: usize, target: LoraTarget, x: &Tensor<3>) -> Option<Tensor<3>> {
        if !self.sites.contains(&(layer, target)) {
            return None;
        }
        let s = self.set.stacks.get(&(layer, target))?;
        Some(match &self.rows {
            Rows::Uniform(slot) => {
                // One adapter for the whole batch: rows and positions flattened into one 2-D
                // product per factor (a broadcast batched matmul would make one small GEMM call
                // per row, and on a small model those calls are most of a decode step's cost).
                let [rows, t, din] = x.dims();
                let [_, r, dout] = s.b.dims();
                let a = s.a.clone().narrow(0, *slot, 1).reshape([din, r]);
                let b = s.b.clone().narrow(0, *slot, 1).reshape([r, dout]);
                x.clone().reshape([rows * t, din]).matmul(a).matmul(b).reshape([rows, t, dout])
            }
            Rows::Host(slots) => {
                let host = self.set.host.as_ref()?.get(&(layer, target))?;
                let [rows, t, din] = x.dims();
                let [_, r, dout] = s.b.dims();
                let values = x.clone().try_into_vec_as::<f32>().expect("the CPU backend reads tensors back synchronously");
                let out = bgmv(&values, slots, t, din, r, dout, &host.a, &host.b);
                Tensor::<3>::from_data(TensorData::new(out, [rows, t, dout]), &self.set.device)
            }
            Rows::Gathered(idx) => {
                // Measured against one dense product over the batch's distinct adapters
                // (`x·[A_1 … A_U]`, masked to each row's block, `·[B_1; …; B_U]`): with ~20
                // distinct adapters per batch that did U× the arithmetic and was slower.
                let a = s.a.clone().select(0, idx.clone());
                let b = s.b.clone().select(0, idx.clone());
                x.clone().matmul(a).matmul(b)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The host loop equals the tensor path it replaces (gather the rows' factors, two batched
    /// matmuls), including rows on the zero slot and prefill-shaped input (several positions).
    #[test]
    fn bgmv_matches_gathered_batched_matmul() {
        // Rank 3 takes the general loop, rank 8 the fixed-width one.
        for r in [3, 8] {
            check_bgmv(r);
        }
    }

    fn check_bgmv(r: usize) {
        // Dimensions that are not multiples of the vector width.
        let (slots_n, din, dout, t) = (5, 14, 21, 4);
        let mut rng = StdRng::seed_from_u64(7 + r as u64);
        let mut rand_vec = |n: usize| (0..n).map(|_| rng.random::<f32>() - 0.5).collect::<Vec<f32>>();
        let mut a = rand_vec(slots_n * din * r);
        let mut b = rand_vec(slots_n * r * dout);
        // Slot 0 is the zero adapter.
        a[..din * r].fill(0.0);
        b[..r * dout].fill(0.0);
        let slots = [3usize, 0, 1, 3, 4, 2];
        let x = rand_vec(slots.len() * t * din);

        let got = bgmv(&x, &slots, t, din, r, dout, &a, &b);

        let device = Device::flex();
        let xt = Tensor::<3>::from_data(TensorData::new(x, [slots.len(), t, din]), &device);
        let at = Tensor::<3>::from_data(TensorData::new(a, [slots_n, din, r]), &device);
        let bt = Tensor::<3>::from_data(TensorData::new(b, [slots_n, r, dout]), &device);
        let idx: Vec<i64> = slots.iter().map(|s| *s as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [slots.len()]), &device);
        let want = xt.matmul(at.select(0, idx.clone())).matmul(bt.select(0, idx)).try_into_vec_as::<f32>().unwrap();

        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-5, "rank {r}, element {i}: bgmv {g} vs tensors {w}");
        }
        // The zero-slot row is exactly zero, and a real row is not.
        assert!(got[t * dout..2 * t * dout].iter().all(|v| *v == 0.0));
        assert!(got[..t * dout].iter().any(|v| *v != 0.0));
    }
}
