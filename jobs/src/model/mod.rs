//! The model: a Llama-family decoder in Burn, LoRA adapters, and Hugging Face checkpoint I/O.
//!
//! - [`config`]: `config.json` ([`LlamaConfig`]).
//! - [`llama`]: the decoder ([`LlamaModel`]) with `forward(input, kv_cache, lora_hook)`.
//! - [`lora`]: adapters ([`Adapter`]), the [`LoraHook`] the decoder calls at every projection, and
//!   the per-row ([`LoraWeights::PerRow`]) form for batches that mix adapters.
//! - [`loader`]: loading/saving `config.json` + `model.safetensors` + `tokenizer.json`.
//! - [`safetensors_io`]: safetensors ⇄ host `f32` arrays.
//!
//! This module is self-contained: it knows nothing about tables, training or attribution, so the
//! serving tier can build on it directly.

pub mod config;
pub mod llama;
pub mod loader;
pub mod lora;
pub mod safetensors_io;

pub use config::LlamaConfig;
pub use llama::{KvCache, LlamaModel, ModelInput, causal_mask};
pub use loader::{BaseModel, ModelFiles};
pub use lora::{Adapter, LoraConfig, LoraHook, LoraSet, LoraTarget, LoraWeights};
