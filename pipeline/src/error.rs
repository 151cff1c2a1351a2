//! The one error type of the `pipeline` crate.

use crate::reason::ReasonCode;

/// Errors raised by the lakehouse core.
///
/// User-facing problems (bad config, an unreachable store, a quarantined file) have their own
/// variants; [`Error::Internal`] is kept for broken invariants, i.e. bugs in Tributary itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or an environment override is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The warehouse URL cannot be used.
    #[error("invalid warehouse url `{url}`: {reason}")]
    WarehouseUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// An object store operation failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A Delta operation failed.
    #[error("delta table {table}: {source}")]
    Delta {
        /// The qualified table name (`layer.table`).
        table: String,
        /// The underlying delta-rs error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// A DataFusion query failed.
    #[error("query: {0}")]
    DataFusion(#[from] Box<datafusion::error::DataFusionError>),
    /// Arrow failed to build or convert a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The ops catalog (SQLite) failed.
    #[error("ops catalog: {0}")]
    Catalog(#[from] rusqlite::Error),
    /// A local I/O operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A file was refused by ingestion; the reason code is stable and stored in `ops.ingest_log`.
    #[error("{path} quarantined: {reason} ({detail})")]
    Quarantined {
        /// The inbox path of the file.
        path: String,
        /// The stable reason code.
        reason: ReasonCode,
        /// A human-readable detail.
        detail: String,
    },
    /// Another process holds a lock this operation needs.
    #[error("lock `{name}` is held by {holder} since {since}")]
    Locked {
        /// The lock's name.
        name: String,
        /// Who holds it (host:pid).
        holder: String,
        /// When it was taken (RFC 3339).
        since: String,
    },
    /// A table or object that must exist does not.
    #[error("not found: {0}")]
    NotFound(String),
    /// A SQL model or audit file is invalid: bad header, SQL syntax, or a planning error.
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Model {
        /// The model or audit file, relative to the project directory.
        file: String,
        /// The 1-based line the problem is on, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A `ref()` names no model of the project.
    #[error("{file}:{line}: unknown model `{name}` in ref(){}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownRef {
        /// The file holding the ref.
        file: String,
        /// The 1-based line of the ref.
        line: usize,
        /// The name as written.
        name: String,
        /// The closest existing model, by edit distance.
        suggestion: Option<String>,
    },
    /// The models' refs form a cycle.
    #[error("models form a cycle: {}", cycle.join(" → "))]
    Cycle {
        /// The models on the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// A blocking audit found failing rows; the model was not committed.
    #[error("audit `{audit}` of {model} failed: {failing_rows} failing row(s); {model} was not committed\n{sample}")]
    AuditFailed {
        /// The audited model.
        model: String,
        /// The audit, as declared.
        audit: String,
        /// How many rows failed.
        failing_rows: usize,
        /// The first failing rows, pretty-printed.
        sample: String,
    },
    /// A broken invariant: a bug in Tributary.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::DataFusion(Box::new(e))
    }
}

impl Error {
    /// Wrap a delta-rs error with the name of the table it concerns.
    pub fn delta(table: impl Into<String>, source: deltalake::DeltaTableError) -> Self {
        Error::Delta { table: table.into(), source: Box::new(source) }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
