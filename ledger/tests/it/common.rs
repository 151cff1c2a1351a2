//! Shared test fixtures: a local warehouse + catalog, table rows, the npm tools (node, anvil).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use tributary_ledger::chain::rpc::RpcChain;
use tributary_ledger::inputs::{append, payouts_batch};
use tributary_pipeline::config::ChainBackend;
use tributary_pipeline::tables::defs;
use tributary_pipeline::{Catalog, Config, Tables, Warehouse};

/// The ledger crate's directory.
pub fn ledger_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The JS tooling directory, with its node_modules installed (scripts/setup-test-deps.sh does it).
pub fn js_dir() -> PathBuf {
    let dir = ledger_dir().join("js");
    assert!(
        dir.join("node_modules/@openzeppelin/merkle-tree").exists(),
        "ledger/js/node_modules is missing: run `bash scripts/setup-test-deps.sh` (npm ci in ledger/js)"
    );
    dir
}

/// Run `node <script> <args>` in ledger/js with `stdin`; returns stdout (panics with stderr on failure).
pub fn node(script: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("node")
        .arg("--max-old-space-size=4096")
        .arg(script)
        .args(args)
        .current_dir(js_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is installed (scripts/setup-test-deps.sh)");
    {
        let mut sin = child.stdin.take().expect("piped stdin");
        sin.write_all(stdin).expect("write to node");
    }
    let out = child.wait_with_output().expect("node runs");
    assert!(out.status.success(), "node {script} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A fresh directory with a config whose warehouse and catalog live in it.
pub struct Site {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The config.
    pub config: Arc<Config>,
    /// The tables.
    pub tables: Tables,
    /// The ops catalog.
    pub catalog: Catalog,
}

impl Site {
    /// A site on the embedded chain (or on `rpc_url` when given), with `challenge_window` seconds.
    pub fn new(rpc_url: Option<&str>, challenge_window: u64) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            base_dir: dir.path().to_path_buf(),
            warehouse: "warehouse".into(),
            catalog: dir.path().join("catalog.sqlite"),
            ..Config::default()
        };
        config.chain.challenge_window_secs = challenge_window;
        config.chain.resend_after_secs = 2;
        if let Some(url) = rpc_url {
            config.chain.backend = ChainBackend::Rpc;
            config.chain.rpc_url = url.to_string();
            // The operator key comes from the environment only in the CLI; tests pass signers directly.
            config.chain.operator_key_env = String::new();
            // A real node has no built-in guardian: name anvil's second dev account, as an operator would.
            config.chain.guardian_address = tributary_ledger::keys::dev_signer(tributary_ledger::keys::DevKey::Guardian).address().to_string();
        }
        let warehouse = Warehouse::open(&config).expect("warehouse");
        let catalog = Catalog::open(&config.catalog).expect("catalog");
        Site { dir, config: Arc::new(config), tables: Tables::new(warehouse), catalog }
    }

    /// The warehouse directory.
    pub fn warehouse_dir(&self) -> PathBuf {
        self.dir.path().join("warehouse")
    }
}

/// A deterministic contributor address.
pub fn account(i: u64) -> Address {
    let mut b = [0u8; 20];
    b[0] = 0xc0;
    b[12..].copy_from_slice(&(i + 1).to_be_bytes());
    Address::from(b)
}

/// Payout rows for `epoch`: `n` contributors, amounts `(i + 1) × 10^18`.
pub fn payout_rows(epoch: i64, n: u64) -> Vec<(i64, i64, String, String, String)> {
    (0..n)
        .map(|i| {
            let amount = U256::from(i + 1) * U256::from(10u64).pow(U256::from(18));
            (epoch, i as i64, account(i).to_string().to_lowercase(), amount.to_string(), "{\"policy\":\"test\"}".to_string())
        })
        .collect()
}

/// Append payout rows; returns the table version.
pub async fn write_payouts(tables: &Tables, rows: &[(i64, i64, String, String, String)]) -> i64 {
    append(tables, &defs::gold_epoch_payouts(), payouts_batch(rows).expect("batch")).await.expect("write payouts")
}

/// An influence row: `(epoch, contribution_id, contributor, method, influence)`.
pub type InfluenceRow = (i64, String, String, String, f64);

/// Append influence rows.
pub async fn write_influence(tables: &Tables, rows: &[InfluenceRow]) -> i64 {
    let def = defs::gold_example_influence();
    let n = rows.len();
    let s = |f: &dyn Fn(&InfluenceRow) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
        s(&|_| "notes".into()),
        s(&|r| r.1.clone()),
        s(&|r| r.2.clone()),
        s(&|r| r.3.clone()),
        Arc::new(Float64Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(vec![0.5; n])),
        s(&|_| "v1".into()),
        Arc::new(Int64Array::from(vec![1; n])),
        s(&|_| "1".into()),
        Arc::new(TimestampMicrosecondArray::from(vec![1_767_225_600_000_000i64; n]).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(def.schema.clone(), cols).expect("influence batch");
    append(tables, &def, batch).await.expect("write influence")
}

/// Influence rows for `epoch`: `n` rows spread over the first 3 accounts, mixed signs.
pub fn influence_rows(epoch: i64, n: u64, method: &str) -> Vec<InfluenceRow> {
    (0..n)
        .map(|i| {
            let cid = tributary_pipeline::ids::sha256_hex(format!("row-{epoch}-{i}").as_bytes());
            let influence = ((i as f64) * 0.37).sin() * 0.01;
            (epoch, cid, account(i % 3).to_string().to_lowercase(), method.to_string(), influence)
        })
        .collect()
}

/// The anvil binary from the npm package `@foundry-rs/anvil` (its platform package ships the binary).
pub fn anvil_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TRIBUTARY_ANVIL") {
        return PathBuf::from(p);
    }
    let base = js_dir().join("node_modules/@foundry-rs");
    let found = std::fs::read_dir(&base).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin/anvil"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("no anvil binary under {}: run scripts/setup-test-deps.sh", base.display()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// An anvil node on 127.0.0.1, stopped on drop.
pub struct Anvil {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    state: Option<PathBuf>,
}

impl Anvil {
    /// Start anvil on a free port; with `state`, it loads and dumps its state there (`--state`).
    pub async fn start(state: Option<&Path>) -> Anvil {
        Self::start_on(free_port(), state).await
    }

    /// Start anvil on `port`.
    pub async fn start_on(port: u16, state: Option<&Path>) -> Anvil {
        let mut cmd = Command::new(anvil_bin());
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--hardfork", "prague", "--silent"]);
        if let Some(s) = state {
            cmd.arg("--state").arg(s);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("anvil starts");
        let anvil = Anvil { child: Some(child), port, state: state.map(Path::to_path_buf) };
        let chain = anvil.chain();
        let t = Instant::now();
        loop {
            if tributary_ledger::Chain::chain_id(&chain).await.is_ok() {
                return anvil;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "anvil did not answer on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its JSON-RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client.
    pub fn chain(&self) -> RpcChain {
        RpcChain::connect(&self.url()).expect("valid url")
    }

    /// Stop it gracefully (SIGINT: anvil dumps `--state` on the way out) and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop and start again on the same port with the same state file.
    pub async fn restart(&mut self) {
        self.stop();
        let state = self.state.clone();
        *self = Anvil::start_on(self.port, state.as_deref()).await;
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
