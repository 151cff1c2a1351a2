//! OpenZeppelin-compatible standard Merkle trees: building, proofs, multiproofs, dumps.
//!
//! [`core`] is the hash layout (a flat array, sorted-pair hashing), [`standard`] the value-level
//! tree over a [`LeafCodec`], [`dump`] the `standard-v1` JSON format and [`dynamic`] a codec for
//! encodings known only at run time. The settlement leaves have typed codecs in [`crate::leaves`].

pub mod core;
pub mod dump;
pub mod dynamic;
pub mod standard;

pub use self::core::{FlatTree, MultiProof, hash_pair, process_multiproof, process_proof};
pub use dump::{DumpValue, StandardDump};
pub use dynamic::{DynCodec, DynLeaf};
pub use standard::{LeafCodec, StandardMerkleTree, TreeOptions, verify, verify_multiproof};
