//! The one error type of the serving tier, and its one mapping to HTTP.
//!
//! Every handler returns [`Error`]; [`Error::status`] is the only place that decides an HTTP status,
//! and [`IntoResponse`] renders the OpenAI error body (`{"error": {message, type, param, code}}`),
//! adding `Retry-After` to 429s and `WWW-Authenticate` to 401s.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Errors of the serving tier.
///
/// Request problems (`Invalid`, `UnknownModel`, `QueueFull`, `Unauthorized`) carry what the caller
/// needs to fix or retry; [`Error::Internal`] is kept for broken invariants (bugs in Tributary).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed or out of range. `param` names the field (`max_tokens`,
    /// `messages[1].content`, `body` for unparsable JSON).
    #[error("{param}: {message}")]
    Invalid {
        /// The offending field.
        param: String,
        /// Stable snake_case reason (`invalid_json`, `out_of_range`, `prompt_too_long`, …).
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// `model` names neither the base model nor a published adapter.
    #[error("model `{model}` is neither the base model nor a published adapter (see GET /v1/models)")]
    UnknownModel {
        /// What the caller asked for.
        model: String,
    },
    /// Too many requests are waiting; retry after the given delay.
    #[error("the server is at capacity ({queued} requests waiting); retry after {retry_after_secs}s")]
    QueueFull {
        /// Requests waiting when this one arrived.
        queued: usize,
        /// Suggested delay, sent as `Retry-After`.
        retry_after_secs: u64,
    },
    /// An admin call without a valid bearer token.
    #[error("admin endpoint: {reason}")]
    Unauthorized {
        /// Why the token was refused (never the token itself).
        reason: &'static str,
    },
    /// An adapter's files are corrupt, incomplete or do not fit the base model. Only requests for
    /// that adapter fail; everything else keeps being served.
    #[error("adapter {adapter} cannot be served: {reason}")]
    AdapterInvalid {
        /// `datanet/version`.
        adapter: String,
        /// What is wrong with its files.
        reason: String,
    },
    /// An adapter could not be read right now (object store unreachable); retrying may succeed.
    #[error("adapter {adapter} is unavailable: {reason}")]
    AdapterUnavailable {
        /// `datanet/version`.
        adapter: String,
        /// What failed.
        reason: String,
    },
    /// A credits index (`credits.index` beside an adapter) is corrupt or was built for other data.
    #[error("credits index {path}: {reason}")]
    CreditIndex {
        /// Object key of the index.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server is shutting down and takes no new requests.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A serving setting is unusable (bind address, device, limits).
    #[error("serving config: {0}")]
    Config(String),
    /// The model layer failed (loading the base model, tokenizing, reading training rows).
    #[error(transparent)]
    Jobs(#[from] tributary_jobs::Error),
    /// The lakehouse core failed (warehouse, tables).
    #[error(transparent)]
    Pipeline(#[from] tributary_pipeline::Error),
    /// An object-store operation failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Writing `gold.inference_usage` failed.
    #[error("delta table {table}: {source}")]
    Delta {
        /// The qualified table name.
        table: String,
        /// The underlying delta-rs error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// Arrow failed to build a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// JSON (de)serialization failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Local I/O failed (binding the listener).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A broken invariant: a bug in Tributary.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The same error for another request (errors are not `Clone`: sources may not be). Request
    /// errors are reproduced exactly; others keep their message.
    pub fn for_another(&self) -> Error {
        match self {
            Error::Invalid { param, code, message } => Error::Invalid { param: param.clone(), code, message: message.clone() },
            Error::UnknownModel { model } => Error::UnknownModel { model: model.clone() },
            Error::AdapterInvalid { adapter, reason } => Error::AdapterInvalid { adapter: adapter.clone(), reason: reason.clone() },
            Error::AdapterUnavailable { adapter, reason } => {
                Error::AdapterUnavailable { adapter: adapter.clone(), reason: reason.clone() }
            }
            Error::ShuttingDown => Error::ShuttingDown,
            other => Error::Internal(other.to_string()),
        }
    }

    /// A 400 naming `param`.
    pub fn invalid(param: impl Into<String>, code: &'static str, message: impl Into<String>) -> Error {
        Error::Invalid { param: param.into(), code, message: message.into() }
    }

    /// Wrap a delta-rs error with the table it concerns.
    pub fn delta(table: impl Into<String>, source: deltalake::DeltaTableError) -> Error {
        Error::Delta { table: table.into(), source: Box::new(source) }
    }

    /// The HTTP status this error maps to (the only such mapping in the crate).
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            Error::UnknownModel { .. } => StatusCode::NOT_FOUND,
            Error::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::AdapterInvalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::ShuttingDown | Error::AdapterUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Jobs(tributary_jobs::Error::NotFound(_)) => StatusCode::NOT_FOUND,
            Error::CreditIndex { .. }
            | Error::Config(_)
            | Error::Jobs(_)
            | Error::Pipeline(_)
            | Error::ObjectStore(_)
            | Error::Delta { .. }
            | Error::Arrow(_)
            | Error::Json(_)
            | Error::Io(_)
            | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's error `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid { .. } | Error::UnknownModel { .. } => "invalid_request_error",
            Error::QueueFull { .. } => "rate_limit_error",
            Error::Unauthorized { .. } => "authentication_error",
            Error::AdapterInvalid { .. } => "adapter_error",
            Error::ShuttingDown | Error::AdapterUnavailable { .. } => "unavailable",
            _ => "server_error",
        }
    }

    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { code, .. } => code,
            Error::UnknownModel { .. } => "model_not_found",
            Error::QueueFull { .. } => "queue_full",
            Error::Unauthorized { .. } => "unauthorized",
            Error::AdapterInvalid { .. } => "adapter_invalid",
            Error::AdapterUnavailable { .. } => "adapter_unavailable",
            Error::ShuttingDown => "shutting_down",
            Error::Jobs(tributary_jobs::Error::NotFound(_)) => "not_found",
            _ => "internal",
        }
    }

    /// The request field at fault, when there is one.
    pub fn param(&self) -> Option<&str> {
        match self {
            Error::Invalid { param, .. } => Some(param),
            Error::UnknownModel { .. } | Error::AdapterInvalid { .. } | Error::AdapterUnavailable { .. } => Some("model"),
            _ => None,
        }
    }

    /// The OpenAI-style error body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": self.kind(),
                "param": self.param(),
                "code": self.code(),
            }
        })
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            Error::QueueFull { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Error::Unauthorized { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
