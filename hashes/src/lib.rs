//! SHA-256 of many independent messages at once, and their lower-case hex digits.
//!
//! Ingest hashes two short messages per row — the row id (40 bytes) and the normalized text — and
//! stores both as 64 hex digits. One message at a time, even with the CPU's SHA extensions, each
//! hash waits on the previous round of its own message. Hashed sixteen at a time, one message per
//! 32-bit lane of an AVX-512 register (the multi-buffer technique of Intel's ISA-L), the rounds of
//! sixteen messages proceed together: on this project's machines that is about twice the bytes per
//! second of the SHA extensions (`cargo bench -p tributary-hashes` prints both).
//!
//! Where AVX-512 (F and BW) is missing, or for fewer than [`MIN_LANES_USED`] messages, the same
//! functions fall back to the `sha2` crate one message at a time; both paths give the same bytes,
//! and the tests check them against each other and against `sha2` on every length from 0 to 300.

#[cfg(target_arch = "x86_64")]
mod x86;

use sha2::{Digest, Sha256};

/// How message bytes are read into the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// As they are.
    Bytes,
    /// ASCII upper-case letters (`A`–`Z`) hashed as lower case; every other byte as it is.
    AsciiLowercase,
}

/// Below this many messages the sixteen-lane path would hash mostly idle lanes: hash one at a time.
pub const MIN_LANES_USED: usize = 4;

/// The sha256 of each message, in order, with `fold` applied to the message bytes.
pub fn sha256_many(messages: &[&[u8]], fold: Fold) -> Vec<[u8; 32]> {
    let mut out = vec![[0u8; 32]; messages.len()];
    #[cfg(target_arch = "x86_64")]
    if messages.len() >= MIN_LANES_USED && x86::available() {
        x86::sha256_many(messages, fold, &mut out);
        return out;
    }
    for (m, o) in messages.iter().zip(out.iter_mut()) {
        *o = sha256_one(m, fold);
    }
    out
}

/// The sha256 of each message through the `sha2` crate, one at a time (the fallback of
/// [`sha256_many`], public so that tests and the benchmark can compare the two).
pub fn sha256_many_portable(messages: &[&[u8]], fold: Fold) -> Vec<[u8; 32]> {
    messages.iter().map(|m| sha256_one(m, fold)).collect()
}

/// The sha256 of one message with `fold` applied.
pub fn sha256_one(message: &[u8], fold: Fold) -> [u8; 32] {
    match fold {
        Fold::Bytes => Sha256::digest(message).into(),
        Fold::AsciiLowercase => {
            let mut hasher = Sha256::new();
            let mut buf = [0u8; 512];
            for chunk in message.chunks(buf.len()) {
                let folded = &mut buf[..chunk.len()];
                folded.copy_from_slice(chunk);
                folded.make_ascii_lowercase();
                hasher.update(folded);
            }
            hasher.finalize().into()
        }
    }
}

/// Append the 64 lower-case hex digits of each digest to `out`, end to end.
pub fn hex_into(digests: &[[u8; 32]], out: &mut Vec<u8>) {
    out.reserve(digests.len() * 64);
    #[cfg(target_arch = "x86_64")]
    if x86::hex_available() {
        x86::hex_into(digests, out);
        return;
    }
    hex_into_portable(digests, out);
}

/// [`hex_into`] a byte at a time (its fallback).
pub fn hex_into_portable(digests: &[[u8; 32]], out: &mut Vec<u8>) {
    for d in digests {
        out.extend_from_slice(&hex64(d));
    }
}

/// The 64 lower-case hex digits of one digest, a table lookup per nibble.
#[inline]
pub fn hex64(digest: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, &b) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

/// Whether `bytes` are ASCII in white-space normal form: no white space but single spaces between
/// other characters (no tab, line feed, vertical tab, form feed or carriage return, no leading,
/// trailing or doubled space). Such text normalizes (NFKC, lower case, collapsed white space) by
/// lower-casing alone, which [`Fold::AsciiLowercase`] does on the way into the hash. Empty is true.
pub fn is_single_spaced_ascii(bytes: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        return x86::is_single_spaced_ascii(bytes);
    }
    is_single_spaced_ascii_portable(bytes)
}

/// [`is_single_spaced_ascii`] without SIMD intrinsics: branch-free folds the compiler vectorizes.
pub fn is_single_spaced_ascii_portable(bytes: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else { return true };
    // \t \n \x0b \x0c \r are 9..=13.
    let other_white = bytes.iter().fold(false, |acc, &b| acc | (b.wrapping_sub(9) < 5));
    let double_space = bytes.iter().zip(&bytes[1..]).fold(false, |acc, (&a, &b)| acc | ((a == b' ') & (b == b' ')));
    bytes.is_ascii() && first != b' ' && last != b' ' && !other_white && !double_space
}

/// Whether [`sha256_many`] uses the sixteen-lane AVX-512 path on this CPU.
pub fn accelerated() -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn reference(m: &[u8], fold: Fold) -> [u8; 32] {
        let owned = match fold {
            Fold::Bytes => m.to_vec(),
            Fold::AsciiLowercase => m.to_ascii_lowercase(),
        };
        Sha256::digest(&owned).into()
    }

    /// Messages of every length 0..=300 (each padding case: one block, a spilled length block,
    /// exact multiples of 64), random bytes including upper-case ASCII and bytes ≥ 0x80, in an
    /// order that leaves lanes finishing at different steps.
    fn corpus(seed: u64) -> Vec<Vec<u8>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut lens: Vec<usize> = (0..=300).collect();
        lens.extend([1000, 4096, 4097, 55, 56, 63, 64, 119, 120]);
        for i in (1..lens.len()).rev() {
            lens.swap(i, rng.random_range(0..=i));
        }
        lens.iter().map(|&n| (0..n).map(|_| rng.random::<u8>()).collect()).collect()
    }

    #[test]
    fn every_length_and_fold_matches_sha2() {
        for fold in [Fold::Bytes, Fold::AsciiLowercase] {
            let msgs = corpus(7);
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            let fast = sha256_many(&refs, fold);
            let portable = sha256_many_portable(&refs, fold);
            for ((m, f), p) in msgs.iter().zip(&fast).zip(&portable) {
                let want = reference(m, fold);
                assert_eq!(*f, want, "{fold:?}, length {}", m.len());
                assert_eq!(*p, want, "portable {fold:?}, length {}", m.len());
            }
        }
    }

    #[test]
    fn batch_sizes_around_the_lane_count_match_sha2() {
        let msgs = corpus(11);
        for n in [0, 1, 3, 4, 5, 15, 16, 17, 31, 32, 33] {
            let refs: Vec<&[u8]> = msgs[..n].iter().map(Vec::as_slice).collect();
            let got = sha256_many(&refs, Fold::AsciiLowercase);
            assert_eq!(got.len(), n);
            for (m, g) in msgs.iter().zip(&got) {
                assert_eq!(*g, reference(m, Fold::AsciiLowercase), "batch of {n}, length {}", m.len());
            }
        }
    }

    #[test]
    fn known_vectors() {
        let hex = |d: [u8; 32]| {
            let mut out = Vec::new();
            hex_into(&[d], &mut out);
            String::from_utf8(out).expect("ascii")
        };
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let msgs: Vec<&[u8]> = vec![b"", b"ABC", b"abc", b"", b"abc"];
        let got = sha256_many(&msgs, Fold::AsciiLowercase);
        assert_eq!(hex(got[0]), empty);
        assert_eq!(hex(got[1]), abc, "ABC folds to abc");
        assert_eq!(hex(got[2]), abc);
        let plain = sha256_many(&msgs, Fold::Bytes);
        assert_ne!(hex(plain[1]), abc, "without folding ABC is not abc");
    }

    #[test]
    fn single_spaced_ascii_agrees_with_its_definition() {
        let definition = |b: &[u8]| {
            let text = std::str::from_utf8(b).ok().filter(|t| t.is_ascii());
            text.is_some_and(|t| t.is_empty() || t.split(' ').all(|w| !w.is_empty() && !w.bytes().any(|c| c.is_ascii_whitespace() || c == 0x0b)))
        };
        let mut cases: Vec<Vec<u8>> = ["", " ", "a", "a b", "a  b", "a\tb", "a\x0bb", "a\x0cb", "a\rb", "a\nb", "\x1fa", "é", "ab ", " ab"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        // Doubled spaces, white space and non-ASCII bytes at each side of a 64-byte chunk boundary.
        for at in [0, 1, 62, 63, 64, 65, 126, 127, 128, 198] {
            for bad in [&b"  "[..], b"\t", b"\n", b"\r", "é".as_bytes(), b"\xff"] {
                let mut v = b"word ".repeat(50);
                v.truncate(200);
                v[at..at + bad.len()].copy_from_slice(bad);
                cases.push(v);
            }
            let mut v = vec![b'x'; at + 1];
            v[at] = b' ';
            cases.push(v.clone());
            v.push(b'y');
            cases.push(v);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..2000 {
            let n = rng.random_range(0..300);
            cases.push((0..n).map(|_| *[b'a', b'B', b' ', b' ', b'\t', 0x80].get(rng.random_range(0..40)).unwrap_or(&b'z')).collect());
        }
        for c in &cases {
            let want = definition(c);
            assert_eq!(is_single_spaced_ascii(c), want, "{:?}", String::from_utf8_lossy(c));
            assert_eq!(is_single_spaced_ascii_portable(c), want, "portable: {:?}", String::from_utf8_lossy(c));
        }
        assert!(cases.iter().filter(|c| definition(c)).count() > 100, "the random cases include valid ones");
    }

    #[test]
    fn hex_matches_the_portable_encoder() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let digests: Vec<[u8; 32]> = (0..37).map(|_| rng.random()).collect();
        let (mut fast, mut portable) = (b"prefix".to_vec(), b"prefix".to_vec());
        hex_into(&digests, &mut fast);
        hex_into_portable(&digests, &mut portable);
        assert_eq!(fast, portable);
        let want: String = digests.iter().flat_map(|d| d.iter().map(|b| format!("{b:02x}"))).collect();
        assert_eq!(&fast[6..], want.as_bytes());
    }

    #[test]
    fn reports_the_path_it_takes() {
        // On x86-64 with AVX-512 the fast path must be the one the other tests exercised.
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            accelerated(),
            std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
        );
    }
}
