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
//! a decode step. The loop runs on AVX2 + FMA when the CPU has it, checked at run time through
//! `pulp` (the SIMD layer under Burn's CPU matmul), since the build targets baseline x86-64 and
//! its SSE2 form runs at a fraction of the speed.

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

/// Host copy of one site's stacks, row-major: `a` holds each slot's `A` transposed,
/// `[slots, rank, in]` (so that `x·A` is `rank` contiguous dot products), `b` is `[slots, rank, out]`
/// like the tensor (already scaled).
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
                // Both are `[slots, rank, n]`: every slot gains `rank - old` zero rows after its
                // `old` ones.
                *h = HostStack { a: widen_rank(&h.a, slots, old, rank, din), b: widen_rank(&h.b, slots, old, rank, dout) };
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
                host_write(&mut h.a, slot, &a.clone().swap_dims(1, 2));
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

/// `[slots, old, n]` → `[slots, rank, n]`, the new rows zero.
fn widen_rank(stack: &[f32], slots: usize, old: usize, rank: usize, n: usize) -> Vec<f32> {
    let mut wide = vec![0.0; slots * rank * n];
    if old > 0 {
        for (new, old_slot) in wide.chunks_exact_mut(rank * n).zip(stack.chunks_exact(old * n)) {
            new[..old * n].copy_from_slice(old_slot);
        }
    }
    wide
}

/// Copy `t` (the padded `[1, …]` factor of one slot, in logical order) into `slot`'s block of a
/// host stack.
fn host_write(stack: &mut [f32], slot: usize, t: &Tensor<3>) {
    let values = t.clone().try_into_vec_as::<f32>().expect("the CPU backend reads tensors back synchronously");
    let n = values.len();
    stack[slot * n..(slot + 1) * n].copy_from_slice(&values);
}

/// `out[i] = (x[i] · A_{slot(i)}) · B_{slot(i)}` for the `rows · t` vectors of `x` (row-major
/// `[rows, t, din]`, every position of row `i` using slot `slots[i]`; slot 0 is the zero adapter and
/// is skipped). `a_t` holds the `A` factors transposed, `[slots, r, din]`; `b` is `[slots, r, dout]`.
/// Returns `[rows, t, dout]`.
///
/// Each vector costs `r · (din + dout)` multiply-adds, as fused multiply-adds on the CPU's widest
/// vectors: `x · A` is `r` dot products over `din` run four at a time (four independent
/// accumulators, one load of `x` for all four), then `o += y · B` runs over `dout`. No per-row
/// kernel call or gathered copy of the factors is made.
#[allow(clippy::too_many_arguments)]
pub fn bgmv(x: &[f32], slots: &[usize], t: usize, din: usize, r: usize, dout: usize, a_t: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; slots.len() * t * dout];
    let op = Bgmv { x, slots, shape: Shape { t, din, r, dout }, a_t, b, out: &mut out };
    // pulp's `Arch` only offers AVX2 with its `x86-v3` feature, which would rebuild Burn's matmul
    // with a different pulp; the AVX2 token is available without it.
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        pulp::Simd::vectorize(simd, op);
        return out;
    }
    pulp::Arch::new().dispatch(op);
    out
}

#[derive(Clone, Copy)]
struct Shape {
    t: usize,
    din: usize,
    r: usize,
    dout: usize,
}

/// [`bgmv`]'s arguments, run by `pulp` with the vector instructions the CPU has.
struct Bgmv<'a> {
    x: &'a [f32],
    slots: &'a [usize],
    shape: Shape,
    a_t: &'a [f32],
    b: &'a [f32],
    out: &'a mut [f32],
}

impl pulp::WithSimd for Bgmv<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Shape { t, din, r, dout } = self.shape;
        let mut y = vec![0.0f32; r];
        for (row, &slot) in self.slots.iter().enumerate() {
            if slot == 0 {
                continue;
            }
            let a_t = &self.a_t[slot * r * din..(slot + 1) * r * din];
            let b = &self.b[slot * r * dout..(slot + 1) * r * dout];
            let xs = &self.x[row * t * din..(row + 1) * t * din];
            let outs = &mut self.out[row * t * dout..(row + 1) * t * dout];
            for (xv, o) in xs.chunks_exact(din).zip(outs.chunks_exact_mut(dout)) {
                times_a(simd, xv, a_t, &mut y);
                add_times_b(simd, &y, b, o);
            }
        }
    }
}

/// The four rows of length `n` laid end to end in `four`.
#[inline(always)]
fn four_rows(four: &[f32], n: usize) -> [&[f32]; 4] {
    let (r0, rest) = four.split_at(n);
    let (r1, rest) = rest.split_at(n);
    let (r2, r3) = rest.split_at(n);
    [r0, r1, r2, r3]
}

/// `y[j] = x · a_t[j]` (`a_t` is `[y.len(), x.len()]`), four rows of `a_t` at a time.
#[inline(always)]
fn times_a<S: pulp::Simd>(simd: S, x: &[f32], a_t: &[f32], y: &mut [f32]) {
    let din = x.len();
    let (xh, xt) = S::as_simd_f32s(x);
    let mut rows = a_t.chunks_exact(4 * din);
    let mut ys = y.chunks_exact_mut(4);
    for (four, yq) in rows.by_ref().zip(ys.by_ref()) {
        let [(h0, t0), (h1, t1), (h2, t2), (h3, t3)] = four_rows(four, din).map(S::as_simd_f32s);
        let zero = simd.splat_f32s(0.0);
        let mut acc = [zero; 4];
        for ((((xv, a0), a1), a2), a3) in xh.iter().zip(h0).zip(h1).zip(h2).zip(h3) {
            acc[0] = simd.mul_add_f32s(*xv, *a0, acc[0]);
            acc[1] = simd.mul_add_f32s(*xv, *a1, acc[1]);
            acc[2] = simd.mul_add_f32s(*xv, *a2, acc[2]);
            acc[3] = simd.mul_add_f32s(*xv, *a3, acc[3]);
        }
        let mut sums = acc.map(|a| simd.reduce_sum_f32s(a));
        for ((((xs, a0), a1), a2), a3) in xt.iter().zip(t0).zip(t1).zip(t2).zip(t3) {
            sums[0] += xs * a0;
            sums[1] += xs * a1;
            sums[2] += xs * a2;
            sums[3] += xs * a3;
        }
        yq.copy_from_slice(&sums);
    }
    // Ranks that are not a multiple of four: the last rows one at a time.
    for (a_row, yj) in rows.remainder().chunks_exact(din).zip(ys.into_remainder()) {
        let (h, tail) = S::as_simd_f32s(a_row);
        let mut acc = simd.splat_f32s(0.0);
        for (xv, av) in xh.iter().zip(h) {
            acc = simd.mul_add_f32s(*xv, *av, acc);
        }
        *yj = simd.reduce_sum_f32s(acc) + xt.iter().zip(tail).map(|(xs, a)| xs * a).sum::<f32>();
    }
}

/// `o += y · B` (`B` is `[y.len(), o.len()]`), four rows of `B` per pass over `o`, so each
/// vector of `o` is loaded and stored once per four multiply-adds.
#[inline(always)]
fn add_times_b<S: pulp::Simd>(simd: S, y: &[f32], b: &[f32], o: &mut [f32]) {
    let dout = o.len();
    let (oh, ot) = S::as_mut_simd_f32s(o);
    let mut rows = b.chunks_exact(4 * dout);
    let mut ys = y.chunks_exact(4);
    for (four, yq) in rows.by_ref().zip(ys.by_ref()) {
        let [(h0, t0), (h1, t1), (h2, t2), (h3, t3)] = four_rows(four, dout).map(S::as_simd_f32s);
        let [y0, y1, y2, y3] = [yq[0], yq[1], yq[2], yq[3]].map(|v| simd.splat_f32s(v));
        for ((((ov, b0), b1), b2), b3) in oh.iter_mut().zip(h0).zip(h1).zip(h2).zip(h3) {
            let acc = simd.mul_add_f32s(y0, *b0, *ov);
            let acc = simd.mul_add_f32s(y1, *b1, acc);
            let acc = simd.mul_add_f32s(y2, *b2, acc);
            *ov = simd.mul_add_f32s(y3, *b3, acc);
        }
        for ((((oc, b0), b1), b2), b3) in ot.iter_mut().zip(t0).zip(t1).zip(t2).zip(t3) {
            *oc += yq[0] * b0 + yq[1] * b1 + yq[2] * b2 + yq[3] * b3;
        }
    }
    for (b_row, yj) in rows.remainder().chunks_exact(dout).zip(ys.remainder()) {
        let (h, tail) = S::as_simd_f32s(b_row);
        let yv = simd.splat_f32s(*yj);
        for (ov, bv) in oh.iter_mut().zip(h) {
            *ov = simd.mul_add_f32s(yv, *bv, *ov);
        }
        for (oc, bc) in ot.iter_mut().zip(tail) {
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
#[expect(clippy::large_enum_variant, reason = "one per forward pass")]
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
        // Ranks below, at and past a multiple of four (the kernels take rows four at a time).
        for r in [3, 8, 9] {
            check_bgmv(r);
        }
    }

    fn check_bgmv(r: usize) {
        // Dimensions that are not multiples of the vector width, and longer than one vector.
        let (slots_n, din, dout, t) = (5, 37, 45, 4);
        let mut rng = StdRng::seed_from_u64(7 + r as u64);
        let mut rand_vec = |n: usize| (0..n).map(|_| rng.random::<f32>() - 0.5).collect::<Vec<f32>>();
        let mut a = rand_vec(slots_n * din * r);
        let mut b = rand_vec(slots_n * r * dout);
        // Slot 0 is the zero adapter.
        a[..din * r].fill(0.0);
        b[..r * dout].fill(0.0);
        let slots = [3usize, 0, 1, 3, 4, 2];
        let x = rand_vec(slots.len() * t * din);

        // The host stack holds each slot's A transposed.
        let mut a_t = vec![0.0f32; a.len()];
        for (slot, (from, to)) in a.chunks_exact(din * r).zip(a_t.chunks_exact_mut(r * din)).enumerate() {
            for (i, j) in (0..din).flat_map(|i| (0..r).map(move |j| (i, j))) {
                to[j * din + i] = from[i * r + j];
            }
            assert!(slot > 0 || to.iter().all(|v| *v == 0.0));
        }
        let got = bgmv(&x, &slots, t, din, r, dout, &a_t, &b);

        let device = Device::flex();
        let xt = Tensor::<3>::from_data(TensorData::new(x, [slots.len(), t, din]), &device);
        let at = Tensor::<3>::from_data(TensorData::new(a, [slots_n, din, r]), &device);
        let bt = Tensor::<3>::from_data(TensorData::new(b, [slots_n, r, dout]), &device);
        let idx: Vec<i64> = slots.iter().map(|s| *s as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [slots.len()]), &device);
        let want = xt.matmul(at.select(0, idx.clone())).matmul(bt.select(0, idx)).try_into_vec_as::<f32>().expect("f32 data");

        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()), "rank {r}, element {i}: bgmv {g} vs tensors {w}");
        }
        // The zero-slot row is exactly zero, and a real row is not.
        assert!(got[t * dout..2 * t * dout].iter().all(|v| *v == 0.0));
        assert!(got[..t * dout].iter().any(|v| *v != 0.0));
    }
}
