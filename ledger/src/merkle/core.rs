//! The tree shape shared by every standard tree: OpenZeppelin's flat, complete binary tree.
//!
//! `nodes[0]` is the root; the children of `i` are `2i+1` and `2i+2`; the `n` leaves occupy the
//! last `n` slots in reverse order (leaf `k` of the leaf list sits at `len - 1 - k`). Internal
//! nodes hash their children as a sorted pair, so a proof is just the list of siblings and a
//! verifier needs no left/right flags. This is exactly `makeMerkleTree` of
//! `@openzeppelin/merkle-tree`, laid out in one contiguous `Vec<B256>` so building is a single
//! backwards pass (hashing a level only needs the level below, so levels may be hashed in parallel).

use alloy::primitives::{B256, keccak256};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Hash of an internal node: keccak256 of the two children, smaller first.
#[inline]
pub fn hash_pair(a: &B256, b: &B256) -> B256 {
    let mut buf = [0u8; 64];
    if a <= b {
        buf[..32].copy_from_slice(a.as_slice());
        buf[32..].copy_from_slice(b.as_slice());
    } else {
        buf[..32].copy_from_slice(b.as_slice());
        buf[32..].copy_from_slice(a.as_slice());
    }
    keccak256(buf)
}

/// Fold `proof` onto `leaf` (OpenZeppelin `MerkleProof.processProof`).
pub fn process_proof(leaf: B256, proof: &[B256]) -> B256 {
    proof.iter().fold(leaf, |acc, sib| hash_pair(&acc, sib))
}

/// A multiproof over leaf hashes (or, in [`super::StandardMerkleTree`], over leaf values):
/// the shape OpenZeppelin's `MerkleProof.multiProofVerify` consumes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultiProof<L> {
    /// The proven leaves, in the order the verifier must consume them.
    pub leaves: Vec<L>,
    /// Sibling hashes that are not computed from the leaves.
    pub proof: Vec<B256>,
    /// For each hashing step: take the next hash from the stack (`true`) or from `proof` (`false`).
    pub proof_flags: Vec<bool>,
}

/// Recompute the root of a multiproof over leaf hashes (OpenZeppelin `processMultiProof`).
pub fn process_multiproof(mp: &MultiProof<B256>) -> Result<B256> {
    let needed_from_proof = mp.proof_flags.iter().filter(|f| !**f).count();
    if mp.proof.len() < needed_from_proof {
        return Err(Error::InvalidMultiproof("fewer proof hashes than false flags".into()));
    }
    if mp.leaves.len() + mp.proof.len() != mp.proof_flags.len() + 1 {
        return Err(Error::InvalidMultiproof("leaves + proof != flags + 1".into()));
    }
    let mut stack: std::collections::VecDeque<B256> = mp.leaves.iter().copied().collect();
    let mut proof = mp.proof.iter().copied();
    for flag in &mp.proof_flags {
        let a = stack.pop_front().ok_or_else(|| Error::InvalidMultiproof("stack exhausted".into()))?;
        let b = if *flag { stack.pop_front() } else { proof.next() }
            .ok_or_else(|| Error::InvalidMultiproof("stack exhausted".into()))?;
        stack.push_back(hash_pair(&a, &b));
    }
    match (stack.pop_back(), proof.next()) {
        (Some(root), None) if stack.is_empty() => Ok(root),
        (None, Some(root)) => Ok(root),
        _ => Err(Error::InvalidMultiproof("hashes left over".into())),
    }
}

/// Below this many nodes a level is hashed on the calling thread (thread hand-off costs more).
const PARALLEL_LEVEL: usize = 4096;

/// The flat node array of a standard tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatTree {
    nodes: Vec<B256>,
}

impl FlatTree {
    /// Build the tree over `leaves` (already in leaf order, i.e. sorted if the tree sorts).
    pub fn build(leaves: &[B256]) -> Result<FlatTree> {
        let n = leaves.len();
        if n == 0 {
            return Err(Error::EmptyTree);
        }
        let len = 2 * n - 1;
        let mut nodes = vec![B256::ZERO; len];
        for (k, leaf) in leaves.iter().enumerate() {
            nodes[len - 1 - k] = *leaf;
        }
        // Internal nodes are 0..n-1. Level d holds nodes [2^d - 1, 2^(d+1) - 2]; every child of a
        // level-d node is at level d+1, so hashing deepest level first is a valid order, and the
        // nodes of one level are independent.
        let internal = n - 1;
        if internal > 0 {
            let depth = usize::BITS - internal.leading_zeros(); // levels 0..depth hold internal nodes
            for d in (0..depth).rev() {
                let start = (1usize << d) - 1;
                let end = ((1usize << (d + 1)) - 1).min(internal); // exclusive
                if start >= end {
                    continue;
                }
                let (head, tail) = nodes.split_at_mut(end);
                let level = &mut head[start..];
                // Children of node i live at 2i+1, 2i+2 >= end (they are deeper), i.e. in `tail`.
                let child = |i: usize| -> (&B256, &B256) { (&tail[2 * i + 1 - end], &tail[2 * i + 2 - end]) };
                if level.len() >= PARALLEL_LEVEL {
                    level.par_iter_mut().enumerate().for_each(|(o, slot)| {
                        let (l, r) = child(start + o);
                        *slot = hash_pair(l, r);
                    });
                } else {
                    for (o, slot) in level.iter_mut().enumerate() {
                        let (l, r) = child(start + o);
                        *slot = hash_pair(l, r);
                    }
                }
            }
        }
        Ok(FlatTree { nodes })
    }

    /// Wrap an existing node array (from a dump); call [`FlatTree::validate`] before trusting it.
    pub fn from_nodes(nodes: Vec<B256>) -> FlatTree {
        FlatTree { nodes }
    }

    /// All nodes, root first.
    pub fn nodes(&self) -> &[B256] {
        &self.nodes
    }

    /// The root.
    pub fn root(&self) -> B256 {
        self.nodes[0]
    }

    /// Number of leaves.
    pub fn leaf_count(&self) -> usize {
        self.nodes.len().div_ceil(2)
    }

    /// The node index of leaf `k` (in leaf order).
    pub fn leaf_node(&self, k: usize) -> usize {
        self.nodes.len() - 1 - k
    }

    /// Whether node `i` is a leaf.
    pub fn is_leaf(&self, i: usize) -> bool {
        i < self.nodes.len() && 2 * i + 1 >= self.nodes.len()
    }

    /// The proof (sibling hashes, bottom up) of the leaf at node index `i`.
    pub fn proof(&self, mut i: usize) -> Result<Vec<B256>> {
        if !self.is_leaf(i) {
            return Err(Error::UnknownLeaf(i));
        }
        let mut proof = Vec::with_capacity(usize::BITS as usize - self.nodes.len().leading_zeros() as usize);
        while i > 0 {
            let sibling = if i % 2 == 1 { i + 1 } else { i - 1 };
            proof.push(self.nodes[sibling]);
            i = (i - 1) / 2;
        }
        Ok(proof)
    }

    /// Write the proof of node `i` into `out` (cleared first); the allocation-free form of [`FlatTree::proof`].
    pub fn proof_into(&self, mut i: usize, out: &mut Vec<B256>) -> Result<()> {
        if !self.is_leaf(i) {
            return Err(Error::UnknownLeaf(i));
        }
        out.clear();
        while i > 0 {
            let sibling = if i % 2 == 1 { i + 1 } else { i - 1 };
            out.push(self.nodes[sibling]);
            i = (i - 1) / 2;
        }
        Ok(())
    }

    /// The multiproof of the leaves at node indices `indices` (OpenZeppelin `getMultiProof`).
    /// Returned leaves are node indices, in the order the verifier consumes them.
    pub fn multiproof(&self, indices: &[usize]) -> Result<MultiProof<usize>> {
        for &i in indices {
            if !self.is_leaf(i) {
                return Err(Error::UnknownLeaf(i));
            }
        }
        let mut sorted = indices.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::InvalidMultiproof("cannot prove a duplicated index".into()));
        }
        let mut stack: std::collections::VecDeque<usize> = sorted.iter().copied().collect();
        let mut proof = Vec::new();
        let mut flags = Vec::new();
        while let Some(&j) = stack.front() {
            if j == 0 {
                break;
            }
            stack.pop_front();
            let s = if j % 2 == 1 { j + 1 } else { j - 1 };
            let p = (j - 1) / 2;
            if stack.front() == Some(&s) {
                flags.push(true);
                stack.pop_front();
            } else {
                flags.push(false);
                proof.push(self.nodes[s]);
            }
            stack.push_back(p);
        }
        if indices.is_empty() {
            proof.push(self.nodes[0]);
        }
        Ok(MultiProof { leaves: sorted, proof, proof_flags: flags })
    }

    /// Check that every internal node is the hash of its children (OpenZeppelin `isValidMerkleTree`).
    pub fn validate(&self) -> Result<()> {
        let len = self.nodes.len();
        if len == 0 || len.is_multiple_of(2) {
            return Err(Error::InvalidDump(format!("a standard tree has an odd, non-zero node count, got {len}")));
        }
        for i in 0..len {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            if r < len && self.nodes[i] != hash_pair(&self.nodes[l], &self.nodes[r]) {
                return Err(Error::InvalidDump(format!("node {i} is not the hash of its children")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<B256> {
        (0..n).map(|i| keccak256((i as u64).to_be_bytes())).collect()
    }

    /// The plain recursive definition, to check the level-parallel build against.
    fn naive(leaves: &[B256]) -> Vec<B256> {
        let len = 2 * leaves.len() - 1;
        let mut t = vec![B256::ZERO; len];
        for (k, l) in leaves.iter().enumerate() {
            t[len - 1 - k] = *l;
        }
        for i in (0..len - leaves.len()).rev() {
            t[i] = hash_pair(&t[2 * i + 1], &t[2 * i + 2]);
        }
        t
    }

    #[test]
    fn level_order_build_matches_the_reference_order() {
        for n in [1, 2, 3, 4, 5, 7, 8, 9, 100, 4097, 10_000] {
            let ls = leaves(n);
            let t = FlatTree::build(&ls).expect("non-empty");
            assert_eq!(t.nodes(), naive(&ls).as_slice(), "n = {n}");
            t.validate().expect("valid");
        }
    }

    #[test]
    fn proofs_and_multiproofs_verify() {
        let ls = leaves(37);
        let t = FlatTree::build(&ls).expect("non-empty");
        for (k, &leaf) in ls.iter().enumerate() {
            let i = t.leaf_node(k);
            assert_eq!(process_proof(leaf, &t.proof(i).expect("leaf")), t.root());
        }
        let mp = t.multiproof(&[t.leaf_node(3), t.leaf_node(30), t.leaf_node(4)]).expect("leaves");
        let hashed = MultiProof {
            leaves: mp.leaves.iter().map(|&i| t.nodes()[i]).collect(),
            proof: mp.proof.clone(),
            proof_flags: mp.proof_flags.clone(),
        };
        assert_eq!(process_multiproof(&hashed).expect("well formed"), t.root());
        assert!(t.proof(0).is_err(), "the root of a multi-leaf tree is not a leaf");
        assert!(matches!(FlatTree::build(&[]), Err(Error::EmptyTree)));
    }
}
