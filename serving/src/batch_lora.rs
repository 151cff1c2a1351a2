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

/// Stacked factors of the adapters resident in compute memory.
#[derive(Debug)]
pub struct ActiveSet {
    device: Device,
    slots: usize,
    rank: usize,
    dims: BTreeMap<LoraTarget, (usize, usize)>,
    stacks: BTreeMap<Site, Stack>,
    slot_sites: Vec<BTreeSet<Site>>,
}

impl ActiveSet {
    /// An empty set with `capacity` adapter slots (plus the zero slot) for `model`.
    pub fn new(model: &LlamaModel, capacity: usize) -> ActiveSet {
        let dims = LoraTarget::ALL.iter().map(|t| (*t, model.projection_dims(*t))).collect();
        ActiveSet {
            device: model.device(),
            slots: capacity + 1,
            rank: 0,
            dims,
            stacks: BTreeMap::new(),
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
            _ => {
                let idx: Vec<i64> = row_slots.iter().map(|s| *s as i64).collect();
                let n = idx.len();
                Rows::Gathered(Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &self.device))
            }
        };
        Some(BatchLora { set: self, rows, sites })
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
