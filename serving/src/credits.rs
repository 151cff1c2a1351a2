//! Per-inference attribution: which contributors' training rows a generated answer reproduces.
//!
//! When an adapter is published, its training rows (`gold.training_set` at the Delta version its
//! `adapter.json` records, minus the held-out validation rows) are tokenized with the base model's
//! tokenizer, concatenated with a separator, and indexed by a suffix array, as infini-gram does
//! for its ∞-gram counts. The index is stored beside the adapter as `credits.index`.
//!
//! For each finished request the generated tokens are scanned left to right: at each position
//! the longest span that occurs somewhere in the training rows is found by narrowing the suffix
//! array interval one token at a time. A span of at least `min_span` tokens is a reproduction; its
//! tokens are shared equally among the distinct rows that contain it, and each row's share goes to
//! its contributor. A contributor's weight is the fraction of the answer's tokens credited to
//! them, so weights sum to at most 1 and the rest of the answer is credited to no one.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tributary_jobs::adapter_store::AdapterRecord;
use tributary_jobs::dataset::{self, TrainingSet, ValidationSource};
use tributary_jobs::tokenizer::Tokenizer;
use tributary_pipeline::{Tables, Warehouse};

use crate::adapter_cache::AdapterKey;
use crate::error::{Error, Result};

/// File name of the index inside the adapter folder.
pub const FILE: &str = "credits.index";
/// Format tag in the index header.
pub const FORMAT: &str = "tributary-credits/1";
const MAGIC: &[u8; 8] = b"TRBCRED1";
/// Separator between rows: never a real token, so no match crosses a row boundary.
const SEP: u32 = u32::MAX;
/// Occurrences of one span examined to find the rows holding it.
const MAX_OCCURRENCES: usize = 1024;

/// What the index was built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexHeader {
    /// [`FORMAT`].
    pub format: String,
    /// Datanet.
    pub datanet: String,
    /// Adapter version.
    pub version: String,
    /// `gold.training_set` Delta version read.
    pub training_set_version: i64,
    /// Rows indexed.
    pub rows: usize,
    /// Tokens indexed (separators included).
    pub tokens: usize,
    /// Distinct contributors; rows refer to them by position.
    pub contributors: Vec<String>,
}

/// A suffix array over the training rows of one adapter.
#[derive(Debug, Clone)]
pub struct CreditIndex {
    header: IndexHeader,
    tokens: Vec<u32>,
    sa: Vec<u32>,
    row_start: Vec<u32>,
    row_contributor: Vec<u32>,
}

/// One contributor's share of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credit {
    /// The contributor's `0x` address.
    pub address: String,
    /// Fraction of the answer's tokens reproduced from their rows.
    pub weight: f64,
}

/// The attribution of one answer (the response's `attribution` field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// `matched` (an index was searched), `no_index` (the adapter has none), `base_model`.
    pub status: String,
    /// Generated tokens inside reproduced spans.
    pub matched_tokens: usize,
    /// Reproduced spans found.
    pub spans: usize,
    /// Contributors and weights, largest first.
    pub contributors: Vec<Credit>,
}

impl Attribution {
    /// No attribution possible (`status` says why).
    pub fn none(status: &str) -> Attribution {
        Attribution { status: status.to_string(), matched_tokens: 0, spans: 0, contributors: vec![] }
    }
}

/// One training row to index.
#[derive(Debug, Clone)]
pub struct IndexRow {
    /// Its contributor.
    pub contributor: String,
    /// Its tokens.
    pub tokens: Vec<u32>,
}

impl CreditIndex {
    /// Build the index of `rows`.
    pub fn build(header: IndexHeader, rows: &[IndexRow]) -> CreditIndex {
        let mut contributors: Vec<String> =
            rows.iter().map(|r| r.contributor.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        contributors.sort();
        let position: BTreeMap<&str, u32> =
            contributors.iter().enumerate().map(|(i, c)| (c.as_str(), i as u32)).collect();
        let mut tokens = Vec::with_capacity(rows.iter().map(|r| r.tokens.len() + 1).sum());
        let mut row_start = Vec::with_capacity(rows.len());
        let mut row_contributor = Vec::with_capacity(rows.len());
        for r in rows {
            row_start.push(tokens.len() as u32);
            row_contributor.push(position[r.contributor.as_str()]);
            tokens.extend(r.tokens.iter().copied().filter(|t| *t != SEP));
            tokens.push(SEP);
        }
        let sa = suffix_array(&tokens);
        let header = IndexHeader { rows: rows.len(), tokens: tokens.len(), contributors: contributors.clone(), ..header };
        CreditIndex { header, tokens, sa, row_start, row_contributor }
    }

    /// What it was built from.
    pub fn header(&self) -> &IndexHeader {
        &self.header
    }

    /// The token at offset `m` of suffix `x` of the array (`-1` past the end).
    fn token_at(&self, x: usize, m: usize) -> i64 {
        let p = self.sa[x] as usize + m;
        if p < self.tokens.len() { self.tokens[p] as i64 } else { -1 }
    }

    /// Longest prefix of `pattern` occurring in the rows: its length and suffix-array interval.
    pub fn longest_match(&self, pattern: &[u32]) -> (usize, usize, usize) {
        let (mut lo, mut hi, mut m) = (0usize, self.sa.len(), 0usize);
        while m < pattern.len() && pattern[m] != SEP {
            let c = pattern[m] as i64;
            let new_lo = lo + partition(hi - lo, |i| self.token_at(lo + i, m) < c);
            let new_hi = new_lo + partition(hi - new_lo, |i| self.token_at(new_lo + i, m) <= c);
            if new_lo == new_hi {
                break;
            }
            (lo, hi, m) = (new_lo, new_hi, m + 1);
        }
        (m, lo, hi)
    }

    /// How many times `pattern` occurs in the rows (its ∞-gram count).
    pub fn count(&self, pattern: &[u32]) -> usize {
        let (m, lo, hi) = self.longest_match(pattern);
        if m == pattern.len() { hi - lo } else { 0 }
    }

    fn row_of(&self, position: u32) -> usize {
        self.row_start.partition_point(|s| *s <= position).saturating_sub(1)
    }

    /// Attribute `generated` tokens: spans of at least `min_span` tokens found in the rows.
    pub fn attribute(&self, generated: &[u32], min_span: usize) -> Attribution {
        let min_span = min_span.max(1);
        let mut per_contributor: BTreeMap<u32, f64> = BTreeMap::new();
        let (mut i, mut matched, mut spans) = (0, 0, 0);
        while i < generated.len() {
            let (m, lo, hi) = self.longest_match(&generated[i..]);
            if m < min_span {
                i += 1;
                continue;
            }
            let rows: BTreeSet<usize> = (lo..hi.min(lo + MAX_OCCURRENCES)).map(|x| self.row_of(self.sa[x])).collect();
            let share = m as f64 / rows.len().max(1) as f64;
            for r in rows {
                *per_contributor.entry(self.row_contributor[r]).or_default() += share;
            }
            matched += m;
            spans += 1;
            i += m;
        }
        let total = generated.len().max(1) as f64;
        let mut contributors: Vec<Credit> = per_contributor
            .into_iter()
            .map(|(c, tokens)| Credit { address: self.header.contributors[c as usize].clone(), weight: tokens / total })
            .collect();
        contributors.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.address.cmp(&b.address)));
        Attribution { status: "matched".into(), matched_tokens: matched, spans, contributors }
    }

    /// Serialize: magic, header length and JSON header, the four arrays (little-endian `u32`),
    /// then the sha256 of everything before it.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = serde_json::to_vec(&self.header)?;
        let arrays = [&self.tokens, &self.sa, &self.row_start, &self.row_contributor];
        let mut out = Vec::with_capacity(16 + header.len() + arrays.iter().map(|a| a.len() * 4).sum::<usize>() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        for a in arrays {
            for v in a.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        Ok(out)
    }

    /// Parse [`CreditIndex::to_bytes`] output, checking its digest and consistency.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<CreditIndex> {
        let bad = |reason: String| Error::CreditIndex { path: path.to_string(), reason };
        if bytes.len() < MAGIC.len() + 4 + 32 || &bytes[..8] != MAGIC {
            return Err(bad("not a credits index (bad magic or truncated)".into()));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(bad("checksum mismatch (corrupt or truncated)".into()));
        }
        let hlen = u32::from_le_bytes([body[8], body[9], body[10], body[11]]) as usize;
        let header_bytes = body.get(12..12 + hlen).ok_or_else(|| bad("header runs past the end".into()))?;
        let header: IndexHeader = serde_json::from_slice(header_bytes).map_err(|e| bad(format!("header: {e}")))?;
        if header.format != FORMAT {
            return Err(bad(format!("format `{}` is not `{FORMAT}`", header.format)));
        }
        let mut words = body[12 + hlen..].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        let n = header.tokens;
        let expected = 2 * n + 2 * header.rows;
        if body.len() - 12 - hlen != expected * 4 {
            return Err(bad(format!("expected {expected} words for {n} tokens and {} rows", header.rows)));
        }
        let mut take = |k: usize| words.by_ref().take(k).collect::<Vec<u32>>();
        let (tokens, sa, row_start, row_contributor) = (take(n), take(n), take(header.rows), take(header.rows));
        if sa.iter().any(|p| *p as usize >= n) || row_contributor.iter().any(|c| *c as usize >= header.contributors.len()) {
            return Err(bad("an offset is out of range".into()));
        }
        Ok(CreditIndex { header, tokens, sa, row_start, row_contributor })
    }
}

/// Binary search: the number of leading indices in `0..len` for which `pred` holds (pred must be
/// true then false).
fn partition(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

/// Suffix array by prefix doubling (Manber–Myers with comparison sorts): O(n log² n).
pub fn suffix_array(tokens: &[u32]) -> Vec<u32> {
    let n = tokens.len();
    let mut sa: Vec<u32> = (0..n as u32).collect();
    if n < 2 {
        return sa;
    }
    let mut rank: Vec<u64> = tokens.iter().map(|t| *t as u64).collect();
    let mut next = vec![0u64; n];
    let mut k = 1;
    loop {
        let key = |i: u32| {
            let i = i as usize;
            (rank[i], if i + k < n { rank[i + k] + 1 } else { 0 })
        };
        sa.sort_unstable_by_key(|&i| key(i));
        next[sa[0] as usize] = 0;
        for w in 1..n {
            let bump = u64::from(key(sa[w]) != key(sa[w - 1]));
            next[sa[w] as usize] = next[sa[w - 1] as usize] + bump;
        }
        std::mem::swap(&mut rank, &mut next);
        if rank[sa[n - 1] as usize] as usize == n - 1 || k >= n {
            return sa;
        }
        k *= 2;
    }
}

/// Read the index beside `key`, if there is one.
pub async fn load(warehouse: &Warehouse, key: &AdapterKey) -> Result<Option<CreditIndex>> {
    let dir = key.dir(warehouse);
    let Some(bytes) = dir.get(FILE).await? else { return Ok(None) };
    let path = dir.key(FILE).to_string();
    let index = tokio::task::spawn_blocking(move || CreditIndex::from_bytes(&bytes, &path))
        .await
        .map_err(|e| Error::Internal(format!("credits index parse task: {e}")))??;
    Ok(Some(index))
}

/// Build and store the index of `record`'s training rows unless it exists. Returns whether it was
/// built now.
pub async fn ensure(warehouse: &Warehouse, tables: &Tables, tokenizer: &Tokenizer, record: &AdapterRecord) -> Result<bool> {
    let key = AdapterKey::new(&record.datanet, &record.version);
    let dir = key.dir(warehouse);
    if dir.get(FILE).await?.is_some() {
        return Ok(false);
    }
    let rows = training_rows(tables, record).await?;
    let tokenizer = tokenizer.clone();
    let header = IndexHeader {
        format: FORMAT.into(),
        datanet: record.datanet.clone(),
        version: record.version.clone(),
        training_set_version: record.training_set.delta_version,
        rows: 0,
        tokens: 0,
        contributors: vec![],
    };
    let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let rows = rows
            .into_iter()
            .map(|(contributor, text)| Ok(IndexRow { contributor, tokens: tokenizer.encode(&text)? }))
            .collect::<Result<Vec<_>>>()?;
        CreditIndex::build(header, &rows).to_bytes()
    })
    .await
    .map_err(|e| Error::Internal(format!("credits index build task: {e}")))??;
    dir.put(FILE, bytes).await?;
    Ok(true)
}

/// `(contributor, text)` of the rows the adapter was trained on: the training set at the recorded
/// version, without the held-out validation rows when validation was a holdout. What a model can
/// reproduce of a prompt/completion row is its completion, so that is what is indexed.
async fn training_rows(tables: &Tables, record: &AdapterRecord) -> Result<Vec<(String, String)>> {
    let set = dataset::read_training_set(tables, &record.datanet, Some(record.epoch), Some(record.training_set.delta_version))
        .await?;
    let rows = match record.validation.source {
        ValidationSource::Holdout { .. } => {
            let (train, _) = dataset::holdout(set.rows.clone());
            let trained = TrainingSet { rows: train, ..set.clone() };
            if trained.rows_sha256() == record.training_set.rows_sha256 { trained.rows } else { set.rows }
        }
        ValidationSource::File { .. } => set.rows,
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let text = r.completion.clone().unwrap_or(r.text);
            (r.contributor, text)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> IndexHeader {
        IndexHeader {
            format: FORMAT.into(),
            datanet: "d".into(),
            version: "v".into(),
            training_set_version: 0,
            rows: 0,
            tokens: 0,
            contributors: vec![],
        }
    }

    fn naive_sa(t: &[u32]) -> Vec<u32> {
        let mut sa: Vec<u32> = (0..t.len() as u32).collect();
        sa.sort_by(|&a, &b| t[a as usize..].cmp(&t[b as usize..]));
        sa
    }

    #[test]
    fn suffix_array_matches_naive_sort() {
        let mut x = 12345u64;
        for len in [0, 1, 2, 7, 64, 300] {
            let t: Vec<u32> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((x >> 33) % 4) as u32
                })
                .collect();
            assert_eq!(suffix_array(&t), naive_sa(&t), "len {len}");
        }
    }

    #[test]
    fn spans_credit_the_rows_that_hold_them() {
        let rows = vec![
            IndexRow { contributor: "0xaa".into(), tokens: vec![1, 2, 3, 4, 5, 6] },
            IndexRow { contributor: "0xbb".into(), tokens: vec![7, 8, 9, 10, 11, 12] },
            IndexRow { contributor: "0xcc".into(), tokens: vec![7, 8, 9, 10, 20, 21] },
        ];
        let index = CreditIndex::build(header(), &rows);
        assert_eq!(index.count(&[7, 8, 9, 10]), 2);
        assert_eq!(index.count(&[6, 7]), 0, "no match crosses a row boundary");
        // 4 tokens of 0xaa's row, then 4 tokens shared by 0xbb and 0xcc, then noise.
        let a = index.attribute(&[2, 3, 4, 5, 99, 7, 8, 9, 10, 98], 4);
        assert_eq!((a.matched_tokens, a.spans), (8, 2));
        let w: BTreeMap<_, _> = a.contributors.iter().map(|c| (c.address.as_str(), c.weight)).collect();
        assert!((w["0xaa"] - 0.4).abs() < 1e-12);
        assert!((w["0xbb"] - 0.2).abs() < 1e-12 && (w["0xcc"] - 0.2).abs() < 1e-12);
        // Below the minimum span nothing is credited.
        assert!(index.attribute(&[2, 3, 4, 5], 5).contributors.is_empty());
        // Round trip, and corruption is detected.
        let bytes = index.to_bytes().expect("serializes");
        let back = CreditIndex::from_bytes(&bytes, "x").expect("parses");
        assert_eq!(back.attribute(&[7, 8, 9, 10, 11], 4), index.attribute(&[7, 8, 9, 10, 11], 4));
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(matches!(CreditIndex::from_bytes(&bad, "x"), Err(Error::CreditIndex { .. })));
    }
}
