//! SIGTERM: a server in a child process finishes the requests it accepted, then flushes every usage
//! row before exiting. The child is this test binary itself, running the ignored `sigterm_child`
//! test, which serves the way `tributary serve` does (base model loaded from the warehouse, admin
//! token from the environment variable the config names, stopped by `shutdown_signal`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::json;
use tributary_jobs::model::LoraTarget;
use tributary_pipeline::{Config, Tables, Warehouse};
use tributary_serving::client::Client;
use tributary_serving::metering::read_usage;
use tributary_serving::{ServingBuilder, shutdown_signal};

use crate::common::{Fixture, test_config};

const DIR_VAR: &str = "TRIBUTARY_SERVING_TEST_CHILD_DIR";
const TOKEN_VAR: &str = "TRIBUTARY_SERVING_TEST_CHILD_TOKEN";

/// How long the child may take to start serving, and to exit after SIGTERM.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

/// The child process, killed (and reaped) when the test ends early, so that a failing test never
/// leaves a server behind holding the test's output pipes open.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The child's stdout lines, read on a thread.
struct ChildOutput {
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl ChildOutput {
    /// Wait for a line containing `marker` and return what follows it. libtest prints
    /// `test sigterm::sigterm_child ... ` before the test's own output, on the same line, so the
    /// marker is searched anywhere in the line. Fails fast, with everything the child printed,
    /// when the child exits or stays silent past the deadline.
    fn wait_for(&mut self, marker: &str, child: &mut ChildGuard) -> String {
        let deadline = Instant::now() + CHILD_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let found = line.split_once(marker).map(|(_, rest)| rest.trim().to_string());
                    self.seen.push(line);
                    if let Some(rest) = found {
                        return rest;
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.0.try_wait() {
                        // Drain what it printed before exiting.
                        self.seen.extend(self.lines.try_iter());
                        if let Some(rest) = self.seen.iter().find_map(|l| l.split_once(marker).map(|(_, r)| r.trim().to_string())) {
                            return rest;
                        }
                        panic!("the child exited ({status}) before printing `{marker}`; its stdout: {:#?}", self.seen);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the child printed no `{marker}` within {CHILD_DEADLINE:?}; its stdout: {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.0.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    panic!("the child closed its stdout ({status}) before printing `{marker}`; its stdout: {:#?}", self.seen)
                }
            }
        }
    }
}

fn config_for(dir: &str) -> Config {
    let mut c = test_config();
    c.warehouse = format!("file://{dir}/warehouse");
    c.serving.admin_token_env = TOKEN_VAR.into();
    // Nothing is written before shutdown: what is in the table afterwards was flushed by it.
    c.serving.usage_flush_ms = 600_000;
    c.serving.usage_flush_rows = 100_000;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of sigterm_finishes_accepted_requests_and_flushes_usage"]
async fn sigterm_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else { return };
    let config = Arc::new(config_for(&dir));
    let tables = Tables::new(Warehouse::open(&config).expect("warehouse"));
    let server = ServingBuilder::new(config, tables).with_bind("127.0.0.1:0").start().await.expect("server starts");
    println!("LISTENING {}", server.url());
    let report = server.run_until(shutdown_signal()).await.expect("clean shutdown");
    println!("STOPPED rows={} finished={}", report.meter.rows, report.engine.finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_accepted_requests_and_flushes_usage() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_str().expect("utf-8 path").to_string();
    let config = config_for(&dir);
    let f = Fixture::in_warehouse(Warehouse::open(&config).expect("warehouse"), |_| {}).await;
    f.adapter("notes", "v1", 8, &LoraTarget::ATTENTION, 9).await;

    let mut child = ChildGuard(
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "sigterm::sigterm_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, &dir)
            .env(TOKEN_VAR, "child-token")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut output = ChildOutput { lines: rx, seen: Vec::new() };
    let url = output.wait_for("LISTENING ", &mut child);
    let http = Client::new(&url).expect("client");
    // The admin token comes from the variable the config names.
    let load = json!({"adapter": "notes"});
    assert_eq!(http.post("/admin/adapters/load", &load).await.expect("request").status, 401);
    let admin = Client::new(&url).expect("client").with_token("child-token");
    assert_eq!(admin.post("/admin/adapters/load", &load).await.expect("request").status, 200);

    let mut answered = BTreeSet::new();
    for i in 0..5 {
        let r = http.complete(if i % 2 == 0 { "notes" } else { "" }, &format!("before {i}"), json!({"max_tokens": 6})).await.expect("request");
        assert_eq!(r.status, 200);
        answered.insert(r.body["id"].as_str().expect("id").to_string());
    }
    // Requests in flight when SIGTERM arrives still finish.
    let in_flight: Vec<_> = (0..4)
        .map(|i| {
            let http = http.clone();
            tokio::spawn(async move {
                http.complete("notes", &format!("in flight {i}"), json!({"max_tokens": 60, "temperature": 0.8, "seed": i})).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    for j in in_flight {
        let r = j.await.expect("task").expect("accepted requests are answered");
        assert_eq!(r.status, 200, "{}", r.body);
        answered.insert(r.body["id"].as_str().expect("id").to_string());
    }
    let stopped = output.wait_for("STOPPED ", &mut child);
    assert_eq!(stopped, format!("rows={n} finished={n}", n = answered.len()), "every answered request was metered");
    let deadline = Instant::now() + CHILD_DEADLINE;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("child status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the child did not exit within {CHILD_DEADLINE:?} of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "the child shut down cleanly: {status:?}; its stdout: {:#?}", output.seen);

    let rows = read_usage(&f.tables).await.expect("usage");
    let ids: BTreeSet<String> = rows.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(rows.len(), answered.len(), "no duplicates");
    assert_eq!(ids, answered, "every answered request was flushed on SIGTERM");
}
