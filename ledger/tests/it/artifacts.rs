//! The committed compiled contracts are exactly what the pinned `solc` builds from the sources.

use crate::common::{js_dir, ledger_dir};

#[test]
fn rebuilding_the_contracts_reproduces_the_committed_artifacts() {
    let out = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("node")
        .arg("build.js")
        .arg("--out")
        .arg(out.path())
        .current_dir(js_dir())
        .status()
        .expect("node runs build.js");
    assert!(status.success(), "ledger/js/build.js failed");
    for name in ["TributarySettlement", "RewardToken"] {
        let committed = std::fs::read(ledger_dir().join(format!("artifacts/{name}.json"))).expect("committed artifact");
        let rebuilt = std::fs::read(out.path().join(format!("{name}.json"))).expect("rebuilt artifact");
        let field = |bytes: &[u8], f: &str| -> String {
            let v: serde_json::Value = serde_json::from_slice(bytes).expect("artifact json");
            v[f].as_str().expect("hex field").to_string()
        };
        assert!(field(&committed, "bytecode").len() > 1000, "{name}: committed artifact has creation code");
        assert_eq!(field(&rebuilt, "bytecode"), field(&committed, "bytecode"), "{name}: creation bytecode");
        assert_eq!(field(&rebuilt, "deployedBytecode"), field(&committed, "deployedBytecode"), "{name}: runtime bytecode");
        assert!(rebuilt == committed, "{name}: the whole artifact (ABI, settings) is byte-identical");
    }
}

#[test]
fn rust_bindings_come_from_the_committed_artifact() {
    use alloy::hex;
    let v: serde_json::Value = serde_json::from_str(tributary_ledger::contract::SETTLEMENT_ARTIFACT).expect("json");
    let committed = hex::decode(v["bytecode"].as_str().expect("bytecode")).expect("hex");
    assert_eq!(tributary_ledger::contract::TributarySettlement::BYTECODE.as_ref(), committed.as_slice());
}
