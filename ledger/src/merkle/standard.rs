//! `StandardMerkleTree`: OpenZeppelin's standard tree over ABI-encoded leaf values.
//!
//! leaf hash = `keccak256(keccak256(abi.encode(values...)))`, leaves sorted by hash (by default),
//! internal nodes are sorted-pair hashes ([`super::core`]). A [`LeafCodec`] says how one kind of
//! value is ABI-encoded and written to / read from the `standard-v1` JSON dump: the typed codecs of
//! [`crate::leaves`] encode the settlement leaves with no dynamic dispatch, [`super::DynCodec`]
//! handles any encoding (e.g. dumps made by other tools).

use std::collections::HashMap;

use alloy::primitives::{B256, keccak256};
use rayon::prelude::*;

use super::core::{FlatTree, MultiProof, process_multiproof, process_proof};
use super::dump::{DumpValue, StandardDump};
use crate::error::{Error, Result};

/// Leaf values of this many or more are hashed in parallel.
const PARALLEL_LEAVES: usize = 4096;

/// How one kind of leaf value is ABI-encoded and represented in a dump.
pub trait LeafCodec: Sync {
    /// The leaf value.
    type Value: Send + Sync;
    /// The leaf encoding as Solidity type names, e.g. `["uint64","uint256","address","uint256"]`.
    fn encoding(&self) -> Vec<String>;
    /// `abi.encode(values...)` of the leaf (the params encoding, as Solidity's `abi.encode`).
    fn abi_encode(&self, value: &Self::Value) -> Vec<u8>;
    /// The JSON array that stands for the value in a dump.
    fn to_json(&self, value: &Self::Value) -> serde_json::Value;
    /// Parse a dump's JSON array back into a value (position `index` is for error messages).
    #[expect(clippy::wrong_self_convention, reason = "the receiver is the leaf encoding that parses the value")]
    fn from_json(&self, json: &serde_json::Value, index: usize) -> Result<Self::Value>;

    /// The standard leaf hash: `keccak256(bytes.concat(keccak256(abi.encode(values...))))`.
    fn leaf_hash(&self, value: &Self::Value) -> B256 {
        keccak256(keccak256(self.abi_encode(value)))
    }
}

/// Options of [`StandardMerkleTree::of`].
#[derive(Debug, Clone, Copy)]
pub struct TreeOptions {
    /// Sort leaves by hash (OpenZeppelin's default; needed for on-chain multiproofs).
    pub sort_leaves: bool,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions { sort_leaves: true }
    }
}

/// A standard Merkle tree over values of codec `C`.
pub struct StandardMerkleTree<C: LeafCodec> {
    codec: C,
    tree: FlatTree,
    values: Vec<C::Value>,
    /// Node index of each value, in input order.
    tree_index: Vec<usize>,
}

impl<C: LeafCodec> std::fmt::Debug for StandardMerkleTree<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandardMerkleTree")
            .field("encoding", &self.codec.encoding())
            .field("leaves", &self.values.len())
            .field("root", &self.root())
            .finish()
    }
}

impl<C: LeafCodec> StandardMerkleTree<C> {
    /// Build the tree of `values` (OpenZeppelin `StandardMerkleTree.of`).
    pub fn of(codec: C, values: Vec<C::Value>, options: TreeOptions) -> Result<Self> {
        if values.is_empty() {
            return Err(Error::EmptyTree);
        }
        let hashes: Vec<B256> = if values.len() >= PARALLEL_LEAVES {
            values.par_iter().map(|v| codec.leaf_hash(v)).collect()
        } else {
            values.iter().map(|v| codec.leaf_hash(v)).collect()
        };
        // order[k] = the value index of leaf k.
        let mut order: Vec<u32> = (0..values.len() as u32).collect();
        if options.sort_leaves {
            // A stable sort keeps equal hashes (duplicate values) in input order, as JS's stable sort does.
            if values.len() >= PARALLEL_LEAVES {
                order.par_sort_by(|a, b| hashes[*a as usize].cmp(&hashes[*b as usize]));
            } else {
                order.sort_by(|a, b| hashes[*a as usize].cmp(&hashes[*b as usize]));
            }
        }
        let leaves: Vec<B256> = order.iter().map(|&v| hashes[v as usize]).collect();
        let tree = FlatTree::build(&leaves)?;
        let mut tree_index = vec![0usize; values.len()];
        for (k, &v) in order.iter().enumerate() {
            tree_index[v as usize] = tree.leaf_node(k);
        }
        Ok(StandardMerkleTree { codec, tree, values, tree_index })
    }

    /// The root.
    pub fn root(&self) -> B256 {
        self.tree.root()
    }

    /// Number of values (leaves).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always false: a tree has at least one leaf.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The values, in input order.
    pub fn values(&self) -> &[C::Value] {
        &self.values
    }

    /// The flat node array (root first).
    pub fn nodes(&self) -> &[B256] {
        self.tree.nodes()
    }

    /// The node index of value `i`.
    pub fn tree_index(&self, i: usize) -> Result<usize> {
        self.tree_index.get(i).copied().ok_or(Error::UnknownLeaf(i))
    }

    /// The proof of value `i` (index in input order).
    pub fn proof(&self, i: usize) -> Result<Vec<B256>> {
        self.tree.proof(self.tree_index(i)?)
    }

    /// The proof of value `i` written into `out` (no allocation once `out` has grown).
    pub fn proof_into(&self, i: usize, out: &mut Vec<B256>) -> Result<()> {
        self.tree.proof_into(self.tree_index(i)?, out)
    }

    /// A multiproof of values `indices` (input order); leaves come back in verifier order.
    pub fn multiproof(&self, indices: &[usize]) -> Result<MultiProof<usize>>
    where
        C::Value: Clone,
    {
        let nodes = indices.iter().map(|&i| self.tree_index(i)).collect::<Result<Vec<_>>>()?;
        let mp = self.tree.multiproof(&nodes)?;
        let by_node: HashMap<usize, usize> = indices.iter().zip(&nodes).map(|(&v, &n)| (n, v)).collect();
        let leaves = mp
            .leaves
            .iter()
            .map(|n| by_node.get(n).copied().ok_or_else(|| Error::Internal("multiproof leaf not requested".into())))
            .collect::<Result<Vec<_>>>()?;
        Ok(MultiProof { leaves, proof: mp.proof, proof_flags: mp.proof_flags })
    }

    /// Whether `proof` proves `value` under this tree's root.
    pub fn verify(&self, value: &C::Value, proof: &[B256]) -> bool {
        verify(&self.codec, self.root(), value, proof)
    }

    /// The `standard-v1` dump: what `StandardMerkleTree.dump()` returns.
    pub fn dump(&self) -> StandardDump {
        StandardDump {
            format: "standard-v1".into(),
            leaf_encoding: self.codec.encoding(),
            tree: self.tree.nodes().to_vec(),
            values: self
                .values
                .iter()
                .zip(&self.tree_index)
                .map(|(v, &t)| DumpValue { value: self.codec.to_json(v), tree_index: t })
                .collect(),
        }
    }

    /// Load and fully validate a dump (OpenZeppelin `StandardMerkleTree.load` + `validate`): every
    /// value must hash to its leaf, every internal node to its children.
    pub fn load(codec: C, dump: &StandardDump) -> Result<Self> {
        if dump.format != "standard-v1" {
            return Err(Error::InvalidDump(format!("unknown format `{}`", dump.format)));
        }
        if dump.leaf_encoding != codec.encoding() {
            return Err(Error::InvalidDump(format!(
                "leaf encoding {:?} is not the expected {:?}",
                dump.leaf_encoding,
                codec.encoding()
            )));
        }
        let tree = FlatTree::from_nodes(dump.tree.clone());
        tree.validate()?;
        let mut values = Vec::with_capacity(dump.values.len());
        let mut tree_index = Vec::with_capacity(dump.values.len());
        for (i, dv) in dump.values.iter().enumerate() {
            let v = codec.from_json(&dv.value, i)?;
            if !tree.is_leaf(dv.tree_index) {
                return Err(Error::InvalidDump(format!("value {i}: treeIndex {} is not a leaf", dv.tree_index)));
            }
            if tree.nodes()[dv.tree_index] != codec.leaf_hash(&v) {
                return Err(Error::InvalidDump(format!("value {i} does not hash to its leaf {}", dv.tree_index)));
            }
            values.push(v);
            tree_index.push(dv.tree_index);
        }
        if values.is_empty() {
            return Err(Error::EmptyTree);
        }
        Ok(StandardMerkleTree { codec, tree, values, tree_index })
    }
}

/// Whether `proof` proves `value` under `root` (OpenZeppelin `StandardMerkleTree.verify`).
pub fn verify<C: LeafCodec>(codec: &C, root: B256, value: &C::Value, proof: &[B256]) -> bool {
    process_proof(codec.leaf_hash(value), proof) == root
}

/// Whether a multiproof over values proves them all under `root` (`StandardMerkleTree.verifyMultiProof`).
pub fn verify_multiproof<C: LeafCodec>(codec: &C, root: B256, mp: &MultiProof<C::Value>) -> bool {
    let hashed = MultiProof {
        leaves: mp.leaves.iter().map(|v| codec.leaf_hash(v)).collect(),
        proof: mp.proof.clone(),
        proof_flags: mp.proof_flags.clone(),
    };
    matches!(process_multiproof(&hashed), Ok(r) if r == root)
}
