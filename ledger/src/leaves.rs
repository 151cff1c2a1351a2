//! The two settlement leaf kinds of DESIGN.md and their typed codecs.
//!
//! - payout leaf `(uint64 epoch, uint256 index, address account, uint256 amount)`: what a claim proves;
//! - attribution leaf `(uint64 epoch, bytes32 contribution_id, address contributor, int256 influence)`,
//!   the influence scaled to an integer by [`scale_influence`], so anyone can check one row of the
//!   published `gold.example_influence` table against the anchored attribution root.
//!
//! Both are static ABI tuples, so `abi.encode` is four words; alloy's `SolValue` encodes them with
//! no dynamic dispatch, which keeps hashing a million leaves cheap.

use alloy::primitives::{Address, B256, I256, U256};
use alloy::sol_types::SolValue;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::merkle::{LeafCodec, StandardMerkleTree};

/// The payout leaf encoding.
pub const PAYOUT_ENCODING: [&str; 4] = ["uint64", "uint256", "address", "uint256"];
/// The attribution leaf encoding.
pub const ATTRIBUTION_ENCODING: [&str; 4] = ["uint64", "bytes32", "address", "int256"];

/// One payout: `amount` token base units to `account`, leaf `index` of `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayoutLeaf {
    /// The epoch.
    pub epoch: u64,
    /// The leaf's index (its bit in the contract's claimed bitmap).
    pub index: U256,
    /// Who is paid.
    pub account: Address,
    /// Token base units.
    pub amount: U256,
}

/// One row's attribution: `influence` (scaled by 1e18) of `contribution_id`, owned by `contributor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttributionLeaf {
    /// The epoch.
    pub epoch: u64,
    /// The row (`contribution_id`, a sha256).
    pub contribution_id: B256,
    /// Its contributor.
    pub contributor: Address,
    /// Influence × 1e18, see [`scale_influence`].
    pub influence: I256,
}

/// Codec of payout leaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct PayoutCodec;

/// Codec of attribution leaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttributionCodec;

/// The payout tree of an epoch.
pub type PayoutTree = StandardMerkleTree<PayoutCodec>;
/// The attribution tree of an epoch.
pub type AttributionTree = StandardMerkleTree<AttributionCodec>;

fn items(json: &Value, index: usize) -> Result<&[Value]> {
    match json.as_array() {
        Some(a) if a.len() == 4 => Ok(a),
        _ => Err(Error::InvalidLeaf { index, reason: format!("expected a JSON array of 4 values, got {json}") }),
    }
}

fn str_at(a: &[Value], i: usize, index: usize) -> Result<&str> {
    a[i].as_str().ok_or_else(|| Error::InvalidLeaf { index, reason: format!("position {i} must be a string") })
}

fn bad(index: usize, what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidLeaf { index, reason: format!("{what}: {e}") }
}

impl LeafCodec for PayoutCodec {
    type Value = PayoutLeaf;

    fn encoding(&self) -> Vec<String> {
        PAYOUT_ENCODING.iter().map(|s| s.to_string()).collect()
    }

    fn abi_encode(&self, v: &PayoutLeaf) -> Vec<u8> {
        (v.epoch, v.index, v.account, v.amount).abi_encode_params()
    }

    fn to_json(&self, v: &PayoutLeaf) -> Value {
        serde_json::json!([v.epoch.to_string(), v.index.to_string(), v.account.to_checksum(None), v.amount.to_string()])
    }

    fn from_json(&self, json: &Value, index: usize) -> Result<PayoutLeaf> {
        let a = items(json, index)?;
        Ok(PayoutLeaf {
            epoch: str_at(a, 0, index)?.parse().map_err(|e| bad(index, "epoch", e))?,
            index: parse_uint(str_at(a, 1, index)?).map_err(|e| bad(index, "index", e))?,
            account: parse_account(str_at(a, 2, index)?).map_err(|e| bad(index, "account", e))?,
            amount: parse_uint(str_at(a, 3, index)?).map_err(|e| bad(index, "amount", e))?,
        })
    }
}

impl LeafCodec for AttributionCodec {
    type Value = AttributionLeaf;

    fn encoding(&self) -> Vec<String> {
        ATTRIBUTION_ENCODING.iter().map(|s| s.to_string()).collect()
    }

    fn abi_encode(&self, v: &AttributionLeaf) -> Vec<u8> {
        (v.epoch, v.contribution_id, v.contributor, v.influence).abi_encode_params()
    }

    fn to_json(&self, v: &AttributionLeaf) -> Value {
        serde_json::json!([
            v.epoch.to_string(),
            v.contribution_id.to_string(),
            v.contributor.to_checksum(None),
            v.influence.to_string()
        ])
    }

    fn from_json(&self, json: &Value, index: usize) -> Result<AttributionLeaf> {
        let a = items(json, index)?;
        Ok(AttributionLeaf {
            epoch: str_at(a, 0, index)?.parse().map_err(|e| bad(index, "epoch", e))?,
            contribution_id: parse_contribution_id(str_at(a, 1, index)?).map_err(|e| bad(index, "contribution_id", e))?,
            contributor: parse_account(str_at(a, 2, index)?).map_err(|e| bad(index, "contributor", e))?,
            influence: str_at(a, 3, index)?.parse::<I256>().map_err(|e| bad(index, "influence", e))?,
        })
    }
}

/// Parse a decimal unsigned integer (`amount` column, dump values): digits only, at most 2^256 - 1.
pub fn parse_uint(s: &str) -> std::result::Result<U256, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` is not a decimal unsigned integer"));
    }
    U256::from_str_radix(s, 10).map_err(|_| format!("`{s}` does not fit in uint256"))
}

/// Parse an account: `0x` + 40 hex digits; mixed case must be a valid EIP-55 checksum.
pub fn parse_account(s: &str) -> std::result::Result<Address, String> {
    let lower = tributary_pipeline::ids::parse_address(s)
        .ok_or_else(|| format!("`{s}` is not a 0x address (40 hex digits, EIP-55 checksum if mixed case)"))?;
    lower.parse::<Address>().map_err(|e| format!("`{s}`: {e}"))
}

/// Parse a contribution id: 64 hex digits, with or without `0x`.
pub fn parse_contribution_id(s: &str) -> std::result::Result<B256, String> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{s}` is not 64 hex digits"));
    }
    h.parse::<B256>().map_err(|e| format!("`{s}`: {e}"))
}

/// Influence as the integer the attribution leaf carries: `trunc(x × 10^18)`, computed exactly from
/// the IEEE-754 double (no rounding of the product). In Python: `int(Fraction(x) * 10**18)`.
///
/// NaN and infinities have no integer form; values with |x| ≥ 2^255 / 10^18 do not fit `int256`.
pub fn scale_influence(x: f64) -> std::result::Result<I256, String> {
    if !x.is_finite() {
        return Err(format!("influence {x} is not finite"));
    }
    if x == 0.0 {
        return Ok(I256::ZERO);
    }
    let bits = x.to_bits();
    let negative = bits >> 63 == 1;
    let exp_bits = ((bits >> 52) & 0x7ff) as i64;
    let fraction = bits & ((1u64 << 52) - 1);
    // x = mantissa × 2^exp exactly.
    let (mantissa, exp) = if exp_bits == 0 { (fraction, -1074) } else { (fraction | (1 << 52), exp_bits - 1075) };
    let scaled = U256::from(mantissa) * U256::from(1_000_000_000_000_000_000u64); // < 2^113
    let magnitude = if exp >= 0 {
        if scaled.bit_len() as i64 + exp > 255 {
            return Err(format!("influence {x} × 1e18 does not fit in int256"));
        }
        scaled << (exp as usize)
    } else if -exp >= 256 {
        U256::ZERO
    } else {
        scaled >> ((-exp) as usize)
    };
    let v = I256::try_from(magnitude).map_err(|_| format!("influence {x} × 1e18 does not fit in int256"))?;
    Ok(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn influence_scaling_is_exact_truncation() {
        assert_eq!(scale_influence(1.0).expect("finite"), I256::try_from(10i128.pow(18)).expect("fits"));
        assert_eq!(scale_influence(-2.5).expect("finite"), I256::try_from(-25 * 10i128.pow(17)).expect("fits"));
        // 0.1 is 0.1000000000000000055511151231257827…; × 1e18 truncates to 100000000000000005.
        assert_eq!(scale_influence(0.1).expect("finite").to_string(), "100000000000000005");
        assert_eq!(scale_influence(-0.1).expect("finite").to_string(), "-100000000000000005");
        assert_eq!(scale_influence(1e-30).expect("finite"), I256::ZERO);
        assert_eq!(scale_influence(f64::MIN_POSITIVE / 4.0).expect("finite"), I256::ZERO);
        assert!(scale_influence(f64::NAN).is_err());
        assert!(scale_influence(f64::INFINITY).is_err());
        assert!(scale_influence(1e60).is_err());
        assert!(scale_influence(1e50).is_ok());
    }

    #[test]
    fn parsers_refuse_bad_input() {
        assert!(parse_uint("12").is_ok());
        for bad in ["", "-1", "1e3", "0x10", " 1", "1157920892373161954235709850086879078532699846656405640394575840079131296399360"] {
            assert!(parse_uint(bad).is_err(), "{bad}");
        }
        assert!(parse_account("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").is_err(), "bad checksum");
        assert!(parse_contribution_id(&"ab".repeat(32)).is_ok());
        assert!(parse_contribution_id("abc").is_err());
    }

    #[test]
    fn payout_leaf_json_round_trips() {
        let leaf = PayoutLeaf {
            epoch: 3,
            index: U256::from(7),
            account: parse_account("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").expect("valid"),
            amount: U256::from(10).pow(U256::from(20)),
        };
        let j = PayoutCodec.to_json(&leaf);
        assert_eq!(j[2], "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
        assert_eq!(PayoutCodec.from_json(&j, 0).expect("round trip"), leaf);
    }
}
