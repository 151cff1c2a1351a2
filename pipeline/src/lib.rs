//! `tributary-pipeline` is the lakehouse core of Tributary: configuration, the warehouse and its
//! object store, the Delta table registry, contributor ingestion and the SQLite ops catalog.
//!
//! The main types are [`Config`] (typed `tributary.toml`), [`Warehouse`] (one root URL over
//! `file://`, `memory://` or `s3://`), [`Tables`] (create/open/time-travel Delta tables and register
//! them in DataFusion), [`ingest::IngestBuilder`] (inbox → `bronze.contributions`, exactly once) and
//! [`Catalog`] (runs, locks and other operational state).
//!
//! The key design choice is that every piece of data analysts may want lives in standard Delta
//! tables (so Python `deltalake`/`polars` read them without Tributary), while small transactional
//! state lives in SQLite. Exactly-once ingestion rides on Delta application transactions.
//!
//! This crate is not a query engine (DataFusion is), knows nothing about HTTP, Burn or chains, and
//! depends on no other workspace crate: it is the bottom of the dependency graph.

pub mod catalog;
pub mod config;
pub mod epoch;
pub mod error;
pub mod ids;
pub mod ingest;
pub mod models;
pub mod reason;
pub mod sample;
pub mod schedule;
pub mod stages;
pub mod storage;
pub mod tables;

pub use catalog::Catalog;
pub use config::Config;
pub use error::{Error, Result};
pub use reason::ReasonCode;
pub use storage::Warehouse;
pub use tables::{TableDef, TableId, Tables};
