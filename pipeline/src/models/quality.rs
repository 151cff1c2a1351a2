//! `text_stats(text)`: the features quality rules are written against, computed in one pass.
//!
//! The rules themselves live in SQL (`sql/silver/quality_scores.sql`) so data engineers can read
//! and change them; this function only measures. The features follow the heuristics of Gopher
//! (Rae et al. 2021), C4 (Raffel et al. 2020) and FineWeb (Penedo et al. 2024):
//!
//! | field | meaning |
//! |---|---|
//! | `chars` | Unicode characters |
//! | `words` | whitespace-separated words |
//! | `mean_word_length` | mean characters per word |
//! | `symbol_ratio` | fraction of non-space characters that are symbols: neither letters, digits nor ordinary punctuation (`. , ; : ! ? ' " ( ) -` and typographic quotes/dashes) |
//! | `alpha_word_ratio` | fraction of words holding at least one letter |
//! | `lines` | non-empty lines |
//! | `dup_line_fraction` | fraction of non-empty lines that repeat an earlier line |
//! | `top_2gram_fraction` | characters in occurrences of the most frequent word 2-gram (if repeated) / characters in all words |
//! | `dup_5gram_fraction` | characters in words covered by a repeated word 5-gram / characters in all words |
//! | `boilerplate_hits` | occurrences of boilerplate phrases ([`BOILERPLATE`]) |
//! | `ends_with_terminal` | the last non-space character is terminal punctuation |
//!
//! N-gram features and boilerplate matching use normalized tokens: runs of letters and digits,
//! lower-cased (the same tokens as MinHash shingles).

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StructArray};
use arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};

use super::udf::{arity, coerce_text, for_each_str, to_array};

/// Boilerplate phrases counted by `boilerplate_hits` (matched on normalized tokens).
pub const BOILERPLATE: &[&str] = &[
    "lorem ipsum",
    "click here",
    "all rights reserved",
    "privacy policy",
    "cookie policy",
    "terms of use",
    "terms of service",
    "subscribe to our newsletter",
    "enable javascript",
    "accept cookies",
];

/// The features of one text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextStats {
    /// Unicode characters.
    pub chars: i64,
    /// Whitespace-separated words.
    pub words: i64,
    /// Mean characters per word.
    pub mean_word_length: f64,
    /// Symbol characters / non-space characters.
    pub symbol_ratio: f64,
    /// Words with a letter / words.
    pub alpha_word_ratio: f64,
    /// Non-empty lines.
    pub lines: i64,
    /// Repeated non-empty lines / non-empty lines.
    pub dup_line_fraction: f64,
    /// Characters in the most frequent repeated token 2-gram / token characters.
    pub top_2gram_fraction: f64,
    /// Characters covered by repeated token 5-grams / token characters.
    pub dup_5gram_fraction: f64,
    /// Boilerplate phrase occurrences.
    pub boilerplate_hits: i64,
    /// Ends with terminal punctuation.
    pub ends_with_terminal: bool,
}

fn is_plain_punct(c: char) -> bool {
    matches!(
        c,
        '.' | ',' | ';' | ':' | '!' | '?' | '\'' | '"' | '(' | ')' | '-' | '‘' | '’' | '“' | '”' | '–' | '—' | '…'
    )
}

fn is_terminal(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '"' | '\'' | ')' | '…' | '”' | '’' | '。' | '！' | '？')
}

#[inline]
fn mix(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Normalized tokens of `text` as (hash, characters).
fn tokens(text: &str, out: &mut Vec<(u64, u32)>) {
    out.clear();
    let mut words = Vec::new();
    super::minhash::word_hashes(text, &mut words);
    // Lengths come from a second, cheap scan that splits the same way.
    let mut lens = Vec::with_capacity(words.len());
    let mut n = 0u32;
    for c in text.chars() {
        if c.is_alphanumeric() {
            n += 1;
        } else if n > 0 {
            lens.push(n);
            n = 0;
        }
    }
    if n > 0 {
        lens.push(n);
    }
    out.extend(words.into_iter().zip(lens));
}

fn phrase_hashes() -> &'static Vec<Vec<u64>> {
    static P: std::sync::OnceLock<Vec<Vec<u64>>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        BOILERPLATE
            .iter()
            .map(|p| {
                let mut v = Vec::new();
                super::minhash::word_hashes(p, &mut v);
                v
            })
            .collect()
    })
}

/// Scratch buffers reused across rows.
#[derive(Default)]
pub struct Scratch {
    tokens: Vec<(u64, u32)>,
    grams: Vec<(u64, u32)>,
    covered: Vec<bool>,
    lines: Vec<u64>,
}

/// Compute the features of `text`.
pub fn text_stats(text: &str, s: &mut Scratch) -> TextStats {
    let mut st = TextStats::default();
    let (mut non_space, mut symbols, mut word_chars, mut alpha_words) = (0i64, 0i64, 0i64, 0i64);
    let (mut in_word, mut word_has_alpha, mut last) = (false, false, None);
    for c in text.chars() {
        st.chars += 1;
        if c.is_whitespace() {
            if in_word {
                st.words += 1;
                alpha_words += word_has_alpha as i64;
                in_word = false;
            }
            continue;
        }
        last = Some(c);
        non_space += 1;
        word_chars += 1;
        if !in_word {
            in_word = true;
            word_has_alpha = false;
        }
        if c.is_alphabetic() {
            word_has_alpha = true;
        } else if !c.is_numeric() && !is_plain_punct(c) {
            symbols += 1;
        }
    }
    if in_word {
        st.words += 1;
        alpha_words += word_has_alpha as i64;
    }
    let ratio = |a: i64, b: i64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    st.mean_word_length = ratio(word_chars, st.words);
    st.symbol_ratio = ratio(symbols, non_space);
    st.alpha_word_ratio = ratio(alpha_words, st.words);
    st.ends_with_terminal = last.is_some_and(is_terminal);

    // Lines: hash each trimmed non-empty line; duplicates are lines whose hash was seen before.
    s.lines.clear();
    for line in text.lines() {
        let line = line.trim();
        if !line.is_empty() {
            s.lines.push(mix(line.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))));
        }
    }
    st.lines = s.lines.len() as i64;
    if s.lines.len() > 1 {
        s.lines.sort_unstable();
        let dups = s.lines.windows(2).filter(|w| w[0] == w[1]).count();
        st.dup_line_fraction = dups as f64 / s.lines.len() as f64;
    }

    tokens(text, &mut s.tokens);
    let toks = &s.tokens;
    let total: u64 = toks.iter().map(|t| t.1 as u64).sum();
    if toks.len() >= 4 && total > 0 {
        // Most frequent 2-gram, by occurrences, counted in characters.
        s.grams.clear();
        s.grams.extend(toks.windows(2).map(|w| (mix(w[0].0 ^ w[1].0.rotate_left(17)), w[0].1 + w[1].1)));
        s.grams.sort_unstable();
        let (mut best, mut i) = (0u64, 0);
        while i < s.grams.len() {
            let mut j = i;
            while j < s.grams.len() && s.grams[j].0 == s.grams[i].0 {
                j += 1;
            }
            if j - i > 1 {
                best = best.max((j - i) as u64 * s.grams[i].1 as u64);
            }
            i = j;
        }
        st.top_2gram_fraction = (best as f64 / total as f64).min(1.0);
    }
    if toks.len() >= 6 && total > 0 {
        // Characters covered by any 5-gram that occurs more than once.
        s.grams.clear();
        for (start, w) in toks.windows(5).enumerate() {
            let h = w.iter().fold(0x9e37_79b9u64, |h, t| mix(h.rotate_left(13) ^ t.0));
            s.grams.push((h, start as u32));
        }
        s.grams.sort_unstable();
        s.covered.clear();
        s.covered.resize(toks.len(), false);
        let mut i = 0;
        while i < s.grams.len() {
            let mut j = i;
            while j < s.grams.len() && s.grams[j].0 == s.grams[i].0 {
                j += 1;
            }
            if j - i > 1 {
                for g in &s.grams[i..j] {
                    let start = g.1 as usize;
                    s.covered[start..start + 5].iter_mut().for_each(|c| *c = true);
                }
            }
            i = j;
        }
        let dup: u64 = toks.iter().zip(&s.covered).filter(|(_, c)| **c).map(|(t, _)| t.1 as u64).sum();
        st.dup_5gram_fraction = dup as f64 / total as f64;
    }
    for phrase in phrase_hashes() {
        if phrase.is_empty() || phrase.len() > toks.len() {
            continue;
        }
        st.boilerplate_hits +=
            toks.windows(phrase.len()).filter(|w| w.iter().zip(phrase).all(|(t, p)| t.0 == *p)).count() as i64;
    }
    st
}

/// The fields of `text_stats`'s struct, in order.
pub fn stats_fields() -> Fields {
    Fields::from(vec![
        Field::new("chars", DataType::Int64, false),
        Field::new("words", DataType::Int64, false),
        Field::new("mean_word_length", DataType::Float64, false),
        Field::new("symbol_ratio", DataType::Float64, false),
        Field::new("alpha_word_ratio", DataType::Float64, false),
        Field::new("lines", DataType::Int64, false),
        Field::new("dup_line_fraction", DataType::Float64, false),
        Field::new("top_2gram_fraction", DataType::Float64, false),
        Field::new("dup_5gram_fraction", DataType::Float64, false),
        Field::new("boilerplate_hits", DataType::Int64, false),
        Field::new("ends_with_terminal", DataType::Boolean, false),
    ])
}

/// The `text_stats(text)` scalar function; NULL text gives a NULL struct.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TextStatsUdf {
    signature: Signature,
}

impl TextStatsUdf {
    /// The function.
    pub fn new() -> Self {
        TextStatsUdf { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl Default for TextStatsUdf {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for TextStatsUdf {
    fn name(&self) -> &str {
        "text_stats"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [t] => Ok(vec![coerce_text("text_stats", t)?]),
            _ => plan_err!("text_stats(text) takes 1 argument, got {}", args.len()),
        }
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(stats_fields()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let text = to_array(args.args.first().ok_or_else(|| arity("text_stats", 0))?, args.number_rows)?;
        let n = text.len();
        let (mut chars, mut words, mut lines, mut bp) =
            (Int64Builder::with_capacity(n), Int64Builder::with_capacity(n), Int64Builder::with_capacity(n), Int64Builder::with_capacity(n));
        let mut f: Vec<Float64Builder> = (0..6).map(|_| Float64Builder::with_capacity(n)).collect();
        let mut term = BooleanBuilder::with_capacity(n);
        let mut nulls = arrow::array::builder::NullBufferBuilder::new(n);
        let mut scratch = Scratch::default();
        for_each_str(&text, |t| {
            let st = match t {
                Some(t) => {
                    nulls.append_non_null();
                    text_stats(t, &mut scratch)
                }
                None => {
                    nulls.append_null();
                    TextStats::default()
                }
            };
            chars.append_value(st.chars);
            words.append_value(st.words);
            f[0].append_value(st.mean_word_length);
            f[1].append_value(st.symbol_ratio);
            f[2].append_value(st.alpha_word_ratio);
            lines.append_value(st.lines);
            f[3].append_value(st.dup_line_fraction);
            f[4].append_value(st.top_2gram_fraction);
            f[5].append_value(st.dup_5gram_fraction);
            bp.append_value(st.boilerplate_hits);
            term.append_value(st.ends_with_terminal);
        })?;
        let mut f = f.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
        let mut next = || f.next().ok_or_else(|| datafusion::common::DataFusionError::Internal("text_stats builders".into()));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(chars.finish()),
            Arc::new(words.finish()),
            next()?,
            next()?,
            next()?,
            Arc::new(lines.finish()),
            next()?,
            next()?,
            next()?,
            Arc::new(bp.finish()),
            Arc::new(term.finish()),
        ];
        Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(stats_fields(), columns, nulls.finish())?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(t: &str) -> TextStats {
        text_stats(t, &mut Scratch::default())
    }

    #[test]
    fn clean_prose_scores_clean() {
        let s = stats("Velmora is a region whose capital is Drask. It is known for its harbour and its salt.");
        assert_eq!(s.words, 17);
        assert!(s.ends_with_terminal);
        assert_eq!(s.symbol_ratio, 0.0);
        assert_eq!(s.alpha_word_ratio, 1.0);
        assert_eq!(s.boilerplate_hits, 0);
        assert_eq!(s.dup_line_fraction, 0.0);
        assert!(s.dup_5gram_fraction < 0.01, "{s:?}");
    }

    #[test]
    fn junk_is_measured() {
        let sym = stats("$$$ ### @@@ %%% &&& *** $$$ ### @@@");
        assert!(sym.symbol_ratio > 0.9 && sym.alpha_word_ratio == 0.0, "{sym:?}");
        let rep = stats("asdf asdf asdf asdf asdf asdf asdf asdf asdf");
        assert!(rep.top_2gram_fraction > 0.8 && rep.dup_5gram_fraction > 0.9, "{rep:?}");
        let bp = stats("Copyright all rights reserved. Terms of use. Privacy policy. Cookie policy.");
        assert_eq!(bp.boilerplate_hits, 4);
        let lines = stats("same line\nsame line\nsame line\nother");
        assert_eq!(lines.lines, 4);
        assert!((lines.dup_line_fraction - 0.5).abs() < 1e-9);
        assert!(!stats("no punctuation at the end").ends_with_terminal);
        assert_eq!(stats(""), TextStats::default());
    }
}
