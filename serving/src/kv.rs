//! The running batch's key/value cache, with rows of different lengths.
//!
//! Per layer the keys and values are `[rows, kv_heads, columns, head_dim]`. Row `r`'s tokens are
//! right-aligned: they occupy columns `start[r]..columns`, so every decode step appends one column
//! for all rows and each row's history stays contiguous. Rows of different lengths are padded on
//! the left and the padding is masked out; positions (rotary) are per row and independent of the
//! column. Rows join by concatenation (the shorter side padded on the left) and leave by selection;
//! columns no remaining row uses are then cut off, so padding never outlives the rows that needed it.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use tributary_jobs::model::KvCache;

/// Keys and values of the running rows.
#[derive(Debug, Clone, Default)]
pub struct BatchKv {
    layers: Vec<(Tensor<4>, Tensor<4>)>,
    start: Vec<usize>,
    cols: usize,
}

fn pad_left(t: Tensor<4>, by: usize) -> Tensor<4> {
    if by == 0 {
        return t;
    }
    let [b, h, _, d] = t.dims();
    let z = Tensor::<4>::zeros([b, h, by, d], &t.device());
    Tensor::cat(vec![z, t], 2)
}

impl BatchKv {
    /// The cache a prefill produced: row `r`'s prompt occupies columns `start[r]..`.
    pub fn from_prefill(cache: KvCache, start: Vec<usize>) -> BatchKv {
        let layers = cache.into_layers();
        let cols = layers.first().map(|(k, _)| k.dims()[2]).unwrap_or(0);
        BatchKv { layers, start, cols }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.start.len()
    }

    /// Columns held (the longest row plus any padding still needed).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Add `other`'s rows after this batch's rows.
    pub fn append(&mut self, mut other: BatchKv) {
        if self.rows() == 0 {
            *self = other;
            return;
        }
        if other.rows() == 0 {
            return;
        }
        let cols = self.cols.max(other.cols);
        let (da, db) = (cols - self.cols, cols - other.cols);
        self.start.iter_mut().for_each(|s| *s += da);
        other.start.iter_mut().for_each(|s| *s += db);
        let layers = std::mem::take(&mut self.layers);
        self.layers = layers
            .into_iter()
            .zip(other.layers)
            .map(|((k, v), (ok, ov))| {
                (
                    Tensor::cat(vec![pad_left(k, da), pad_left(ok, db)], 0),
                    Tensor::cat(vec![pad_left(v, da), pad_left(ov, db)], 0),
                )
            })
            .collect();
        self.start.extend(other.start);
        self.cols = cols;
    }

    /// Keep only the rows `keep` (increasing indices), then drop columns no row uses.
    pub fn retain(&mut self, keep: &[usize], device: &Device) {
        if keep.len() == self.rows() {
            return;
        }
        if keep.is_empty() {
            *self = BatchKv::default();
            return;
        }
        let idx: Vec<i64> = keep.iter().map(|i| *i as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [keep.len()]), device);
        self.layers = std::mem::take(&mut self.layers)
            .into_iter()
            .map(|(k, v)| (k.select(0, idx.clone()), v.select(0, idx.clone())))
            .collect();
        self.start = keep.iter().map(|i| self.start[*i]).collect();
        let unused = self.start.iter().copied().min().unwrap_or(0);
        if unused > 0 {
            let cols = self.cols - unused;
            self.layers =
                std::mem::take(&mut self.layers).into_iter().map(|(k, v)| (k.narrow(2, unused, cols), v.narrow(2, unused, cols))).collect();
            self.start.iter_mut().for_each(|s| *s -= unused);
            self.cols = cols;
        }
    }

    /// The attention mask of a decode step (one new token per row): `[rows, 1, 1, columns + 1]`,
    /// `true` on each row's left padding.
    pub fn decode_mask(&self, device: &Device) -> Tensor<4, Bool> {
        let total = self.cols + 1;
        let data: Vec<bool> = self.start.iter().flat_map(|s| (0..total).map(move |c| c < *s)).collect();
        Tensor::<4, Bool>::from_data(TensorData::new(data, [self.rows(), 1, 1, total]), device)
    }

    /// Lend the tensors to the model for one forward pass.
    pub fn take_cache(&mut self) -> KvCache {
        KvCache::from_layers(std::mem::take(&mut self.layers))
    }

    /// Take the tensors back after a decode step appended one column.
    pub fn put_cache(&mut self, cache: KvCache) {
        self.layers = cache.into_layers();
        self.cols = self.layers.first().map(|(k, _)| k.dims()[2]).unwrap_or(0);
    }
}

/// The mask of a prefill whose row `r` is left-padded to start at column `start[r]`:
/// `[rows, 1, len, len]`, `true` where query `t` must not see key `u` (`u > t` or `u` is padding).
pub fn prefill_mask(start: &[usize], len: usize, device: &Device) -> Tensor<4, Bool> {
    let data: Vec<bool> =
        start.iter().flat_map(|s| (0..len).flat_map(move |t| (0..len).map(move |u| u > t || u < *s))).collect();
    Tensor::<4, Bool>::from_data(TensorData::new(data, [start.len(), 1, len, len]), device)
}
