//! Finding or deploying the settlement contract (and, for demos and tests, its reward token).
//!
//! With `chain.contract_address` set, that contract is used as is. Otherwise the first settle on
//! a chain instance deploys the demo [`crate::contract::RewardToken`] (unless `chain.token_address`
//! names a token) and [`crate::contract::TributarySettlement`], through the crash-safe sender, and
//! records both in the catalog under the chain's instance key, so a reset dev chain gets new ones.

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;
use tributary_pipeline::Catalog;
use tributary_pipeline::config::{ChainBackend, ChainConfig};

use crate::chain::{CallRequest, Chain};
use crate::contract::{RewardToken, TributarySettlement, settlement_deploy_code, token_deploy_code};
use crate::error::{Error, Result};
use crate::keys::{DevKey, dev_signer};
use crate::sender::{TxRequest, TxSender};
use crate::store;

/// Supply of the demo reward token minted to the operator: one billion tokens of 18 decimals.
pub const DEMO_TOKEN_SUPPLY: u128 = 1_000_000_000 * 1_000_000_000_000_000_000;

/// The contracts settlement talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Deployment {
    /// The settlement contract.
    pub settlement: Address,
    /// Its reward token.
    pub token: Address,
    /// Its challenge window in seconds.
    pub challenge_window: u64,
}

fn parse_config_address(what: &str, s: &str) -> Result<Option<Address>> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    crate::leaves::parse_account(s.trim()).map(Some).map_err(|e| Error::Config(format!("{what}: {e}")))
}

/// Read-only view calls on a deployed settlement contract.
pub async fn view<C: Chain, T: SolCall>(chain: &C, contract: Address, call: T) -> Result<T::Return> {
    let out = chain
        .call(&CallRequest { from: None, to: Some(contract), data: call.abi_encode().into(), value: U256::ZERO })
        .await?;
    T::abi_decode_returns(&out).map_err(|e| Error::Rpc(format!("decoding {}: {e}", T::SIGNATURE)))
}

/// The deployment already known for this chain (config address or catalog), without deploying.
pub async fn find<C: Chain>(chain: &C, catalog: &Catalog, config: &ChainConfig) -> Result<Option<Deployment>> {
    store::migrate(catalog)?;
    let settlement = match parse_config_address("contract_address", &config.contract_address)? {
        Some(a) => Some(a),
        None => {
            let (key, _) = crate::sender::chain_key(chain).await?;
            store::contract(catalog, &key, "settlement")?
        }
    };
    let Some(settlement) = settlement else { return Ok(None) };
    if chain.code(settlement).await?.is_empty() {
        return Err(Error::MissingContract { name: "TributarySettlement".into(), address: settlement });
    }
    let token = view(chain, settlement, TributarySettlement::tokenCall {}).await?;
    let challenge_window = view(chain, settlement, TributarySettlement::challengeWindowCall {}).await?;
    Ok(Some(Deployment { settlement, token, challenge_window }))
}

/// The deployment for this chain, deploying the token and the settlement contract if needed.
pub async fn ensure<C: Chain>(sender: &TxSender<'_, C>, config: &ChainConfig) -> Result<Deployment> {
    let chain = sender.chain();
    let catalog = sender.catalog();
    if let Some(d) = find(chain, catalog, config).await? {
        return Ok(d);
    }
    let key = sender.chain_key().to_string();
    let operator = sender.address();
    let token = match parse_config_address("token_address", &config.token_address)? {
        Some(t) => t,
        None => {
            let code = token_deploy_code("Tributary Reward", "TRIB", operator, U256::from(DEMO_TOKEN_SUPPLY));
            let c = sender.send("deploy:token", &TxRequest { to: None, data: code, value: U256::ZERO }).await?;
            let addr = c.receipt.contract_address.ok_or_else(|| Error::Internal("token deployment created no contract".into()))?;
            store::record_contract(catalog, &key, "token", addr, Some(c.receipt.tx_hash))?;
            addr
        }
    };
    let guardian = match parse_config_address("guardian_address", &config.guardian_address)? {
        Some(g) => g,
        None if config.backend == ChainBackend::Embedded => dev_signer(DevKey::Guardian).address(),
        None => Address::ZERO,
    };
    let code = settlement_deploy_code(token, config.challenge_window_secs, operator, operator, guardian);
    let c = sender.send("deploy:settlement", &TxRequest { to: None, data: code, value: U256::ZERO }).await?;
    let settlement =
        c.receipt.contract_address.ok_or_else(|| Error::Internal("settlement deployment created no contract".into()))?;
    store::record_contract(catalog, &key, "settlement", settlement, Some(c.receipt.tx_hash))?;
    Ok(Deployment { settlement, token, challenge_window: config.challenge_window_secs })
}

/// Make sure the settlement contract may pull `needed` tokens from the operator (approves the
/// maximum once, so later anchors skip the allowance write).
pub async fn ensure_allowance<C: Chain>(sender: &TxSender<'_, C>, d: &Deployment, needed: U256) -> Result<()> {
    let chain = sender.chain();
    let current = view(chain, d.token, RewardToken::allowanceCall { owner: sender.address(), spender: d.settlement }).await?;
    if current >= needed {
        return Ok(());
    }
    let data = RewardToken::approveCall { spender: d.settlement, value: U256::MAX }.abi_encode();
    let purpose = format!("approve:{}:{}", d.token, d.settlement);
    sender.send(&purpose, &TxRequest { to: Some(d.token), data: data.into(), value: U256::ZERO }).await?;
    Ok(())
}
