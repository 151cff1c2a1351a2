//! `tributary-serving` serves every datanet's LoRA adapter from one base model, batches requests
//! for different adapters into the same forward pass, and meters every request back to the data
//! behind it.
//!
//! The main types: [`ServingBuilder`] / [`Server`] (the OpenAI-compatible HTTP API, `server.rs`),
//! [`Validator`] (typed, validated requests), [`Engine`] (continuous batching on a dedicated thread,
//! `infer.rs`, drawing from the [`Scheduler`]'s fair per-adapter queues), [`ActiveSet`] and
//! [`BatchLora`] (heterogeneous batching), the adapter tiers in [`adapter_cache`], the usage
//! [`Meter`] (`gold.inference_usage`) and the [`CreditIndex`] (per-inference attribution).
//!
//! The key design choice, from S-LoRA and Punica: adapters are never merged into the base weights.
//! Each projection computes `x·W` once for the whole batch and adds `s·(x·A_i)·B_i` per row, with
//! each row's factors gathered from a stack of resident adapters, so a batch of rows for a
//! thousand different adapters costs about what a batch for one does.
//!
//! This crate is the only one that speaks HTTP. It does not train or attribute (that is `jobs`),
//! and it owns no model code: the decoder, its KV cache and the adapter format come from
//! `tributary-jobs`, and tables and storage from `tributary-pipeline`.

pub mod adapter_cache;
pub mod batch_lora;
pub mod client;
pub mod credits;
pub mod error;
pub mod infer;
pub mod kv;
pub mod metering;
pub mod metrics;
pub mod queue;
pub mod sampling;
pub mod scheduler;
pub mod server;
pub mod synthetic;
pub mod validation;

pub use adapter_cache::{AdapterKey, Loader, Registry};
pub use batch_lora::{ActiveSet, BatchLora};
pub use credits::{Attribution, CreditIndex};
pub use error::{Error, Result};
pub use infer::{Batching, Engine, EngineHandle, EngineOptions, EngineReport};
pub use metering::{Meter, MeterOptions, UsageRecord};
pub use metrics::Metrics;
pub use scheduler::Scheduler;
pub use server::{Server, ServingBuilder, ShutdownReport, shutdown_signal};
pub use validation::{ValidatedRequest, Validator};
