//! The JSON-RPC backend: any EVM node over HTTP through alloy (anvil locally, a rollup in production).
//!
//! Requests are plain `eth_*` calls, read into small typed results here, so that every node error
//! maps to a precise [`Error`]: a revert (with its decoded reason), a refused transaction, or a
//! transport failure. Private keys never reach this module; it only relays signed bytes.

use std::borrow::Cow;

use alloy::primitives::{Address, B256, Bytes, Log, LogData, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::transports::TransportError;
use serde_json::{Value, json};

use super::{CallRequest, Chain, DevChain, Fees, LogEntry, LogFilter, TxReceipt};
use crate::contract::decode_revert;
use crate::error::{Error, Result};

/// A JSON-RPC chain.
#[derive(Debug, Clone)]
pub struct RpcChain {
    url: String,
    provider: RootProvider,
}

fn quantity(v: &Value, what: &str) -> Result<u128> {
    let s = v.as_str().ok_or_else(|| Error::Rpc(format!("{what}: expected a hex quantity, got {v}")))?;
    u128::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| Error::Rpc(format!("{what}: `{s}`: {e}")))
}

fn u256_of(v: &Value, what: &str) -> Result<U256> {
    let s = v.as_str().ok_or_else(|| Error::Rpc(format!("{what}: expected a hex quantity, got {v}")))?;
    U256::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| Error::Rpc(format!("{what}: `{s}`: {e}")))
}

fn parse_json<T: std::str::FromStr>(v: &Value, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let s = v.as_str().ok_or_else(|| Error::Rpc(format!("{what}: expected a string, got {v}")))?;
    s.parse().map_err(|e| Error::Rpc(format!("{what}: `{s}`: {e}")))
}

fn hex_bytes(v: &Value, what: &str) -> Result<Bytes> {
    parse_json::<Bytes>(v, what)
}

fn call_object(req: &CallRequest) -> Value {
    let mut o = json!({ "data": req.data, "value": format!("{:#x}", req.value) });
    if let Some(from) = req.from {
        o["from"] = json!(from);
    }
    if let Some(to) = req.to {
        o["to"] = json!(to);
    }
    o
}

fn parse_log(v: &Value) -> Result<(u64, B256, Log)> {
    let topics = v["topics"]
        .as_array()
        .ok_or_else(|| Error::Rpc("log without topics".into()))?
        .iter()
        .map(|t| parse_json::<B256>(t, "log topic"))
        .collect::<Result<Vec<_>>>()?;
    let log = Log {
        address: parse_json(&v["address"], "log address")?,
        data: LogData::new_unchecked(topics, hex_bytes(&v["data"], "log data")?),
    };
    Ok((quantity(&v["blockNumber"], "log blockNumber")? as u64, parse_json(&v["transactionHash"], "log tx")?, log))
}

impl RpcChain {
    /// A client for the node at `url` (`http://…` or `https://…`). Nothing is sent until the first call.
    pub fn connect(url: &str) -> Result<RpcChain> {
        let parsed = url.parse().map_err(|e| Error::Config(format!("rpc_url `{url}`: {e}")))?;
        Ok(RpcChain { url: url.to_string(), provider: RootProvider::new_http(parsed) })
    }

    /// The node URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Send a raw JSON-RPC request.
    pub async fn request(&self, method: &'static str, params: Value) -> Result<Value> {
        self.provider
            .raw_request::<Value, Value>(Cow::Borrowed(method), params)
            .await
            .map_err(|e| Self::map_err(method, e))
    }

    fn map_err(method: &str, e: TransportError) -> Error {
        if let Some(payload) = e.as_error_resp() {
            if let Some(data) = payload.as_revert_data() {
                return Error::Reverted { what: method.to_string(), reason: decode_revert(&data) };
            }
            if payload.message.contains("revert") {
                return Error::Reverted { what: method.to_string(), reason: payload.message.to_string() };
            }
            if method == "eth_sendRawTransaction" {
                return Error::Rejected(payload.message.to_string());
            }
            return Error::Rpc(format!("{method}: {} (code {})", payload.message, payload.code));
        }
        Error::Rpc(format!("{method}: {e}"))
    }

    async fn block(&self, tag: Value) -> Result<Value> {
        self.request("eth_getBlockByNumber", json!([tag, false])).await
    }

    /// Turn automatic mining on or off (anvil's `evm_setAutomine`).
    pub async fn set_automine(&self, on: bool) -> Result<()> {
        self.request("evm_setAutomine", json!([on])).await.map(|_| ())
    }

    /// The pending transactions of the node's pool (anvil/geth `txpool_content`), as raw JSON.
    pub async fn txpool_content(&self) -> Result<Value> {
        self.request("txpool_content", json!([])).await
    }
}

impl Chain for RpcChain {
    fn backend(&self) -> &'static str {
        "rpc"
    }

    async fn chain_id(&self) -> Result<u64> {
        Ok(quantity(&self.request("eth_chainId", json!([])).await?, "eth_chainId")? as u64)
    }

    async fn genesis_hash(&self) -> Result<B256> {
        let b = self.block(json!("0x0")).await?;
        parse_json(&b["hash"], "genesis hash")
    }

    async fn block_number(&self) -> Result<u64> {
        Ok(quantity(&self.request("eth_blockNumber", json!([])).await?, "eth_blockNumber")? as u64)
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>> {
        let b = self.block(json!(format!("{number:#x}"))).await?;
        if b.is_null() { Ok(None) } else { Ok(Some(parse_json(&b["hash"], "block hash")?)) }
    }

    async fn block_timestamp(&self) -> Result<u64> {
        let b = self.block(json!("latest")).await?;
        Ok(quantity(&b["timestamp"], "block timestamp")? as u64)
    }

    async fn pending_nonce(&self, account: Address) -> Result<u64> {
        let v = self.request("eth_getTransactionCount", json!([account, "pending"])).await?;
        Ok(quantity(&v, "nonce")? as u64)
    }

    async fn mined_nonce(&self, account: Address) -> Result<u64> {
        let v = self.request("eth_getTransactionCount", json!([account, "latest"])).await?;
        Ok(quantity(&v, "nonce")? as u64)
    }

    async fn balance(&self, account: Address) -> Result<U256> {
        u256_of(&self.request("eth_getBalance", json!([account, "latest"])).await?, "balance")
    }

    async fn code(&self, account: Address) -> Result<Bytes> {
        hex_bytes(&self.request("eth_getCode", json!([account, "latest"])).await?, "code")
    }

    async fn fees(&self) -> Result<Fees> {
        let b = self.block(json!("latest")).await?;
        let base_fee = if b["baseFeePerGas"].is_null() { 0 } else { quantity(&b["baseFeePerGas"], "baseFeePerGas")? };
        let priority_fee = quantity(&self.request("eth_maxPriorityFeePerGas", json!([])).await?, "priority fee")?;
        Ok(Fees { base_fee, priority_fee })
    }

    async fn call(&self, req: &CallRequest) -> Result<Bytes> {
        hex_bytes(&self.request("eth_call", json!([call_object(req), "latest"])).await?, "eth_call result")
    }

    async fn estimate_gas(&self, req: &CallRequest) -> Result<u64> {
        Ok(quantity(&self.request("eth_estimateGas", json!([call_object(req)])).await?, "gas estimate")? as u64)
    }

    async fn send_raw(&self, raw: &Bytes) -> Result<B256> {
        let hash = alloy::primitives::keccak256(raw);
        match self.request("eth_sendRawTransaction", json!([raw])).await {
            Ok(v) => parse_json(&v, "transaction hash"),
            // Re-sending bytes the node already holds is how a resumed settlement makes sure a
            // transaction is out there; "already known" means it is.
            Err(Error::Rejected(m)) if m.to_lowercase().contains("already known") || m.contains("already imported") => {
                Ok(hash)
            }
            Err(e) => Err(e),
        }
    }

    async fn receipt(&self, hash: B256) -> Result<Option<TxReceipt>> {
        let r = self.request("eth_getTransactionReceipt", json!([hash])).await?;
        if r.is_null() || r["blockHash"].is_null() {
            return Ok(None);
        }
        let logs = r["logs"]
            .as_array()
            .map(|ls| ls.iter().map(|l| parse_log(l).map(|x| x.2)).collect::<Result<Vec<_>>>())
            .transpose()?
            .unwrap_or_default();
        Ok(Some(TxReceipt {
            tx_hash: hash,
            block_number: quantity(&r["blockNumber"], "receipt blockNumber")? as u64,
            block_hash: parse_json(&r["blockHash"], "receipt blockHash")?,
            success: quantity(&r["status"], "receipt status")? == 1,
            gas_used: quantity(&r["gasUsed"], "receipt gasUsed")? as u64,
            effective_gas_price: if r["effectiveGasPrice"].is_null() {
                0
            } else {
                quantity(&r["effectiveGasPrice"], "effectiveGasPrice")?
            },
            contract_address: if r["contractAddress"].is_null() {
                None
            } else {
                Some(parse_json(&r["contractAddress"], "contractAddress")?)
            },
            logs,
        }))
    }

    async fn logs(&self, filter: &LogFilter) -> Result<Vec<LogEntry>> {
        let mut topics = vec![json!(filter.topic0)];
        if let Some(t1) = filter.topic1 {
            topics.push(json!(t1));
        }
        let params = json!([{
            "address": filter.address,
            "topics": topics,
            "fromBlock": format!("{:#x}", filter.from_block),
            "toBlock": "latest",
        }]);
        let v = self.request("eth_getLogs", params).await?;
        v.as_array()
            .ok_or_else(|| Error::Rpc("eth_getLogs: expected an array".into()))?
            .iter()
            .map(|l| parse_log(l).map(|(block_number, tx_hash, log)| LogEntry { block_number, tx_hash, log }))
            .collect()
    }
}

impl DevChain for RpcChain {
    async fn increase_time(&self, secs: u64) -> Result<()> {
        self.request("evm_increaseTime", json!([secs])).await.map(|_| ())
    }

    async fn mine(&self) -> Result<()> {
        self.request("evm_mine", json!([])).await.map(|_| ())
    }
}
