//! The DataFusion session models run in: every Delta table of the warehouse at a pinned version,
//! Tributary's functions, and the config tables.
//!
//! Config tables expose `tributary.toml` to SQL, so thresholds are data rather than literals
//! copied into queries: `config.datanets` has one row per datanet with its kind and quality
//! thresholds ([`crate::config::QualityConfig`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use sha2::{Digest, Sha256};

use crate::config::{Config, DatanetKind};
use crate::error::{Error, Result};
use crate::tables::{TableId, Tables};

use super::cluster::{self, Engine};
use super::udf;

/// The schema holding config tables.
pub const CONFIG_SCHEMA: &str = "config";

/// What a session sees: the Delta version of every table, and a hash of the config tables.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Table → Delta version registered.
    pub versions: BTreeMap<TableId, i64>,
    /// Hex sha256 of the config tables' content.
    pub config_hash: String,
}

/// A fresh session with every table at its latest version (or at `pinned` versions).
pub async fn open(tables: &Tables, config: &Config, pinned: &BTreeMap<TableId, i64>) -> Result<(SessionContext, Snapshot)> {
    open_for(&Engine::Local, tables, config, pinned).await
}

/// [`open`], with the tables registered the way `engine` executes them: Delta table providers
/// locally, plain Parquet snapshots of the same versions for a cluster ([`super::cluster`]).
pub async fn open_for(
    engine: &Engine,
    tables: &Tables,
    config: &Config,
    pinned: &BTreeMap<TableId, i64>,
) -> Result<(SessionContext, Snapshot)> {
    let ctx = context_for(engine);
    let mut versions = tables.list().await?;
    for (id, v) in pinned {
        if versions.contains_key(id) {
            versions.insert(id.clone(), *v);
        }
    }
    if engine.needs_snapshots() {
        cluster::register_snapshots(&ctx, tables, &versions).await?;
    } else {
        tables.register_all(&ctx, &versions).await?;
    }
    let config_hash = register_config(&ctx, config)?;
    Ok((ctx, Snapshot { versions, config_hash }))
}

/// A session context with Tributary's settings and functions, and no tables.
pub fn context() -> SessionContext {
    context_for(&Engine::Local)
}

/// [`context`], with the settings plans for `engine` need.
pub fn context_for(engine: &Engine) -> SessionContext {
    let mut cfg = SessionConfig::new().with_information_schema(true);
    if engine.needs_snapshots() {
        cluster::configure(&mut cfg);
    }
    // Spans let planning errors (unknown column, …) point at the line of the model file.
    cfg.options_mut().sql_parser.collect_spans = true;
    let ctx = SessionContext::new_with_config(cfg);
    udf::register(&ctx);
    ctx
}

/// Register `config.datanets`; returns the hash of its content.
pub fn register_config(ctx: &SessionContext, config: &Config) -> Result<String> {
    let batch = datanets_batch(config)?;
    let catalog = ctx.catalog("datafusion").ok_or_else(|| Error::Internal("default DataFusion catalog missing".into()))?;
    if catalog.schema(CONFIG_SCHEMA).is_none() {
        catalog.register_schema(CONFIG_SCHEMA, Arc::new(MemorySchemaProvider::new()))?;
    }
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    let name = datafusion::common::TableReference::partial(CONFIG_SCHEMA, "datanets");
    ctx.deregister_table(name.clone())?;
    ctx.register_table(name, Arc::new(table))?;
    let json = serde_json::to_string(&config.datanets.iter().map(|d| (&d.name, d.kind, &d.quality)).collect::<Vec<_>>())
        .map_err(|e| Error::Internal(format!("hashing config: {e}")))?;
    Ok(hex::encode(Sha256::digest(json.as_bytes())))
}

/// `config.datanets` as one batch.
pub fn datanets_batch(config: &Config) -> Result<RecordBatch> {
    let d = &config.datanets;
    let q = |f: &dyn Fn(&crate::config::QualityConfig) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(d.iter().map(|x| f(&x.quality))))
    };
    let qi = |f: &dyn Fn(&crate::config::QualityConfig) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(d.iter().map(|x| f(&x.quality))))
    };
    let mut labels = ListBuilder::new(StringBuilder::new());
    for x in d {
        for l in &x.quality.allowed_labels {
            labels.values().append_value(l);
        }
        labels.append(true);
    }
    let kind = |k: DatanetKind| match k {
        DatanetKind::Text => "text",
        DatanetKind::PromptCompletion => "prompt_completion",
    };
    let f64f = |n: &str| Field::new(n, DataType::Float64, false);
    let i64f = |n: &str| Field::new(n, DataType::Int64, false);
    let schema = Schema::new(vec![
        Field::new("datanet", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        i64f("min_words"),
        i64f("max_words"),
        f64f("min_mean_word_length"),
        f64f("max_mean_word_length"),
        f64f("max_symbol_ratio"),
        f64f("min_alpha_word_ratio"),
        f64f("max_dup_line_fraction"),
        f64f("max_top_2gram_fraction"),
        f64f("max_dup_5gram_fraction"),
        i64f("max_boilerplate_hits"),
        Field::new("require_terminal_punctuation", DataType::Boolean, false),
        i64f("min_completion_words"),
        Field::new("allowed_labels", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
        f64f("min_quality_score"),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(d.iter().map(|x| x.name.as_str()))),
        Arc::new(StringArray::from_iter_values(d.iter().map(|x| kind(x.kind)))),
        qi(&|q| q.min_words),
        qi(&|q| q.max_words),
        q(&|q| q.min_mean_word_length),
        q(&|q| q.max_mean_word_length),
        q(&|q| q.max_symbol_ratio),
        q(&|q| q.min_alpha_word_ratio),
        q(&|q| q.max_dup_line_fraction),
        q(&|q| q.max_top_2gram_fraction),
        q(&|q| q.max_dup_5gram_fraction),
        qi(&|q| q.max_boilerplate_hits),
        Arc::new(BooleanArray::from_iter(d.iter().map(|x| Some(x.quality.require_terminal_punctuation)))),
        qi(&|q| q.min_completion_words),
        Arc::new(labels.finish()),
        q(&|q| q.min_quality_score),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}
