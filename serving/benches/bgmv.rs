//! The CPU batched-LoRA kernel (`batch_lora::bgmv`, AVX2 + FMA through `pulp`) against its
//! baseline, the plain loop it replaced (kept below: the same arithmetic in the layout
//! `[slots, in, r]`, left to the compiler's auto-vectorization for baseline x86-64). Shapes: the
//! demo's `tiny` model (64 → 64 and 64 → 32, one decode position per row), a prefill (64 positions
//! per row) and a 2048-wide model; rank 8, 64 resident adapters. Prints GMAC/s of both, the ratio, and the largest difference between their
//! outputs. Run: `cargo bench -p tributary-serving --bench bgmv`.

use std::hint::black_box;
use std::time::Instant;

/// The loop `bgmv` replaced, for rank `R`: `a` is `[slots, din, R]`, `b` is `[slots, R, dout]`.
fn baseline<const R: usize>(
    x: &[f32],
    slots: &[usize],
    t: usize,
    din: usize,
    dout: usize,
    a: &[f32],
    b: &[f32],
) -> Vec<f32> {
    let mut out = vec![0.0f32; slots.len() * t * dout];
    for (row, &slot) in slots.iter().enumerate().filter(|(_, s)| **s != 0) {
        let a = &a[slot * din * R..(slot + 1) * din * R];
        let b = &b[slot * R * dout..(slot + 1) * R * dout];
        let xs = &x[row * t * din..(row + 1) * t * din];
        let outs = &mut out[row * t * dout..(row + 1) * t * dout];
        for (xv, o) in xs.chunks_exact(din).zip(outs.chunks_exact_mut(dout)) {
            let mut y = [0.0f32; R];
            for (xk, a_row) in xv.iter().zip(a.chunks_exact(R)) {
                for j in 0..R {
                    y[j] += xk * a_row[j];
                }
            }
            for (yj, b_row) in y.iter().zip(b.chunks_exact(dout)) {
                for (oc, bc) in o.iter_mut().zip(b_row) {
                    *oc += yj * bc;
                }
            }
        }
    }
    out
}

fn main() {
    println!("bgmv benchmark: rank 8, 64 adapter slots, best of 5 runs per shape");
    let (slots_n, r) = (64usize, 8usize);
    for (din, dout, rows, t) in [
        (64usize, 64usize, 32usize, 1usize),
        (64, 32, 32, 1),
        (64, 64, 4, 64),
        (2048, 2048, 32, 1),
    ] {
        let mut s = 1u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let a: Vec<f32> = (0..slots_n * din * r).map(|_| rnd()).collect();
        let b: Vec<f32> = (0..slots_n * r * dout).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..rows * t * din).map(|_| rnd()).collect();
        let slots: Vec<usize> = (0..rows).map(|i| 1 + (i * 7) % (slots_n - 1)).collect();
        let mut a_t = vec![0.0f32; a.len()];
        for (from, to) in a.chunks_exact(din * r).zip(a_t.chunks_exact_mut(r * din)) {
            for i in 0..din {
                for j in 0..r {
                    to[j * din + i] = from[i * r + j];
                }
            }
        }
        let iters = (200_000_000 / (rows * t * r * (din + dout))).max(3);
        let o1 = baseline::<8>(&x, &slots, t, din, dout, &a, &b);
        let o2 = tributary_serving::batch_lora::bgmv(&x, &slots, t, din, r, dout, &a_t, &b);
        let maxdiff = o1
            .iter()
            .zip(&o2)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        let mut best = [f64::MAX; 2];
        for _ in 0..5 {
            let t0 = Instant::now();
            for _ in 0..iters {
                black_box(baseline::<8>(black_box(&x), &slots, t, din, dout, &a, &b));
            }
            best[0] = best[0].min(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            for _ in 0..iters {
                black_box(tributary_serving::batch_lora::bgmv(
                    black_box(&x),
                    &slots,
                    t,
                    din,
                    r,
                    dout,
                    &a_t,
                    &b,
                ));
            }
            best[1] = best[1].min(t0.elapsed().as_secs_f64());
        }
        let macs = (iters * rows * t * r * (din + dout)) as f64;
        println!(
            "din {din} dout {dout} rows {rows} t {t}: baseline loop {:6.2} GMAC/s, bgmv {:6.2} GMAC/s, ratio {:.2}x, maxdiff {maxdiff:e}",
            macs / best[0] / 1e9,
            macs / best[1] / 1e9,
            best[0] / best[1]
        );
    }
}
