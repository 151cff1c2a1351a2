//! The one error type of the `jobs` crate.

/// Errors raised by the Burn jobs.
///
/// Problems with inputs (a malformed checkpoint, a missing table, an empty training set) have their
/// own variants; [`Error::Internal`] is kept for broken invariants, i.e. bugs in Tributary itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lakehouse core failed (warehouse, tables, catalog).
    #[error(transparent)]
    Pipeline(#[from] tributary_pipeline::Error),
    /// A Hugging Face `config.json` (or `adapter.json`) is missing a field or holds a bad value.
    #[error("invalid model config {path}: {reason}")]
    ModelConfig {
        /// Where the config came from.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A safetensors file is malformed, or lacks a tensor, or holds one of the wrong shape or type.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer could not be trained, loaded or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A table the job reads does not exist (e.g. `gold.training_set` before the SQL models ran).
    #[error("table {table} does not exist yet: {hint}")]
    MissingTable {
        /// The qualified table name.
        table: String,
        /// What to run to create it.
        hint: String,
    },
    /// The data a job needs are absent or unusable (no training rows, a bad validation set).
    #[error("{datanet}: {reason}")]
    Data {
        /// The datanet concerned.
        datanet: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// A base model, adapter or checkpoint that must exist does not.
    #[error("not found: {0}")]
    NotFound(String),
    /// The caller asked for something inconsistent (unknown method, bad option value).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Training diverged (a non-finite loss or gradient).
    #[error("training diverged at step {step}: loss {loss}")]
    Diverged {
        /// The optimizer step.
        step: usize,
        /// The offending loss value.
        loss: f64,
    },
    /// The compute backend is not available in this build (e.g. `cuda` without the feature).
    #[error("compute device `{0}` is not available in this build")]
    DeviceUnavailable(String),
    /// The job was cancelled (Ctrl-C); its checkpoint lets the next run resume.
    #[error("cancelled; the next run resumes from the last checkpoint")]
    Cancelled,
    /// An object-store operation on the warehouse failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A Delta operation failed.
    #[error("delta table {table}: {source}")]
    Delta {
        /// The qualified table name.
        table: String,
        /// The underlying delta-rs error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// A DataFusion query failed.
    #[error("query: {0}")]
    DataFusion(#[from] Box<datafusion::error::DataFusionError>),
    /// Arrow failed to build or read a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet could not be read.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// JSON (de)serialization failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A local I/O operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
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

    /// A checkpoint error for `path`.
    pub fn checkpoint(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Checkpoint { path: path.into(), reason: reason.into() }
    }

    /// A data error for `datanet`.
    pub fn data(datanet: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Data { datanet: datanet.into(), reason: reason.into() }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
