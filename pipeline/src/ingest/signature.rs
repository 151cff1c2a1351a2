//! Contributor signatures: EIP-191 personal-sign over the file's hex sha256.
//!
//! The signed message is the 64 lower-case hex characters of the file's sha256 (no `0x`), as a
//! wallet's `personal_sign` would sign it. The `.sig` companion holds the 65-byte signature as hex
//! (with or without `0x`, surrounding whitespace ignored).

use alloy_primitives::{Address, Signature, eip191_hash_message};
use k256::ecdsa::SigningKey;

use crate::reason::ReasonCode;

/// Check `sig_text` (the `.sig` content) against `file_sha256_hex` and the path's `contributor`.
pub fn verify(sig_text: &[u8], file_sha256_hex: &str, contributor: &str) -> Result<(), (ReasonCode, String)> {
    let text = std::str::from_utf8(sig_text)
        .map_err(|_| (ReasonCode::SignatureMalformed, "signature file is not text".to_string()))?
        .trim();
    let hex_part = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(hex_part)
        .map_err(|e| (ReasonCode::SignatureMalformed, format!("signature is not hex: {e}")))?;
    if bytes.len() != 65 {
        return Err((ReasonCode::SignatureMalformed, format!("signature is {} bytes, expected 65", bytes.len())));
    }
    let sig = Signature::from_raw(&bytes)
        .map_err(|e| (ReasonCode::SignatureMalformed, format!("invalid signature: {e}")))?;
    let recovered = sig
        .recover_address_from_msg(file_sha256_hex.as_bytes())
        .map_err(|e| (ReasonCode::SignatureMismatch, format!("cannot recover signer: {e}")))?;
    let expected: Address = contributor
        .parse()
        .map_err(|_| (ReasonCode::InvalidAddress, format!("`{contributor}` is not an address")))?;
    if recovered != expected {
        return Err((ReasonCode::SignatureMismatch, format!("signed by {recovered:#x}, not {contributor}")));
    }
    Ok(())
}

/// Sign `file_sha256_hex` as a contributor's wallet would (`personal_sign`); returns the `.sig` text.
/// Used by the demo data generator and tests.
pub fn sign(key: &SigningKey, file_sha256_hex: &str) -> String {
    let hash = eip191_hash_message(file_sha256_hex.as_bytes());
    // Signing a 32-byte prehash with a valid key cannot fail (k256 only errors on bad lengths).
    let (sig, recid) = key.sign_prehash_recoverable(hash.as_slice()).expect("32-byte prehash");
    let sig = Signature::from_signature_and_parity(sig, recid.is_y_odd());
    format!("0x{}", hex::encode(sig.as_bytes()))
}

/// The lower-case address of `key`.
pub fn address_of(key: &SigningKey) -> String {
    format!("{:#x}", Address::from_private_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify() {
        let key = SigningKey::from_slice(&[7u8; 32]).expect("valid scalar");
        let other = SigningKey::from_slice(&[8u8; 32]).expect("valid scalar");
        let addr = address_of(&key);
        let digest = "ab".repeat(32);
        let sig = sign(&key, &digest);
        assert_eq!(verify(sig.as_bytes(), &digest, &addr), Ok(()));
        let forged = sign(&other, &digest);
        assert_eq!(verify(forged.as_bytes(), &digest, &addr).map_err(|e| e.0), Err(ReasonCode::SignatureMismatch));
        assert_eq!(verify(b"0x1234", &digest, &addr).map_err(|e| e.0), Err(ReasonCode::SignatureMalformed));
        // A signature over another file's digest recovers to some other address.
        let wrong_file = sign(&key, &"cd".repeat(32));
        assert_eq!(verify(wrong_file.as_bytes(), &digest, &addr).map_err(|e| e.0), Err(ReasonCode::SignatureMismatch));
    }
}
