//! Crash-safe, idempotent transaction sending.
//!
//! Every transaction has a *purpose* (`anchor:<contract>:<epoch>`, `claim:…`, `deploy:…`), unique
//! on its chain. [`TxSender::send`] for a purpose:
//!
//! 1. resumes it if attempts are already recorded: re-sends exactly the recorded raw bytes (never
//!    re-signs), then waits;
//! 2. otherwise first finishes any other open purpose of the same sender (so nonces never gap),
//!    simulates the call (a revert stops here, with its decoded reason), picks the pending nonce,
//!    signs an EIP-1559 transaction, **records raw bytes, nonce and hash in the ops catalog, and
//!    only then** hands it to the node;
//! 3. waits for a receipt; if none comes within `resend_after`, signs a replacement with the same
//!    nonce and both fee fields raised by at least the replacement margin (+12.5%), capped at
//!    `max_fee_multiplier` × the first estimate — recorded before it is sent, like the first;
//! 4. once mined, waits for `confirmations` blocks, then re-reads the receipt and checks its block
//!    hash is still the canonical one (a reorg sends it back to step 3 with the same bytes).
//!
//! A process killed anywhere in this sequence leaves a catalog from which the next run continues
//! without signing anything twice and without skipping a nonce.

use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use tributary_pipeline::Catalog;
use tributary_pipeline::config::ChainConfig;

use crate::chain::{CallRequest, Chain, TxReceipt};
use crate::error::{Error, Result};
use crate::store::{self, NewTx, TxRecord};

/// Replacement margin: each bump raises both fee fields by at least this many per mille (12.5%,
/// above geth's 10% and equal to the base-fee step, so any node accepts the replacement).
pub const BUMP_PER_MILLE: u128 = 1125;

/// Timing and fee policy.
#[derive(Debug, Clone)]
pub struct SendPolicy {
    /// Blocks on top of the including block before a transaction counts as final (1 = included).
    pub confirmations: u64,
    /// Re-send with bumped fees when no receipt arrives within this long.
    pub resend_after: Duration,
    /// Cap on `maxFeePerGas`, as a multiple of the first estimate.
    pub max_fee_multiplier: f64,
    /// How often to poll the node.
    pub poll: Duration,
}

impl SendPolicy {
    /// The policy of `[chain]` in the config.
    pub fn from_config(c: &ChainConfig) -> SendPolicy {
        SendPolicy {
            confirmations: c.confirmations.max(1),
            resend_after: Duration::from_secs(c.resend_after_secs.max(1)),
            max_fee_multiplier: if c.max_fee_multiplier.is_finite() && c.max_fee_multiplier >= 1.0 {
                c.max_fee_multiplier
            } else {
                1.0
            },
            poll: Duration::from_millis(200),
        }
    }
}

/// Where a test can make the sender stop as if the process died. Each names a purpose prefix
/// (e.g. `anchor:`): the first new transaction whose purpose starts with it stops there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failpoint {
    /// After the signed transaction is recorded, before it is sent.
    AfterSign(String),
    /// After it is sent, before waiting for the receipt.
    AfterSend(String),
}

impl Failpoint {
    fn hits(&self, stage: &str, purpose: &str) -> bool {
        match self {
            Failpoint::AfterSign(p) => stage == "after_sign" && purpose.starts_with(p.as_str()),
            Failpoint::AfterSend(p) => stage == "after_send" && purpose.starts_with(p.as_str()),
        }
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct TxRequest {
    /// Callee, or `None` to create a contract.
    pub to: Option<Address>,
    /// Calldata or creation code.
    pub data: Bytes,
    /// Wei.
    pub value: U256,
}

/// A transaction that reached its confirmations.
#[derive(Debug, Clone)]
pub struct Confirmed {
    /// The receipt (of whichever attempt was mined).
    pub receipt: TxReceipt,
    /// How many attempts were signed for this purpose (1 = no fee bump).
    pub attempts: u32,
    /// Whether this call found it already final in the catalog (nothing was sent).
    pub already_final: bool,
}

/// Sends transactions of one signer on one chain (see the module docs).
pub struct TxSender<'a, C: Chain> {
    chain: &'a C,
    catalog: &'a Catalog,
    signer: &'a PrivateKeySigner,
    chain_key: String,
    chain_id: u64,
    policy: SendPolicy,
    failpoint: Option<Failpoint>,
}

impl<C: Chain> std::fmt::Debug for TxSender<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxSender").field("chain", &self.chain_key).field("sender", &self.signer.address()).finish()
    }
}

/// The key of a chain instance in the catalog: chain id and genesis hash (a reset dev chain is a new chain).
pub async fn chain_key<C: Chain>(chain: &C) -> Result<(String, u64)> {
    let id = chain.chain_id().await?;
    let genesis = chain.genesis_hash().await?;
    Ok((format!("{id}:{genesis}"), id))
}

fn bump(v: u128) -> u128 {
    (v * BUMP_PER_MILLE).div_ceil(1000).max(v + 1)
}

impl<'a, C: Chain> TxSender<'a, C> {
    /// A sender for `signer` on `chain`, recording in `catalog`.
    pub async fn new(chain: &'a C, catalog: &'a Catalog, signer: &'a PrivateKeySigner, policy: SendPolicy) -> Result<Self> {
        store::migrate(catalog)?;
        let (chain_key, chain_id) = chain_key(chain).await?;
        Ok(TxSender { chain, catalog, signer, chain_key, chain_id, policy, failpoint: None })
    }

    /// Stop at `failpoint` (tests: simulates a crash there).
    pub fn with_failpoint(mut self, failpoint: Option<Failpoint>) -> Self {
        self.failpoint = failpoint;
        self
    }

    /// The sending address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The chain instance key.
    pub fn chain_key(&self) -> &str {
        &self.chain_key
    }

    /// The chain.
    pub fn chain(&self) -> &C {
        self.chain
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        self.catalog
    }

    /// Send the transaction for `purpose`, or resume it if it was already recorded; returns once it
    /// is mined and confirmed. A transaction mined as reverted returns [`Error::Reverted`].
    pub async fn send(&self, purpose: &str, req: &TxRequest) -> Result<Confirmed> {
        if let Some(done) = self.resume(purpose).await? {
            return Ok(done);
        }
        self.finish_open(Some(purpose)).await?;
        let record = self.sign_new(purpose, req).await?;
        if self.failpoint.as_ref().is_some_and(|f| f.hits("after_sign", purpose)) {
            return Err(Error::Failpoint("after_sign"));
        }
        self.broadcast(&record).await?;
        if self.failpoint.as_ref().is_some_and(|f| f.hits("after_send", purpose)) {
            return Err(Error::Failpoint("after_send"));
        }
        self.wait(purpose).await
    }

    /// If `purpose` has recorded attempts: its final result, or — when still open — the result of
    /// re-sending the recorded bytes and waiting. `None` if nothing is recorded (or all dropped).
    pub async fn resume(&self, purpose: &str) -> Result<Option<Confirmed>> {
        let attempts = store::attempts(self.catalog, &self.chain_key, purpose)?;
        if let Some(done) = attempts.iter().find(|a| a.state == "final") {
            let receipt = self.chain.receipt(done.tx_hash).await?;
            if let Some(receipt) = receipt.filter(|r| r.block_number == done.block_number.unwrap_or(r.block_number)) {
                let confirmed = Confirmed { receipt, attempts: attempts.len() as u32, already_final: true };
                return self.outcome(purpose, confirmed).map(Some);
            }
            // Recorded final, but the node no longer has it (reorg or a node reset): wait again.
        } else if attempts.iter().all(|a| a.state == "dropped") {
            return Ok(None);
        }
        self.wait(purpose).await.map(Some)
    }

    /// Finish every open purpose of this sender (except `except`), oldest nonce first.
    pub async fn finish_open(&self, except: Option<&str>) -> Result<()> {
        for purpose in store::open_purposes(self.catalog, &self.chain_key, self.address())? {
            if Some(purpose.as_str()) == except {
                continue;
            }
            match self.wait(&purpose).await {
                Ok(_) | Err(Error::Reverted { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn sign_new(&self, purpose: &str, req: &TxRequest) -> Result<TxRecord> {
        let call = CallRequest { from: Some(self.address()), to: req.to, data: req.data.clone(), value: req.value };
        let estimate = self.chain.estimate_gas(&call).await.map_err(|e| match e {
            Error::Reverted { reason, .. } => Error::Reverted { what: purpose.to_string(), reason },
            other => other,
        })?;
        let gas_limit = estimate + estimate / 5;
        let fees = self.chain.fees().await?;
        let priority_fee = fees.priority_fee.max(1);
        let max_fee = 2 * fees.base_fee + priority_fee;
        let nonce = self.chain.pending_nonce(self.address()).await?;
        self.sign_and_record(purpose, 0, nonce, req, gas_limit, max_fee, priority_fee)
    }

    #[allow(clippy::too_many_arguments)]
    fn sign_and_record(
        &self,
        purpose: &str,
        attempt: u32,
        nonce: u64,
        req: &TxRequest,
        gas_limit: u64,
        max_fee: u128,
        priority_fee: u128,
    ) -> Result<TxRecord> {
        let tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority_fee,
            to: match req.to {
                Some(a) => TxKind::Call(a),
                None => TxKind::Create,
            },
            value: req.value,
            access_list: Default::default(),
            input: req.data.clone(),
        };
        let sig = self
            .signer
            .sign_hash_sync(&tx.signature_hash())
            .map_err(|e| Error::Key(format!("signing failed: {e}")))?;
        let envelope = TxEnvelope::from(tx.into_signed(sig));
        let raw: Bytes = envelope.encoded_2718().into();
        let tx_hash = *envelope.tx_hash();
        store::record_tx(
            self.catalog,
            &NewTx {
                chain: &self.chain_key,
                sender: self.address(),
                nonce,
                purpose,
                attempt,
                tx_hash,
                raw: &raw,
                max_fee,
                priority_fee,
                gas_limit,
            },
        )?;
        store::attempts(self.catalog, &self.chain_key, purpose)?
            .into_iter()
            .find(|a| a.tx_hash == tx_hash)
            .ok_or_else(|| Error::Internal("recorded attempt not found".into()))
    }

    async fn broadcast(&self, record: &TxRecord) -> Result<()> {
        match self.chain.send_raw(&record.raw).await {
            Ok(_) => {}
            // The nonce is taken: either by an earlier attempt of ours that got mined (the wait
            // loop finds its receipt) or by someone else (the wait loop reports it).
            Err(Error::Rejected(m)) if is_nonce_taken(&m) => {}
            Err(e) => return Err(e),
        }
        store::mark_sent(self.catalog, record.id)
    }

    /// Wait for the open attempts of `purpose` to be mined and confirmed, re-sending and bumping fees.
    async fn wait(&self, purpose: &str) -> Result<Confirmed> {
        let mut last_send: Option<Instant> = None;
        let mut nonce_taken_polls = 0u32;
        loop {
            let attempts: Vec<TxRecord> = store::attempts(self.catalog, &self.chain_key, purpose)?
                .into_iter()
                .filter(|a| a.state != "dropped")
                .collect();
            let Some(latest) = attempts.last().cloned() else {
                return Err(Error::Internal(format!("no attempt recorded for {purpose}")));
            };
            // Newest first: a replacement is more likely to be the one mined.
            for a in attempts.iter().rev() {
                if let Some(receipt) = self.chain.receipt(a.tx_hash).await? {
                    match self.confirm(a, receipt).await? {
                        Some(confirmed) => {
                            let confirmed = Confirmed { attempts: attempts.len() as u32, ..confirmed };
                            return self.outcome(purpose, confirmed);
                        }
                        None => {
                            last_send = None; // reorged out: re-send at once
                            break;
                        }
                    }
                }
            }
            // Not mined. Has the nonce moved on without us?
            if self.chain.mined_nonce(latest.sender).await? > latest.nonce {
                nonce_taken_polls += 1;
                if nonce_taken_polls > 3 {
                    store::drop_purpose(self.catalog, &self.chain_key, purpose)?;
                    return Err(Error::NonceConsumed { sender: latest.sender, nonce: latest.nonce });
                }
            } else {
                nonce_taken_polls = 0;
                match last_send {
                    None => {
                        // First pass of this process: make sure the node has our bytes.
                        self.broadcast(&latest).await?;
                        last_send = Some(Instant::now());
                    }
                    Some(t) if t.elapsed() >= self.policy.resend_after => {
                        let next = self.bumped(&attempts, &latest)?;
                        match next {
                            Some((max_fee, priority_fee)) => {
                                let req = decode_request(&latest)?;
                                let record = self.sign_and_record(
                                    purpose,
                                    latest.attempt + 1,
                                    latest.nonce,
                                    &req,
                                    latest.gas_limit,
                                    max_fee,
                                    priority_fee,
                                )?;
                                self.broadcast(&record).await?;
                            }
                            // At the cap: keep the latest bytes in the pool and wait.
                            None => self.broadcast(&latest).await?,
                        }
                        last_send = Some(Instant::now());
                    }
                    Some(_) => {}
                }
            }
            tokio::time::sleep(self.policy.poll).await;
        }
    }

    /// The fees of a replacement for `latest`, or `None` when the cap leaves no valid bump.
    fn bumped(&self, attempts: &[TxRecord], latest: &TxRecord) -> Result<Option<(u128, u128)>> {
        let first = attempts.first().unwrap_or(latest);
        let cap = (first.max_fee as f64 * self.policy.max_fee_multiplier) as u128;
        let max_fee = bump(latest.max_fee);
        let priority_fee = bump(latest.priority_fee);
        if max_fee > cap || priority_fee > max_fee {
            return Ok(None);
        }
        Ok(Some((max_fee, priority_fee)))
    }

    /// Wait for confirmations and re-check the block hash. `None`: the block was reorged away.
    async fn confirm(&self, attempt: &TxRecord, receipt: TxReceipt) -> Result<Option<Confirmed>> {
        let target = receipt.block_number + self.policy.confirmations - 1;
        while self.chain.block_number().await? < target {
            tokio::time::sleep(self.policy.poll).await;
        }
        let again = self.chain.receipt(attempt.tx_hash).await?;
        let canonical = self.chain.block_hash(receipt.block_number).await?;
        match again {
            Some(r) if Some(r.block_hash) == canonical && r.block_hash == receipt.block_hash => {
                store::mark_final(self.catalog, attempt.id, r.block_number, r.block_hash, r.success, r.gas_used)?;
                Ok(Some(Confirmed { receipt: r, attempts: 0, already_final: false }))
            }
            Some(r) if Some(r.block_hash) == canonical => {
                // Re-mined in another block after a reorg: that block is now the one to confirm.
                Box::pin(self.confirm(attempt, r)).await
            }
            _ => Ok(None),
        }
    }

    fn outcome(&self, purpose: &str, confirmed: Confirmed) -> Result<Confirmed> {
        if confirmed.receipt.success {
            Ok(confirmed)
        } else {
            Err(Error::Reverted {
                what: purpose.to_string(),
                reason: format!(
                    "transaction {} reverted in block {}",
                    confirmed.receipt.tx_hash, confirmed.receipt.block_number
                ),
            })
        }
    }
}

fn is_nonce_taken(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("nonce too low") || m.contains("noncetoolow") || m.contains("nonce is too low")
}

/// The call inside a recorded transaction (to re-sign it with bumped fees).
fn decode_request(record: &TxRecord) -> Result<TxRequest> {
    use alloy::eips::eip2718::Decodable2718;
    let env = TxEnvelope::decode_2718(&mut record.raw.as_ref())
        .map_err(|e| Error::Internal(format!("recorded raw tx {} does not decode: {e}", record.tx_hash)))?;
    match env {
        TxEnvelope::Eip1559(s) => {
            let tx = s.tx();
            Ok(TxRequest { to: tx.to.to().copied(), data: tx.input.clone(), value: tx.value })
        }
        _ => Err(Error::Internal(format!("recorded tx {} is not EIP-1559", record.tx_hash))),
    }
}

/// The hash of a raw transaction (what a node returns for it).
pub fn raw_hash(raw: &Bytes) -> B256 {
    alloy::primitives::keccak256(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_clear_the_replacement_margin() {
        for v in [1u128, 7, 1_000_000_000, 3_000_000_001] {
            let b = bump(v);
            assert!(b * 1000 >= v * BUMP_PER_MILLE, "{v} -> {b}");
            assert!(b > v);
        }
    }
}
