//! The SQL model runner: data engineers write SELECTs in `sql/`, Tributary runs them on DataFusion
//! over the warehouse's Delta tables and publishes each result as a Delta table.
//!
//! A model is `sql/<layer>/<name>.sql` → table `<layer>.<name>`: one SELECT with an optional
//! `/* @model … */` TOML header ([`parse`]) declaring its materialization (`table`, or
//! `incremental` by epoch), unique key, audits and description. `ref('model')` and
//! `source('layer', 'table')` name inputs; refs form the DAG ([`dag`]). A run ([`run`]) plans each
//! model against what was built before ([`plan`], [`state`]), builds it in memory ([`compile`],
//! [`session`]), audits the staged rows ([`audit`]) and publishes them in one atomic Delta commit
//! ([`commit`]). [`lineage`] writes the manifest, [`query`] runs ad-hoc SQL with time travel and
//! [`test`] audits the committed tables.
//!
//! Near-duplicate detection and quality scoring need functions SQL does not have; they are Rust
//! functions registered in every session ([`udf`]): MinHash LSH ([`minhash`]), connected
//! components ([`components`]) and text quality features ([`quality`]). The rules stay in SQL.
//!
//! Past one machine, [`cluster`] runs the models' queries on a Ballista cluster
//! ([`cluster::Engine::Cluster`]); planning, audits and publishing stay with the client.
//!
//! Data flow of the shipped models:
//! `bronze.contributions` → `silver.contributions_dedup` → `silver.quality_scores` →
//! `gold.training_set`, `gold.contributor_stats`.

pub mod audit;
pub mod cluster;
pub mod commit;
pub mod compile;
pub mod components;
pub mod dag;
pub mod lineage;
pub mod lsh;
pub mod minhash;
pub mod parse;
pub mod plan;
pub mod project;
pub mod quality;
pub mod query;
pub mod run;
pub mod session;
pub mod state;
pub mod test;
pub mod udf;

pub use dag::Dag;
pub use plan::{EpochSelection, ModelPlan, Reason};
pub use project::{Model, Project};
pub use query::{AsOf, QueryBuilder};
pub use run::{ModelReport, ModelStatus, RunBuilder, RunEvent, RunReport};
pub use state::State;
