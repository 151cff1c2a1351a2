//! `lsh_clusters(ord, signature, bands, rows, threshold)`: MinHash LSH near-duplicate clustering as
//! one aggregate.
//!
//! The same answer as the four-step SQL formulation (`unnest(lsh_buckets(..))`, a self-join on the
//! bucket, `minhash_jaccard(..) >= threshold`, `connected_components(a, b)`), computed in one pass
//! over the group's signatures instead of materialising every band bucket and candidate pair as
//! rows:
//!
//! 1. every row's `bands` bucket hashes (the same hashes as `lsh_buckets`) go into one vector of
//!    `(bucket, row)` keys, sorted so that rows sharing a bucket are adjacent;
//! 2. within each shared bucket every pair is a candidate; a pair is confirmed when its estimated
//!    Jaccard similarity (the fraction of equal signature values, as `minhash_jaccard`) is at
//!    least `threshold`, and confirmed pairs are joined in a union–find;
//! 3. a pair whose rows are already in one component is not compared again: another edge inside a
//!    component cannot change the components, so the result equals the connected components of
//!    all confirmed pairs.
//!
//! The result lists, for every row in a cluster of two or more, its ordinal and the cluster's
//! root, the smallest ordinal (the earliest row when ordinals follow ingestion order), in the
//! `List<Struct<node, root>>` shape of `connected_components`. Rows without a near duplicate are
//! not listed.
//!
//! ```sql
//! SELECT datanet, unnest(lsh_clusters(ord, minhash(text, 128), 16, 8, 0.8)) AS m
//! FROM docs GROUP BY datanet       -- m['node'], m['root']
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array, StructArray};
use arrow::compute::concat;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use super::components::{member_fields, return_type};
use super::minhash::{band_bucket, binary_arg, binary_values};
use super::udf::coerce_int;

const NAME: &str = "lsh_clusters";

/// The `lsh_clusters(ord, signature, bands, rows, threshold)` aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LshClusters {
    signature: Signature,
}

impl LshClusters {
    /// The function.
    pub fn new() -> Self {
        LshClusters { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl Default for LshClusters {
    fn default() -> Self {
        Self::new()
    }
}

impl AggregateUDFImpl for LshClusters {
    fn name(&self) -> &str {
        NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let [ord, sig, bands, rows, threshold] = args else {
            return plan_err!("{NAME}(ord, signature, bands, rows, threshold) takes 5 arguments, got {}", args.len());
        };
        let sig = binary_arg(NAME, sig)?;
        if !(threshold.is_numeric() || *threshold == DataType::Null) {
            return plan_err!("{NAME}: threshold must be a number, got {threshold}");
        }
        Ok(vec![coerce_int(NAME, ord)?, sig, coerce_int(NAME, bands)?, coerce_int(NAME, rows)?, DataType::Float64])
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(return_type())
    }
    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(LshAccumulator::default()))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
        Ok(vec![
            Arc::new(Field::new(format_state_name(args.name, "ord"), list(DataType::Int64), true)),
            Arc::new(Field::new(format_state_name(args.name, "signature"), list(DataType::Binary), true)),
            Arc::new(Field::new(format_state_name(args.name, "bands"), DataType::Int64, true)),
            Arc::new(Field::new(format_state_name(args.name, "rows"), DataType::Int64, true)),
            Arc::new(Field::new(format_state_name(args.name, "threshold"), DataType::Float64, true)),
        ])
    }
}

/// LSH parameters, the same for every row of a call.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Params {
    bands: usize,
    rows: usize,
    threshold: f64,
}

/// Keeps the group's ordinals and signatures as the arrays they arrived in (no copy).
#[derive(Debug, Default)]
struct LshAccumulator {
    ords: Vec<Int64Array>,
    sigs: Vec<BinaryArray>,
    params: Option<Params>,
}

impl LshAccumulator {
    fn set_params(&mut self, bands: Option<i64>, rows: Option<i64>, threshold: Option<f64>) -> Result<()> {
        let (Some(bands), Some(rows), Some(threshold)) = (bands, rows, threshold) else {
            return exec_err!("{NAME}: bands, rows and threshold must not be NULL");
        };
        if bands < 1 || rows < 1 {
            return exec_err!("{NAME}: bands and rows must be ≥ 1, got {bands} × {rows}");
        }
        if !(0.0..=1.0).contains(&threshold) {
            return exec_err!("{NAME}: threshold must be in [0, 1], got {threshold}");
        }
        let p = Params { bands: bands as usize, rows: rows as usize, threshold };
        match self.params {
            Some(old) if old != p => exec_err!("{NAME}: bands, rows and threshold must be the same for every row"),
            _ => {
                self.params = Some(p);
                Ok(())
            }
        }
    }
}

fn typed<'a, T: arrow::datatypes::ArrowPrimitiveType>(what: &str, a: &'a ArrayRef) -> Result<&'a arrow::array::PrimitiveArray<T>> {
    a.as_primitive_opt::<T>().map_or_else(|| exec_err!("{NAME}: {what} has type {}", a.data_type()), Ok)
}

impl Accumulator for LshAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [ord, sig, bands, rows, threshold] = values else { return exec_err!("{NAME}: expected 5 arguments") };
        if ord.is_empty() {
            return Ok(());
        }
        let (b, r, t) = (typed::<Int64Type>("bands", bands)?, typed::<Int64Type>("rows", rows)?, typed::<Float64Type>("threshold", threshold)?);
        self.set_params(b.is_valid(0).then(|| b.value(0)), r.is_valid(0).then(|| r.value(0)), t.is_valid(0).then(|| t.value(0)))?;
        self.ords.push(typed::<Int64Type>("ord", ord)?.clone());
        self.sigs.push(binary_values(NAME, sig)?);
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [ords, sigs, bands, rows, threshold] = states else { return exec_err!("{NAME}: expected 5 state columns") };
        let (ords, sigs) = (ords.as_list::<i32>(), sigs.as_list::<i32>());
        let (b, r, t) = (typed::<Int64Type>("bands", bands)?, typed::<Int64Type>("rows", rows)?, typed::<Float64Type>("threshold", threshold)?);
        for row in 0..ords.len() {
            if ords.is_null(row) || sigs.is_null(row) || b.is_null(row) {
                continue; // a partial state that saw no rows
            }
            self.set_params(Some(b.value(row)), r.is_valid(row).then(|| r.value(row)), t.is_valid(row).then(|| t.value(row)))?;
            self.ords.push(typed::<Int64Type>("state ord", &ords.value(row))?.clone());
            self.sigs.push(binary_values(NAME, &sigs.value(row))?);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let Some(p) = self.params else {
            return Ok(vec![
                ScalarValue::new_null_list(DataType::Int64, true, 1),
                ScalarValue::new_null_list(DataType::Binary, true, 1),
                ScalarValue::Int64(None),
                ScalarValue::Int64(None),
                ScalarValue::Float64(None),
            ]);
        };
        let ords: Vec<&dyn Array> = self.ords.iter().map(|a| a as &dyn Array).collect();
        let sigs: Vec<&dyn Array> = self.sigs.iter().map(|a| a as &dyn Array).collect();
        let (ords, sigs) = (concat(&ords)?, concat(&sigs)?);
        self.ords.clear();
        self.sigs.clear();
        Ok(vec![
            SingleRowListArrayBuilder::new(ords).build_list_scalar(),
            SingleRowListArrayBuilder::new(sigs).build_list_scalar(),
            ScalarValue::Int64(Some(p.bands as i64)),
            ScalarValue::Int64(Some(p.rows as i64)),
            ScalarValue::Float64(Some(p.threshold)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut rows: Vec<(i64, &[u8])> = Vec::new();
        for (ords, sigs) in self.ords.iter().zip(&self.sigs) {
            for i in 0..ords.len() {
                if ords.is_valid(i) && sigs.is_valid(i) {
                    rows.push((ords.value(i), sigs.value(i)));
                }
            }
        }
        let members = match self.params {
            Some(p) => clusters(&rows, p)?,
            None => Vec::new(),
        };
        let nodes: ArrayRef = Arc::new(Int64Array::from_iter_values(members.iter().map(|m| m.0)));
        let roots: ArrayRef = Arc::new(Int64Array::from_iter_values(members.iter().map(|m| m.1)));
        let list = StructArray::try_new(member_fields(), vec![nodes, roots], None)?;
        Ok(SingleRowListArrayBuilder::new(Arc::new(list)).build_list_scalar())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.ords.iter().map(|a| a.get_array_memory_size()).sum::<usize>()
            + self.sigs.iter().map(|a| a.get_array_memory_size()).sum::<usize>()
    }
}

/// Union–find over row indexes whose root is the member with the smallest ordinal.
struct Forest<'a> {
    parent: Vec<u32>,
    ord: &'a [i64],
}

impl Forest<'_> {
    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    fn union(&mut self, rx: u32, ry: u32) {
        if self.ord[rx as usize] <= self.ord[ry as usize] {
            self.parent[ry as usize] = rx;
        } else {
            self.parent[rx as usize] = ry;
        }
    }
}

/// The fraction of equal 32-bit values of two signatures of equal length: [`super::minhash::jaccard`]
/// on the signatures' little-endian bytes, without decoding them.
fn estimated_jaccard(a: &[u8], b: &[u8]) -> f64 {
    let equal = a.chunks_exact(4).zip(b.chunks_exact(4)).filter(|(x, y)| x == y).count();
    equal as f64 / (a.len() / 4) as f64
}

/// `(node, root)` for every row in a cluster of two or more, sorted by node.
fn clusters(rows: &[(i64, &[u8])], p: Params) -> Result<Vec<(i64, i64)>> {
    let Some(&(_, first)) = rows.first() else { return Ok(Vec::new()) };
    let len = first.len();
    if len == 0 || len % 4 != 0 || rows.iter().any(|(_, s)| s.len() != len) {
        return exec_err!("{NAME}: signatures must be minhash() values of one length");
    }
    if p.bands * p.rows > len / 4 {
        return exec_err!(
            "{NAME}: {} bands × {} rows need {} signature values, the signature has {}",
            p.bands,
            p.rows,
            p.bands * p.rows,
            len / 4
        );
    }
    if rows.len() > u32::MAX as usize {
        return exec_err!("{NAME}: more than {} rows in one group", u32::MAX);
    }
    let mut keys: Vec<(u64, u32)> = Vec::with_capacity(rows.len() * p.bands);
    let mut values = vec![0u32; p.rows];
    for (i, (_, sig)) in rows.iter().enumerate() {
        for band in 0..p.bands {
            let start = band * p.rows * 4;
            for (v, c) in values.iter_mut().zip(sig[start..start + p.rows * 4].chunks_exact(4)) {
                *v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            keys.push((band_bucket(band, &values), i as u32));
        }
    }
    keys.sort_unstable();

    let ord: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let mut forest = Forest { parent: (0..rows.len() as u32).collect(), ord: &ord };
    for bucket in keys.chunk_by(|a, b| a.0 == b.0).filter(|b| b.len() > 1) {
        for j in 1..bucket.len() {
            let y = bucket[j].1;
            for &(_, x) in &bucket[..j] {
                let (rx, ry) = (forest.find(x), forest.find(y));
                if rx != ry && estimated_jaccard(rows[x as usize].1, rows[y as usize].1) >= p.threshold {
                    forest.union(rx, ry);
                }
            }
        }
    }

    let roots: Vec<u32> = (0..rows.len() as u32).map(|i| forest.find(i)).collect();
    let mut size = vec![0u32; rows.len()];
    for &r in &roots {
        size[r as usize] += 1;
    }
    let mut out: Vec<(i64, i64)> =
        (0..rows.len()).filter(|&i| size[roots[i] as usize] > 1).map(|i| (ord[i], ord[roots[i] as usize])).collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::components::Components;
    use crate::models::minhash::{MinHasher, band_buckets, jaccard};

    fn sig_bytes(sig: &[u32]) -> Vec<u8> {
        sig.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The four-step SQL formulation, spelled out: every pair sharing a bucket, confirmed by
    /// estimated Jaccard, then connected components.
    fn reference(sigs: &[Vec<u32>], p: Params) -> Vec<(i64, i64)> {
        let buckets: Vec<Vec<u64>> = sigs
            .iter()
            .map(|s| {
                let mut b = Vec::new();
                band_buckets(s, p.bands, p.rows, &mut b);
                b
            })
            .collect();
        let mut cc = Components::default();
        for a in 0..sigs.len() {
            for b in a + 1..sigs.len() {
                let share = buckets[a].iter().any(|x| buckets[b].contains(x));
                if share && jaccard(&sigs[a], &sigs[b]).unwrap_or(0.0) >= p.threshold {
                    cc.add_edge(a as i64, b as i64);
                }
            }
        }
        cc.roots()
    }

    #[test]
    fn equals_pairwise_candidates_then_components() {
        let hasher = MinHasher::new(128);
        let base = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat by the door";
        let mut texts: Vec<String> = Vec::new();
        for i in 0..60 {
            let t = match i % 4 {
                0 => format!("{base} number {i}"),
                1 => format!("{base} number {}", i - 1).replace("lazy", "sleepy"),
                2 => format!("entirely different words about topic {i} and nothing else in common at all {i}"),
                _ => base.replace("warm", "cold").replace("door", "window"),
            };
            texts.push(t);
        }
        let sigs: Vec<Vec<u32>> = texts.iter().map(|t| hasher.signature(t)).collect();
        let bytes: Vec<Vec<u8>> = sigs.iter().map(|s| sig_bytes(s)).collect();
        for threshold in [0.5, 0.8, 0.95] {
            let p = Params { bands: 16, rows: 8, threshold };
            let rows: Vec<(i64, &[u8])> = bytes.iter().enumerate().map(|(i, b)| (i as i64, b.as_slice())).collect();
            let got = clusters(&rows, p).expect("clusters");
            let want: Vec<(i64, i64)> = {
                let all = reference(&sigs, p);
                let mut size = std::collections::HashMap::new();
                for (_, r) in &all {
                    *size.entry(*r).or_insert(0) += 1;
                }
                all.into_iter().filter(|(_, r)| size[r] > 1).collect()
            };
            assert_eq!(got, want, "threshold {threshold}");
            assert!(!got.is_empty(), "the planted near duplicates cluster at {threshold}");
        }
    }

    #[test]
    fn roots_are_the_smallest_ordinal_whatever_the_input_order() {
        let hasher = MinHasher::new(128);
        let text = "a b c d e f g h i j k l m n o p q r s t u v w x y z";
        let s = sig_bytes(&hasher.signature(text));
        let rows: Vec<(i64, &[u8])> = vec![(42, &s), (7, &s), (19, &s)];
        let p = Params { bands: 16, rows: 8, threshold: 0.8 };
        assert_eq!(clusters(&rows, p).expect("clusters"), vec![(7, 7), (19, 7), (42, 7)]);
    }

    #[test]
    fn bad_parameters_and_signatures_are_errors() {
        let s = vec![0u8; 64]; // 16 values
        let rows: Vec<(i64, &[u8])> = vec![(1, &s), (2, &s)];
        let err = clusters(&rows, Params { bands: 16, rows: 8, threshold: 0.8 }).expect_err("too few values");
        assert!(err.to_string().contains("need 128 signature values"), "{err}");
        let short = vec![0u8; 60];
        let mixed: Vec<(i64, &[u8])> = vec![(1, &s), (2, &short)];
        assert!(clusters(&mixed, Params { bands: 2, rows: 8, threshold: 0.8 }).is_err());
        let mut acc = LshAccumulator::default();
        assert!(acc.set_params(Some(16), Some(8), Some(1.5)).is_err());
        assert!(acc.set_params(Some(0), Some(8), Some(0.8)).is_err());
        acc.set_params(Some(16), Some(8), Some(0.8)).expect("valid");
        assert!(acc.set_params(Some(8), Some(16), Some(0.8)).is_err(), "parameters must not change between rows");
    }
}
