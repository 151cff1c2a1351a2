//! `tributary-jobs` trains LoRA adapters on each datanet's `gold.training_set` and measures the
//! influence of every training row on the datanet's validation loss.
//!
//! WIP
#![allow(missing_docs)]

pub mod adapter_store;
pub mod aggregate;
pub mod attribute;
pub mod base_model;
pub mod batch;
pub mod compute;
pub mod corpus;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod model;
pub mod optim;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
