//! The `standard-v1` JSON dump of `@openzeppelin/merkle-tree` (`tree.dump()` / `StandardMerkleTree.load`).
//!
//! Field order and spelling follow the package (`format`, `leafEncoding`, `tree`, `values` with
//! `value` + `treeIndex`), so our dumps load in the JS library and theirs load here.

use alloy::primitives::B256;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A `standard-v1` tree dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StandardDump {
    /// Always `standard-v1`.
    pub format: String,
    /// Solidity type of each position of a leaf value.
    pub leaf_encoding: Vec<String>,
    /// Every node, root first (OpenZeppelin's flat layout).
    pub tree: Vec<B256>,
    /// The values in input order, each with the node index of its leaf.
    pub values: Vec<DumpValue>,
}

/// One value of a dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DumpValue {
    /// The leaf value as a JSON array (integers as decimal strings, addresses and bytes as 0x hex).
    pub value: serde_json::Value,
    /// Node index of its leaf.
    pub tree_index: usize,
}

impl StandardDump {
    /// Parse a dump from JSON text.
    pub fn from_json(text: &str) -> Result<StandardDump> {
        Ok(serde_json::from_str(text)?)
    }

    /// Compact JSON, as `JSON.stringify(tree.dump())` writes it.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string(self)?)
    }

    /// The root (first node), if the dump has nodes.
    pub fn root(&self) -> Option<B256> {
        self.tree.first().copied()
    }
}
