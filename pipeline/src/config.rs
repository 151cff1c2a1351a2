//! Typed configuration, loaded from `tributary.toml` with `TRIBUTARY_*` environment overrides.
//!
//! Every field has a default (`serde(default)`), so an empty file is a valid config. Environment
//! variables override file values: `TRIBUTARY_WAREHOUSE=s3://b/p` sets `warehouse`, and a double
//! underscore descends into a table, e.g. `TRIBUTARY_S3__ENDPOINT=http://127.0.0.1:9000` or
//! `TRIBUTARY_INGEST__POLL_INTERVAL_SECS=5`. Secrets (S3 keys, the operator key, the admin token)
//! are read from the environment or from files and never printed by `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The file name `tributary init` writes and every command looks for.
pub const CONFIG_FILE: &str = "tributary.toml";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Warehouse root: `file:///abs/path`, a path relative to the config file, `memory://`, or
    /// `s3://bucket/prefix`.
    pub warehouse: String,
    /// The SQLite ops catalog; relative paths are resolved against the config file's directory.
    pub catalog: PathBuf,
    /// S3-compatible object store settings, used when `warehouse` is an `s3://` URL.
    pub s3: S3Config,
    /// How time is cut into epochs.
    pub epoch: EpochConfig,
    /// Ingestion settings.
    pub ingest: IngestConfig,
    /// The datanets contributors can drop data into.
    pub datanets: Vec<DatanetConfig>,
    /// The chain that settlement anchors roots on.
    pub chain: ChainConfig,
    /// The serving tier.
    pub serving: ServingConfig,
    /// The rewards policy.
    pub rewards: RewardsConfig,
    /// Directory the config was loaded from; relative paths resolve against it. Not serialized.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            warehouse: "warehouse".into(),
            catalog: PathBuf::from("catalog.sqlite"),
            s3: S3Config::default(),
            epoch: EpochConfig::default(),
            ingest: IngestConfig::default(),
            datanets: vec![DatanetConfig::default()],
            chain: ChainConfig::default(),
            serving: ServingConfig::default(),
            rewards: RewardsConfig::default(),
            base_dir: PathBuf::from("."),
        }
    }
}

/// S3-compatible store settings (AWS, or any server speaking the protocol).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL for non-AWS servers, e.g. `http://127.0.0.1:9000`. Empty = AWS.
    pub endpoint: String,
    /// Region name.
    pub region: String,
    /// Access key id; empty = take `AWS_ACCESS_KEY_ID` from the environment.
    pub access_key_id: String,
    /// Secret key; empty = take `AWS_SECRET_ACCESS_KEY` from the environment. Never printed.
    pub secret_access_key: String,
    /// Use path-style requests (`endpoint/bucket/key`), as most self-hosted servers need.
    pub path_style: bool,
    /// Allow plain `http://` endpoints (loopback test servers).
    pub allow_http: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: true,
            allow_http: false,
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &if self.secret_access_key.is_empty() { "" } else { "<redacted>" })
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Epoch boundaries: epoch N covers `[genesis + N·length, genesis + (N+1)·length)`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EpochConfig {
    /// Start of epoch 0, RFC 3339 (UTC).
    pub genesis: String,
    /// Length of one epoch in seconds (default: one UTC day).
    pub length_secs: u64,
}

impl Default for EpochConfig {
    fn default() -> Self {
        EpochConfig { genesis: "2026-01-01T00:00:00Z".into(), length_secs: 86_400 }
    }
}

/// Ingestion settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Seconds between inbox scans with `ingest --watch`.
    pub poll_interval_secs: u64,
    /// Files validated and committed together in one atomic batch.
    pub max_files_per_batch: usize,
    /// Files validated concurrently, and the most reads in flight for each group of files that is
    /// read ahead to be hashed together (up to 16 files, two groups ahead).
    pub concurrency: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { poll_interval_secs: 10, max_files_per_batch: 256, concurrency: 8 }
    }
}

/// What a datanet's rows look like.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DatanetKind {
    /// One `text` column.
    Text,
    /// `prompt` + `completion` columns (the `text` column of bronze holds both, joined by a blank line).
    PromptCompletion,
}

/// One datanet: a named, curated data collection with its own rules and reward pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatanetConfig {
    /// Name, also the inbox folder: `inbox/<name>/`. Lower case letters, digits, `-`, `_`.
    pub name: String,
    /// Row shape.
    pub kind: DatanetKind,
    /// Extra columns every file must have (beyond those of `kind`), e.g. `["label"]`.
    pub required_columns: Vec<String>,
    /// Largest accepted file, in bytes.
    pub max_file_bytes: u64,
    /// Largest accepted row content (text, or prompt + completion), in bytes.
    pub max_text_bytes: u64,
    /// Rows one contributor may add per epoch (0 = unlimited).
    pub daily_row_limit: u64,
    /// Bytes of content one contributor may add per epoch (0 = unlimited).
    pub daily_byte_limit: u64,
    /// Whether every file needs `<file>.sig` (EIP-191 over the file's hex sha256) by the path's address.
    pub require_signature: bool,
    /// Validation set used for attribution: a path under the warehouse (Parquet, same columns).
    pub validation_set: String,
    /// This datanet's share of the epoch reward pool, relative to the other datanets.
    pub reward_weight: f64,
    /// Quality thresholds applied by the SQL models (`config.datanets` in SQL).
    #[serde(default)]
    pub quality: QualityConfig,
}

/// Quality thresholds of one datanet. The SQL model `silver/quality_scores.sql` reads them from the
/// `config.datanets` table; each failing rule adds its reason code to a row's `reasons`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// Fewest whitespace-separated words (`too_few_words`).
    pub min_words: i64,
    /// Most words (`too_many_words`).
    pub max_words: i64,
    /// Smallest mean word length in characters (`mean_word_length`; Gopher: 3).
    pub min_mean_word_length: f64,
    /// Largest mean word length (`mean_word_length`; Gopher: 10).
    pub max_mean_word_length: f64,
    /// Largest fraction of symbol characters (`symbol_ratio`; Gopher: 0.1).
    pub max_symbol_ratio: f64,
    /// Smallest fraction of words holding a letter (`non_alpha_words`; Gopher: 0.8).
    pub min_alpha_word_ratio: f64,
    /// Largest fraction of repeated lines (`repeated_lines`; Gopher: 0.3).
    pub max_dup_line_fraction: f64,
    /// Largest share of characters in the most frequent 2-gram (`repeated_ngrams`; Gopher: 0.2).
    pub max_top_2gram_fraction: f64,
    /// Largest share of characters in repeated 5-grams (`repeated_ngrams`; Gopher: 0.15).
    pub max_dup_5gram_fraction: f64,
    /// Most boilerplate phrases allowed (`boilerplate`; C4: 0).
    pub max_boilerplate_hits: i64,
    /// Require terminal punctuation at the end (`no_terminal_punctuation`; C4).
    pub require_terminal_punctuation: bool,
    /// Fewest words in the completion of a prompt/completion row (`short_completion`).
    pub min_completion_words: i64,
    /// Allowed values of `label`; empty = any, including none (`invalid_label`).
    pub allowed_labels: Vec<String>,
    /// Smallest `quality_score` (fraction of rules passed) a row needs to be accepted.
    pub min_quality_score: f64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            min_words: 5,
            max_words: 100_000,
            min_mean_word_length: 3.0,
            max_mean_word_length: 10.0,
            max_symbol_ratio: 0.1,
            min_alpha_word_ratio: 0.8,
            max_dup_line_fraction: 0.3,
            max_top_2gram_fraction: 0.2,
            max_dup_5gram_fraction: 0.15,
            max_boilerplate_hits: 0,
            require_terminal_punctuation: true,
            min_completion_words: 3,
            allowed_labels: vec![],
            min_quality_score: 1.0,
        }
    }
}

impl Default for DatanetConfig {
    fn default() -> Self {
        DatanetConfig {
            name: "default".into(),
            kind: DatanetKind::Text,
            required_columns: vec![],
            max_file_bytes: 256 * 1024 * 1024,
            max_text_bytes: 64 * 1024,
            daily_row_limit: 1_000_000,
            daily_byte_limit: 1024 * 1024 * 1024,
            require_signature: false,
            validation_set: String::new(),
            reward_weight: 1.0,
            quality: QualityConfig::default(),
        }
    }
}

/// Which chain backend settlement uses.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChainBackend {
    /// An in-process EVM whose state persists beside the catalog.
    Embedded,
    /// Any EVM JSON-RPC endpoint.
    Rpc,
}

/// Chain settings for settlement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChainConfig {
    /// `embedded` (default) or `rpc`.
    pub backend: ChainBackend,
    /// JSON-RPC URL for the `rpc` backend.
    pub rpc_url: String,
    /// Chain id expected from the node.
    pub chain_id: u64,
    /// Environment variable holding the operator's private key (hex).
    pub operator_key_env: String,
    /// File holding the operator's private key (hex); used if the env variable is unset.
    pub operator_key_file: String,
    /// Address of the deployed settlement contract (empty = deploy on first settle).
    pub contract_address: String,
    /// Confirmations to wait for before a settlement counts as final.
    pub confirmations: u64,
    /// Seconds before an unmined transaction is re-sent with bumped fees.
    pub resend_after_secs: u64,
    /// Cap on bumped fees, as a multiple of the first estimate.
    pub max_fee_multiplier: f64,
    /// Seconds a new root waits before it is claimable (0 = none); a guardian may veto meanwhile.
    pub challenge_window_secs: u64,
    /// Reward token for a newly deployed settlement contract (empty = deploy the demo token).
    #[serde(default)]
    pub token_address: String,
    /// Guardian (may veto during the challenge window) of a newly deployed settlement contract
    /// (empty = none on `rpc`, the development guardian key on `embedded`).
    #[serde(default)]
    pub guardian_address: String,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            backend: ChainBackend::Embedded,
            rpc_url: "http://127.0.0.1:8545".into(),
            chain_id: 31337,
            operator_key_env: "TRIBUTARY_OPERATOR_KEY".into(),
            operator_key_file: String::new(),
            contract_address: String::new(),
            confirmations: 1,
            resend_after_secs: 30,
            max_fee_multiplier: 4.0,
            challenge_window_secs: 0,
            token_address: String::new(),
            guardian_address: String::new(),
        }
    }
}

/// Serving tier settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServingConfig {
    /// Address to listen on.
    pub bind: String,
    /// Base model name under `models/`.
    pub base_model: String,
    /// Environment variable holding the admin bearer token.
    pub admin_token_env: String,
    /// Requests waiting beyond this many get 429.
    pub max_queue: usize,
    /// Most sequences in one running batch.
    pub max_batch: usize,
    /// Adapters resident in compute memory at once.
    pub max_active_adapters: usize,
    /// Adapters kept in host memory (LRU).
    pub host_cache_adapters: usize,
    /// Longest accepted prompt, in tokens.
    pub max_prompt_tokens: usize,
    /// Fee per generated token, in token base units.
    pub fee_per_token: u64,
    /// Compute device: `cpu`, `cuda` or `cuda:N` (CUDA needs the `cuda` build feature).
    pub device: String,
    /// Most tokens one request may generate (`max_tokens` above this is refused).
    pub max_new_tokens: usize,
    /// Largest adapter rank accepted.
    pub max_lora_rank: usize,
    /// Most prompt tokens prefilled per engine iteration (bounds the pause of running requests).
    pub prefill_token_budget: usize,
    /// An adapter resident this long (milliseconds) yields its compute slot when others wait.
    pub adapter_cycle_ms: u64,
    /// Seconds between scans of `adapters/` for newly published versions.
    pub publish_poll_secs: u64,
    /// Usage rows are written at least this often (milliseconds)…
    pub usage_flush_ms: u64,
    /// …or as soon as this many are buffered.
    pub usage_flush_rows: usize,
    /// Shortest generated span, in tokens, credited to the training rows it reproduces.
    pub credit_min_span_tokens: usize,
    /// Seconds a shutdown waits for accepted requests to finish.
    pub shutdown_grace_secs: u64,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            bind: "127.0.0.1:8080".into(),
            base_model: "tributary-base".into(),
            admin_token_env: "TRIBUTARY_ADMIN_TOKEN".into(),
            max_queue: 256,
            max_batch: 32,
            max_active_adapters: 64,
            host_cache_adapters: 1024,
            max_prompt_tokens: 1024,
            fee_per_token: 1_000_000_000,
            device: "cpu".into(),
            max_new_tokens: 256,
            max_lora_rank: 64,
            prefill_token_budget: 4096,
            adapter_cycle_ms: 2000,
            publish_poll_secs: 5,
            usage_flush_ms: 1000,
            usage_flush_rows: 256,
            credit_min_span_tokens: 8,
            shutdown_grace_secs: 30,
        }
    }
}

/// Rewards policy settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RewardsConfig {
    /// Tokens paid per epoch across all datanets, in base units (decimal string: may exceed u64).
    pub pool_per_epoch: String,
    /// A contributor with more than this fraction of rows rejected is penalized.
    pub rejection_penalty_threshold: f64,
    /// Fraction of the penalized contributor's reward withheld (returned to the pool split).
    pub rejection_penalty: f64,
}

impl Default for RewardsConfig {
    fn default() -> Self {
        RewardsConfig {
            pool_per_epoch: "1000000000000000000000".into(),
            rejection_penalty_threshold: 0.5,
            rejection_penalty: 0.5,
        }
    }
}

impl Config {
    /// Load `path` (a file, or a directory holding `tributary.toml`), apply `TRIBUTARY_*` env
    /// overrides and validate. A missing file gives the defaults (plus overrides).
    pub fn load(path: &Path) -> Result<Config> {
        let file = if path.is_dir() { path.join(CONFIG_FILE) } else { path.to_path_buf() };
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::Config(format!("cannot read {}: {e}", file.display()))),
        };
        let base = file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        Self::from_toml_with_env(&text, &base, std::env::vars())
            .map_err(|e| match e {
                Error::Config(m) => Error::Config(format!("{}: {m}", file.display())),
                other => other,
            })
    }

    /// Parse TOML text, apply overrides from `env` (`TRIBUTARY_*` pairs), validate.
    pub fn from_toml_with_env(
        text: &str,
        base_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        for (key, val) in env {
            let Some(rest) = key.strip_prefix("TRIBUTARY_") else { continue };
            // Variables that name secrets or the config location are not config fields.
            if matches!(rest, "CONFIG" | "OPERATOR_KEY" | "ADMIN_TOKEN" | "LOG") {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut value, &path, parse_scalar(&val))
                .map_err(|m| Error::Config(format!("env {key}: {m}")))?;
        }
        let mut config: Config =
            toml::Value::Table(value).try_into().map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        config.base_dir = base_dir.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    /// Check cross-field rules that types cannot express.
    pub fn validate(&self) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        for d in &self.datanets {
            let ok = !d.name.is_empty()
                && d.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !ok {
                return Err(Error::Config(format!(
                    "datanet name `{}` must be non-empty lower-case letters, digits, `-` or `_`",
                    d.name
                )));
            }
            if !names.insert(&d.name) {
                return Err(Error::Config(format!("datanet `{}` is declared twice", d.name)));
            }
            if d.reward_weight < 0.0 || !d.reward_weight.is_finite() {
                return Err(Error::Config(format!("datanet `{}`: reward_weight must be ≥ 0", d.name)));
            }
        }
        if self.epoch.length_secs == 0 {
            return Err(Error::Config("epoch.length_secs must be > 0".into()));
        }
        self.epoch_genesis()?;
        if self.ingest.max_files_per_batch == 0 || self.ingest.concurrency == 0 {
            return Err(Error::Config("ingest.max_files_per_batch and ingest.concurrency must be > 0".into()));
        }
        if self.rewards.pool_per_epoch.parse::<u128>().is_err() {
            return Err(Error::Config("rewards.pool_per_epoch must be a decimal integer".into()));
        }
        Ok(())
    }

    /// The configured genesis instant.
    pub fn epoch_genesis(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.epoch.genesis)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| Error::Config(format!("epoch.genesis `{}`: {e}", self.epoch.genesis)))
    }

    /// The datanet named `name`.
    pub fn datanet(&self, name: &str) -> Option<&DatanetConfig> {
        self.datanets.iter().find(|d| d.name == name)
    }

    /// The catalog path, resolved against the config directory.
    pub fn catalog_path(&self) -> PathBuf {
        if self.catalog.is_absolute() { self.catalog.clone() } else { self.base_dir.join(&self.catalog) }
    }
}

fn parse_scalar(s: &str) -> toml::Value {
    if let Ok(b) = s.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(i) = s.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = s.parse::<f64>()
        && s.contains('.')
    {
        return toml::Value::Float(f);
    }
    toml::Value::String(s.to_string())
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> std::result::Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [leaf] => {
            // Keep strings strings where the file already has a string (e.g. pool_per_epoch).
            let value = match (table.get(leaf), value) {
                (Some(toml::Value::String(_)), v) if !v.is_str() => toml::Value::String(scalar_text(&v)),
                (_, v) => v,
            };
            table.insert(leaf.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = table.entry(head.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("`{head}` is not a table")),
            }
        }
    }
}

fn scalar_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The commented default config that `tributary init` writes.
pub fn default_config_toml() -> String {
    let mut out = String::from(DEFAULT_HEADER);
    out.push_str(DEFAULT_BODY);
    out
}

const DEFAULT_HEADER: &str = "\
# Tributary configuration. Every key is optional; the values below are the defaults.
# Any key can be overridden from the environment: TRIBUTARY_<KEY>, with `__` to descend into a
# table, e.g. TRIBUTARY_WAREHOUSE=s3://bucket/prefix or TRIBUTARY_S3__ENDPOINT=http://127.0.0.1:9000.
";

const DEFAULT_BODY: &str = r#"
# Warehouse root: a path relative to this file, file:///abs/path, memory:// or s3://bucket/prefix.
warehouse = "warehouse"
# SQLite ops catalog (runs, schedules, settlements), relative to this file.
catalog = "catalog.sqlite"

[s3]
# Endpoint for S3-compatible servers; empty means AWS.
endpoint = ""
region = "us-east-1"
# Keys; empty means AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment.
access_key_id = ""
secret_access_key = ""
path_style = true
allow_http = false

[epoch]
# Epoch N covers [genesis + N*length_secs, genesis + (N+1)*length_secs).
genesis = "2026-01-01T00:00:00Z"
length_secs = 86400

[ingest]
# Seconds between inbox scans with `tributary ingest --watch`.
poll_interval_secs = 10
# Files validated and committed together in one atomic batch.
max_files_per_batch = 256
# Files validated concurrently; also the most reads at once for each group of up to 16 files
# read ahead (two groups) so that their sha256s are computed together.
concurrency = 8

# One [[datanets]] block per datanet; contributors drop files in inbox/<name>/<0xaddress>/.
[[datanets]]
name = "default"
# "text" (a `text` column) or "prompt_completion" (`prompt` + `completion`).
kind = "text"
# Extra columns every file must carry, e.g. ["label"].
required_columns = []
max_file_bytes = 268435456
max_text_bytes = 65536
# Per contributor and epoch; 0 = unlimited.
daily_row_limit = 1000000
daily_byte_limit = 1073741824
# Require <file>.sig: an EIP-191 personal-sign signature over the file's hex sha256.
require_signature = false
# Validation set for attribution (Parquet under the warehouse); empty = a held-out sample.
validation_set = ""
# Share of the epoch pool relative to other datanets.
reward_weight = 1.0

# Quality rules of the SQL model silver/quality_scores.sql (Gopher/C4-style heuristics); each
# failing rule adds its reason code. quality_score = fraction of rules passed.
[datanets.quality]
min_words = 5
max_words = 100000
min_mean_word_length = 3.0
max_mean_word_length = 10.0
max_symbol_ratio = 0.1
min_alpha_word_ratio = 0.8
max_dup_line_fraction = 0.3
max_top_2gram_fraction = 0.2
max_dup_5gram_fraction = 0.15
max_boilerplate_hits = 0
require_terminal_punctuation = true
# Prompt/completion datanets: fewest words in the completion.
min_completion_words = 3
# Allowed labels; empty = any.
allowed_labels = []
# A row is accepted when it is canonical and quality_score >= min_quality_score.
min_quality_score = 1.0

[chain]
# "embedded" (in-process EVM, state beside the catalog) or "rpc".
backend = "embedded"
rpc_url = "http://127.0.0.1:8545"
chain_id = 31337
# The operator key is read from this env variable, else from operator_key_file. Never logged.
operator_key_env = "TRIBUTARY_OPERATOR_KEY"
operator_key_file = ""
contract_address = ""
confirmations = 1
resend_after_secs = 30
max_fee_multiplier = 4.0
challenge_window_secs = 0
# Reward token and guardian of a newly deployed settlement contract; empty = the demo token, and
# no guardian on rpc / the development guardian on embedded.
token_address = ""
guardian_address = ""

[serving]
bind = "127.0.0.1:8080"
base_model = "tributary-base"
# Admin endpoints need `Authorization: Bearer <token>`, the token read from this env variable.
admin_token_env = "TRIBUTARY_ADMIN_TOKEN"
max_queue = 256
max_batch = 32
max_active_adapters = 64
host_cache_adapters = 1024
max_prompt_tokens = 1024
fee_per_token = 1000000000
# cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
device = "cpu"
max_new_tokens = 256
max_lora_rank = 64
prefill_token_budget = 4096
# An adapter resident this long yields its compute slot to waiting adapters (LoRAX-style rotation).
adapter_cycle_ms = 2000
# New adapter versions under adapters/ are picked up (and the datanet alias moved) this often.
publish_poll_secs = 5
# Usage rows are appended to gold.inference_usage this often, or once this many are buffered.
usage_flush_ms = 1000
usage_flush_rows = 256
# Generated spans at least this long are credited to the training rows they reproduce.
credit_min_span_tokens = 8
shutdown_grace_secs = 30

[rewards]
# Token base units paid per epoch (decimal string; may exceed 64 bits).
pool_per_epoch = "1000000000000000000000"
rejection_penalty_threshold = 0.5
rejection_penalty = 0.5
"#;

/// Parse `KEY=VALUE` pairs into a map (used by tests and the CLI's `--set`).
pub fn env_pairs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_to_default_struct() {
        let c = Config::from_toml_with_env(&default_config_toml(), Path::new("."), vec![]).expect("parses");
        assert_eq!(c, Config { base_dir: PathBuf::from("."), ..Config::default() });
    }

    #[test]
    fn env_overrides_descend_into_tables() {
        let env = env_pairs(&[
            ("TRIBUTARY_WAREHOUSE", "memory://"),
            ("TRIBUTARY_S3__ENDPOINT", "http://127.0.0.1:9000"),
            ("TRIBUTARY_INGEST__CONCURRENCY", "3"),
            ("TRIBUTARY_REWARDS__POOL_PER_EPOCH", "5"),
            ("TRIBUTARY_OPERATOR_KEY", "0xsecret"),
            ("OTHER", "x"),
        ]);
        let c = Config::from_toml_with_env(&default_config_toml(), Path::new("."), env).expect("parses");
        assert_eq!(c.warehouse, "memory://");
        assert_eq!(c.s3.endpoint, "http://127.0.0.1:9000");
        assert_eq!(c.ingest.concurrency, 3);
        assert_eq!(c.rewards.pool_per_epoch, "5");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = Config::from_toml_with_env("[[datanets]]\nname = \"Bad Name\"", Path::new("."), vec![])
            .expect_err("must fail");
        assert!(e.to_string().contains("Bad Name"), "{e}");
        let e = Config::from_toml_with_env("warehous = 1", Path::new("."), vec![]).expect_err("must fail");
        assert!(e.to_string().contains("warehous"), "{e}");
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let s = S3Config { secret_access_key: "hunter2".into(), ..S3Config::default() };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
