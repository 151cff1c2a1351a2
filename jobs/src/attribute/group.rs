//! Group influence: the predicted change of each validation row's loss when a whole *group* of
//! training rows — every row of some contributors — is left out and the adapter retrained.
//!
//! Summing row influences (`τ`) predicts a group's effect to first order: every row is valued at
//! its margin *given all the others*. That undervalues redundant data. When two contributors teach
//! the same facts, each one's rows look nearly worthless while the other is present, but leaving
//! out both loses the facts. The effect of leaving out a group is superadditive, and a sum cannot
//! express it.
//!
//! The group predictor takes one Newton step on the objective of the rows that remain, using
//! their own curvature. Per adapted projection (block `l`), with observed-label gradients `J` of
//! the training rows, `V` of the validation rows, kept rows `S` (`n` of them) and left-out rows `R`:
//!
//! `Δloss_v = Σ_l g_vᵀ (J_Sᵀ J_S + n·λ_l I)⁻¹ Σ_{i∈R} g_i`,  `λ_l = damping · ‖J_l‖² / (N·p_l)`
//!
//! (Koh et al. 2019, "On the accuracy of influence functions for measuring group effects", call
//! this the Newton approximation of group influence.) The curvature is the damped empirical
//! Fisher of the *kept* rows, so a direction that only the left-out rows supported keeps just the
//! damping. A step along it is then large, and leaving out the last rows that teach something costs
//! more than the sum of their margins. Removing nothing predicts no change. Removing one row out
//! of many gives, up to the curvature estimate, the row's first-order influence.
//!
//! Each block is solved in whichever form is smaller:
//!
//! - **dual** (`N ≤ p`): with `K = J Jᵀ` and `C = V Jᵀ` (precomputed),
//!   `Δloss = (C_R 1 − C_S (K_SS + nλI)⁻¹ K_SR 1) / (nλ)`. Cost per group `n³/3 + n·N`.
//! - **primal** (`N > p`): `A = JᵀJ − J_Rᵀ J_R + nλI` (or `J_Sᵀ J_S + nλI` when fewer rows are
//!   kept than left out), `Δloss = V A⁻¹ J_Rᵀ 1`. Cost per group `min(|R|, n)·p² + p³/3`.
//!
//! The eval (`tributary eval attribution`) scores this prediction as the contributor-level LDS
//! row `exact-block (group)`. Payouts still use the additive, split-proof row influences.
//!
//! [`CheckpointEnsemble`] sums the prediction over several checkpoints of the same training run
//! (the epoch ends of its second half in the eval's row `exact-block (group, checkpoints)`), as TRAK
//! (Park et al. 2023) ensembles its scores over checkpoints of one run. One linearisation at the
//! final adapter misses what the rows did on the way there: a row whose tokens are learned by the
//! end has little gradient left, though leaving out everything that taught them would raise their
//! loss again. Checkpoints taken while they were still being learned see that.

use burn::tensor::Tensor;

use super::grads::GradBlocks;
use super::linalg::{Square, to_vec};
use crate::error::{Error, Result};

/// Version tag recorded with results.
pub const VERSION: &str = "group-newton/1";

/// The default damping, relative to the block's mean curvature. On the attribution benchmark,
/// dampings 0.3, 1 and 3 gave contributor LDS 0.69, 0.72 and 0.70 (corrupted) and 0.56, 0.56 and
/// 0.55 (clean). Damping 10 gave 0.65 and 0.53, and 100 gave 0.58 and 0.46: with very large
/// damping the predictor becomes the additive gradient dot product.
pub const DEFAULT_DAMPING: f64 = 1.0;

/// Predicts the validation losses of retrainings that leave out groups of training rows.
#[derive(Debug, Clone)]
pub struct GroupPredictor {
    n: usize,
    m: usize,
    blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
struct Block {
    /// `λ_l` (per kept row).
    lambda: f64,
    form: Form,
}

#[derive(Debug, Clone)]
enum Form {
    /// `K = J Jᵀ` `[N, N]` and `C = V Jᵀ` `[M, N]`, row-major.
    Dual { k: Vec<f64>, c: Vec<f64> },
    /// `J` `[N, p]`, `V` `[M, p]` and `G = JᵀJ` `[p, p]`, row-major.
    Primal { p: usize, j: Vec<f64>, v: Vec<f64>, g: Vec<f64> },
}

impl GroupPredictor {
    /// Build from the observed-label gradients of the training rows (`train`) and of the
    /// validation rows (`val`), blocks in the same order.
    pub fn new(train: &GradBlocks, val: &GradBlocks, damping: f64) -> Result<GroupPredictor> {
        Self::with_form(train, val, damping, None)
    }

    /// [`GroupPredictor::new`], forcing the dual (`Some(true)`) or primal (`Some(false)`) form.
    fn with_form(train: &GradBlocks, val: &GradBlocks, damping: f64, dual: Option<bool>) -> Result<GroupPredictor> {
        check_damping(damping)?;
        if train.blocks.len() != val.blocks.len() || train.blocks.is_empty() {
            return Err(Error::Internal("training and validation gradients have different blocks".into()));
        }
        let (n, m) = (train.rows(), val.rows());
        let mut blocks = Vec::with_capacity(train.blocks.len());
        for (j, v) in train.blocks.iter().zip(&val.blocks) {
            let p = j.dims()[1];
            let norm2 = j.clone().powi_scalar(2).sum().into_scalar::<f32>() as f64;
            // A block whose gradients are all zero (an untouched projection) still needs a positive λ.
            let lambda = (damping * norm2 / (n.max(1) * p.max(1)) as f64).max(1e-12);
            let form = if dual.unwrap_or(n <= p) {
                Form::Dual { k: host(&j.clone().matmul(j.clone().transpose()))?, c: host(&v.clone().matmul(j.clone().transpose()))? }
            } else {
                Form::Primal { p, j: host(j)?, v: host(v)?, g: host(&j.clone().transpose().matmul(j.clone()))? }
            };
            blocks.push(Block { lambda, form });
        }
        Ok(GroupPredictor { n, m, blocks })
    }

    /// Predicted rise of each validation row's loss (`[M]`) when the rows with `kept[i] == false`
    /// are left out. Positive: leaving them out hurts.
    pub fn predict(&self, kept: &[bool]) -> Result<Vec<f64>> {
        if kept.len() != self.n {
            return Err(Error::InvalidArgument(format!("{} kept flags for {} training rows", kept.len(), self.n)));
        }
        let s: Vec<usize> = (0..self.n).filter(|&i| kept[i]).collect();
        let r: Vec<usize> = (0..self.n).filter(|&i| !kept[i]).collect();
        let mut rise = vec![0.0; self.m];
        if r.is_empty() {
            return Ok(rise);
        }
        if s.is_empty() {
            return Err(Error::InvalidArgument("a group prediction needs at least one kept row".into()));
        }
        for b in &self.blocks {
            let mu = b.lambda * s.len() as f64;
            match &b.form {
                Form::Dual { k, c } => {
                    let n = self.n;
                    // t = K_SR 1; A = K_SS + μI.
                    let t: Vec<f64> = s.iter().map(|&a| r.iter().map(|&q| k[a * n + q]).sum()).collect();
                    let mut a = Square { n: s.len(), data: Vec::with_capacity(s.len() * s.len()) };
                    for &x in &s {
                        a.data.extend(s.iter().map(|&y| k[x * n + y]));
                    }
                    a.add_diagonal(mu);
                    let u = a.cholesky()?.cholesky_solve(&t);
                    for (v, out) in rise.iter_mut().enumerate() {
                        let row = &c[v * n..(v + 1) * n];
                        let removed: f64 = r.iter().map(|&q| row[q]).sum();
                        let kept: f64 = s.iter().zip(&u).map(|(&q, u)| row[q] * u).sum();
                        *out += (removed - kept) / mu;
                    }
                }
                Form::Primal { p, j, v, g } => {
                    let p = *p;
                    // A = Σ_S g gᵀ + μI, from whichever side is shorter.
                    let mut a = Square { n: p, data: if r.len() <= s.len() { g.clone() } else { vec![0.0; p * p] } };
                    let (rows, sign) = if r.len() <= s.len() { (&r, -1.0) } else { (&s, 1.0) };
                    for &i in rows.iter() {
                        let gi = &j[i * p..(i + 1) * p];
                        for (x, &gx) in gi.iter().enumerate() {
                            if gx != 0.0 {
                                for (out, &gy) in a.data[x * p..(x + 1) * p].iter_mut().zip(gi) {
                                    *out += sign * gx * gy;
                                }
                            }
                        }
                    }
                    a.add_diagonal(mu);
                    let mut sum_r = vec![0.0; p];
                    for &i in &r {
                        for (o, x) in sum_r.iter_mut().zip(&j[i * p..(i + 1) * p]) {
                            *o += x;
                        }
                    }
                    let x = a.cholesky()?.cholesky_solve(&sum_r);
                    for (vi, out) in rise.iter_mut().enumerate() {
                        *out += v[vi * p..(vi + 1) * p].iter().zip(&x).map(|(a, b)| a * b).sum::<f64>();
                    }
                }
            }
        }
        Ok(rise)
    }
}

/// The group prediction summed over checkpoints of one training run: each member is a
/// [`GroupPredictor`] built from the gradients at one checkpoint, over the same training and
/// validation rows. Its cost is one member's per checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointEnsemble {
    members: Vec<GroupPredictor>,
}

impl CheckpointEnsemble {
    /// An ensemble of `members` (at least one, all over the same rows).
    pub fn new(members: Vec<GroupPredictor>) -> Result<CheckpointEnsemble> {
        let Some(first) = members.first() else {
            return Err(Error::InvalidArgument("a checkpoint ensemble needs at least one checkpoint".into()));
        };
        if let Some(other) = members.iter().find(|g| (g.n, g.m) != (first.n, first.m)) {
            return Err(Error::Internal(format!(
                "checkpoints over different rows: {}×{} and {}×{} (training × validation)",
                first.n, first.m, other.n, other.m
            )));
        }
        Ok(CheckpointEnsemble { members })
    }

    /// The sum over checkpoints of [`GroupPredictor::predict`].
    pub fn predict(&self, kept: &[bool]) -> Result<Vec<f64>> {
        let mut sum = vec![0.0; self.members[0].m];
        for g in &self.members {
            for (s, x) in sum.iter_mut().zip(g.predict(kept)?) {
                *s += x;
            }
        }
        Ok(sum)
    }
}

/// Refuse a damping that is not positive and finite.
pub fn check_damping(damping: f64) -> Result<()> {
    if damping > 0.0 && damping.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("group damping {damping} must be positive")))
    }
}

fn host(t: &Tensor<2>) -> Result<Vec<f64>> {
    Ok(to_vec(t)?.into_iter().map(f64::from).collect())
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;
    use crate::compute::Compute;
    use crate::model::LoraTarget;

    fn device() -> Device {
        Compute::Cpu.device().expect("cpu")
    }

    fn blocks(rows: &[Vec<Vec<f32>>], device: &Device) -> GradBlocks {
        // rows[b][i] = row i of block b.
        let blocks = rows
            .iter()
            .map(|b| {
                let p = b[0].len();
                Tensor::from_data(TensorData::new(b.concat(), [b.len(), p]), device)
            })
            .collect::<Vec<_>>();
        GradBlocks { keys: (0..blocks.len()).map(|l| (l, LoraTarget::Q)).collect(), blocks }
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((*seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
    }

    fn random(n: usize, widths: &[usize], seed: u64) -> Vec<Vec<Vec<f32>>> {
        let mut s = seed;
        widths.iter().map(|&p| (0..n).map(|_| (0..p).map(|_| lcg(&mut s)).collect()).collect()).collect()
    }

    /// The definition, with a dense `p × p` inverse per block.
    fn reference(train: &[Vec<Vec<f32>>], val: &[Vec<Vec<f32>>], damping: f64, kept: &[bool]) -> Vec<f64> {
        let n = kept.len();
        let m = val[0].len();
        let s = kept.iter().filter(|k| **k).count() as f64;
        let mut rise = vec![0.0; m];
        for (jb, vb) in train.iter().zip(val) {
            let p = jb[0].len();
            let norm2: f64 = jb.iter().flatten().map(|x| f64::from(*x).powi(2)).sum();
            let mu = damping * norm2 / (n * p) as f64 * s;
            let mut a = Square { n: p, data: vec![0.0; p * p] };
            for g in jb.iter().zip(kept).filter(|(_, k)| **k).map(|(g, _)| g) {
                for x in 0..p {
                    for y in 0..p {
                        a.data[x * p + y] += f64::from(g[x]) * f64::from(g[y]);
                    }
                }
            }
            a.add_diagonal(mu);
            let sum_r: Vec<f64> =
                (0..p).map(|x| jb.iter().enumerate().filter(|(i, _)| !kept[*i]).map(|(_, g)| f64::from(g[x])).sum()).collect();
            let step = a.cholesky().expect("spd").cholesky_solve(&sum_r);
            for (v, out) in rise.iter_mut().enumerate() {
                *out += vb[v].iter().zip(&step).map(|(g, x)| f64::from(*g) * x).sum::<f64>();
            }
        }
        rise
    }

    #[test]
    fn dual_and_primal_forms_equal_the_definition() {
        let device = device();
        let (n, m, widths) = (12, 5, [4usize, 9, 20]);
        let train = random(n, &widths, 1);
        let val = random(m, &widths, 2);
        let (tg, vg) = (blocks(&train, &device), blocks(&val, &device));
        let dual = GroupPredictor::with_form(&tg, &vg, 0.3, Some(true)).expect("dual");
        let primal = GroupPredictor::with_form(&tg, &vg, 0.3, Some(false)).expect("primal");
        let auto = GroupPredictor::new(&tg, &vg, 0.3).expect("auto");
        // Fewer kept than left out, more kept than left out, and one left out.
        for kept in [
            (0..n).map(|i| i % 3 == 0).collect::<Vec<_>>(),
            (0..n).map(|i| i % 4 != 1).collect(),
            (0..n).map(|i| i != 7).collect(),
        ] {
            let want = reference(&train, &val, 0.3, &kept);
            for (name, p) in [("dual", &dual), ("primal", &primal), ("auto", &auto)] {
                let got = p.predict(&kept).expect("predict");
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{name}: {g} vs {w} (kept {kept:?})");
                }
            }
        }
        assert_eq!(dual.predict(&[true; 12]).expect("nothing left out"), vec![0.0; m]);
        assert!(dual.predict(&[false; 12]).is_err(), "nothing kept has no curvature to step with");
        assert!(dual.predict(&[true; 3]).is_err(), "flags must match the rows");
        assert!(GroupPredictor::new(&tg, &vg, 0.0).is_err());
    }

    #[test]
    fn a_checkpoint_ensemble_sums_its_members_and_refuses_mismatched_rows() {
        let device = device();
        let widths = [5usize, 7];
        let (n, m) = (10, 3);
        let member = |seed: u64| {
            let (train, val) = (random(n, &widths, seed), random(m, &widths, seed + 100));
            GroupPredictor::new(&blocks(&train, &device), &blocks(&val, &device), 1.0).expect("member")
        };
        let (a, b) = (member(1), member(2));
        let kept: Vec<bool> = (0..n).map(|i| i % 3 != 0).collect();
        let one = CheckpointEnsemble::new(vec![a.clone()]).expect("one member");
        assert_eq!(one.predict(&kept).expect("predict"), a.predict(&kept).expect("predict"));
        let both = CheckpointEnsemble::new(vec![a.clone(), b.clone()]).expect("two members");
        let (pa, pb) = (a.predict(&kept).expect("a"), b.predict(&kept).expect("b"));
        for ((s, x), y) in both.predict(&kept).expect("sum").iter().zip(&pa).zip(&pb) {
            assert!((s - (x + y)).abs() <= 1e-12 * (1.0 + s.abs()), "{s} vs {x} + {y}");
        }
        assert!(both.predict(&[true; 4]).is_err(), "flags must match the rows");
        assert!(CheckpointEnsemble::new(Vec::new()).is_err());
        let fewer = {
            let (train, val) = (random(n - 1, &widths, 3), random(m, &widths, 4));
            GroupPredictor::new(&blocks(&train, &device), &blocks(&val, &device), 1.0).expect("member")
        };
        let err = CheckpointEnsemble::new(vec![a, fewer]).expect_err("different training rows");
        assert!(err.to_string().contains("10×3 and 9×3"), "{err}");
    }

    #[test]
    fn leaving_out_every_copy_costs_more_than_the_copies_margins() {
        // Rows 0 and 1 teach direction e0 (the validation row needs it); rows 2.. teach other
        // directions. Each copy's own margin, given the other, is small; leaving out both costs
        // more than twice as much: the superadditivity a sum of row influences cannot express.
        let device = device();
        let p = 6;
        let e = |k: usize, x: f32| -> Vec<f32> { (0..p).map(|i| if i == k { x } else { 0.0 }).collect() };
        let train = vec![vec![e(0, 1.0), e(0, 1.0), e(1, 1.0), e(2, 1.0), e(3, 1.0), e(4, 1.0), e(5, 1.0), e(1, 0.5)]];
        let val = vec![vec![e(0, 1.0)]];
        let g = GroupPredictor::new(&blocks(&train, &device), &blocks(&val, &device), 0.1).expect("predictor");
        let n = train[0].len();
        // The one validation row's predicted rise.
        let without = |out: &[usize]| g.predict(&(0..n).map(|i| !out.contains(&i)).collect::<Vec<_>>()).expect("predict")[0];
        let one = without(&[0]);
        let both = without(&[0, 1]);
        assert!(one > 0.0, "leaving out a helpful row raises the loss ({one})");
        assert!(both > 2.0 * one, "both copies {both} vs one copy {one}");
        // Rows that teach only directions the validation row does not use change nothing.
        assert!(without(&[3, 4]).abs() < 1e-9);
    }
}
