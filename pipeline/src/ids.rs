//! Row identity and normalization, as fixed by DESIGN.md.
//!
//! `contribution_id` = hex sha256(file sha256 bytes ‖ row index as u64 big-endian);
//! `content_hash` = hex sha256(normalized text), where normalization is NFKC, lower case and
//! whitespace runs collapsed to one space (trimmed).

use sha2::{Digest, Sha256};
use tributary_hashes::{Fold, is_single_spaced_ascii};
use unicode_normalization::UnicodeNormalization;

/// Hex sha256 of arbitrary bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex32(&Sha256::digest(bytes).into())
}

/// Lower-case hex of a 32-byte digest.
pub fn hex32(digest: &[u8; 32]) -> String {
    Hex64::of(digest).as_str().to_string()
}

/// A 32-byte digest as 64 lower-case hex digits, on the stack: ingest formats two per row and
/// appends them straight to Arrow builders, so no per-row `String` is allocated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex64([u8; 64]);

impl Hex64 {
    /// Format `digest` (a table lookup per nibble).
    pub fn of(digest: &[u8; 32]) -> Self {
        Hex64(tributary_hashes::hex64(digest))
    }

    /// The digits as bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl std::ops::Deref for Hex64 {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Hex64 {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Hex64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Hex64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The stable id of row `row_index` of the file whose sha256 is `file_sha256` (32 raw bytes).
pub fn contribution_id(file_sha256: &[u8; 32], row_index: u64) -> Hex64 {
    let mut h = Sha256::new();
    h.update(file_sha256);
    h.update(row_index.to_be_bytes());
    Hex64::of(&h.finalize().into())
}

/// The ids of rows `0..rows` of the file whose sha256 is `file_sha256`: 64 hex digits per row,
/// end to end, equal to [`contribution_id`] of each row. Ingest's per-file path: the rows are
/// hashed sixteen at a time ([`tributary_hashes::sha256_many`]).
pub fn contribution_ids_hex(file_sha256: &[u8; 32], rows: usize) -> Vec<u8> {
    let messages: Vec<[u8; 40]> = (0..rows as u64)
        .map(|i| {
            let mut m = [0u8; 40];
            m[..32].copy_from_slice(file_sha256);
            m[32..].copy_from_slice(&i.to_be_bytes());
            m
        })
        .collect();
    let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
    let mut hex = Vec::with_capacity(rows * 64);
    tributary_hashes::hex_into(&tributary_hashes::sha256_many(&refs, Fold::Bytes), &mut hex);
    hex
}

/// The content hash of each text: 64 hex digits per text, end to end, equal to [`content_hash`]
/// of each. Ingest's per-file path: the texts are hashed sixteen at a time.
///
/// White-space-normalized ASCII text (most rows) is hashed as it is, lower-cased on the way into
/// the hash; other text is normalized first. The hash lower-cases ASCII letters of every message,
/// which leaves normalized text unchanged: [`normalize_text`] has already lower-cased every letter,
/// and no character's lower-case form contains an upper-case ASCII letter.
pub fn content_hashes_hex<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let texts: Vec<&str> = texts.into_iter().collect();
    let normalized: Vec<Option<String>> = texts
        .iter()
        .map(|t| (!is_single_spaced_ascii(t.as_bytes())).then(|| normalize_text(t)))
        .collect();
    let messages: Vec<&[u8]> = texts.iter().zip(&normalized).map(|(t, n)| n.as_deref().unwrap_or(t).as_bytes()).collect();
    let mut hex = Vec::with_capacity(texts.len() * 64);
    tributary_hashes::hex_into(&tributary_hashes::sha256_many(&messages, Fold::AsciiLowercase), &mut hex);
    hex
}

/// Normalize text for exact-duplicate detection: NFKC, lower case, collapsed whitespace.
///
/// ASCII input (the common case) skips the Unicode tables, which is several times faster and
/// gives the same result since NFKC is the identity on ASCII.
pub fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    if text.is_ascii() {
        AsciiFold::default().feed(text.as_bytes(), |b| out.push(char::from(b)));
    } else {
        let nfkc: String = text.nfkc().collect();
        push_collapsed(&mut out, nfkc.chars().flat_map(char::to_lowercase));
    }
    out
}

fn push_collapsed(out: &mut String, chars: impl Iterator<Item = char>) {
    let mut pending_space = false;
    for c in chars {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
}

/// Hex sha256 of the normalized text.
///
/// ASCII text (the common case) is normalized straight into the hasher through a small stack
/// buffer, without building the normalized string; the result is the same as hashing
/// [`normalize_text`]'s output. Text whose white space is already single spaces between words
/// (most rows) is only lower-cased, a chunk at a time, instead of folded byte by byte.
pub fn content_hash(text: &str) -> Hex64 {
    let bytes = text.as_bytes();
    if !text.is_ascii() {
        return Hex64::of(&Sha256::digest(normalize_text(text).as_bytes()).into());
    }
    if is_single_spaced_ascii(bytes) {
        return Hex64::of(&tributary_hashes::sha256_one(bytes, Fold::AsciiLowercase));
    }
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 512];
    let mut len = 0;
    let mut fold = AsciiFold::default();
    // Each input chunk adds at most its own length plus one pending space, so the buffer is
    // checked once per chunk rather than once per byte.
    for chunk in bytes.chunks(128) {
        if len + chunk.len() + 1 > buf.len() {
            hasher.update(&buf[..len]);
            len = 0;
        }
        fold.feed(chunk, |b| {
            buf[len] = b;
            len += 1;
        });
    }
    hasher.update(&buf[..len]);
    Hex64::of(&hasher.finalize().into())
}

/// The ASCII case of [`normalize_text`] (lower case, white-space runs collapsed to one space,
/// trimmed), fed a piece at a time so that a caller can stream the result.
#[derive(Default)]
struct AsciiFold {
    pending_space: bool,
    started: bool,
}

impl AsciiFold {
    /// Normalize the next piece of ASCII text, handing each output byte to `emit`: at most
    /// `bytes.len() + 1` of them (a space held back from the previous piece).
    #[inline]
    fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(u8)) {
        for &b in bytes {
            let c = ASCII_FOLD[usize::from(b)];
            if c == WHITE {
                self.pending_space = self.started;
                continue;
            }
            if self.pending_space {
                emit(b' ');
                self.pending_space = false;
            }
            emit(c);
            self.started = true;
        }
    }
}

/// Marks white space in [`ASCII_FOLD`] (no ASCII byte folds to it).
const WHITE: u8 = 0xff;

/// ASCII byte → its lower-case form, or [`WHITE`] for white space.
static ASCII_FOLD: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if is_ascii_white_space(b) { WHITE } else { b.to_ascii_lowercase() };
        i += 1;
    }
    t
};

/// `char::is_whitespace` restricted to ASCII: tab, line feed, vertical tab, form feed, carriage
/// return and space (Unicode's White_Space property; not the `\x1c`–`\x1f` separators).
const fn is_ascii_white_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// Parse a contributor folder name as an address.
///
/// Accepts `0x` + 40 hex digits; all-lower or all-upper case is taken as is, mixed case must be a
/// valid EIP-55 checksum. Returns the lower-case form used in every table.
pub fn parse_address(s: &str) -> Option<String> {
    let hex_part = s.strip_prefix("0x")?;
    if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let has_lower = hex_part.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = hex_part.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper {
        alloy_primitives::Address::parse_checksummed(s, None).ok()?;
    }
    Some(format!("0x{}", hex_part.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_matches_design() {
        assert_eq!(normalize_text("  Hello\t\nWORLD  "), "hello world");
        // NFKC folds the ligature and full-width letters.
        assert_eq!(normalize_text("ﬁne Ｔｅｘｔ"), "fine text");
        assert_eq!(content_hash("Hello  world"), content_hash("hello world"));
    }

    #[test]
    fn ascii_fast_path_equals_the_general_rule() {
        let general = |t: &str| {
            let mut out = String::new();
            push_collapsed(&mut out, t.chars().flat_map(char::to_lowercase));
            out
        };
        let collapsed_long = "The Quick brown FOX. ".repeat(40).trim_end().to_string();
        let cases = [
            "  A\x0bB\x0c C\r\n", "\x1fX  y\t", "", "   ", " ", "a", "A b", "Tab\tEnd.", "MiXeD   case\n\n",
            "Already Single Spaced.", "trailing ", " leading", "x\ny", &collapsed_long,
        ];
        for t in cases {
            assert_eq!(normalize_text(t), general(t), "{t:?}");
            assert_eq!(content_hash(t).as_str(), sha256_hex(general(t).as_bytes()), "{t:?}");
            // The lower-case-only path is taken exactly when folding changes nothing but case.
            assert_eq!(is_single_spaced_ascii(t.as_bytes()), general(t) == t.to_ascii_lowercase(), "{t:?}");
        }
        for b in 0..128u8 {
            assert_eq!(is_ascii_white_space(b), char::from(b).is_whitespace(), "byte {b}");
        }
        // Longer than the hashing buffer, with whitespace runs straddling its flushes.
        let long: String = (0..400).map(|i| if i % 7 == 0 { "  \t" } else { "Ab" }).collect();
        assert_eq!(content_hash(&long).as_str(), sha256_hex(general(&long).as_bytes()));
        let d: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(hex32(&d), hex::encode(d));
        assert_eq!(Hex64::of(&d).to_string(), hex::encode(d));
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn batch_hashes_equal_the_per_row_ones() {
        let file = [9u8; 32];
        for rows in [0, 1, 3, 16, 17, 1000] {
            let ids = contribution_ids_hex(&file, rows);
            assert_eq!(ids.len(), rows * 64);
            for (i, id) in ids.chunks_exact(64).enumerate() {
                assert_eq!(id, contribution_id(&file, i as u64).as_bytes(), "row {i} of {rows}");
            }
        }
        let collapsed_long = "The Quick brown FOX. ".repeat(40).trim_end().to_string();
        let mut texts = vec![
            "  A\x0bB\x0c C\r\n", "\x1fX  y\t", "", "   ", "a", "A b", "Tab\tEnd.", "MiXeD   case\n\n",
            "Already Single Spaced.", "trailing ", " leading", &collapsed_long, "ﬁne Ｔｅｘｔ", "İSTANBUL  Straße",
            "KELVIN \u{212a} Ω", "日本語 テキスト", "ÀÉÎ õü",
        ];
        let numbered: Vec<String> = (0..40).map(|i| format!("Row {i} of the FILE, {}", "x".repeat(i * 5))).collect();
        texts.extend(numbered.iter().map(String::as_str));
        let hashes = content_hashes_hex(texts.iter().copied());
        assert_eq!(hashes.len(), texts.len() * 64);
        for (t, h) in texts.iter().zip(hashes.chunks_exact(64)) {
            assert_eq!(h, content_hash(t).as_bytes(), "{t:?}");
        }
    }

    #[test]
    fn contribution_id_depends_on_file_and_row() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_ne!(contribution_id(&a, 0), contribution_id(&a, 1));
        assert_ne!(contribution_id(&a, 0), contribution_id(&b, 0));
        assert_eq!(contribution_id(&a, 7).len(), 64);
    }

    #[test]
    fn addresses() {
        let lower = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
        assert_eq!(parse_address(lower).as_deref(), Some(lower));
        assert!(parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_some());
        assert!(parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").is_none());
        assert!(parse_address("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_none());
        assert!(parse_address("0xzz").is_none());
        assert!(parse_address("alice").is_none());
    }
}
