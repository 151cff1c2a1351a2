//! The model's shape, read from (and written as) a Hugging Face `config.json`.
//!
//! Only the keys a Llama-family decoder needs are read; unknown keys are ignored so that real
//! checkpoints (SmolLM, Qwen2, TinyLlama, Mistral without sliding windows) load. Features this
//! implementation does not have (RoPE scaling, sliding windows, non-SiLU activations) are refused
//! with a precise error rather than silently computing something else.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A Llama-style decoder's hyper-parameters, with Hugging Face key names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Tokens in the vocabulary (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Longest sequence the rotary tables are built for.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Whether the output projection reuses `embed_tokens` (no `lm_head.weight` in the checkpoint).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id.
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    /// End-of-sequence token id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Must be `silu` (SwiGLU).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// `llama`, `qwen2`, `mistral`, … (informational).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Informational; `["LlamaForCausalLM"]` when written by Tributary.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Informational dtype of the stored weights (`float32`, `bfloat16`, …).
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// RoPE scaling (Llama 3.1 and others): not implemented, refused when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// Sliding-window attention (Mistral, Qwen2 with `use_sliding_window`): refused when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<serde_json::Value>,
    /// Qwen2's switch for the sliding window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
}

/// A token id, or a list of them (`eos_token_id` may be either in Hugging Face configs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// One id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The first id.
    pub fn first(&self) -> Option<u32> {
        match self {
            TokenIds::One(i) => Some(*i),
            TokenIds::Many(v) => v.first().copied(),
        }
    }
}

fn default_max_pos() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_act() -> String {
    "silu".into()
}
fn default_model_type() -> String {
    "llama".into()
}

impl LlamaConfig {
    /// Parse a `config.json` and check it describes a model this implementation computes exactly.
    pub fn from_json(text: &str, path: &str) -> Result<LlamaConfig> {
        let config: LlamaConfig = serde_json::from_str(text)
            .map_err(|e| Error::ModelConfig { path: path.into(), reason: e.to_string() })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Check the shape is consistent and the features are supported.
    pub fn validate(&self, path: &str) -> Result<()> {
        let bad = |reason: String| Err(Error::ModelConfig { path: path.into(), reason });
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size, hidden_size and num_hidden_layers must be positive".into());
        }
        if self.num_attention_heads == 0 || self.kv_heads() == 0 {
            return bad("attention heads must be positive".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad("hidden_size is not a multiple of num_attention_heads and head_dim is not given".into());
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for rotary embeddings", self.head_dim()));
        }
        if self.hidden_act != "silu" {
            return bad(format!("hidden_act `{}` is not supported (only silu / SwiGLU)", self.hidden_act));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return bad("rope_scaling is not supported".into());
        }
        let window_on = match self.use_sliding_window {
            Some(on) => on,
            None => self.sliding_window.as_ref().is_some_and(|v| !v.is_null()),
        };
        if window_on {
            return bad("sliding-window attention is not supported".into());
        }
        Ok(())
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Width of the query projection's output.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim()
    }

    /// Width of the key and value projections' outputs.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads() * self.head_dim()
    }

    /// Number of weights (embeddings counted once when tied).
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let attn = d * self.q_dim() * 2 + d * self.kv_dim() * 2;
        let mlp = 3 * d * self.intermediate_size;
        let layer = attn + mlp + 2 * d;
        let embed = self.vocab_size * d;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + self.num_hidden_layers * layer + d
    }
}
