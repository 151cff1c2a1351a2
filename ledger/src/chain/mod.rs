//! The chain seam: one [`Chain`] trait, two real backends chosen by config.
//!
//! - [`embedded::EmbeddedChain`]: an in-process EVM (revm) that behaves like a one-node chain with
//!   automine. It accepts the same signed raw transactions a node does, validates signature, chain
//!   id, nonce and fees, executes them against the same bytecode, and persists accounts, storage,
//!   blocks, receipts and logs in a SQLite file beside the ops catalog, so `settle` and `claim` work
//!   across separate CLI invocations and the demo needs no node.
//! - [`rpc::RpcChain`]: any EVM JSON-RPC endpoint through alloy (anvil locally, a rollup in production).
//!
//! Everything above this trait — deployment, crash-safe sending with fee bumps, settlement, claims
//! — is written once against raw signed transactions, so both backends run the same code path.

pub mod embedded;
pub mod rpc;

use std::future::Future;

use alloy::primitives::{Address, B256, Bytes, Log, U256};
use tributary_pipeline::Catalog;
use tributary_pipeline::config::{ChainBackend, ChainConfig};

use crate::error::Result;

/// Current fee levels, as EIP-1559 wants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    /// Base fee of the next block (wei per gas).
    pub base_fee: u128,
    /// Suggested priority fee (wei per gas).
    pub priority_fee: u128,
}

/// A read-only call or a gas estimate.
#[derive(Debug, Clone, Default)]
pub struct CallRequest {
    /// Caller (`msg.sender`); zero address if `None`.
    pub from: Option<Address>,
    /// Callee; `None` for a contract creation.
    pub to: Option<Address>,
    /// Calldata (or creation code).
    pub data: Bytes,
    /// Wei sent along.
    pub value: U256,
}

/// The receipt of a mined transaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TxReceipt {
    /// Transaction hash.
    pub tx_hash: B256,
    /// Block it was mined in.
    pub block_number: u64,
    /// Hash of that block (re-checked against the chain to detect reorgs).
    pub block_hash: B256,
    /// Whether execution succeeded (false: reverted).
    pub success: bool,
    /// Gas used by the transaction.
    pub gas_used: u64,
    /// Price paid per gas (wei).
    pub effective_gas_price: u128,
    /// Address of the contract it created, if any.
    pub contract_address: Option<Address>,
    /// Logs it emitted.
    #[serde(skip)]
    pub logs: Vec<Log>,
}

/// Which logs to fetch: one contract, one event signature, optionally one first indexed topic.
#[derive(Debug, Clone)]
pub struct LogFilter {
    /// Emitting contract.
    pub address: Address,
    /// Event signature hash.
    pub topic0: B256,
    /// First indexed argument, if filtered.
    pub topic1: Option<B256>,
    /// First block to search.
    pub from_block: u64,
}

/// A log with the block and transaction that emitted it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Block number.
    pub block_number: u64,
    /// Emitting transaction.
    pub tx_hash: B256,
    /// The log.
    pub log: Log,
}

/// An EVM chain, seen through what settlement needs from a node.
///
/// Methods mirror JSON-RPC (`eth_chainId`, `eth_sendRawTransaction`, …). A reverted `call` or
/// `estimate_gas` returns [`crate::Error::Reverted`] with the decoded reason; a transaction the
/// node refuses returns [`crate::Error::Rejected`].
pub trait Chain: Send + Sync {
    /// `embedded` or `rpc`.
    fn backend(&self) -> &'static str;
    /// The chain id.
    fn chain_id(&self) -> impl Future<Output = Result<u64>> + Send;
    /// Hash of block 0: tells one chain instance from another with the same id (a reset dev chain).
    fn genesis_hash(&self) -> impl Future<Output = Result<B256>> + Send;
    /// Latest block number.
    fn block_number(&self) -> impl Future<Output = Result<u64>> + Send;
    /// Hash of block `number` on the canonical chain, if it exists.
    fn block_hash(&self, number: u64) -> impl Future<Output = Result<Option<B256>>> + Send;
    /// Timestamp of the latest block.
    fn block_timestamp(&self) -> impl Future<Output = Result<u64>> + Send;
    /// Next nonce of `account`, counting transactions still pending in the node's pool.
    fn pending_nonce(&self, account: Address) -> impl Future<Output = Result<u64>> + Send;
    /// Next nonce of `account` counting mined transactions only.
    fn mined_nonce(&self, account: Address) -> impl Future<Output = Result<u64>> + Send;
    /// Ether balance of `account`.
    fn balance(&self, account: Address) -> impl Future<Output = Result<U256>> + Send;
    /// Code at `account`.
    fn code(&self, account: Address) -> impl Future<Output = Result<Bytes>> + Send;
    /// Current fee levels.
    fn fees(&self) -> impl Future<Output = Result<Fees>> + Send;
    /// Execute a read-only call against the latest state.
    fn call(&self, req: &CallRequest) -> impl Future<Output = Result<Bytes>> + Send;
    /// Gas a transaction would need.
    fn estimate_gas(&self, req: &CallRequest) -> impl Future<Output = Result<u64>> + Send;
    /// Submit a signed EIP-2718 transaction; returns its hash. Re-sending bytes the node already
    /// knows (pending or mined) is not an error.
    fn send_raw(&self, raw: &Bytes) -> impl Future<Output = Result<B256>> + Send;
    /// The receipt of `hash`, if mined on the canonical chain.
    fn receipt(&self, hash: B256) -> impl Future<Output = Result<Option<TxReceipt>>> + Send;
    /// Logs matching `filter`, oldest first.
    fn logs(&self, filter: &LogFilter) -> impl Future<Output = Result<Vec<LogEntry>>> + Send;
}

/// Development controls every test chain offers (anvil's `evm_*` methods; the embedded chain's own).
pub trait DevChain: Chain {
    /// Move the chain's clock forward by `secs` (applies to the next block).
    fn increase_time(&self, secs: u64) -> impl Future<Output = Result<()>> + Send;
    /// Mine one block now (including pending transactions, if any).
    fn mine(&self) -> impl Future<Output = Result<()>> + Send;
}

/// The chain named by the config: the CLI's way to get a backend.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one per process, never moved in a loop")]
pub enum AnyChain {
    /// The in-process EVM.
    Embedded(embedded::EmbeddedChain),
    /// A JSON-RPC node.
    Rpc(rpc::RpcChain),
}

impl AnyChain {
    /// Open the chain `config` names; the embedded chain lives in a SQLite file beside `catalog`.
    pub fn open(config: &ChainConfig, catalog: &Catalog) -> Result<AnyChain> {
        match config.backend {
            ChainBackend::Embedded => {
                let path = embedded::EmbeddedChain::path_beside(catalog.path());
                Ok(AnyChain::Embedded(embedded::EmbeddedChain::open(&path, config.chain_id)?))
            }
            ChainBackend::Rpc => Ok(AnyChain::Rpc(rpc::RpcChain::connect(&config.rpc_url)?)),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            AnyChain::Embedded($c) => $e,
            AnyChain::Rpc($c) => $e,
        }
    };
}

impl Chain for AnyChain {
    fn backend(&self) -> &'static str {
        delegate!(self, c => c.backend())
    }
    async fn chain_id(&self) -> Result<u64> {
        delegate!(self, c => c.chain_id().await)
    }
    async fn genesis_hash(&self) -> Result<B256> {
        delegate!(self, c => c.genesis_hash().await)
    }
    async fn block_number(&self) -> Result<u64> {
        delegate!(self, c => c.block_number().await)
    }
    async fn block_hash(&self, number: u64) -> Result<Option<B256>> {
        delegate!(self, c => c.block_hash(number).await)
    }
    async fn block_timestamp(&self) -> Result<u64> {
        delegate!(self, c => c.block_timestamp().await)
    }
    async fn pending_nonce(&self, account: Address) -> Result<u64> {
        delegate!(self, c => c.pending_nonce(account).await)
    }
    async fn mined_nonce(&self, account: Address) -> Result<u64> {
        delegate!(self, c => c.mined_nonce(account).await)
    }
    async fn balance(&self, account: Address) -> Result<U256> {
        delegate!(self, c => c.balance(account).await)
    }
    async fn code(&self, account: Address) -> Result<Bytes> {
        delegate!(self, c => c.code(account).await)
    }
    async fn fees(&self) -> Result<Fees> {
        delegate!(self, c => c.fees().await)
    }
    async fn call(&self, req: &CallRequest) -> Result<Bytes> {
        delegate!(self, c => c.call(req).await)
    }
    async fn estimate_gas(&self, req: &CallRequest) -> Result<u64> {
        delegate!(self, c => c.estimate_gas(req).await)
    }
    async fn send_raw(&self, raw: &Bytes) -> Result<B256> {
        delegate!(self, c => c.send_raw(raw).await)
    }
    async fn receipt(&self, hash: B256) -> Result<Option<TxReceipt>> {
        delegate!(self, c => c.receipt(hash).await)
    }
    async fn logs(&self, filter: &LogFilter) -> Result<Vec<LogEntry>> {
        delegate!(self, c => c.logs(filter).await)
    }
}
