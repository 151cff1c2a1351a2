//! Multi-buffer SHA-256 against the `sha2` crate one message at a time (which uses the CPU's SHA
//! extensions where it has them), on ingest's two per-row hashes: 1M texts of about 230 bytes with
//! ASCII lower-casing, and 1M 40-byte row-id messages; plus hex encoding and the white-space check. Batches of 1,000, as
//! ingest hashes one file's rows at a time. Run: `cargo bench -p tributary-hashes`.

use std::time::Instant;

use tributary_hashes::{
    Fold, hex_into, hex_into_portable, is_single_spaced_ascii, is_single_spaced_ascii_portable, sha256_many, sha256_many_portable,
};

const ROUNDS: usize = 5;

/// Median seconds of `ROUNDS` runs of `f`.
fn time(mut f: impl FnMut() -> u8) -> f64 {
    let mut secs: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    secs[ROUNDS / 2]
}

fn compare(what: &str, messages: &[Vec<u8>], fold: Fold) {
    let batches: Vec<Vec<&[u8]>> = messages.chunks(1000).map(|c| c.iter().map(Vec::as_slice).collect()).collect();
    let one_at_a_time = time(|| batches.iter().map(|b| sha256_many_portable(b, fold)[0][0]).fold(0, |a, x| a ^ x));
    let lanes = time(|| batches.iter().map(|b| sha256_many(b, fold)[0][0]).fold(0, |a, x| a ^ x));
    let bytes: usize = messages.iter().map(Vec::len).sum();
    println!(
        "  {what:<34} sha2 one at a time {:6.3} s  sha256_many {:6.3} s  ({:.2} GB/s)  speed-up {:.2}×",
        one_at_a_time,
        lanes,
        bytes as f64 / lanes / 1e9,
        one_at_a_time / lanes
    );
}

fn main() {
    let n = 1_000_000u64;
    println!(
        "multi-buffer sha256: {} (AVX-512 lanes {})",
        std::env::consts::ARCH,
        if tributary_hashes::accelerated() { "in use" } else { "unavailable: both sides are sha2" }
    );
    let texts: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            format!(
                "Region {i} is a region whose capital is Drask. It is known for its harbour and exports mostly salt and \
                 some wool. The region was first charted in {} and today about {} thousand people live there.",
                1200 + i % 700,
                i % 900
            )
            .into_bytes()
        })
        .collect();
    compare("1M texts, ASCII lower-cased", &texts, Fold::AsciiLowercase);
    let portable = time(|| texts.iter().filter(|t| is_single_spaced_ascii_portable(t)).count() as u8);
    let simd = time(|| texts.iter().filter(|t| is_single_spaced_ascii(t)).count() as u8);
    println!(
        "  {:<34} folds              {portable:6.3} s  64 at a time {simd:6.3} s  speed-up {:.2}×",
        "1M texts, single-spaced check",
        portable / simd
    );
    let file_sha = [7u8; 32];
    let ids: Vec<Vec<u8>> = (0..n).map(|i| [&file_sha[..], &i.to_be_bytes()].concat()).collect();
    compare("1M row ids (40 bytes)", &ids, Fold::Bytes);
    let digests: Vec<[u8; 32]> = sha256_many(&ids.iter().map(Vec::as_slice).collect::<Vec<_>>(), Fold::Bytes);
    let mut out = Vec::with_capacity(digests.len() * 64);
    let portable = time(|| {
        out.clear();
        hex_into_portable(&digests, &mut out);
        out[0]
    });
    let simd = time(|| {
        out.clear();
        hex_into(&digests, &mut out);
        out[0]
    });
    println!("  {:<34} byte at a time     {portable:6.3} s  hex_into    {simd:6.3} s  speed-up {:.2}×", "hex of 1M digests", portable / simd);
}
