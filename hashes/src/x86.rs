//! The x86-64 paths: sixteen SHA-256 lanes in AVX-512 registers, and SSSE3 hex digits.
//!
//! Each `__m512i` of the state holds one of the eight working variables (a…h) for sixteen
//! messages, one per 32-bit lane; each block step compresses one 64-byte block of every lane's
//! message. A lane whose message ends is given the next one, so lanes of different lengths keep
//! every lane busy until the queue runs dry.

use core::arch::x86_64::*;

use crate::Fold;

/// SHA-256 round constants (FIPS 180-4, 4.2.2).
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// Lanes per register.
const LANES: usize = 16;

/// Whether the sixteen-lane path can run here.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
}

/// Whether the SSSE3 hex encoder can run here.
pub fn hex_available() -> bool {
    std::arch::is_x86_feature_detected!("ssse3")
}

/// Hash every message into `out` (same length as `messages`). Panics if AVX-512 F/BW is missing.
pub fn sha256_many(messages: &[&[u8]], fold: Fold, out: &mut [[u8; 32]]) {
    assert!(available(), "sha256_many: AVX-512 F and BW are required");
    assert_eq!(messages.len(), out.len(), "one output per message");
    // SAFETY: the CPU supports AVX-512 F and BW (checked above), the target features the function
    // is compiled with.
    unsafe { sha256_lanes(messages, fold, out) }
}

/// Where one lane is in its message.
#[derive(Clone, Copy)]
struct Lane {
    /// Index of the message in the batch.
    msg: usize,
    /// Message bytes already fed.
    offset: usize,
    /// Hashing a message (false once the queue is empty).
    live: bool,
    /// The message and its 0x80 marker are in; the length needs a block of its own.
    length_pending: bool,
}

impl Lane {
    fn start(msg: usize) -> Self {
        Lane { msg, offset: 0, live: true, length_pending: false }
    }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn sha256_lanes(messages: &[&[u8]], fold: Fold, out: &mut [[u8; 32]]) {
    let lower = fold == Fold::AsciiLowercase;
    let iv: [__m512i; 8] = std::array::from_fn(|j| _mm512_set1_epi32(IV[j] as i32));
    let mut state = iv;
    let mut lanes = [Lane { msg: 0, offset: 0, live: false, length_pending: false }; LANES];
    let mut queued = 0..messages.len();
    for lane in lanes.iter_mut() {
        if let Some(m) = queued.next() {
            *lane = Lane::start(m);
        }
    }
    let mut blocks = [[0u8; 64]; LANES];
    while lanes.iter().any(|l| l.live) {
        // Lanes that take their last block this step.
        let mut finishing: u16 = 0;
        for (l, lane) in lanes.iter_mut().enumerate() {
            if !lane.live {
                // An idle lane hashes whatever its block holds; the result is never read.
                continue;
            }
            let message = messages[lane.msg];
            let block = &mut blocks[l];
            let bit_length = (message.len() as u64).wrapping_mul(8).to_be_bytes();
            if lane.length_pending {
                *block = [0; 64];
                block[56..].copy_from_slice(&bit_length);
                finishing |= 1 << l;
                continue;
            }
            let rest = &message[lane.offset..];
            let take = rest.len().min(64);
            // Bytes `take..64` are zero: a masked load neither reads nor faults past `rest`.
            let mask = if take == 64 { u64::MAX } else { (1u64 << take) - 1 };
            // SAFETY: the mask selects `take` ≤ `rest.len()` bytes from the start of `rest`, and
            // masked-off bytes are not accessed; the store writes the 64 bytes of `block`.
            unsafe {
                let v = _mm512_maskz_loadu_epi8(mask, rest.as_ptr().cast::<i8>());
                _mm512_storeu_si512(block.as_mut_ptr().cast::<__m512i>(), if lower { ascii_lowercase(v) } else { v });
            }
            lane.offset += take;
            if take == 64 {
                continue;
            }
            // The message ends in this block: the 0x80 marker, then the length if it fits.
            block[take] = 0x80;
            if take + 9 <= 64 {
                block[56..].copy_from_slice(&bit_length);
                finishing |= 1 << l;
            } else {
                lane.length_pending = true;
            }
        }
        compress16(&mut state, &blocks);
        if finishing == 0 {
            continue;
        }
        let mut words = [[0u32; LANES]; 8];
        for (w, s) in words.iter_mut().zip(&state) {
            // SAFETY: `w` is 16 u32 = 64 bytes, the width of the unaligned store.
            unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast::<__m512i>(), *s) };
        }
        for (s, v) in state.iter_mut().zip(&iv) {
            *s = _mm512_mask_mov_epi32(*s, finishing, *v);
        }
        for (l, lane) in lanes.iter_mut().enumerate() {
            if finishing & (1 << l) == 0 {
                continue;
            }
            let digest = &mut out[lane.msg];
            for (j, w) in words.iter().enumerate() {
                digest[4 * j..4 * j + 4].copy_from_slice(&w[l].to_be_bytes());
            }
            *lane = match queued.next() {
                Some(m) => Lane::start(m),
                None => Lane { live: false, ..*lane },
            };
        }
    }
}

/// ASCII `A`–`Z` to lower case, every other byte unchanged.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn ascii_lowercase(v: __m512i) -> __m512i {
    let upper = _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, _mm512_set1_epi8(b'A' as i8)), _mm512_set1_epi8(26));
    _mm512_mask_add_epi8(v, upper, v, _mm512_set1_epi8(32))
}

/// One block step: lane `l` of `state` absorbs `blocks[l]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn compress16(state: &mut [__m512i; 8], blocks: &[[u8; 64]; LANES]) {
    // Big-endian words: reverse the bytes of each 32-bit lane.
    let bswap = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
    // Word j of every block: dword j of block l sits at dword index 16·l + j.
    let rows = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240);
    let base = blocks.as_ptr().cast::<i32>();
    let mut w = [_mm512_setzero_si512(); 16];
    for (j, wj) in w.iter_mut().enumerate() {
        let index = _mm512_add_epi32(rows, _mm512_set1_epi32(j as i32));
        // SAFETY: every index is below 256, the number of dwords in `blocks`.
        let v = unsafe { _mm512_i32gather_epi32::<4>(index, base) };
        *wj = _mm512_shuffle_epi8(v, bswap);
    }
    let mut v = *state;
    rounds16::<false>(&mut w, &mut v, 0);
    rounds16::<true>(&mut w, &mut v, 16);
    rounds16::<true>(&mut w, &mut v, 32);
    rounds16::<true>(&mut w, &mut v, 48);
    for (s, x) in state.iter_mut().zip(v) {
        *s = _mm512_add_epi32(*s, x);
    }
}

/// Sixteen rounds, unrolled so that the message window and the working variables stay in registers.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn rounds16<const SCHEDULE: bool>(w: &mut [__m512i; 16], v: &mut [__m512i; 8], k0: usize) {
    round::<0, SCHEDULE>(w, v, k0);
    round::<1, SCHEDULE>(w, v, k0);
    round::<2, SCHEDULE>(w, v, k0);
    round::<3, SCHEDULE>(w, v, k0);
    round::<4, SCHEDULE>(w, v, k0);
    round::<5, SCHEDULE>(w, v, k0);
    round::<6, SCHEDULE>(w, v, k0);
    round::<7, SCHEDULE>(w, v, k0);
    round::<8, SCHEDULE>(w, v, k0);
    round::<9, SCHEDULE>(w, v, k0);
    round::<10, SCHEDULE>(w, v, k0);
    round::<11, SCHEDULE>(w, v, k0);
    round::<12, SCHEDULE>(w, v, k0);
    round::<13, SCHEDULE>(w, v, k0);
    round::<14, SCHEDULE>(w, v, k0);
    round::<15, SCHEDULE>(w, v, k0);
}

/// Round `k0 + T`. With `SCHEDULE`, the message word is first extended in place
/// (W_t = σ1(W_t−2) + W_t−7 + σ0(W_t−15) + W_t−16, a window of 16). The working variables are not
/// moved: round T reads a at `v[(8 − T) mod 8]`, b after it, and so on, and writes the new e over
/// d and the new a over h.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn round<const T: usize, const SCHEDULE: bool>(w: &mut [__m512i; 16], v: &mut [__m512i; 8], k0: usize) {
    let word = if SCHEDULE {
        let w15 = w[(T + 1) % 16];
        let w2 = w[(T + 14) % 16];
        let s0 = xor3(_mm512_ror_epi32::<7>(w15), _mm512_ror_epi32::<18>(w15), _mm512_srli_epi32::<3>(w15));
        let s1 = xor3(_mm512_ror_epi32::<17>(w2), _mm512_ror_epi32::<19>(w2), _mm512_srli_epi32::<10>(w2));
        w[T] = _mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(w[T], w[(T + 9) % 16]));
        w[T]
    } else {
        w[T]
    };
    let at = |n: usize| (n + 8 - T % 8) % 8;
    let (a, b, c, d) = (v[at(0)], v[at(1)], v[at(2)], v[at(3)]);
    let (e, f, g, h) = (v[at(4)], v[at(5)], v[at(6)], v[at(7)]);
    let big_sigma1 = xor3(_mm512_ror_epi32::<6>(e), _mm512_ror_epi32::<11>(e), _mm512_ror_epi32::<25>(e));
    // Ch(e, f, g) = e ? f : g, bitwise (truth table 0xCA).
    let ch = _mm512_ternarylogic_epi32::<0xCA>(e, f, g);
    let k = _mm512_set1_epi32(K[k0 + T] as i32);
    let t1 = _mm512_add_epi32(_mm512_add_epi32(h, big_sigma1), _mm512_add_epi32(ch, _mm512_add_epi32(word, k)));
    let big_sigma0 = xor3(_mm512_ror_epi32::<2>(a), _mm512_ror_epi32::<13>(a), _mm512_ror_epi32::<22>(a));
    // Maj(a, b, c), bitwise (truth table 0xE8).
    let maj = _mm512_ternarylogic_epi32::<0xE8>(a, b, c);
    v[at(3)] = _mm512_add_epi32(d, t1);
    v[at(7)] = _mm512_add_epi32(t1, _mm512_add_epi32(big_sigma0, maj));
}

/// a ⊕ b ⊕ c in one instruction (truth table 0x96).
#[inline]
#[target_feature(enable = "avx512f")]
fn xor3(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<0x96>(a, b, c)
}

/// [`crate::is_single_spaced_ascii`], 64 bytes at a time. Panics if AVX-512 F/BW is missing.
pub fn is_single_spaced_ascii(bytes: &[u8]) -> bool {
    assert!(available(), "is_single_spaced_ascii: AVX-512 F and BW are required");
    // SAFETY: the CPU supports AVX-512 F and BW (checked above).
    unsafe { single_spaced_lanes(bytes) }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn single_spaced_lanes(bytes: &[u8]) -> bool {
    // A space before the first byte, so that a leading space counts as doubled.
    let mut space_before = 1u64;
    for chunk in bytes.chunks(64) {
        let mask = if chunk.len() == 64 { u64::MAX } else { (1u64 << chunk.len()) - 1 };
        // SAFETY: the mask selects the chunk's bytes only; masked-off bytes are not accessed and
        // read as zero, which is neither white space, a space nor non-ASCII.
        let v = unsafe { _mm512_maskz_loadu_epi8(mask, chunk.as_ptr().cast::<i8>()) };
        let non_ascii = _mm512_movepi8_mask(v);
        let white = _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, _mm512_set1_epi8(9)), _mm512_set1_epi8(5));
        let space = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b' ' as i8));
        let doubled = space & ((space << 1) | space_before);
        if non_ascii | white | doubled != 0 {
            return false;
        }
        space_before = space >> 63;
    }
    bytes.last() != Some(&b' ')
}

/// Append 64 hex digits per digest. Panics if SSSE3 is missing.
pub fn hex_into(digests: &[[u8; 32]], out: &mut Vec<u8>) {
    assert!(hex_available(), "hex_into: SSSE3 is required");
    // SAFETY: the CPU supports SSSE3 (checked above).
    unsafe { hex_ssse3(digests, out) }
}

#[target_feature(enable = "ssse3")]
fn hex_ssse3(digests: &[[u8; 32]], out: &mut Vec<u8>) {
    let digits = _mm_setr_epi8(
        b'0' as i8, b'1' as i8, b'2' as i8, b'3' as i8, b'4' as i8, b'5' as i8, b'6' as i8, b'7' as i8, b'8' as i8,
        b'9' as i8, b'a' as i8, b'b' as i8, b'c' as i8, b'd' as i8, b'e' as i8, b'f' as i8,
    );
    let low_nibble = _mm_set1_epi8(0x0f);
    for d in digests {
        let mut text = [0u8; 64];
        for (half, chunk) in d.chunks_exact(16).enumerate() {
            // SAFETY: `chunk` is 16 bytes, the width of the unaligned load.
            let bytes = unsafe { _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>()) };
            let hi = _mm_shuffle_epi8(digits, _mm_and_si128(_mm_srli_epi16::<4>(bytes), low_nibble));
            let lo = _mm_shuffle_epi8(digits, _mm_and_si128(bytes, low_nibble));
            let dst = text[32 * half..].as_mut_ptr().cast::<__m128i>();
            // SAFETY: `dst` has 32 of `text`'s bytes after it, the width of the two stores.
            unsafe {
                _mm_storeu_si128(dst, _mm_unpacklo_epi8(hi, lo));
                _mm_storeu_si128(dst.add(1), _mm_unpackhi_epi8(hi, lo));
            }
        }
        out.extend_from_slice(&text);
    }
}
