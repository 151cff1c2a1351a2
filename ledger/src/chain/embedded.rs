//! The embedded chain: revm in process, state in a SQLite file, one block per transaction.
//!
//! It behaves like a single dev node with automine: [`Chain::send_raw`] decodes a signed EIP-2718
//! transaction, recovers its signer, checks chain id, nonce, balance and fees (revm's validation),
//! executes it against the latest state and mines a block holding it. Accounts, code, storage,
//! blocks, transactions, receipts and logs are written in one SQLite transaction per block, so a
//! crash never leaves half a block, and a later process (the next CLI invocation) sees the same chain.
//!
//! What it deliberately lacks: a mempool (a transaction is mined or refused at once), reorgs, and
//! a changing base fee (constant [`BASE_FEE`]). Finality is immediate, so confirmations are met
//! as soon as a transaction is mined.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use alloy::consensus::TxEnvelope;
use alloy::consensus::transaction::SignerRecoverable;
use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::{Address, B256, Bytes, Log, LogData, TxKind, U256, keccak256};
use revm::bytecode::Bytecode;
use revm::context::result::{EVMError, ExecutionResult, Output};
use revm::context::{Context, TxEnv};
use revm::database::CacheDB;
use revm::database_interface::DatabaseRef;
use revm::primitives::KECCAK_EMPTY;
use revm::primitives::hardfork::SpecId;
use revm::state::{AccountInfo, EvmState};
use revm::{ExecuteEvm, MainBuilder, MainContext};
use rusqlite::{Connection, OptionalExtension, params};

use super::{CallRequest, Chain, DevChain, Fees, LogEntry, LogFilter, TxReceipt};
use crate::contract::decode_revert;
use crate::error::{Error, Result};
use crate::keys::dev_accounts;

/// The constant base fee of the embedded chain (1 gwei).
pub const BASE_FEE: u64 = 1_000_000_000;
/// The suggested priority fee (1 gwei, like anvil).
pub const PRIORITY_FEE: u128 = 1_000_000_000;
/// Block gas limit.
pub const BLOCK_GAS_LIMIT: u64 = 30_000_000;
/// Ether given to each dev account at genesis (10,000 ETH, like anvil).
pub const DEV_BALANCE_WEI: u128 = 10_000 * 1_000_000_000_000_000_000;
/// The hard fork the embedded chain runs (also the contracts' `evmVersion`).
pub const SPEC: SpecId = SpecId::PRAGUE;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (address BLOB PRIMARY KEY, balance BLOB NOT NULL, nonce INTEGER NOT NULL, code_hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS code (hash BLOB PRIMARY KEY, code BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS storage (address BLOB NOT NULL, slot BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (address, slot));
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, parent BLOB NOT NULL, timestamp INTEGER NOT NULL, base_fee INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
    hash BLOB PRIMARY KEY, block INTEGER NOT NULL, sender BLOB NOT NULL, nonce INTEGER NOT NULL, raw BLOB NOT NULL,
    success INTEGER NOT NULL, gas_used INTEGER NOT NULL, gas_price TEXT NOT NULL, contract BLOB, output BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    block INTEGER NOT NULL, idx INTEGER NOT NULL, tx BLOB NOT NULL, address BLOB NOT NULL,
    topic0 BLOB, topic1 BLOB, topics BLOB NOT NULL, data BLOB NOT NULL, PRIMARY KEY (block, idx)
);
CREATE INDEX IF NOT EXISTS logs_by_topic ON logs (address, topic0, topic1);
"#;

/// In-memory world state, the revm database (read-only; changes come back as an [`EvmState`]).
#[derive(Debug, Default, Clone)]
struct World {
    accounts: HashMap<Address, (U256, u64, B256)>,
    code: HashMap<B256, Bytecode>,
    storage: HashMap<Address, HashMap<U256, U256>>,
    block_hashes: HashMap<u64, B256>,
}

impl DatabaseRef for World {
    type Error = Infallible;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, Infallible> {
        Ok(self.accounts.get(&address).map(|(balance, nonce, code_hash)| {
            let mut info = AccountInfo::default().with_code_hash(*code_hash);
            info.balance = *balance;
            info.nonce = *nonce;
            info.code = self.code.get(code_hash).cloned();
            info
        }))
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, Infallible> {
        Ok(self.code.get(&code_hash).cloned().unwrap_or_default())
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, Infallible> {
        Ok(self.storage.get(&address).and_then(|s| s.get(&index)).copied().unwrap_or_default())
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, Infallible> {
        Ok(self.block_hashes.get(&number).copied().unwrap_or_default())
    }
}

#[derive(Debug, Clone, Copy)]
struct Head {
    number: u64,
    hash: B256,
    timestamp: u64,
}

/// A mined transaction as a block stores it: hash, sender, nonce, raw bytes, result, gas price.
type TxRow<'a> = (&'a B256, Address, u64, &'a [u8], &'a ExecutionResult, u128);

#[derive(Debug)]
struct Inner {
    conn: Connection,
    world: World,
    head: Head,
    genesis: B256,
    chain_id: u64,
    time_offset: u64,
}

/// The embedded chain (see the module docs).
#[derive(Debug)]
pub struct EmbeddedChain {
    path: PathBuf,
    inner: Mutex<Inner>,
}

fn blob_u256(v: &U256) -> Vec<u8> {
    v.to_be_bytes::<32>().to_vec()
}

fn u256_blob(b: &[u8]) -> U256 {
    U256::from_be_slice(b)
}

fn b256_blob(b: &[u8]) -> B256 {
    B256::from_slice(&b[..32.min(b.len())])
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl EmbeddedChain {
    /// The chain file that lives beside the ops catalog `catalog` (`<catalog>.chain.sqlite`).
    pub fn path_beside(catalog: &Path) -> PathBuf {
        catalog.with_extension("chain.sqlite")
    }

    /// Open (creating with a fresh genesis if needed) the chain stored at `path`.
    pub fn open(path: &Path, chain_id: u64) -> Result<EmbeddedChain> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA)?;
        let existing: Option<String> =
            conn.query_row("SELECT value FROM meta WHERE key = 'chain_id'", [], |r| r.get(0)).optional()?;
        match existing {
            Some(id) if id != chain_id.to_string() => {
                return Err(Error::ChainIdMismatch {
                    configured: chain_id,
                    actual: id.parse().unwrap_or_default(),
                });
            }
            Some(_) => {}
            None => Self::genesis(&conn, chain_id)?,
        }
        let inner = Self::load(conn, chain_id)?;
        Ok(EmbeddedChain { path: path.to_path_buf(), inner: Mutex::new(inner) })
    }

    /// The SQLite file holding the chain.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn genesis(conn: &Connection, chain_id: u64) -> Result<()> {
        let tx = conn.unchecked_transaction()?;
        // Block 0's hash identifies this chain instance: unique per creation, like a node's genesis.
        let salt = format!("tributary-embedded:{chain_id}:{}:{:?}", std::process::id(), std::time::SystemTime::now());
        let genesis = keccak256(salt.as_bytes());
        let ts = now_secs();
        tx.execute(
            "INSERT INTO blocks(number, hash, parent, timestamp, base_fee) VALUES (0, ?1, ?2, ?3, ?4)",
            params![genesis.as_slice(), B256::ZERO.as_slice(), ts as i64, BASE_FEE as i64],
        )?;
        for (k, v) in [("chain_id", chain_id.to_string()), ("time_offset", "0".into())] {
            tx.execute("INSERT INTO meta(key, value) VALUES (?1, ?2)", params![k, v])?;
        }
        for account in dev_accounts() {
            tx.execute(
                "INSERT INTO accounts(address, balance, nonce, code_hash) VALUES (?1, ?2, 0, ?3)",
                params![account.as_slice(), blob_u256(&U256::from(DEV_BALANCE_WEI)), KECCAK_EMPTY.as_slice()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn load(conn: Connection, chain_id: u64) -> Result<Inner> {
        let mut world = World::default();
        {
            let mut st = conn.prepare("SELECT address, balance, nonce, code_hash FROM accounts")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?, r.get::<_, Vec<u8>>(3)?))
            })?;
            for row in rows {
                let (a, b, n, h) = row?;
                world.accounts.insert(Address::from_slice(&a), (u256_blob(&b), n as u64, b256_blob(&h)));
            }
            let mut st = conn.prepare("SELECT hash, code FROM code")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            for row in rows {
                let (h, c) = row?;
                world.code.insert(b256_blob(&h), Bytecode::new_raw(c.into()));
            }
            let mut st = conn.prepare("SELECT address, slot, value FROM storage")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?))
            })?;
            for row in rows {
                let (a, s, v) = row?;
                world.storage.entry(Address::from_slice(&a)).or_default().insert(u256_blob(&s), u256_blob(&v));
            }
            let mut st = conn.prepare("SELECT number, hash FROM blocks")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            for row in rows {
                let (n, h) = row?;
                world.block_hashes.insert(n as u64, b256_blob(&h));
            }
        }
        let head = Self::read_head(&conn)?;
        let genesis: Vec<u8> = conn.query_row("SELECT hash FROM blocks WHERE number = 0", [], |r| r.get(0))?;
        let time_offset: String =
            conn.query_row("SELECT value FROM meta WHERE key = 'time_offset'", [], |r| r.get(0))?;
        Ok(Inner {
            conn,
            world,
            head,
            genesis: b256_blob(&genesis),
            chain_id,
            time_offset: time_offset.parse().unwrap_or(0),
        })
    }

    fn read_head(conn: &Connection) -> Result<Head> {
        Ok(conn.query_row("SELECT number, hash, timestamp FROM blocks ORDER BY number DESC LIMIT 1", [], |r| {
            Ok(Head { number: r.get::<_, i64>(0)? as u64, hash: b256_blob(&r.get::<_, Vec<u8>>(1)?), timestamp: r.get::<_, i64>(2)? as u64 })
        })?)
    }

    /// Run `f` on the latest state, reloading first if another process has mined since we loaded.
    fn with_inner<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        // A poisoned mutex means a panic mid-call; the SQLite file is the source of truth, so reload.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let on_disk = Self::read_head(&guard.conn)?;
        if on_disk.hash != guard.head.hash {
            let conn = Connection::open(&self.path)?;
            conn.busy_timeout(std::time::Duration::from_secs(30))?;
            let chain_id = guard.chain_id;
            *guard = Self::load(conn, chain_id)?;
        }
        f(&mut guard)
    }

    fn next_block_env(inner: &Inner) -> (u64, u64) {
        let number = inner.head.number + 1;
        let timestamp = (now_secs() + inner.time_offset).max(inner.head.timestamp + 1);
        (number, timestamp)
    }

    fn run(
        inner: &Inner,
        tx: TxEnv,
        block: (u64, u64),
        basefee: u64,
        checks: bool,
    ) -> std::result::Result<revm::context::result::ExecResultAndState<ExecutionResult, EvmState>, String> {
        let chain_id = inner.chain_id;
        let mut evm = Context::mainnet()
            .with_db(CacheDB::new(&inner.world))
            .modify_cfg_chained(|c| {
                c.chain_id = chain_id;
                c.set_spec_and_mainnet_gas_params(SPEC);
                if !checks {
                    c.disable_nonce_check = true;
                }
            })
            .modify_block_chained(|b| {
                b.number = U256::from(block.0);
                b.timestamp = U256::from(block.1);
                b.basefee = basefee;
                b.gas_limit = BLOCK_GAS_LIMIT;
                b.prevrandao = Some(keccak256(block.0.to_be_bytes()));
            })
            .build_mainnet();
        evm.transact(tx).map_err(|e| match e {
            EVMError::Transaction(t) => t.to_string(),
            other => format!("{other:?}"),
        })
    }

    fn call_env(req: &CallRequest, gas_limit: u64, chain_id: u64) -> Result<TxEnv> {
        TxEnv::builder()
            .caller(req.from.unwrap_or_default())
            .kind(match req.to {
                Some(to) => TxKind::Call(to),
                None => TxKind::Create,
            })
            .data(req.data.clone())
            .value(req.value)
            .gas_limit(gas_limit)
            .gas_price(0)
            .chain_id(Some(chain_id))
            .build()
            .map_err(|e| Error::Embedded(format!("building a call: {e:?}")))
    }

    fn simulate(&self, req: &CallRequest) -> Result<ExecutionResult> {
        self.with_inner(|inner| {
            let block = Self::next_block_env(inner);
            let env = Self::call_env(req, BLOCK_GAS_LIMIT, inner.chain_id)?;
            let out = Self::run(inner, env, block, 0, false).map_err(Error::Embedded)?;
            Ok(out.result)
        })
    }

    fn persist_block(
        inner: &mut Inner,
        block: (u64, u64),
        tx_row: Option<TxRow<'_>>,
        state: Option<&EvmState>,
    ) -> Result<()> {
        let parent = inner.head.hash;
        let tx_hash = tx_row.map(|t| *t.0).unwrap_or_default();
        let hash = keccak256([&block.0.to_be_bytes()[..], parent.as_slice(), &block.1.to_be_bytes(), tx_hash.as_slice()].concat());
        let db = inner.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have mined since our snapshot: refuse rather than fork the file.
        let on_disk: i64 = db.query_row("SELECT MAX(number) FROM blocks", [], |r| r.get(0))?;
        if on_disk as u64 != inner.head.number {
            return Err(Error::Embedded("the chain file advanced under us; retry".into()));
        }
        db.execute(
            "INSERT INTO blocks(number, hash, parent, timestamp, base_fee) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![block.0 as i64, hash.as_slice(), parent.as_slice(), block.1 as i64, BASE_FEE as i64],
        )?;
        if let Some(state) = state {
            for (address, account) in state {
                if !account.is_touched() {
                    continue;
                }
                let a = address.as_slice();
                let info = &account.info;
                let empty = info.balance.is_zero() && info.nonce == 0 && info.code_hash == KECCAK_EMPTY;
                if account.is_selfdestructed() || empty {
                    db.execute("DELETE FROM accounts WHERE address = ?1", [a])?;
                    db.execute("DELETE FROM storage WHERE address = ?1", [a])?;
                    continue;
                }
                if account.is_created() {
                    db.execute("DELETE FROM storage WHERE address = ?1", [a])?;
                }
                db.execute(
                    "INSERT INTO accounts(address, balance, nonce, code_hash) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(address) DO UPDATE SET balance = excluded.balance, nonce = excluded.nonce, code_hash = excluded.code_hash",
                    params![a, blob_u256(&info.balance), info.nonce as i64, info.code_hash.as_slice()],
                )?;
                if let Some(code) = &info.code
                    && info.code_hash != KECCAK_EMPTY && !code.is_empty()
                {
                    db.execute(
                        "INSERT OR IGNORE INTO code(hash, code) VALUES (?1, ?2)",
                        params![info.code_hash.as_slice(), code.original_bytes().to_vec()],
                    )?;
                }
                for (slot, value) in account.changed_storage_slots() {
                    if value.present_value.is_zero() {
                        db.execute("DELETE FROM storage WHERE address = ?1 AND slot = ?2", params![a, blob_u256(slot)])?;
                    } else {
                        db.execute(
                            "INSERT INTO storage(address, slot, value) VALUES (?1, ?2, ?3)
                             ON CONFLICT(address, slot) DO UPDATE SET value = excluded.value",
                            params![a, blob_u256(slot), blob_u256(&value.present_value)],
                        )?;
                    }
                }
            }
        }
        if let Some((hash, sender, nonce, raw, result, price)) = tx_row {
            let contract = match result {
                ExecutionResult::Success { output: Output::Create(_, Some(addr)), .. } => Some(addr.to_vec()),
                _ => None,
            };
            let output = result.output().cloned().unwrap_or_default();
            db.execute(
                "INSERT INTO txs(hash, block, sender, nonce, raw, success, gas_used, gas_price, contract, output)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    hash.as_slice(),
                    block.0 as i64,
                    sender.as_slice(),
                    nonce as i64,
                    raw,
                    result.is_success(),
                    result.tx_gas_used() as i64,
                    price.to_string(),
                    contract,
                    output.to_vec()
                ],
            )?;
            for (idx, log) in result.logs().iter().enumerate() {
                let topics = log.data.topics();
                let all: Vec<u8> = topics.iter().flat_map(|t| t.0).collect();
                db.execute(
                    "INSERT INTO logs(block, idx, tx, address, topic0, topic1, topics, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        block.0 as i64,
                        idx as i64,
                        hash.as_slice(),
                        log.address.as_slice(),
                        topics.first().map(|t| t.to_vec()),
                        topics.get(1).map(|t| t.to_vec()),
                        all,
                        log.data.data.to_vec()
                    ],
                )?;
            }
        }
        db.commit()?;
        // The file is committed; now mirror the change in memory.
        if let Some(state) = state {
            for (address, account) in state {
                if !account.is_touched() {
                    continue;
                }
                let info = &account.info;
                let empty = info.balance.is_zero() && info.nonce == 0 && info.code_hash == KECCAK_EMPTY;
                if account.is_selfdestructed() || empty {
                    inner.world.accounts.remove(address);
                    inner.world.storage.remove(address);
                    continue;
                }
                if account.is_created() {
                    inner.world.storage.remove(address);
                }
                inner.world.accounts.insert(*address, (info.balance, info.nonce, info.code_hash));
                if let Some(code) = &info.code
                    && info.code_hash != KECCAK_EMPTY && !code.is_empty()
                {
                    inner.world.code.insert(info.code_hash, Bytecode::new_raw(code.original_bytes()));
                }
                let slots = inner.world.storage.entry(*address).or_default();
                for (slot, value) in account.changed_storage_slots() {
                    if value.present_value.is_zero() {
                        slots.remove(slot);
                    } else {
                        slots.insert(*slot, value.present_value);
                    }
                }
            }
        }
        inner.world.block_hashes.insert(block.0, hash);
        inner.head = Head { number: block.0, hash, timestamp: block.1 };
        Ok(())
    }

    fn submit(&self, raw: &Bytes) -> Result<B256> {
        let envelope = TxEnvelope::decode_2718(&mut raw.as_ref())
            .map_err(|e| Error::Rejected(format!("not a signed EIP-2718 transaction: {e}")))?;
        let hash = *envelope.tx_hash();
        let sender = envelope.recover_signer().map_err(|e| Error::Rejected(format!("bad signature: {e}")))?;
        let env = match &envelope {
            TxEnvelope::Eip1559(signed) => {
                let tx = signed.tx();
                TxEnv::builder()
                    .tx_type(Some(2))
                    .caller(sender)
                    .gas_limit(tx.gas_limit)
                    .max_fee_per_gas(tx.max_fee_per_gas)
                    .gas_priority_fee(Some(tx.max_priority_fee_per_gas))
                    .kind(tx.to)
                    .value(tx.value)
                    .data(tx.input.clone())
                    .nonce(tx.nonce)
                    .chain_id(Some(tx.chain_id))
                    .access_list(tx.access_list.clone())
                    .build()
            }
            TxEnvelope::Legacy(signed) => {
                let tx = signed.tx();
                TxEnv::builder()
                    .tx_type(Some(0))
                    .caller(sender)
                    .gas_limit(tx.gas_limit)
                    .gas_price(tx.gas_price)
                    .kind(tx.to)
                    .value(tx.value)
                    .data(tx.input.clone())
                    .nonce(tx.nonce)
                    .chain_id(tx.chain_id)
                    .build()
            }
            _ => return Err(Error::Rejected("the embedded chain takes legacy and EIP-1559 transactions only".into())),
        }
        .map_err(|e| Error::Rejected(format!("{e:?}")))?;
        let nonce = env.nonce;
        let max_fee = env.gas_price;
        let tip = env.gas_priority_fee.unwrap_or(max_fee);
        self.with_inner(|inner| {
            let known: Option<i64> =
                inner.conn.query_row("SELECT block FROM txs WHERE hash = ?1", [hash.as_slice()], |r| r.get(0)).optional()?;
            if known.is_some() {
                return Ok(hash); // already mined: re-sending the same bytes is a no-op, as on a node
            }
            let block = Self::next_block_env(inner);
            let out = Self::run(inner, env, block, BASE_FEE, true).map_err(Error::Rejected)?;
            let price = (BASE_FEE as u128 + tip).min(max_fee);
            Self::persist_block(inner, block, Some((&hash, sender, nonce, raw.as_ref(), &out.result, price)), Some(&out.state))?;
            Ok(hash)
        })
    }

    fn read_receipt(&self, hash: B256) -> Result<Option<TxReceipt>> {
        self.with_inner(|inner| {
            let row = inner
                .conn
                .query_row(
                    "SELECT t.block, b.hash, t.success, t.gas_used, t.gas_price, t.contract
                     FROM txs t JOIN blocks b ON b.number = t.block WHERE t.hash = ?1",
                    [hash.as_slice()],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, bool>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, Option<Vec<u8>>>(5)?,
                        ))
                    },
                )
                .optional()?;
            let Some((block, bhash, success, gas_used, price, contract)) = row else { return Ok(None) };
            let mut st = inner.conn.prepare("SELECT address, topics, data FROM logs WHERE tx = ?1 ORDER BY idx")?;
            let logs = st
                .query_map([hash.as_slice()], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?))
                })?
                .map(|row| {
                    let (a, t, d) = row?;
                    Ok(Log {
                        address: Address::from_slice(&a),
                        data: LogData::new_unchecked(t.chunks(32).map(B256::from_slice).collect(), d.into()),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(TxReceipt {
                tx_hash: hash,
                block_number: block as u64,
                block_hash: b256_blob(&bhash),
                success,
                gas_used: gas_used as u64,
                effective_gas_price: price.parse().unwrap_or(0),
                contract_address: contract.map(|c| Address::from_slice(&c)),
                logs,
            }))
        })
    }

    /// The revert data of a mined, failed transaction (for error messages).
    pub fn revert_data(&self, hash: B256) -> Result<Option<Bytes>> {
        self.with_inner(|inner| {
            Ok(inner
                .conn
                .query_row("SELECT output FROM txs WHERE hash = ?1 AND success = 0", [hash.as_slice()], |r| {
                    r.get::<_, Vec<u8>>(0)
                })
                .optional()?
                .map(Bytes::from))
        })
    }
}

impl Chain for EmbeddedChain {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn chain_id(&self) -> Result<u64> {
        self.with_inner(|i| Ok(i.chain_id))
    }

    async fn genesis_hash(&self) -> Result<B256> {
        self.with_inner(|i| Ok(i.genesis))
    }

    async fn block_number(&self) -> Result<u64> {
        self.with_inner(|i| Ok(i.head.number))
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>> {
        self.with_inner(|i| Ok(i.world.block_hashes.get(&number).copied()))
    }

    async fn block_timestamp(&self) -> Result<u64> {
        self.with_inner(|i| Ok(i.head.timestamp))
    }

    async fn pending_nonce(&self, account: Address) -> Result<u64> {
        self.mined_nonce(account).await
    }

    async fn mined_nonce(&self, account: Address) -> Result<u64> {
        self.with_inner(|i| Ok(i.world.accounts.get(&account).map(|a| a.1).unwrap_or(0)))
    }

    async fn balance(&self, account: Address) -> Result<U256> {
        self.with_inner(|i| Ok(i.world.accounts.get(&account).map(|a| a.0).unwrap_or_default()))
    }

    async fn code(&self, account: Address) -> Result<Bytes> {
        self.with_inner(|i| {
            Ok(i.world
                .accounts
                .get(&account)
                .and_then(|a| i.world.code.get(&a.2))
                .map(|c| c.original_bytes())
                .unwrap_or_default())
        })
    }

    async fn fees(&self) -> Result<Fees> {
        Ok(Fees { base_fee: BASE_FEE as u128, priority_fee: PRIORITY_FEE })
    }

    async fn call(&self, req: &CallRequest) -> Result<Bytes> {
        match self.simulate(req)? {
            ExecutionResult::Success { output, .. } => Ok(output.into_data()),
            ExecutionResult::Revert { output, .. } => {
                Err(Error::Reverted { what: "call".into(), reason: decode_revert(&output) })
            }
            ExecutionResult::Halt { reason, .. } => {
                Err(Error::Reverted { what: "call".into(), reason: format!("halted: {reason:?}") })
            }
        }
    }

    async fn estimate_gas(&self, req: &CallRequest) -> Result<u64> {
        match self.simulate(req)? {
            // Refunds are paid back after execution, so the limit must cover the gas spent before
            // them; a quarter on top covers the 63/64 rule of nested calls.
            ExecutionResult::Success { gas, .. } => {
                let spent = gas.total_gas_spent().max(gas.floor_gas());
                Ok((spent + spent / 4).min(BLOCK_GAS_LIMIT))
            }
            ExecutionResult::Revert { output, .. } => {
                Err(Error::Reverted { what: "gas estimate".into(), reason: decode_revert(&output) })
            }
            ExecutionResult::Halt { reason, .. } => {
                Err(Error::Reverted { what: "gas estimate".into(), reason: format!("halted: {reason:?}") })
            }
        }
    }

    async fn send_raw(&self, raw: &Bytes) -> Result<B256> {
        self.submit(raw)
    }

    async fn receipt(&self, hash: B256) -> Result<Option<TxReceipt>> {
        self.read_receipt(hash)
    }

    async fn logs(&self, filter: &LogFilter) -> Result<Vec<LogEntry>> {
        self.with_inner(|inner| {
            let mut st = inner.conn.prepare(
                "SELECT block, tx, address, topics, data FROM logs
                 WHERE address = ?1 AND topic0 = ?2 AND (?3 IS NULL OR topic1 = ?3) AND block >= ?4
                 ORDER BY block, idx",
            )?;
            let rows = st.query_map(
                params![
                    filter.address.as_slice(),
                    filter.topic0.as_slice(),
                    filter.topic1.map(|t| t.to_vec()),
                    filter.from_block as i64
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                    ))
                },
            )?;
            rows.map(|row| {
                let (block, tx, a, t, d) = row?;
                Ok(LogEntry {
                    block_number: block as u64,
                    tx_hash: b256_blob(&tx),
                    log: Log {
                        address: Address::from_slice(&a),
                        data: LogData::new_unchecked(t.chunks(32).map(B256::from_slice).collect(), d.into()),
                    },
                })
            })
            .collect()
        })
    }
}

impl DevChain for EmbeddedChain {
    async fn increase_time(&self, secs: u64) -> Result<()> {
        self.with_inner(|inner| {
            let offset = inner.time_offset + secs;
            inner.conn.execute("UPDATE meta SET value = ?1 WHERE key = 'time_offset'", [offset.to_string()])?;
            inner.time_offset = offset;
            Ok(())
        })
    }

    async fn mine(&self) -> Result<()> {
        self.with_inner(|inner| {
            let block = Self::next_block_env(inner);
            Self::persist_block(inner, block, None, None)
        })
    }
}
