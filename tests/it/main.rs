//! End-to-end tests of the `tributary` binary.

mod cli;
mod kill;
mod epoch;
