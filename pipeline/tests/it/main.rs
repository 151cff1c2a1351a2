//! Integration tests of the lakehouse core, on real Delta tables (memory://, temp dirs, S3 via moto).

mod cluster;
mod common;
mod hostile;
mod ingest;
mod models;
mod s3;
