//! Integration tests of the Burn jobs: the model against an independent reference, LoRA, training
//! and attribution on real Delta tables, contributor aggregation, and resumption after a kill.

mod aggregate;
mod attribute;
mod common;
mod lora;
mod model;
mod resume;
mod train;
