//! End-to-end tests of the `tributary` binary.

mod cli;
mod cluster;
mod kill;
mod epoch;
