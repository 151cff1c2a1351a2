//! Integration tests of the serving tier: real HTTP on loopback, real Delta tables, a tiny base
//! model built through the `jobs` code, random rank-8 adapters in the PEFT format.

mod adapters;
mod batching;
mod common;
mod credits;
mod http;
mod load;
mod replicas;
mod sigterm;
