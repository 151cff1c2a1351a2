//! The one error type of the `ledger` crate.

use alloy::primitives::{Address, B256};

/// Errors raised by Merkle trees, chains and settlement.
///
/// User-facing problems (a bad table row, a reverted transaction, a root that disagrees with the
/// chain) have structured variants; [`Error::Internal`] is kept for broken invariants, i.e. bugs
/// in Tributary itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tree needs at least one leaf.
    #[error("a Merkle tree needs at least one leaf")]
    EmptyTree,
    /// A leaf value does not match its declared ABI type.
    #[error("leaf value {index}: {reason}")]
    InvalidLeaf {
        /// Position of the value in the tree's input.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A `standard-v1` dump is malformed or does not validate.
    #[error("invalid standard-v1 dump: {0}")]
    InvalidDump(String),
    /// A proof or multiproof request names a leaf that is not in the tree.
    #[error("leaf {0} is not in the tree")]
    UnknownLeaf(usize),
    /// A multiproof is malformed (lengths do not add up).
    #[error("invalid multiproof: {0}")]
    InvalidMultiproof(String),
    /// A row of an input table cannot become a leaf.
    #[error("{table} row (epoch {epoch}, {key}): column `{column}`: {reason}")]
    InvalidRow {
        /// The table (`layer.name`).
        table: String,
        /// The epoch being settled.
        epoch: i64,
        /// The row's key (`index 3`, `contribution_id ab…`).
        key: String,
        /// The offending column.
        column: String,
        /// Why it was refused.
        reason: String,
    },
    /// The epoch has no payout rows: there is nothing to anchor.
    #[error("epoch {0} has no rows in gold.epoch_payouts: nothing to settle")]
    NoPayouts(i64),
    /// Several attribution methods exist for the epoch and none was chosen.
    #[error("epoch {epoch} has influence rows from several methods ({methods:?}); choose one with --method")]
    AmbiguousAttributionMethod {
        /// The epoch.
        epoch: i64,
        /// The methods found.
        methods: Vec<String>,
    },
    /// A settlement was recorded from other table contents than the tables hold now at the recorded versions.
    #[error("epoch {epoch}: {what} recomputed from the recorded table versions is {recomputed}, but {expected} was recorded")]
    Recomputed {
        /// The epoch.
        epoch: i64,
        /// What differs (`payout root`, `attribution root`).
        what: String,
        /// What was recorded.
        expected: String,
        /// What the tables give now.
        recomputed: String,
    },
    /// The chain holds a different root for the epoch than ours: stop and alarm a human.
    #[error(
        "ALARM: epoch {epoch} is anchored on chain with payout root {onchain}, but this settlement computed {ours}; not sending anything"
    )]
    RootMismatch {
        /// The epoch.
        epoch: u64,
        /// Root found on chain.
        onchain: B256,
        /// Root we computed.
        ours: B256,
    },
    /// The epoch cannot be anchored because a later epoch already is.
    #[error("epoch {epoch} cannot be anchored: the contract only accepts epochs >= {next}")]
    EpochNotIncreasing {
        /// The epoch.
        epoch: u64,
        /// The contract's `nextEpoch`.
        next: u64,
    },
    /// The epoch was vetoed by a guardian.
    #[error("epoch {0} was vetoed by a guardian during its challenge window")]
    Vetoed(u64),
    /// The epoch is not settled (no record or no root on chain).
    #[error("epoch {0} is not settled")]
    NotSettled(i64),
    /// The account has no leaf in the epoch's payout tree.
    #[error("account {account} has no payout in epoch {epoch}")]
    NoPayoutFor {
        /// The epoch.
        epoch: i64,
        /// The account.
        account: Address,
    },
    /// A contract call or transaction reverted.
    #[error("{what} reverted: {reason}")]
    Reverted {
        /// What was attempted (`anchor epoch 3`, `claim`, `call rootOf`).
        what: String,
        /// The decoded revert reason (custom error name and arguments), or the raw data.
        reason: String,
    },
    /// The node refused a transaction (bad nonce, underpriced replacement, insufficient funds…).
    #[error("node rejected the transaction: {0}")]
    Rejected(String),
    /// The nonce of a recorded transaction was consumed by a transaction we did not record.
    #[error("nonce {nonce} of {sender} was used by a transaction this catalog did not record")]
    NonceConsumed {
        /// The sending account.
        sender: Address,
        /// The nonce.
        nonce: u64,
    },
    /// The node speaks another chain than configured.
    #[error("chain id mismatch: configured {configured}, node reports {actual}")]
    ChainIdMismatch {
        /// `chain.chain_id` from the config.
        configured: u64,
        /// What the node says.
        actual: u64,
    },
    /// A contract recorded as deployed has no code on the chain (the chain was reset).
    #[error("contract {name} recorded at {address} has no code on the chain: was the chain reset?")]
    MissingContract {
        /// Which contract.
        name: String,
        /// Its recorded address.
        address: Address,
    },
    /// The operator key is missing or malformed. The key itself is never included.
    #[error("operator key: {0}")]
    Key(String),
    /// Chain configuration is invalid (addresses, URL, multipliers).
    #[error("chain config: {0}")]
    Config(String),
    /// The JSON-RPC transport failed.
    #[error("rpc: {0}")]
    Rpc(String),
    /// The embedded chain refused or failed a transaction.
    #[error("embedded chain: {0}")]
    Embedded(String),
    /// A deliberate stop injected by a test (simulates a crash at that point).
    #[error("stopped at failpoint `{0}`")]
    Failpoint(&'static str),
    /// An input was not what the command expects (bad address, bad epoch).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The lakehouse core failed (tables, catalog, storage).
    #[error(transparent)]
    Pipeline(#[from] tributary_pipeline::Error),
    /// The ops catalog (SQLite) failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// JSON could not be encoded or decoded.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Arrow failed to build or read a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A local I/O operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A broken invariant: a bug in Tributary.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
