//! Bindings to the settlement contract and the demo reward token, generated from the committed
//! compiled artifacts (`ledger/artifacts/*.json`, rebuilt by `ledger/js/build.js`).
//!
//! The ABI and bytecode come from the same JSON the build script writes, so the Rust side cannot
//! drift from the Solidity: a test rebuilds the artifacts with the pinned `solc` and compares bytes.

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol;
use alloy::sol_types::{SolConstructor, SolInterface};

sol!(
    #[allow(missing_docs)]
    #[derive(Debug, PartialEq, Eq)]
    TributarySettlement,
    "artifacts/TributarySettlement.json"
);

sol!(
    #[allow(missing_docs)]
    #[derive(Debug, PartialEq, Eq)]
    RewardToken,
    "artifacts/RewardToken.json"
);

/// The committed artifact of the settlement contract (JSON text).
pub const SETTLEMENT_ARTIFACT: &str = include_str!("../artifacts/TributarySettlement.json");
/// The committed artifact of the demo reward token (JSON text).
pub const TOKEN_ARTIFACT: &str = include_str!("../artifacts/RewardToken.json");

/// Creation code + constructor arguments of the settlement contract.
pub fn settlement_deploy_code(
    token: Address,
    challenge_window: u64,
    admin: Address,
    operator: Address,
    guardian: Address,
) -> Bytes {
    let args = TributarySettlement::constructorCall {
        token_: token,
        challengeWindow_: challenge_window,
        admin,
        operator,
        guardian,
    }
    .abi_encode();
    [TributarySettlement::BYTECODE.as_ref(), &args].concat().into()
}

/// Creation code + constructor arguments of the demo reward token (whole `supply` minted to `holder`).
pub fn token_deploy_code(name: &str, symbol: &str, holder: Address, supply: U256) -> Bytes {
    let args = RewardToken::constructorCall { name_: name.into(), symbol_: symbol.into(), holder, supply }.abi_encode();
    [RewardToken::BYTECODE.as_ref(), &args].concat().into()
}

/// A human-readable revert reason: the contract's custom error with its arguments, a standard
/// `Error(string)`, or the raw hex when nothing matches.
pub fn decode_revert(data: &[u8]) -> String {
    if data.is_empty() {
        return "reverted without data".into();
    }
    if let Ok(e) = TributarySettlement::TributarySettlementErrors::abi_decode(data) {
        return format!("{e:?}");
    }
    if let Ok(e) = RewardToken::RewardTokenErrors::abi_decode(data) {
        return format!("{e:?}");
    }
    if let Some(reason) = alloy::sol_types::decode_revert_reason(data) {
        return reason;
    }
    format!("0x{}", alloy::hex::encode(data))
}
