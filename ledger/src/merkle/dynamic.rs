//! [`DynCodec`]: a leaf codec for any leaf encoding, driven by Solidity type names at run time.
//!
//! Dumps made by other tools (and `@openzeppelin/merkle-tree`'s own test vectors) use encodings
//! such as `["string"]` or `["uint256","string[]"]`; this codec parses each JSON value against its
//! declared type with alloy's `dyn-abi` and keeps the original JSON so a dump round-trips unchanged.

use alloy::dyn_abi::{DynSolType, DynSolValue};
use serde_json::Value;

use super::standard::LeafCodec;
use crate::error::{Error, Result};

/// A leaf codec for an encoding known only at run time.
#[derive(Debug, Clone)]
pub struct DynCodec {
    names: Vec<String>,
    types: Vec<DynSolType>,
}

/// A leaf value of a [`DynCodec`] tree: the ABI value and the JSON it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct DynLeaf {
    /// The JSON array as written in (or read from) a dump.
    pub json: Value,
    /// The ABI values, one per position of the encoding.
    pub sol: Vec<DynSolValue>,
}

impl DynCodec {
    /// A codec for `encoding` (Solidity type names such as `uint256`, `address`, `string[]`, `(uint8,bytes)`).
    pub fn new<S: AsRef<str>>(encoding: &[S]) -> Result<DynCodec> {
        let names: Vec<String> = encoding.iter().map(|s| s.as_ref().trim().to_string()).collect();
        let types = names
            .iter()
            .map(|n| DynSolType::parse(n).map_err(|e| Error::InvalidInput(format!("leaf type `{n}`: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(DynCodec { names, types })
    }

    /// Parse a JSON array into a leaf (position `index` is for error messages).
    pub fn leaf(&self, json: Value, index: usize) -> Result<DynLeaf> {
        let items = json
            .as_array()
            .ok_or_else(|| Error::InvalidLeaf { index, reason: "a leaf value must be a JSON array".into() })?;
        if items.len() != self.types.len() {
            return Err(Error::InvalidLeaf {
                index,
                reason: format!("{} values for an encoding of {} types", items.len(), self.types.len()),
            });
        }
        let sol = items
            .iter()
            .zip(&self.types)
            .map(|(v, t)| from_json(t, v).map_err(|reason| Error::InvalidLeaf { index, reason }))
            .collect::<Result<Vec<_>>>()?;
        Ok(DynLeaf { json, sol })
    }
}

/// Read one JSON value as an ABI value of type `ty`.
fn from_json(ty: &DynSolType, v: &Value) -> std::result::Result<DynSolValue, String> {
    let seq = |inner: &DynSolType, items: &Vec<Value>| -> std::result::Result<Vec<DynSolValue>, String> {
        items.iter().map(|x| from_json(inner, x)).collect()
    };
    match (ty, v) {
        (DynSolType::String, Value::String(s)) => Ok(DynSolValue::String(s.clone())),
        (DynSolType::Bool, Value::Bool(b)) => Ok(DynSolValue::Bool(*b)),
        (DynSolType::Array(inner), Value::Array(items)) => Ok(DynSolValue::Array(seq(inner, items)?)),
        (DynSolType::FixedArray(inner, n), Value::Array(items)) => {
            if items.len() != *n {
                return Err(format!("{} items for {ty}", items.len()));
            }
            Ok(DynSolValue::FixedArray(seq(inner, items)?))
        }
        (DynSolType::Tuple(types), Value::Array(items)) => {
            if items.len() != types.len() {
                return Err(format!("{} items for {ty}", items.len()));
            }
            let vals = items.iter().zip(types).map(|(x, t)| from_json(t, x)).collect::<std::result::Result<_, _>>()?;
            Ok(DynSolValue::Tuple(vals))
        }
        (
            DynSolType::Int(_)
            | DynSolType::Uint(_)
            | DynSolType::Address
            | DynSolType::FixedBytes(_)
            | DynSolType::Bytes
            | DynSolType::Bool,
            Value::String(s),
        ) => ty.coerce_str(s).map_err(|e| format!("`{s}` is not a {ty}: {e}")),
        (DynSolType::Int(_) | DynSolType::Uint(_), Value::Number(n)) if n.is_i64() || n.is_u64() => {
            ty.coerce_str(&n.to_string()).map_err(|e| format!("{n} is not a {ty}: {e}"))
        }
        (t, v) => Err(format!("JSON {v} cannot be a {t}")),
    }
}

impl LeafCodec for DynCodec {
    type Value = DynLeaf;

    fn encoding(&self) -> Vec<String> {
        self.names.clone()
    }

    fn abi_encode(&self, value: &DynLeaf) -> Vec<u8> {
        DynSolValue::Tuple(value.sol.clone()).abi_encode_params()
    }

    fn to_json(&self, value: &DynLeaf) -> Value {
        value.json.clone()
    }

    fn from_json(&self, json: &Value, index: usize) -> Result<DynLeaf> {
        self.leaf(json.clone(), index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{StandardMerkleTree, TreeOptions};

    #[test]
    fn readme_example_hashes_like_solidity() {
        // The README example of @openzeppelin/merkle-tree: two (address, uint256) leaves.
        let codec = DynCodec::new(&["address", "uint256"]).expect("valid types");
        let values = vec![
            serde_json::json!(["0x1111111111111111111111111111111111111111", "5000000000000000000"]),
            serde_json::json!(["0x2222222222222222222222222222222222222222", "2500000000000000000"]),
        ];
        let leaves = values.into_iter().enumerate().map(|(i, v)| codec.leaf(v, i)).collect::<Result<Vec<_>>>();
        let tree = StandardMerkleTree::of(codec, leaves.expect("valid"), TreeOptions::default()).expect("tree");
        // The root @openzeppelin/merkle-tree 1.0.8 prints for its README example.
        assert_eq!(
            tree.root().to_string(),
            "0xd4dee0beab2d53f2cc83e567171bd2820e49898130a22622b10ead383e90bd77"
        );
    }

    #[test]
    fn type_mismatches_are_precise() {
        let codec = DynCodec::new(&["uint8", "address"]).expect("valid types");
        let e = codec.leaf(serde_json::json!(["300", "0x00"]), 4).expect_err("out of range");
        assert!(matches!(e, Error::InvalidLeaf { index: 4, .. }), "{e}");
        assert!(codec.leaf(serde_json::json!(["1"]), 0).is_err());
        assert!(DynCodec::new(&["uint7"]).is_err());
    }
}
