//! MinHash locality-sensitive hashing for near-duplicate detection, as DataFusion functions.
//!
//! A document is the set of its word 5-gram shingles: words are maximal runs of letters and digits,
//! lower-cased, so punctuation, case and spacing edits do not change the set. Its MinHash signature
//! keeps, for each of `num_perm` hash permutations, the smallest permuted shingle hash; the
//! fraction of equal positions between two signatures estimates the Jaccard similarity of the
//! shingle sets. LSH splits the signature into `bands` bands of `rows` values and hashes each band
//! into a bucket: two documents become a candidate pair when they share a bucket, which happens with
//! probability `1 - (1 - J^rows)^bands`. With 128 permutations, 16 bands × 8 rows puts the steep
//! part of that S-curve at J ≈ 0.7 (P = 0.95 at J = 0.8, 0.999 at J = 0.9, 0.06 at J = 0.5), so
//! pairs at the 0.8 threshold are rarely missed, and candidates are then confirmed by the estimated
//! Jaccard.
//!
//! Permutations are multiply-add-shift hashes `(a·x + b) >> 32` over 64-bit shingle hashes, with
//! `a`, `b` drawn from a fixed seed: signatures are identical on every machine and run.

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, Float64Builder, ListBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::udf::{arc, arity, coerce_int, coerce_text, const_int, for_each_str, to_array};

/// Default number of permutations of `minhash(text)`.
pub const DEFAULT_NUM_PERM: usize = 128;
/// Words per shingle.
pub const SHINGLE_WORDS: usize = 5;
/// Largest accepted `num_perm`.
pub const MAX_NUM_PERM: usize = 1024;

const SEED: u64 = 0x7472_6962_7574_6172; // "tributar"

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Murmur3's 64-bit finalizer: full avalanche of a 64-bit value.
#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Hash of every word of `text`: maximal runs of alphanumeric characters, lower-cased.
pub fn word_hashes(text: &str, out: &mut Vec<u64>) {
    out.clear();
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    let mut in_word = false;
    let feed = |h: &mut u64, b: u8| {
        *h ^= b as u64;
        *h = h.wrapping_mul(FNV_PRIME);
    };
    if text.is_ascii() {
        for &b in text.as_bytes() {
            if b.is_ascii_alphanumeric() {
                feed(&mut h, b.to_ascii_lowercase());
                in_word = true;
            } else if in_word {
                out.push(fmix64(h));
                h = FNV_OFFSET;
                in_word = false;
            }
        }
    } else {
        let mut buf = [0u8; 4];
        for c in text.chars() {
            if c.is_alphanumeric() {
                for lc in c.to_lowercase() {
                    for &b in lc.encode_utf8(&mut buf).as_bytes() {
                        feed(&mut h, b);
                    }
                }
                in_word = true;
            } else if in_word {
                out.push(fmix64(h));
                h = FNV_OFFSET;
                in_word = false;
            }
        }
    }
    if in_word {
        out.push(fmix64(h));
    }
}

/// Hashes of the word `k`-gram shingles of a document, given its word hashes. A document shorter
/// than `k` words is one shingle of all its words; an empty document has no shingles.
pub fn shingle_hashes(words: &[u64], k: usize, out: &mut Vec<u64>) {
    out.clear();
    if words.is_empty() {
        return;
    }
    let k = k.min(words.len()).max(1);
    for w in words.windows(k) {
        let mut h = 0x5368_696e_676c_6521u64 ^ k as u64;
        for &x in w {
            h = fmix64(h.rotate_left(23) ^ x);
        }
        out.push(h);
    }
}

/// A family of `num_perm` hash permutations; computes MinHash signatures.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    /// The fixed family of `num_perm` permutations (the same on every call).
    pub fn new(num_perm: usize) -> Self {
        let mut state = SEED;
        let mut a = Vec::with_capacity(num_perm);
        let mut b = Vec::with_capacity(num_perm);
        for _ in 0..num_perm {
            a.push(splitmix64(&mut state) | 1);
            b.push(splitmix64(&mut state));
        }
        MinHasher { a, b }
    }

    /// Number of permutations.
    pub fn num_perm(&self) -> usize {
        self.a.len()
    }

    /// The signature of a set of shingle hashes: `num_perm` values, all `u32::MAX` for an empty set.
    pub fn signature_of(&self, shingles: &[u64], sig: &mut [u32]) {
        sig.fill(u32::MAX);
        for &x in shingles {
            for ((s, &a), &b) in sig.iter_mut().zip(&self.a).zip(&self.b) {
                let v = (a.wrapping_mul(x).wrapping_add(b) >> 32) as u32;
                if v < *s {
                    *s = v;
                }
            }
        }
    }

    /// The signature of `text` (word 5-gram shingles).
    pub fn signature(&self, text: &str) -> Vec<u32> {
        let (mut words, mut shingles) = (Vec::new(), Vec::new());
        word_hashes(text, &mut words);
        shingle_hashes(&words, SHINGLE_WORDS, &mut shingles);
        let mut sig = vec![0u32; self.num_perm()];
        self.signature_of(&shingles, &mut sig);
        sig
    }
}

/// Estimated Jaccard similarity: the fraction of positions where two signatures agree.
pub fn jaccard(a: &[u32], b: &[u32]) -> Option<f64> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
    Some(equal as f64 / a.len() as f64)
}

/// The LSH bucket of each band: a hash of (band index, the band's `rows` values).
pub fn band_buckets(sig: &[u32], bands: usize, rows: usize, out: &mut Vec<u64>) {
    out.clear();
    for band in 0..bands {
        out.push(band_bucket(band, &sig[band * rows..(band + 1) * rows]));
    }
}

/// The bucket of one band: a hash of the band index and its signature values.
#[inline]
pub fn band_bucket(band: usize, values: &[u32]) -> u64 {
    let mut h = fmix64(band as u64 ^ 0x4c53_4842_616e_6421);
    for &v in values {
        h = fmix64(h.rotate_left(29) ^ v as u64);
    }
    h
}

/// Exact Jaccard similarity of two texts' shingle sets (tests and benchmarks' ground truth).
pub fn exact_jaccard(a: &str, b: &str) -> f64 {
    let set = |t: &str| {
        let (mut w, mut s) = (Vec::new(), Vec::new());
        word_hashes(t, &mut w);
        shingle_hashes(&w, SHINGLE_WORDS, &mut s);
        s.into_iter().collect::<std::collections::HashSet<u64>>()
    };
    let (x, y) = (set(a), set(b));
    let union = x.union(&y).count();
    if union == 0 { 1.0 } else { x.intersection(&y).count() as f64 / union as f64 }
}

fn sig_from_bytes(bytes: &[u8], out: &mut Vec<u32>) {
    out.clear();
    out.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
}

/// `minhash(text [, num_perm])`: the MinHash signature (little-endian `u32`s) of the word
/// 5-gram shingles of `text`; NULL for NULL text.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MinHashUdf {
    signature: Signature,
}

impl MinHashUdf {
    /// The function.
    pub fn new() -> Self {
        MinHashUdf { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl Default for MinHashUdf {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for MinHashUdf {
    fn name(&self) -> &str {
        "minhash"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [t] => Ok(vec![coerce_text("minhash", t)?]),
            [t, n] => Ok(vec![coerce_text("minhash", t)?, coerce_int("minhash", n)?]),
            _ => plan_err!("minhash(text [, num_perm]) takes 1 or 2 arguments, got {}", args.len()),
        }
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let num_perm = match args.args.get(1) {
            Some(n) => const_int("minhash", n, "num_perm")?,
            None => DEFAULT_NUM_PERM as i64,
        };
        if num_perm < 1 || num_perm as usize > MAX_NUM_PERM {
            return exec_err!("minhash: num_perm must be in 1..={MAX_NUM_PERM}, got {num_perm}");
        }
        let text = to_array(args.args.first().ok_or_else(|| arity("minhash", 0))?, args.number_rows)?;
        let hasher = MinHasher::new(num_perm as usize);
        // Signatures are pure CPU work per row: split a large batch across the cores.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parts = cores.min(text.len() / MIN_ROWS_PER_THREAD).max(1);
        Ok(ColumnarValue::Array(signatures_in_parts(&text, &hasher, parts)?))
    }
}

/// The signatures of `text`, computed on `parts` threads over consecutive slices; the output is the
/// same, in the same order, whatever `parts` is.
fn signatures_in_parts(text: &ArrayRef, hasher: &MinHasher, parts: usize) -> Result<ArrayRef> {
    if parts <= 1 || text.len() < 2 {
        return Ok(arc(signatures(text, hasher)?));
    }
    let chunk = text.len().div_ceil(parts);
    let results: Vec<Result<BinaryArray>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..text.len().div_ceil(chunk))
            .map(|p| {
                let slice = text.slice(p * chunk, chunk.min(text.len() - p * chunk));
                scope.spawn(move || signatures(&slice, hasher))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| exec_err!("minhash: a signature thread panicked"))).collect()
    });
    let parts = results.into_iter().collect::<Result<Vec<_>>>()?;
    let refs: Vec<&dyn Array> = parts.iter().map(|a| a as &dyn Array).collect();
    Ok(arrow::compute::concat(&refs)?)
}

/// Rows below which `minhash` does not start another thread.
const MIN_ROWS_PER_THREAD: usize = 1024;

/// The signatures of every row of `text` (NULL for NULL).
fn signatures(text: &ArrayRef, hasher: &MinHasher) -> Result<BinaryArray> {
    let num_perm = hasher.num_perm();
    let mut out = BinaryBuilder::with_capacity(text.len(), text.len() * num_perm * 4);
    let (mut words, mut shingles) = (Vec::new(), Vec::new());
    let mut sig = vec![0u32; num_perm];
    let mut bytes = Vec::with_capacity(num_perm * 4);
    for_each_str(text, |t| match t {
        None => out.append_null(),
        Some(t) => {
            word_hashes(t, &mut words);
            shingle_hashes(&words, SHINGLE_WORDS, &mut shingles);
            hasher.signature_of(&shingles, &mut sig);
            bytes.clear();
            for v in &sig {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            out.append_value(&bytes);
        }
    })?;
    Ok(out.finish())
}

/// Coerce an argument that must be a `minhash()` signature (binary).
pub(crate) fn binary_arg(fname: &str, t: &DataType) -> Result<DataType> {
    match t {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null => Ok(DataType::Binary),
        other => plan_err!("{fname}: expected a minhash() signature (binary), got {other}"),
    }
}

/// A coerced signature argument as a binary array.
pub(crate) fn binary_values(fname: &str, a: &ArrayRef) -> Result<arrow::array::BinaryArray> {
    match a.data_type() {
        DataType::Binary => Ok(a.as_binary::<i32>().clone()),
        other => exec_err!("{fname}: expected binary, got {other}"),
    }
}

/// `minhash_jaccard(sig_a, sig_b)`: the estimated Jaccard similarity of two signatures (NULL if
/// either is NULL or their lengths differ).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct JaccardUdf {
    signature: Signature,
}

impl JaccardUdf {
    /// The function.
    pub fn new() -> Self {
        JaccardUdf { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl Default for JaccardUdf {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for JaccardUdf {
    fn name(&self) -> &str {
        "minhash_jaccard"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [a, b] => Ok(vec![binary_arg("minhash_jaccard", a)?, binary_arg("minhash_jaccard", b)?]),
            _ => plan_err!("minhash_jaccard(sig_a, sig_b) takes 2 arguments, got {}", args.len()),
        }
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a, b] = args.args.as_slice() else { return Err(arity("minhash_jaccard", args.args.len())) };
        let a = binary_values("minhash_jaccard", &to_array(a, args.number_rows)?)?;
        let b = binary_values("minhash_jaccard", &to_array(b, args.number_rows)?)?;
        let mut out = Float64Builder::with_capacity(a.len());
        let (mut sa, mut sb) = (Vec::new(), Vec::new());
        for i in 0..a.len() {
            if a.is_null(i) || b.is_null(i) {
                out.append_null();
                continue;
            }
            sig_from_bytes(a.value(i), &mut sa);
            sig_from_bytes(b.value(i), &mut sb);
            out.append_option(jaccard(&sa, &sb));
        }
        Ok(ColumnarValue::Array(arc(out.finish())))
    }
}

/// `lsh_buckets(sig, bands, rows)`: one bucket hash per band; rows sharing any bucket (within a
/// partition such as a datanet) are candidate near duplicates. `bands × rows` must not exceed the
/// signature's length.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LshBucketsUdf {
    signature: Signature,
}

impl LshBucketsUdf {
    /// The function.
    pub fn new() -> Self {
        LshBucketsUdf { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl Default for LshBucketsUdf {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for LshBucketsUdf {
    fn name(&self) -> &str {
        "lsh_buckets"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [s, b, r] => Ok(vec![
                binary_arg("lsh_buckets", s)?,
                coerce_int("lsh_buckets", b)?,
                coerce_int("lsh_buckets", r)?,
            ]),
            _ => plan_err!("lsh_buckets(sig, bands, rows) takes 3 arguments, got {}", args.len()),
        }
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(std::sync::Arc::new(Field::new("item", DataType::UInt64, true))))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [s, b, r] = args.args.as_slice() else { return Err(arity("lsh_buckets", args.args.len())) };
        let bands = const_int("lsh_buckets", b, "bands")?;
        let rows = const_int("lsh_buckets", r, "rows")?;
        if bands < 1 || rows < 1 {
            return exec_err!("lsh_buckets: bands and rows must be ≥ 1, got {bands} × {rows}");
        }
        let (bands, rows) = (bands as usize, rows as usize);
        let sigs = binary_values("lsh_buckets", &to_array(s, args.number_rows)?)?;
        let mut out = ListBuilder::with_capacity(UInt64Builder::with_capacity(sigs.len() * bands), sigs.len());
        let (mut sig, mut buckets) = (Vec::new(), Vec::new());
        for i in 0..sigs.len() {
            if sigs.is_null(i) {
                out.append_null();
                continue;
            }
            sig_from_bytes(sigs.value(i), &mut sig);
            if bands * rows > sig.len() {
                return exec_err!(
                    "lsh_buckets: {bands} bands × {rows} rows need {} signature values, the signature has {}",
                    bands * rows,
                    sig.len()
                );
            }
            band_buckets(&sig, bands, rows, &mut buckets);
            out.values().append_slice(&buckets);
            out.append(true);
        }
        Ok(ColumnarValue::Array(arc(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_split_across_threads_equal_one_pass() {
        use std::sync::Arc;
        let texts: Vec<Option<String>> = (0..2500)
            .map(|i| (i % 97 != 0).then(|| format!("document {i} about topic {} with words {} and {}", i % 13, i * 7, i % 5)))
            .collect();
        let text: ArrayRef = Arc::new(arrow::array::StringArray::from(texts));
        let hasher = MinHasher::new(64);
        let one = signatures_in_parts(&text, &hasher, 1).expect("one pass");
        for parts in [2, 3, 7] {
            let split = signatures_in_parts(&text, &hasher, parts).expect("split");
            assert_eq!(split.as_ref(), one.as_ref(), "{parts} parts");
        }
        assert_eq!(one.null_count(), 26, "NULL text stays NULL");
        let one = one.as_binary::<i32>();
        assert_eq!(one.value(5), hasher.signature("document 5 about topic 5 with words 35 and 0").iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    }

    #[test]
    fn words_ignore_case_punctuation_and_spacing() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        word_hashes("Hello,   World! 42", &mut a);
        word_hashes("hello world 42.", &mut b);
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        word_hashes("Ünïcode wörds ÄND", &mut a);
        word_hashes("ünïcode Wörds änd", &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn estimate_tracks_exact_jaccard() {
        let h = MinHasher::new(256);
        let base: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let a = base.join(" ");
        let mut edited = base.clone();
        for i in (0..200).step_by(40) {
            edited[i] = format!("x{i}");
        }
        let b = edited.join(" ");
        let exact = exact_jaccard(&a, &b);
        let est = jaccard(&h.signature(&a), &h.signature(&b)).expect("same length");
        assert!((exact - est).abs() < 0.08, "exact {exact} vs estimate {est}");
        assert_eq!(jaccard(&h.signature(&a), &h.signature(&a)), Some(1.0));
    }

    #[test]
    fn signatures_are_deterministic_and_short_texts_work() {
        let h = MinHasher::new(128);
        assert_eq!(h.signature("one two"), MinHasher::new(128).signature("one two"));
        assert_ne!(h.signature("one two"), h.signature("two one"));
        assert!(h.signature("").iter().all(|&v| v == u32::MAX));
    }

    #[test]
    fn identical_signatures_share_every_bucket() {
        let h = MinHasher::new(128);
        let s = h.signature("the quick brown fox jumps over the lazy dog again and again");
        let (mut x, mut y) = (Vec::new(), Vec::new());
        band_buckets(&s, 16, 8, &mut x);
        band_buckets(&s.clone(), 16, 8, &mut y);
        assert_eq!(x, y);
        assert_eq!(x.len(), 16);
        // Different bands of equal values still land in different buckets.
        band_buckets(&[7u32; 16], 2, 8, &mut x);
        assert_ne!(x[0], x[1]);
    }
}
