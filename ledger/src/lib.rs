//! `tributary-ledger` settles Tributary's epochs on an EVM chain: it turns an epoch's payout and
//! attribution rows into OpenZeppelin-compatible Merkle trees, anchors their roots in the
//! `TributarySettlement` contract, and serves the proofs contributors claim with.
//!
//! The main types are [`merkle::StandardMerkleTree`] (exactly `@openzeppelin/merkle-tree`'s
//! standard tree: double-hashed ABI-encoded leaves, sorted pairs, `standard-v1` dumps), the
//! [`chain::Chain`] trait with its two backends — [`chain::embedded::EmbeddedChain`] (revm in
//! process, state in SQLite beside the ops catalog) and [`chain::rpc::RpcChain`] (any JSON-RPC
//! node) — the crash-safe [`sender::TxSender`], and one module per operation: [`settle`],
//! [`verify`], [`proof`], [`claim`], [`status`].
//!
//! The key design choice is that everything above the chain seam works on signed raw
//! transactions that are recorded in the ops catalog *before* they are sent: a settlement killed
//! at any point resumes by re-sending the same bytes after checking `rootOf(epoch)`, so nothing is
//! ever anchored or paid twice, and both backends run exactly the same code path.
//!
//! This crate is not a rewards policy (`gold.epoch_payouts` is its input), knows nothing about
//! HTTP serving or Burn, and never logs a private key.

pub mod chain;
pub mod claim;
pub mod contract;
pub mod deploy;
pub mod error;
pub mod inputs;
pub mod keys;
pub mod leaves;
pub mod merkle;
pub mod payouts;
pub mod proof;
pub mod rewards;
pub mod sender;
pub mod settle;
pub mod status;
pub mod store;
pub mod verify;

/// The alloy crate this one is built on (addresses, hashes, ABI types), re-exported for callers.
pub use alloy;
pub use chain::{AnyChain, Chain};
pub use error::{Error, Result};
pub use leaves::{AttributionLeaf, PayoutLeaf};
pub use merkle::StandardMerkleTree;
pub use settle::{SettleBuilder, SettleReceipt};
