//! The ledger's tables in the ops catalog: signed transactions, deployed contracts, settlements.
//!
//! Every transaction is recorded (raw signed bytes, nonce, hash, fees) *before* it is sent, so a
//! process that dies at any point can be resumed by re-sending exactly the same bytes; nothing is
//! ever signed twice for one purpose except a fee-bumped replacement, which reuses the nonce.

use alloy::primitives::{Address, B256, Bytes};
use rusqlite::{OptionalExtension, params};
use tributary_pipeline::Catalog;
use tributary_pipeline::catalog::now;

use crate::error::{Error, Result};

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE IF NOT EXISTS ledger_txs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    chain        TEXT NOT NULL,
    sender       TEXT NOT NULL,
    nonce        INTEGER NOT NULL,
    purpose      TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    tx_hash      TEXT NOT NULL UNIQUE,
    raw          TEXT NOT NULL,
    max_fee      TEXT NOT NULL,
    priority_fee TEXT NOT NULL,
    gas_limit    INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('signed', 'sent', 'final', 'dropped')),
    created_at   TEXT NOT NULL,
    sent_at      TEXT,
    block_number INTEGER,
    block_hash   TEXT,
    success      INTEGER,
    gas_used     INTEGER,
    UNIQUE (chain, purpose, attempt)
);
CREATE INDEX IF NOT EXISTS ledger_txs_open ON ledger_txs (chain, sender, state);
CREATE TABLE IF NOT EXISTS ledger_contracts (
    chain       TEXT NOT NULL,
    name        TEXT NOT NULL,
    address     TEXT NOT NULL,
    tx_hash     TEXT,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (chain, name)
);
CREATE TABLE IF NOT EXISTS ledger_settlements (
    contract           TEXT NOT NULL,
    epoch              INTEGER NOT NULL,
    chain              TEXT NOT NULL,
    payout_root        TEXT NOT NULL,
    attribution_root   TEXT NOT NULL,
    total              TEXT NOT NULL,
    payout_leaves      INTEGER NOT NULL,
    attribution_leaves INTEGER NOT NULL,
    payouts_version    INTEGER NOT NULL,
    influence_version  INTEGER NOT NULL,
    attribution_method TEXT,
    state              TEXT NOT NULL CHECK (state IN ('planned', 'anchored')),
    tx_hash            TEXT,
    block_number       INTEGER,
    block_hash         TEXT,
    gas_used           INTEGER,
    created_at         TEXT NOT NULL,
    anchored_at        TEXT,
    PRIMARY KEY (contract, epoch)
);
"#];

/// Run `f` on the catalog's connection.
fn sql<T>(catalog: &Catalog, f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>) -> Result<T> {
    Ok(catalog.with_conn(|c| f(c).map_err(tributary_pipeline::Error::from))?)
}

/// Apply the ledger's catalog migrations (idempotent).
pub fn migrate(catalog: &Catalog) -> Result<()> {
    Ok(catalog.migrate("ledger", MIGRATIONS)?)
}

/// One recorded transaction attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRecord {
    /// Row id.
    pub id: i64,
    /// Chain instance key (`<chain id>:<genesis hash>`).
    pub chain: String,
    /// Sender.
    pub sender: Address,
    /// Nonce.
    pub nonce: u64,
    /// What the transaction is for (`anchor:<contract>:<epoch>`, …); unique per chain.
    pub purpose: String,
    /// 0 for the first signature, then one per fee bump.
    pub attempt: u32,
    /// Transaction hash.
    pub tx_hash: B256,
    /// Signed EIP-2718 bytes.
    pub raw: Bytes,
    /// `maxFeePerGas`.
    pub max_fee: u128,
    /// `maxPriorityFeePerGas`.
    pub priority_fee: u128,
    /// Gas limit.
    pub gas_limit: u64,
    /// `signed` (recorded, maybe not sent), `sent`, `final` (mined and confirmed), `dropped`.
    pub state: String,
    /// Block it was mined in, once final.
    pub block_number: Option<u64>,
    /// Whether it succeeded, once final.
    pub success: Option<bool>,
    /// Gas used, once final.
    pub gas_used: Option<u64>,
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> rusqlite::Result<T> {
    s.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("bad {what} `{s}`").into())
    })
}

fn tx_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TxRecord> {
    Ok(TxRecord {
        id: r.get(0)?,
        chain: r.get(1)?,
        sender: parse(&r.get::<_, String>(2)?, "address")?,
        nonce: r.get::<_, i64>(3)? as u64,
        purpose: r.get(4)?,
        attempt: r.get::<_, i64>(5)? as u32,
        tx_hash: parse(&r.get::<_, String>(6)?, "hash")?,
        raw: parse(&r.get::<_, String>(7)?, "raw tx")?,
        max_fee: parse(&r.get::<_, String>(8)?, "fee")?,
        priority_fee: parse(&r.get::<_, String>(9)?, "fee")?,
        gas_limit: r.get::<_, i64>(10)? as u64,
        state: r.get(11)?,
        block_number: r.get::<_, Option<i64>>(12)?.map(|b| b as u64),
        success: r.get(13)?,
        gas_used: r.get::<_, Option<i64>>(14)?.map(|g| g as u64),
    })
}

const TX_COLUMNS: &str = "id, chain, sender, nonce, purpose, attempt, tx_hash, raw, max_fee, priority_fee, gas_limit, state, block_number, success, gas_used";

/// A new attempt to record.
#[derive(Debug, Clone)]
pub struct NewTx<'a> {
    /// Chain instance key.
    pub chain: &'a str,
    /// Sender.
    pub sender: Address,
    /// Nonce.
    pub nonce: u64,
    /// Purpose.
    pub purpose: &'a str,
    /// Attempt number.
    pub attempt: u32,
    /// Hash.
    pub tx_hash: B256,
    /// Signed bytes.
    pub raw: &'a Bytes,
    /// `maxFeePerGas`.
    pub max_fee: u128,
    /// `maxPriorityFeePerGas`.
    pub priority_fee: u128,
    /// Gas limit.
    pub gas_limit: u64,
}

/// Record a signed transaction (state `signed`) before it is sent.
pub fn record_tx(catalog: &Catalog, t: &NewTx<'_>) -> Result<()> {
    sql(catalog, |c| {
        c.execute(
            "INSERT INTO ledger_txs(chain, sender, nonce, purpose, attempt, tx_hash, raw, max_fee, priority_fee, gas_limit, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'signed', ?11)",
            params![
                t.chain,
                t.sender.to_string(),
                t.nonce as i64,
                t.purpose,
                t.attempt as i64,
                t.tx_hash.to_string(),
                t.raw.to_string(),
                t.max_fee.to_string(),
                t.priority_fee.to_string(),
                t.gas_limit as i64,
                now()
            ],
        )?;
        Ok(())
    })
}

/// Mark an attempt as handed to the node.
pub fn mark_sent(catalog: &Catalog, id: i64) -> Result<()> {
    sql(catalog, |c| {
        c.execute("UPDATE ledger_txs SET state = 'sent', sent_at = ?2 WHERE id = ?1 AND state = 'signed'", params![id, now()])?;
        Ok(())
    })
}

/// Mark an attempt final (mined and confirmed) and every other attempt of its purpose dropped.
pub fn mark_final(catalog: &Catalog, id: i64, block_number: u64, block_hash: B256, success: bool, gas_used: u64) -> Result<()> {
    sql(catalog, |c| {
        let tx = c.transaction()?;
        let (chain, purpose): (String, String) =
            tx.query_row("SELECT chain, purpose FROM ledger_txs WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        tx.execute(
            "UPDATE ledger_txs SET state = 'dropped' WHERE chain = ?1 AND purpose = ?2 AND id != ?3",
            params![chain, purpose, id],
        )?;
        tx.execute(
            "UPDATE ledger_txs SET state = 'final', block_number = ?2, block_hash = ?3, success = ?4, gas_used = ?5 WHERE id = ?1",
            params![id, block_number as i64, block_hash.to_string(), success, gas_used as i64],
        )?;
        tx.commit()?;
        Ok(())
    })
}

/// Mark every open attempt of `purpose` dropped (its nonce was consumed elsewhere, or its effect
/// is already on chain).
pub fn drop_purpose(catalog: &Catalog, chain: &str, purpose: &str) -> Result<()> {
    sql(catalog, |c| {
        c.execute(
            "UPDATE ledger_txs SET state = 'dropped' WHERE chain = ?1 AND purpose = ?2 AND state IN ('signed', 'sent')",
            params![chain, purpose],
        )?;
        Ok(())
    })
}

/// Every attempt of `purpose`, oldest first.
pub fn attempts(catalog: &Catalog, chain: &str, purpose: &str) -> Result<Vec<TxRecord>> {
    sql(catalog, |c| {
        let mut st = c.prepare(&format!(
            "SELECT {TX_COLUMNS} FROM ledger_txs WHERE chain = ?1 AND purpose = ?2 ORDER BY attempt"
        ))?;
        let rows = st.query_map(params![chain, purpose], tx_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
}

/// Purposes of `sender` on `chain` that still have open (signed or sent) attempts, oldest nonce first.
pub fn open_purposes(catalog: &Catalog, chain: &str, sender: Address) -> Result<Vec<String>> {
    sql(catalog, |c| {
        let mut st = c.prepare(
            "SELECT purpose, MIN(nonce) FROM ledger_txs WHERE chain = ?1 AND sender = ?2 AND state IN ('signed', 'sent')
             GROUP BY purpose ORDER BY MIN(nonce)",
        )?;
        let rows = st
            .query_map(params![chain, sender.to_string()], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
}

/// Every recorded attempt of `sender` on `chain` (tests and `epoch status`).
pub fn all_txs(catalog: &Catalog, chain: &str) -> Result<Vec<TxRecord>> {
    sql(catalog, |c| {
        let mut st = c.prepare(&format!("SELECT {TX_COLUMNS} FROM ledger_txs WHERE chain = ?1 ORDER BY id"))?;
        let rows = st.query_map(params![chain], tx_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
}

/// The recorded address of contract `name` on `chain`.
pub fn contract(catalog: &Catalog, chain: &str, name: &str) -> Result<Option<Address>> {
    let a: Option<String> = sql(catalog, |c| {
        c.query_row("SELECT address FROM ledger_contracts WHERE chain = ?1 AND name = ?2", params![chain, name], |r| r.get(0))
            .optional()
    })?;
    a.map(|a| a.parse::<Address>().map_err(|e| Error::Internal(format!("catalog address `{a}`: {e}")))).transpose()
}

/// Record contract `name` at `address` on `chain`.
pub fn record_contract(catalog: &Catalog, chain: &str, name: &str, address: Address, tx_hash: Option<B256>) -> Result<()> {
    sql(catalog, |c| {
        c.execute(
            "INSERT INTO ledger_contracts(chain, name, address, tx_hash, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(chain, name) DO UPDATE SET address = excluded.address, tx_hash = excluded.tx_hash",
            params![chain, name, address.to_string(), tx_hash.map(|h| h.to_string()), now()],
        )?;
        Ok(())
    })
}

/// A settlement as recorded in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SettlementRecord {
    /// Settlement contract.
    pub contract: Address,
    /// Epoch.
    pub epoch: i64,
    /// Chain instance key.
    pub chain: String,
    /// Payout root.
    pub payout_root: B256,
    /// Attribution root (zero when the epoch has no influence rows).
    pub attribution_root: B256,
    /// Sum of the payout amounts (decimal).
    pub total: String,
    /// Payout leaves.
    pub payout_leaves: u64,
    /// Attribution leaves.
    pub attribution_leaves: u64,
    /// Delta version of `gold.epoch_payouts` read.
    pub payouts_version: i64,
    /// Delta version of `gold.example_influence` read (0 when the table did not exist).
    pub influence_version: i64,
    /// Influence method of the attribution tree.
    pub attribution_method: Option<String>,
    /// `planned` or `anchored`.
    pub state: String,
    /// Anchor transaction.
    pub tx_hash: Option<B256>,
    /// Its block.
    pub block_number: Option<u64>,
    /// Its block hash.
    pub block_hash: Option<B256>,
    /// Gas it used.
    pub gas_used: Option<u64>,
    /// When planned.
    pub created_at: String,
    /// When anchored.
    pub anchored_at: Option<String>,
}

const SETTLEMENT_COLUMNS: &str = "contract, epoch, chain, payout_root, attribution_root, total, payout_leaves, attribution_leaves, payouts_version, influence_version, attribution_method, state, tx_hash, block_number, block_hash, gas_used, created_at, anchored_at";

fn settlement_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SettlementRecord> {
    Ok(SettlementRecord {
        contract: parse(&r.get::<_, String>(0)?, "address")?,
        epoch: r.get(1)?,
        chain: r.get(2)?,
        payout_root: parse(&r.get::<_, String>(3)?, "root")?,
        attribution_root: parse(&r.get::<_, String>(4)?, "root")?,
        total: r.get(5)?,
        payout_leaves: r.get::<_, i64>(6)? as u64,
        attribution_leaves: r.get::<_, i64>(7)? as u64,
        payouts_version: r.get(8)?,
        influence_version: r.get(9)?,
        attribution_method: r.get(10)?,
        state: r.get(11)?,
        tx_hash: r.get::<_, Option<String>>(12)?.map(|h| parse(&h, "hash")).transpose()?,
        block_number: r.get::<_, Option<i64>>(13)?.map(|b| b as u64),
        block_hash: r.get::<_, Option<String>>(14)?.map(|h| parse(&h, "hash")).transpose()?,
        gas_used: r.get::<_, Option<i64>>(15)?.map(|g| g as u64),
        created_at: r.get(16)?,
        anchored_at: r.get(17)?,
    })
}

/// The settlement of `epoch` on `contract`, if planned.
pub fn settlement(catalog: &Catalog, contract: Address, epoch: i64) -> Result<Option<SettlementRecord>> {
    sql(catalog, |c| {
        c.query_row(
            &format!("SELECT {SETTLEMENT_COLUMNS} FROM ledger_settlements WHERE contract = ?1 AND epoch = ?2"),
            params![contract.to_string(), epoch],
            settlement_row,
        )
        .optional()
    })
}

/// Every settlement on `contract`, newest epoch first.
pub fn settlements(catalog: &Catalog, contract: Address) -> Result<Vec<SettlementRecord>> {
    sql(catalog, |c| {
        let mut st = c.prepare(&format!(
            "SELECT {SETTLEMENT_COLUMNS} FROM ledger_settlements WHERE contract = ?1 ORDER BY epoch DESC"
        ))?;
        let rows = st.query_map([contract.to_string()], settlement_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
}

/// Record a planned settlement (first time only; a replan of the same epoch keeps the first record).
pub fn insert_settlement(catalog: &Catalog, s: &SettlementRecord) -> Result<()> {
    sql(catalog, |c| {
        c.execute(
            "INSERT OR IGNORE INTO ledger_settlements(contract, epoch, chain, payout_root, attribution_root, total, payout_leaves,
                attribution_leaves, payouts_version, influence_version, attribution_method, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'planned', ?12)",
            params![
                s.contract.to_string(),
                s.epoch,
                s.chain,
                s.payout_root.to_string(),
                s.attribution_root.to_string(),
                s.total,
                s.payout_leaves as i64,
                s.attribution_leaves as i64,
                s.payouts_version,
                s.influence_version,
                s.attribution_method,
                now()
            ],
        )?;
        Ok(())
    })
}

/// Mark a settlement anchored by transaction `tx_hash`.
pub fn mark_anchored(
    catalog: &Catalog,
    contract: Address,
    epoch: i64,
    tx_hash: Option<B256>,
    block: Option<(u64, B256)>,
    gas_used: Option<u64>,
) -> Result<()> {
    sql(catalog, |c| {
        c.execute(
            "UPDATE ledger_settlements SET state = 'anchored', tx_hash = ?3, block_number = ?4, block_hash = ?5, gas_used = ?6,
                anchored_at = COALESCE(anchored_at, ?7)
             WHERE contract = ?1 AND epoch = ?2",
            params![
                contract.to_string(),
                epoch,
                tx_hash.map(|h| h.to_string()),
                block.map(|b| b.0 as i64),
                block.map(|b| b.1.to_string()),
                gas_used.map(|g| g as i64),
                now()
            ],
        )?;
        Ok(())
    })
}
