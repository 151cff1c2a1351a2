//! Integration tests of the ledger crate: Merkle trees against `@openzeppelin/merkle-tree`, the
//! compiled contract artifacts, and settlement scenarios on both chain backends (the embedded
//! revm chain and a real anvil node from npm `@foundry-rs/anvil`, started on 127.0.0.1).

mod anvil;
mod artifacts;
mod common;
mod embedded;
mod merkle_oz;
mod scenarios;
mod tamper;
