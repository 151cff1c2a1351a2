//! Choosing the next token, and turning tokens into text that stops at stop strings.
//!
//! [`Sampler`] is greedy at temperature 0 and otherwise samples from the temperature-scaled,
//! nucleus-truncated (top-p) distribution with its own seeded RNG, so a request's draws do not
//! depend on what else is in the batch: the same seed gives the same text.
//!
//! [`TextStream`] detokenizes incrementally (Text Generation Inference's prefix/read offsets, so a
//! multi-byte character split across tokens is never emitted half-way) and holds back any tail
//! that could still become a stop string, so a stream never shows text the final answer drops.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_jobs::tokenizer::Tokenizer;

use crate::error::Result;

/// Decoding settings of one request (validated).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// 0 = greedy; otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Nucleus: sample among the most likely tokens whose probabilities sum to at least this.
    pub top_p: f64,
    /// Seed of the request's RNG.
    pub seed: u64,
    /// Generation stops before the first occurrence of any of these.
    pub stop: Vec<String>,
    /// Keep generating past the end-of-text token (benchmarks fix output lengths this way).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { max_tokens: 16, temperature: 0.0, top_p: 1.0, seed: 0, stop: vec![], ignore_eos: false }
    }
}

/// Picks tokens from logits.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f64,
    top_p: f64,
    rng: StdRng,
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler for `params`.
    pub fn new(params: &SamplingParams) -> Sampler {
        Sampler {
            temperature: params.temperature,
            top_p: params.top_p,
            rng: StdRng::seed_from_u64(params.seed),
            scratch: Vec::new(),
        }
    }

    /// The next token given one position's logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let inv_t = (1.0 / self.temperature) as f32;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.scratch.clear();
        self.scratch.extend(logits.iter().enumerate().map(|(i, &l)| (((l - max) * inv_t).exp(), i as u32)));
        // Descending probability, ties by token id: a total order, so the draw is reproducible.
        self.scratch.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let total: f32 = self.scratch.iter().map(|p| p.0).sum();
        let mut keep = self.scratch.len();
        if self.top_p < 1.0 {
            let target = (self.top_p as f32) * total;
            let mut cum = 0.0;
            for (i, p) in self.scratch.iter().enumerate() {
                cum += p.0;
                if cum >= target {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept = &self.scratch[..keep.max(1)];
        let mass: f32 = kept.iter().map(|p| p.0).sum();
        let mut u = self.rng.random::<f32>() * mass;
        for p in kept {
            if u < p.0 {
                return p.1;
            }
            u -= p.0;
        }
        kept[kept.len() - 1].1
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// What one more token did to the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextStep {
    /// Text that is now safe to show (possibly empty).
    Emit(String),
    /// A stop string appeared: the last text to show; generation is over.
    Stop(String),
}

/// Incremental detokenizer with stop strings.
#[derive(Debug, Clone)]
pub struct TextStream {
    stops: Vec<String>,
    tokens: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    text: String,
    emitted: usize,
    stopped: bool,
}

impl TextStream {
    /// A stream stopping at `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> TextStream {
        TextStream {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            tokens: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            text: String::new(),
            emitted: 0,
            stopped: false,
        }
    }

    /// Add a generated token.
    pub fn push(&mut self, tokenizer: &Tokenizer, token: u32) -> Result<TextStep> {
        self.tokens.push(token);
        let prefix = tokenizer.decode(&self.tokens[self.prefix_offset..self.read_offset])?;
        let full = tokenizer.decode(&self.tokens[self.prefix_offset..])?;
        let before = self.text.len();
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.is_char_boundary(prefix.len()) {
            self.text.push_str(&full[prefix.len()..]);
            self.prefix_offset = self.read_offset;
            self.read_offset = self.tokens.len();
        }
        // A stop string can only newly appear overlapping the text added now.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = before.saturating_sub(longest.saturating_sub(1));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self.stops.iter().filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i)).min();
        if let Some(end) = hit {
            self.text.truncate(end);
            self.stopped = true;
            let out = self.text.get(self.emitted..).unwrap_or_default().to_string();
            self.emitted = self.text.len();
            return Ok(TextStep::Stop(out));
        }
        let safe = self.text.len() - self.held_back();
        let out = if safe > self.emitted { self.text[self.emitted..safe].to_string() } else { String::new() };
        self.emitted = self.emitted.max(safe);
        Ok(TextStep::Emit(out))
    }

    /// Bytes at the end of the text that are a proper prefix of some stop string.
    fn held_back(&self) -> usize {
        let mut best = 0;
        for s in &self.stops {
            for (k, _) in s.char_indices().skip(1) {
                if k > best && self.text.ends_with(&s[..k]) {
                    best = k;
                }
            }
        }
        best
    }

    /// Everything not shown yet (at the end of generation, held-back text is no longer a stop).
    pub fn finish(&mut self) -> String {
        let out = self.text.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = self.text.len();
        out
    }

    /// The text so far (truncated at the stop string once one appeared).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a stop string ended the text.
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        let mut s = Sampler::new(&SamplingParams::default());
        assert_eq!(s.sample(&[0.0, 0.5, 0.2]), 1);
    }

    #[test]
    fn seeded_sampling_repeats_and_top_p_truncates() {
        let params = SamplingParams { temperature: 1.0, top_p: 1.0, seed: 42, ..SamplingParams::default() };
        let logits = [1.0, 1.1, 0.9, 1.05, 0.95];
        let draws = |p: &SamplingParams| {
            let mut s = Sampler::new(p);
            (0..64).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draws(&params), draws(&params));
        let distinct: std::collections::BTreeSet<_> = draws(&params).into_iter().collect();
        assert!(distinct.len() > 2, "temperature 1 over near-equal logits draws several tokens");
        // top_p tiny: only the most likely token survives.
        let narrow = SamplingParams { top_p: 0.01, ..params };
        assert!(draws(&narrow).iter().all(|t| *t == 1));
    }
}
