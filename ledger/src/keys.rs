//! Keys: the operator key from the environment or a file (never logged), and the deterministic
//! development keys of the embedded chain and the demo.
//!
//! The development keys are anvil's well-known default accounts (mnemonic "test test … junk"),
//! so the embedded chain and a local anvil fund the same addresses. They are public: never use
//! them on a chain with real value.

use std::path::Path;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use tributary_pipeline::config::{ChainBackend, ChainConfig};

use crate::error::{Error, Result};

/// anvil's default private keys #0..#3 (public knowledge; development only).
const DEV_KEYS: [&str; 4] = [
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
];

/// Which development key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKey {
    /// #0: deploys, holds the admin and operator roles, anchors.
    Operator = 0,
    /// #1: holds the guardian role (may veto during a challenge window).
    Guardian = 1,
    /// #2: an account with no role (tests of unauthorized calls; submits claims for others).
    Outsider = 2,
    /// #3: a spare funded account.
    Spare = 3,
}

/// The signer of development key `which`.
pub fn dev_signer(which: DevKey) -> PrivateKeySigner {
    // Invariant: the constants above are valid secp256k1 keys (anvil's defaults).
    DEV_KEYS[which as usize].parse().expect("built-in dev key is valid")
}

/// The addresses funded at genesis by the embedded chain (and by anvil).
pub fn dev_accounts() -> Vec<Address> {
    [DevKey::Operator, DevKey::Guardian, DevKey::Outsider, DevKey::Spare].iter().map(|k| dev_signer(*k).address()).collect()
}

/// Parse a hex private key (with or without `0x`, surrounding whitespace ignored). The error never
/// contains the key.
pub fn parse_key(text: &str) -> Result<PrivateKeySigner> {
    let t = text.trim();
    let h = t.strip_prefix("0x").unwrap_or(t);
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Key(format!("expected 64 hex digits, got {} characters", h.len())));
    }
    h.parse::<PrivateKeySigner>().map_err(|_| Error::Key("not a valid secp256k1 private key".into()))
}

/// Where the operator key came from (for messages; never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The named environment variable.
    Env(String),
    /// The named file.
    File(String),
    /// The built-in development key (embedded chain only).
    Dev,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env(v) => write!(f, "env ${v}"),
            KeySource::File(p) => write!(f, "file {p}"),
            KeySource::Dev => write!(f, "built-in development key"),
        }
    }
}

/// The operator key: env variable `operator_key_env`, else file `operator_key_file` (relative to
/// `base_dir`), else — for the embedded chain only — the development operator key.
pub fn operator_signer(config: &ChainConfig, base_dir: &Path) -> Result<(PrivateKeySigner, KeySource)> {
    if !config.operator_key_env.is_empty()
        && let Ok(v) = std::env::var(&config.operator_key_env)
        && !v.trim().is_empty()
    {
        let s = parse_key(&v).map_err(|e| Error::Key(format!("${}: {e}", config.operator_key_env)))?;
        return Ok((s, KeySource::Env(config.operator_key_env.clone())));
    }
    if !config.operator_key_file.is_empty() {
        let p = Path::new(&config.operator_key_file);
        let p = if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) };
        let text = std::fs::read_to_string(&p).map_err(|e| Error::Key(format!("reading {}: {e}", p.display())))?;
        let s = parse_key(&text).map_err(|e| Error::Key(format!("{}: {e}", p.display())))?;
        return Ok((s, KeySource::File(p.display().to_string())));
    }
    match config.backend {
        ChainBackend::Embedded => Ok((dev_signer(DevKey::Operator), KeySource::Dev)),
        ChainBackend::Rpc => Err(Error::Key(format!(
            "no operator key: set ${} or chain.operator_key_file",
            config.operator_key_env
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_keys_are_anvils_accounts() {
        assert_eq!(dev_signer(DevKey::Operator).address().to_string(), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert_eq!(dev_signer(DevKey::Guardian).address().to_string(), "0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
    }

    #[test]
    fn bad_keys_do_not_echo_the_secret() {
        let secret = "zz".repeat(32);
        let e = parse_key(&secret).expect_err("not hex");
        assert!(!e.to_string().contains(&secret));
        assert!(parse_key(&format!("0x{}", DEV_KEYS[0])).is_ok());
        assert!(parse_key(&"00".repeat(32)).is_err(), "zero is not a valid key");
    }
}
