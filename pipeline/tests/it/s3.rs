//! Ingest end to end against an S3-protocol server (moto) on 127.0.0.1, started by the test.
//!
//! `.ci/run` installs `moto[server]`; set `TRIBUTARY_SKIP_S3=1` to skip on a machine without it.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_pipeline::config::{Config, DatanetKind, S3Config};
use tributary_pipeline::sample::{self, SampleSpec};
use tributary_pipeline::{Tables, Warehouse};

use crate::common::*;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn start_moto() -> Option<(Moto, String)> {
    if std::env::var("TRIBUTARY_SKIP_S3").is_ok() {
        return None;
    }
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server not found: install it with `pip install 'moto[server]'` (the CI script does)");
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((moto, format!("http://127.0.0.1:{port}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto_server did not start on port {port}");
}

fn create_bucket(endpoint: &str, bucket: &str) {
    // moto accepts unsigned requests; a plain HTTP PUT creates the bucket.
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    use std::io::{Read, Write};
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"), "create bucket: {resp}");
}

#[tokio::test]
async fn ingest_against_s3_protocol_server() {
    let Some((_moto, endpoint)) = start_moto() else { return };
    create_bucket(&endpoint, "tributary");
    let cfg = Arc::new(Config {
        warehouse: "s3://tributary/wh".into(),
        s3: S3Config {
            endpoint: endpoint.clone(),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            allow_http: true,
            path_style: true,
            ..S3Config::default()
        },
        datanets: vec![datanet("geo", DatanetKind::PromptCompletion, true)],
        ..Config::default()
    });
    let w = Warehouse::open(&cfg).expect("s3 warehouse");
    let m = sample::generate(&w, &cfg.datanets[0], &SampleSpec { contributors: 3, ..SampleSpec::default() })
        .await
        .expect("sample into s3");
    let tables = Tables::new(w.clone());
    let s = ingest(&cfg, &tables).await;
    assert_eq!(s.rows_added as usize, m.rows);
    assert_eq!(s.files_quarantined, m.bad_files.len());
    assert_eq!(scalar(&tables, "SELECT COUNT(*) FROM bronze.contributions").await as usize, m.rows);
    let again = ingest(&cfg, &tables).await;
    assert_eq!(again.rows_added, 0);
    // The Delta log really is in the bucket.
    let listed = tables.list().await.expect("list");
    assert!(listed.keys().any(|id| id.to_string() == "bronze.contributions"));
}
