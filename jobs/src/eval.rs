//! `tributary eval attribution`: how far the influence scores can be trusted.
//!
//! A benchmark, not a test. On a knowledge-base datanet ([`crate::corpus::KbSpec`]: consistent
//! facts about invented regions, rows owned by ~30 contributors, a clean validation set) it trains
//! an adapter, attributes it with every method, and measures, for a *corrupted* scenario (20% of
//! the training rows have falsified answers, mostly from a few careless contributors) and a
//! *clean* one:
//!
//! - **detection AUC** of the falsified rows from train→validation influence (low = suspect), from
//!   self-influence (high = suspect), and, as the strong baseline, from each row's training loss;
//! - **example-level LDS** (linear datamodeling score): over `subsets` retrainings on random 50%
//!   subsets of the rows, the Spearman correlation, per validation row and then averaged, between
//!   the loss the scores predict (`-Σ_{i∈S} τ(i, v)`) and the loss actually measured;
//! - **contributor-level LDS**: the same with random halves of the *contributors* left out,
//!   correlated on the mean validation loss;
//! - the **noise ceiling**: the same LDS when the "prediction" is a second retraining of each
//!   subset from another seed (no attribution method can beat retraining noise), with every LDS
//!   also reported as a fraction of it. Each subset is retrained from two seeds anyway, so every
//!   LDS is computed against each of the two retrainings and the two figures averaged: the same
//!   single-seed LDS, with less of the luck of one seed in it (the two differed by up to 0.18 at 50
//!   subsets);
//! - the retrainings use **common random numbers** (`RetrainSeeds::Common`, the default): the
//!   first retraining of every subset reuses the attributed run's seed (its LoRA initialization
//!   and shuffling), so it is that very run without the left-out rows, the counterfactual the
//!   scores are about; the second retraining of every subset uses one other seed. Randomness that
//!   is not the data's doing then stops varying from subset to subset, and the comparison between
//!   subsets is sharper (the contributor-level noise ceilings rose from 0.74 / 0.61 to 0.83 / 0.78 at
//!   100 subsets). `RetrainSeeds::Independent` gives every retraining its own seed instead, so each
//!   subset's loss also carries the luck of its seed;
//! - **group prediction** (`exact-block (group)`): the same LDS figures when each subset's losses
//!   are predicted by [`crate::attribute::group`]'s Newton step with the kept rows' own curvature
//!   instead of by summing row influences. It is not additive, so it can express that leaving out
//!   every contributor who teaches something costs more than their margins add up to. Payouts stay
//!   additive; this row measures what the attribution model knows about leaving out groups;
//! - the same prediction **over checkpoints** (`exact-block (group, checkpoints)`): summed over the
//!   epoch-end checkpoints of the second half of training ([`group::CheckpointEnsemble`]), at one
//!   group predictor's cost per checkpoint;
//! - an **oracle count** for the contributor-level LDS of the corrupted scenario: a subset's loss
//!   predicted by how many falsified rows it keeps — what knowing the bad rows exactly buys;
//! - a **random-score control** (LDS ≈ 0) and the **cost** of each method relative to one training
//!   epoch.
//!
//! Retrainings run on `threads` worker threads; every figure is deterministic in the seed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::attribute::group::{self, CheckpointEnsemble, GroupPredictor};
use crate::attribute::{self, AttributionConfig, Curvature, Method, NoCache, Scores, grads};
use crate::batch::losses;
use crate::corpus::{KbDatanet, KbRow, KbSpec, question_of};
use crate::error::{Error, Result};
use crate::attribute::grads::GradBlocks;
use crate::model::{Adapter, BaseModel};
use crate::tokenizer::{Encoded, Tokenizer};
use crate::train::{Quiet, TrainConfig, TrainOutcome, train_adapter};

/// The eval draws its subsets from the datanet's seed xor this.
pub const SUBSET_STREAM: u64 = 0x1d5;

/// The table's row for the group prediction.
pub const GROUP_ROW: &str = "exact-block (group)";

/// The table's row for the group prediction summed over checkpoints.
pub const CHECKPOINTS_ROW: &str = "exact-block (group, checkpoints)";

/// The epochs (1-based) whose end-of-epoch checkpoints the checkpoint row sums, out of `epochs`:
/// the second half of training, the last epoch (the attributed adapter) included.
pub fn checkpoint_epochs(epochs: usize) -> std::ops::RangeInclusive<usize> {
    (epochs - epochs.div_ceil(2) + 1)..=epochs
}

/// Benchmark settings.
#[derive(Debug, Clone, Serialize)]
pub struct EvalConfig {
    /// The datanet (its `corrupt_frac` is overridden per scenario).
    pub kb: KbSpec,
    /// Training settings (also for every retraining).
    pub train: TrainConfig,
    /// Retrainings per LDS (each also retrained once more from another seed for the ceiling).
    pub subsets: usize,
    /// Methods to evaluate.
    pub methods: Vec<Method>,
    /// Falsified fraction of the corrupted scenario.
    pub corrupt_frac: f64,
    /// Worker threads for retrainings.
    pub threads: usize,
    /// Damping of `exact-block` and `datainf` (`None` = each method's default).
    pub damping: Option<f64>,
    /// Where `exact-block` takes its curvature from.
    pub curvature: Curvature,
    /// Damping of the group prediction (`None`: [`group::DEFAULT_DAMPING`]).
    pub group_damping: Option<f64>,
    /// How the retrainings are seeded.
    pub seeds: RetrainSeeds,
    /// Also write each scenario's per-row gradients and losses under the attributed adapter here
    /// (`<dir>/<scenario>/`, see [`write_gradients`]), for `bench/group_readings.py`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gradients: Option<PathBuf>,
}

/// How the retrainings of the subsets are seeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetrainSeeds {
    /// Common random numbers: the first retraining of every subset uses the attributed run's own
    /// seed (its initialization and batch shuffling), so it is that run without the left-out rows;
    /// the second uses one other seed for every subset.
    #[default]
    Common,
    /// A fresh seed for every retraining.
    Independent,
}

impl RetrainSeeds {
    /// The seed of retraining `replica` (0 or 1) of subset `subset` of kind `kind` (0: rows,
    /// 1: contributors), when the attributed run used `run_seed`.
    pub fn seed(self, run_seed: u64, kind: usize, subset: usize, replica: u64) -> u64 {
        match (self, replica) {
            (RetrainSeeds::Common, 0) => run_seed,
            (RetrainSeeds::Common, _) => run_seed ^ 0x9e37_79b9,
            (RetrainSeeds::Independent, _) => {
                run_seed ^ (1000 * (kind as u64 + 1) + 10 * subset as u64 + replica).wrapping_mul(0x9e37_79b9)
            }
        }
    }
}

impl std::fmt::Display for RetrainSeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RetrainSeeds::Common => "common",
            RetrainSeeds::Independent => "independent",
        })
    }
}

impl std::str::FromStr for RetrainSeeds {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "common" => Ok(RetrainSeeds::Common),
            "independent" => Ok(RetrainSeeds::Independent),
            other => Err(Error::InvalidArgument(format!("retraining seeds {other:?}: expected common or independent"))),
        }
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            kb: KbSpec::default(),
            train: TrainConfig::default(),
            subsets: 50,
            methods: Method::ALL.to_vec(),
            corrupt_frac: 0.2,
            threads: 2,
            damping: None,
            curvature: Curvature::default(),
            group_damping: None,
            seeds: RetrainSeeds::default(),
            gradients: None,
        }
    }
}

impl EvalConfig {
    /// Apply the overrides the research examples take from the environment (`eval_attribution`,
    /// `datamodel`): `TRIBUTARY_EVAL_TRAIN` (a [`TrainConfig`] as JSON), `TRIBUTARY_EVAL_KB` (a
    /// [`KbSpec`] as JSON), `TRIBUTARY_EVAL_DAMPING`, `TRIBUTARY_EVAL_GROUP_DAMPING`,
    /// `TRIBUTARY_EVAL_SEEDS` (`common` / `independent`), `TRIBUTARY_EVAL_CURVATURE`,
    /// `TRIBUTARY_EVAL_THREADS`, `TRIBUTARY_EVAL_GRADIENTS` (a directory) and
    /// `TRIBUTARY_EVAL_METHODS` (comma-separated). A value that does not parse is an error naming
    /// its variable.
    pub fn override_from_env(&mut self) -> Result<()> {
        self.override_from(|name| std::env::var(name).ok())
    }

    /// [`EvalConfig::override_from_env`] with the variables looked up by `var`.
    fn override_from(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        fn bad(name: &str, e: impl std::fmt::Display) -> Error {
            Error::InvalidArgument(format!("{name}: {e}"))
        }
        fn parse<T: std::str::FromStr>(var: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<T>>
        where
            T::Err: std::fmt::Display,
        {
            var(name).map(|v| v.parse().map_err(|e| bad(name, e))).transpose()
        }
        if let Some(j) = var("TRIBUTARY_EVAL_TRAIN") {
            self.train = serde_json::from_str(&j).map_err(|e| bad("TRIBUTARY_EVAL_TRAIN", e))?;
        }
        if let Some(j) = var("TRIBUTARY_EVAL_KB") {
            self.kb = serde_json::from_str(&j).map_err(|e| bad("TRIBUTARY_EVAL_KB", e))?;
        }
        if let Some(d) = parse(&var, "TRIBUTARY_EVAL_DAMPING")? {
            self.damping = Some(d);
        }
        if let Some(d) = parse(&var, "TRIBUTARY_EVAL_GROUP_DAMPING")? {
            self.group_damping = Some(d);
        }
        if let Some(s) = parse(&var, "TRIBUTARY_EVAL_SEEDS")? {
            self.seeds = s;
        }
        if let Some(c) = parse(&var, "TRIBUTARY_EVAL_CURVATURE")? {
            self.curvature = c;
        }
        if let Some(t) = parse(&var, "TRIBUTARY_EVAL_THREADS")? {
            self.threads = t;
        }
        if let Some(dir) = var("TRIBUTARY_EVAL_GRADIENTS") {
            self.gradients = Some(dir.into());
        }
        if let Some(m) = var("TRIBUTARY_EVAL_METHODS") {
            self.methods = m.split(',').map(|m| m.parse().map_err(|e| bad("TRIBUTARY_EVAL_METHODS", e))).collect::<Result<_>>()?;
        }
        Ok(())
    }

    /// How `method` attributes in this benchmark.
    pub fn attribution(&self, method: Method) -> AttributionConfig {
        AttributionConfig { damping: self.damping, curvature: self.curvature, ..AttributionConfig::new(method) }
    }
}

/// The per-row losses under the attributed adapter that [`write_gradients`] writes beside the gradients.
pub struct RowLosses<'a> {
    /// Each training row's loss.
    pub train: &'a [f64],
    /// Each validation row's loss.
    pub val: &'a [f64],
}

/// Write one scenario's gradients for analysis outside Tributary, into `dir`:
///
/// - `train.npy`, `val.npy`: the observed-label gradients of every training / validation row,
///   `float32 [rows, Σ p_l]`, the adapted projections' blocks side by side (the group prediction's input);
/// - `train_sampled.npy`: the training rows' gradients with model-sampled targets (the Gauss–Newton
///   estimate exact-block's curvature uses);
/// - `meta.json`: `widths` (each block's `p_l`, in column order), `blocks` (`[layer, projection]`
///   of each), `train_loss` and `val_loss` (each row's loss under the adapter).
///
/// `sampled` is optional: the eval writes it for the attributed adapter, in `DIR/<scenario>/`, and
/// not for the earlier epoch-end checkpoints, in `DIR/<scenario>/epoch<E>/` (every epoch but the
/// last, whose checkpoint is the attributed adapter).
/// The `.npy` files are NumPy's format version 1.0, readable by `numpy.load`.
pub fn write_gradients(
    dir: &Path,
    train: &grads::GradBlocks,
    val: &grads::GradBlocks,
    sampled: Option<&grads::GradBlocks>,
    losses: RowLosses,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let files = [("train.npy", Some(train)), ("val.npy", Some(val)), ("train_sampled.npy", sampled)];
    for (file, g) in files.into_iter().filter_map(|(f, g)| g.map(|g| (f, g))) {
        let widths = g.widths();
        let [rows, cols] = [g.rows(), widths.iter().sum()];
        let blocks: Vec<Vec<f32>> = g.blocks.iter().map(attribute::linalg::to_vec).collect::<Result<_>>()?;
        let mut data = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for (b, &p) in blocks.iter().zip(&widths) {
                data.extend_from_slice(&b[r * p..(r + 1) * p]);
            }
        }
        std::fs::write(dir.join(file), npy_f32(rows, cols, &data)?)?;
    }
    let blocks: Vec<(usize, String)> = train.keys.iter().map(|(layer, t)| (*layer, t.to_string())).collect();
    let meta = serde_json::json!({
        "widths": train.widths(),
        "blocks": blocks,
        "train_loss": losses.train,
        "val_loss": losses.val,
    });
    std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta)?)?;
    Ok(())
}

/// A row-major `float32 [rows, cols]` matrix in NumPy's `.npy` format, version 1.0.
fn npy_f32(rows: usize, cols: usize, data: &[f32]) -> Result<Vec<u8>> {
    if data.len() != rows * cols {
        return Err(Error::Internal(format!("{} values for a {rows}×{cols} matrix", data.len())));
    }
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64
    // and ended by a newline.
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.extend(std::iter::repeat_n(' ', pad));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend(b"\x93NUMPY\x01\x00");
    out.extend(u16::try_from(header.len()).map_err(|_| Error::Internal("npy header too long".into()))?.to_le_bytes());
    out.extend(header.as_bytes());
    for x in data {
        out.extend(x.to_le_bytes());
    }
    Ok(out)
}

/// Figures of one method in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct MethodFigures {
    /// `exact-block`, …, or a baseline (`training loss`, `random`, the oracle count).
    pub name: String,
    /// Detection AUC from train→validation influence (corrupted scenario only).
    pub auc_influence: Option<f64>,
    /// Detection AUC from self-influence (corrupted scenario only).
    pub auc_self: Option<f64>,
    /// Example-level LDS (the mean of `lds_example_each`).
    pub lds_example: Option<f64>,
    /// Contributor-level LDS (the mean of `lds_contributor_each`).
    pub lds_contributor: Option<f64>,
    /// Example-level LDS against the first and the second seed's retrainings.
    pub lds_example_each: Option<[f64; 2]>,
    /// Contributor-level LDS against the first and the second seed's retrainings.
    pub lds_contributor_each: Option<[f64; 2]>,
    /// Example-level LDS against the mean of each subset's two retrainings (per validation row,
    /// then averaged): the measured side with half the seed noise variance. No ceiling is measured
    /// for it (that would take two more retrainings of every subset).
    pub lds_example_seed_mean: Option<f64>,
    /// Contributor-level LDS against the mean of each subset's two retrainings' mean validation loss.
    pub lds_contributor_seed_mean: Option<f64>,
    /// 95% bootstrap interval of `lds_example` ([`bootstrap_interval`] over the subsets).
    pub lds_example_interval: Option<[f64; 2]>,
    /// 95% bootstrap interval of `lds_contributor`.
    pub lds_contributor_interval: Option<[f64; 2]>,
    /// Seconds spent attributing.
    pub seconds: Option<f64>,
    /// `seconds` / seconds of one training epoch.
    pub cost_epochs: Option<f64>,
}

impl MethodFigures {
    /// A row with nothing measured yet.
    fn named(name: &str) -> Self {
        MethodFigures {
            name: name.to_string(),
            auc_influence: None,
            auc_self: None,
            lds_example: None,
            lds_contributor: None,
            lds_example_each: None,
            lds_contributor_each: None,
            lds_example_seed_mean: None,
            lds_contributor_seed_mean: None,
            lds_example_interval: None,
            lds_contributor_interval: None,
            seconds: None,
            cost_epochs: None,
        }
    }

    /// A row with both LDS figures, each the mean over the two seeds' retrainings; the figures
    /// against the first seed, the second, and the two seeds' mean loss (see [`Against`]).
    fn lds(name: &str, example: Against, contributor: Against) -> Self {
        MethodFigures {
            lds_example: Some(mean(&example.each)),
            lds_contributor: Some(mean(&contributor.each)),
            lds_example_each: Some(example.each),
            lds_contributor_each: Some(contributor.each),
            lds_example_seed_mean: Some(example.seed_mean),
            lds_contributor_seed_mean: Some(contributor.seed_mean),
            ..MethodFigures::named(name)
        }
    }

    fn with_intervals(self, [example, contributor]: [[f64; 2]; 2]) -> Self {
        MethodFigures { lds_example_interval: Some(example), lds_contributor_interval: Some(contributor), ..self }
    }

    fn with_cost(self, seconds: f64, epoch_seconds: f64) -> Self {
        MethodFigures { seconds: Some(seconds), cost_epochs: Some(seconds / epoch_seconds.max(1e-9)), ..self }
    }
}

/// One LDS figure measured against each seed's retrainings and against their mean.
#[derive(Debug, Clone, Copy)]
struct Against {
    each: [f64; 2],
    seed_mean: f64,
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// `corrupted` or `clean`.
    pub name: String,
    /// Training rows.
    pub train_rows: usize,
    /// Falsified rows.
    pub corrupted_rows: usize,
    /// Validation rows.
    pub val_rows: usize,
    /// Contributors.
    pub contributors: usize,
    /// Validation loss of the base model.
    pub base_val_loss: f64,
    /// Validation loss after training on all rows.
    pub trained_val_loss: f64,
    /// Seconds of one training epoch on all rows.
    pub epoch_seconds: f64,
    /// Noise ceiling of the example-level LDS.
    pub ceiling_example: f64,
    /// Noise ceiling of the contributor-level LDS.
    pub ceiling_contributor: f64,
    /// 95% bootstrap intervals of the two ceilings (example, contributor).
    pub ceiling_intervals: [[f64; 2]; 2],
    /// Methods and baselines.
    pub methods: Vec<MethodFigures>,
    /// What the contributor-level LDS was computed from, for analyses beyond the table.
    pub contributor_lds: ContributorLdsData,
    /// Retrainings run.
    pub retrainings: usize,
    /// Seconds the group prediction took to predict every subset, after building the predictor
    /// (which its row's cost counts: its gradient passes and per-block Gram matrices).
    pub group_predict_seconds: f64,
    /// Wall seconds of the scenario.
    pub seconds: f64,
}

/// The raw material of the contributor-level LDS: who owns which row, which contributors each
/// retraining kept, and the mean validation loss it reached (from each of the two seeds).
#[derive(Debug, Clone, Serialize)]
pub struct ContributorLdsData {
    /// Each training row's owner index.
    pub row_contributor: Vec<usize>,
    /// Each training row's region (the fact it teaches is about).
    pub row_region: Vec<usize>,
    /// Whether each training row was falsified.
    pub row_falsified: Vec<bool>,
    /// Each training row's kind of question (`capital`, `export`, `feature`, `overview`).
    pub row_question: Vec<&'static str>,
    /// Each validation row's region.
    pub val_region: Vec<usize>,
    /// Each validation row's kind of question.
    pub val_question: Vec<&'static str>,
    /// Contributors kept by each retraining (sorted).
    pub kept: Vec<Vec<usize>>,
    /// Mean validation loss of each retraining, from the first and the second seed.
    pub loss: [Vec<f64>; 2],
    /// The group prediction of each retraining: the predicted rise of the mean validation loss
    /// when the contributors it leaves out are left out (the `exact-block (group)` row).
    pub group: Vec<f64>,
    /// The same summed over checkpoints (the `exact-block (group, checkpoints)` row).
    pub group_checkpoints: Vec<f64>,
    /// The epochs whose end-of-epoch checkpoints `group_checkpoints` sums ([`checkpoint_epochs`]).
    pub group_checkpoint_epochs: Vec<usize>,
    /// Per validation row (the bulk of the report; [`EvalReport::without_detail`] drops it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<LdsDetail>,
}

/// Per-validation-row material behind the contributor-level LDS.
#[derive(Debug, Clone, Serialize)]
pub struct LdsDetail {
    /// Each validation row's loss under each retraining, from the first and the second seed.
    pub val_loss: [Vec<Vec<f64>>; 2],
    /// Each validation row's loss under the adapter trained on every row.
    pub val_loss_full: Vec<f64>,
    /// The group prediction of each retraining, per validation row (`group` is their mean).
    pub group: Vec<Vec<f64>>,
    /// Each method's `τ(i, v)`, row-major `[N, M]`.
    pub pair: Vec<(String, Vec<f64>)>,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Settings.
    pub config: EvalConfig,
    /// `corrupted`, then `clean`.
    pub scenarios: Vec<ScenarioReport>,
    /// Wall seconds.
    pub seconds: f64,
}

/// Progress of the benchmark.
#[derive(Debug, Clone)]
pub enum EvalProgress {
    /// A phase started.
    Phase(String),
    /// A retraining finished.
    Retrained {
        /// Done so far in this scenario.
        done: usize,
        /// Planned in this scenario.
        total: usize,
    },
}

/// Ranks with ties averaged (1-based).
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Pearson correlation (0 when either side is constant).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx <= 0.0 || syy <= 0.0 { 0.0 } else { sxy / (sxx * syy).sqrt() }
}

/// Spearman rank correlation.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// ROC AUC of `scores` for `labels` (true = positive), ties counted half.
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let r = ranks(scores);
    let pos = labels.iter().filter(|l| **l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    let sum: f64 = r.iter().zip(labels).filter(|(_, l)| **l).map(|(r, _)| *r).sum();
    (sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Resamples behind every LDS interval.
pub const BOOTSTRAP_DRAWS: usize = 1000;

/// A 95% percentile-bootstrap interval of a statistic of `n` subsets: `stat` recomputed on `draws`
/// resamples of the subset indices (with replacement), the 2.5th and 97.5th percentiles of what it
/// gives. Seeded, so the same report gives the same interval; callers that compare figures pass the
/// same seed, so every figure sees the same resamples.
pub fn bootstrap_interval(n: usize, draws: usize, seed: u64, stat: impl Fn(&[usize]) -> f64) -> [f64; 2] {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut idx = vec![0; n];
    let mut values: Vec<f64> = (0..draws)
        .map(|_| {
            idx.iter_mut().for_each(|i| *i = rng.random_range(0..n.max(1)));
            stat(&idx)
        })
        .filter(|v| v.is_finite())
        .collect();
    values.sort_by(f64::total_cmp);
    [quantile(&values, 0.025), quantile(&values, 0.975)]
}

/// The `q` quantile of sorted `v`, interpolating linearly (NaN when empty).
fn quantile(v: &[f64], q: f64) -> f64 {
    let Some(last) = v.len().checked_sub(1) else { return f64::NAN };
    let at = q * last as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
}

/// The rows of `v` at `idx`, in that order.
fn pick<T: Clone>(v: &[T], idx: &[usize]) -> Vec<T> {
    idx.iter().map(|&j| v[j].clone()).collect()
}

/// A retraining job: which rows, which seed.
struct Retraining {
    rows: Vec<usize>,
    seed: u64,
}

/// Train on `rows` of `train` with `seed`; return the per-row validation losses.
fn retrain(base: &BaseModel, train: &[Encoded], val: &[Encoded], cfg: &TrainConfig, job: &Retraining) -> Result<Vec<f64>> {
    let subset: Vec<Encoded> = job.rows.iter().map(|&i| train[i].clone()).collect();
    let cfg = TrainConfig { seed: job.seed, ..cfg.clone() };
    let out = train_adapter(&base.model, &subset, &[], &cfg, base.tokenizer.eot(), None, &mut Quiet)?;
    losses(&base.model, val, Some(&out.adapter.hook()), base.tokenizer.eot(), 64)
}

/// Run `jobs` on `threads` threads, results in job order.
fn run_all(
    base: &BaseModel,
    train: &[Encoded],
    val: &[Encoded],
    cfg: &TrainConfig,
    jobs: &[Retraining],
    threads: usize,
    progress: &(dyn Fn(EvalProgress) + Sync),
) -> Result<Vec<Vec<f64>>> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Vec<f64>>>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k >= jobs.len() {
                        break;
                    }
                    let r = retrain(base, train, val, cfg, &jobs[k]);
                    // A poisoned lock means another worker panicked; its result slot stays empty.
                    let mut guard = results.lock().unwrap_or_else(|p| p.into_inner());
                    guard[k] = Some(r);
                    drop(guard);
                    let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                    progress(EvalProgress::Retrained { done: d, total: jobs.len() });
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Internal("a retraining worker died".into()))))
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Example-level LDS of `pred[j][v]` against `actual[j][v]`: Spearman over `j`, mean over `v`.
fn lds_example(pred: &[Vec<f64>], actual: &[Vec<f64>]) -> f64 {
    let m = actual.first().map(Vec::len).unwrap_or(0);
    let per_v: Vec<f64> = (0..m)
        .map(|v| {
            let p: Vec<f64> = pred.iter().map(|r| r[v]).collect();
            let a: Vec<f64> = actual.iter().map(|r| r[v]).collect();
            spearman(&p, &a)
        })
        .collect();
    mean(&per_v)
}

/// Predicted validation losses (up to a constant) of each subset under `scores`.
fn predicted(scores: &Scores, subsets: &[Vec<usize>]) -> Vec<Vec<f64>> {
    subsets
        .iter()
        .map(|rows| (0..scores.n_val).map(|v| -rows.iter().map(|&i| scores.pair(i, v)).sum::<f64>()).collect())
        .collect()
}

/// Attribute the run `full` (trained on `train`) with `method` as the eval does.
fn attribute_with(
    base: &BaseModel,
    full: &TrainOutcome,
    train: &[Encoded],
    val: &[Encoded],
    cfg: &EvalConfig,
    method: Method,
) -> Result<Scores> {
    let (model, pad, batch) = (&base.model, base.tokenizer.eot(), cfg.train.batch_size);
    attribute::attribute(model, &full.adapter, &full.tracin, train, val, pad, batch, &cfg.attribution(method), &mut NoCache)
}

/// The rows of `rows` as the model sees them.
fn encode(tok: &Tokenizer, rows: &[KbRow]) -> Result<Vec<Encoded>> {
    rows.iter().map(|r| tok.encode_pair(&r.prompt, &r.completion)).collect()
}

/// Run one scenario.
fn scenario(
    name: &str,
    base: &BaseModel,
    kb: &KbDatanet,
    cfg: &EvalConfig,
    progress: &(dyn Fn(EvalProgress) + Sync),
) -> Result<ScenarioReport> {
    let started = Instant::now();
    let tok = &base.tokenizer;
    let pad = tok.eot();
    let (train, val) = (encode(tok, &kb.train)?, encode(tok, &kb.val)?);
    let labels: Vec<bool> = kb.train.iter().map(|r| r.corrupted).collect();
    let corrupted_rows = labels.iter().filter(|l| **l).count();
    let n = train.len();

    progress(EvalProgress::Phase(format!("{name}: training on all {n} rows")));
    let t0 = Instant::now();
    let full = train_adapter(&base.model, &train, &val, &cfg.train, pad, None, &mut Quiet)?;
    let epoch_seconds = t0.elapsed().as_secs_f64() / cfg.train.epochs.max(1) as f64;
    let train_loss = losses(&base.model, &train, Some(&full.adapter.hook()), pad, 64)?;
    let val_loss_full = losses(&base.model, &val, Some(&full.adapter.hook()), pad, 64)?;

    let mut method_scores = Vec::new();
    for &m in &cfg.methods {
        progress(EvalProgress::Phase(format!("{name}: attributing with {m}")));
        let t = Instant::now();
        let s = attribute_with(base, &full, &train, &val, cfg, m)?;
        method_scores.push((m, s, t.elapsed().as_secs_f64()));
    }

    // Subsets: random halves of the rows, and rows of random halves of the contributors.
    let mut rng = StdRng::seed_from_u64(cfg.kb.seed ^ SUBSET_STREAM);
    let contributors = cfg.kb.contributors.max(1);
    let mut row_subsets = Vec::new();
    let mut contrib_subsets = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..cfg.subsets {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut rng);
        idx.truncate(n / 2);
        idx.sort_unstable();
        row_subsets.push(idx);
        let cs = contributor_half(&mut rng, contributors);
        contrib_subsets.push(rows_of(kb, &cs));
        kept.push(cs);
    }
    // The group prediction of every subset (before the retrainings: it never sees them).
    progress(EvalProgress::Phase(format!("{name}: group predictions of {} subsets", 2 * cfg.subsets)));
    let t = Instant::now();
    let (train_grads, val_grads) = group_grads(base, &full.adapter, &train, &val)?;
    let damping = cfg.group_damping.unwrap_or(group::DEFAULT_DAMPING);
    let predictor = GroupPredictor::new(&train_grads, &val_grads, damping)?;
    let group_seconds = t.elapsed().as_secs_f64();
    // The same at the other epoch ends of the second half of training; the last epoch's checkpoint
    // is the attributed adapter, whose predictor is the one above.
    let t = Instant::now();
    // The training and validation rows' gradients at the end of epoch `e` (1-based).
    let grads_at = |e: usize| -> Result<_> {
        let adapter = &full.tracin[e - 1].0;
        let (tg, vg) = group_grads(base, adapter, &train, &val)?;
        Ok((e, adapter, tg, vg))
    };
    let epochs: Vec<usize> = checkpoint_epochs(full.tracin.len()).collect();
    let mut members = Vec::with_capacity(epochs.len());
    let mut checkpoint_grads = Vec::new();
    for &e in &epochs[..epochs.len().saturating_sub(1)] {
        let at = grads_at(e)?;
        members.push(GroupPredictor::new(&at.2, &at.3, damping)?);
        if cfg.gradients.is_some() {
            checkpoint_grads.push(at);
        }
    }
    members.push(predictor.clone());
    let ensemble = CheckpointEnsemble::new(members)?;
    let ensemble_seconds = group_seconds + t.elapsed().as_secs_f64();
    if let Some(dir) = &cfg.gradients {
        let chunk = AttributionConfig::new(Method::ExactBlock).chunk;
        let sampled = attribute::sampled_grads(&base.model, &full.adapter, &train, pad, chunk)?;
        let rows = RowLosses { train: &train_loss, val: &val_loss_full };
        write_gradients(&dir.join(name), &train_grads, &val_grads, Some(&sampled), rows)?;
        // Every earlier epoch end, so that other choices of checkpoints can be read from the files.
        let first = epochs.first().copied().unwrap_or(1);
        for e in 1..first {
            checkpoint_grads.push(grads_at(e)?);
        }
        for (e, adapter, tg, vg) in &checkpoint_grads {
            let train_loss = losses(&base.model, &train, Some(&adapter.hook()), pad, 64)?;
            let val_loss = losses(&base.model, &val, Some(&adapter.hook()), pad, 64)?;
            let rows = RowLosses { train: &train_loss, val: &val_loss };
            write_gradients(&dir.join(name).join(format!("epoch{e}")), tg, vg, None, rows)?;
        }
    }
    let t = Instant::now();
    let group_rows: Vec<Vec<f64>> = row_subsets.iter().map(|rows| predictor.predict(&kept_mask(n, rows))).collect::<Result<_>>()?;
    let group_contributor_rows: Vec<Vec<f64>> =
        contrib_subsets.iter().map(|rows| predictor.predict(&kept_mask(n, rows))).collect::<Result<_>>()?;
    let group_contributors: Vec<f64> = group_contributor_rows.iter().map(|rise| mean(rise)).collect();
    let group_predict_seconds = t.elapsed().as_secs_f64();
    let ensemble_rows: Vec<Vec<f64>> = row_subsets.iter().map(|rows| ensemble.predict(&kept_mask(n, rows))).collect::<Result<_>>()?;
    let ensemble_contributors: Vec<f64> = contrib_subsets
        .iter()
        .map(|rows| ensemble.predict(&kept_mask(n, rows)).map(|rise| mean(&rise)))
        .collect::<Result<_>>()?;

    let mut jobs = Vec::new();
    for (k, subsets) in [&row_subsets, &contrib_subsets].into_iter().enumerate() {
        for (j, rows) in subsets.iter().enumerate() {
            for replica in 0..2u64 {
                jobs.push(Retraining { rows: rows.clone(), seed: cfg.seeds.seed(cfg.train.seed, k, j, replica) });
            }
        }
    }
    progress(EvalProgress::Phase(format!("{name}: {} retrainings on {} threads", jobs.len(), cfg.threads)));
    let results = run_all(base, &train, &val, &cfg.train, &jobs, cfg.threads, progress)?;
    let s = cfg.subsets;
    let (mut ex_a, mut ex_b, mut cv_a, mut cv_b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, r) in results.into_iter().enumerate() {
        let (kind, replica) = (k / (2 * s), k % 2);
        match (kind, replica) {
            (0, 0) => ex_a.push(r),
            (0, _) => ex_b.push(r),
            (_, 0) => cv_a.push(r),
            _ => cv_b.push(r),
        }
    }
    let co_a: Vec<f64> = cv_a.iter().map(|r| mean(r)).collect();
    let co_b: Vec<f64> = cv_b.iter().map(|r| mean(r)).collect();
    // Each subset's loss measured twice, averaged.
    let halfway = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x + y) / 2.0).collect::<Vec<f64>>();
    let ex_m: Vec<Vec<f64>> = ex_a.iter().zip(&ex_b).map(|(a, b)| halfway(a, b)).collect();
    let co_m = halfway(&co_a, &co_b);
    // Every statistic once, on the subsets at `i`: the figures take every subset, the 95% intervals
    // the same resamples of them for every figure.
    let all: Vec<usize> = (0..s).collect();
    let boot = |stat: &dyn Fn(&[usize]) -> f64| bootstrap_interval(s, BOOTSTRAP_DRAWS, cfg.kb.seed ^ 0xb007, stat);
    let ceiling_ex_at = |i: &[usize]| lds_example(&pick(&ex_b, i), &pick(&ex_a, i));
    let ceiling_co_at = |i: &[usize]| spearman(&pick(&co_b, i), &pick(&co_a, i));
    let (ceiling_example, ceiling_contributor) = (ceiling_ex_at(&all), ceiling_co_at(&all));
    let ceiling_intervals = [boot(&ceiling_ex_at), boot(&ceiling_co_at)];
    // Every LDS against each seed's retrainings.
    let ex_at = |pred: &[Vec<f64>], i: &[usize]| {
        let p = pick(pred, i);
        [lds_example(&p, &pick(&ex_a, i)), lds_example(&p, &pick(&ex_b, i))]
    };
    let co_at = |pred: &[f64], i: &[usize]| {
        let p = pick(pred, i);
        [spearman(&p, &pick(&co_a, i)), spearman(&p, &pick(&co_b, i))]
    };
    let ex_each = |pred: &[Vec<f64>]| Against { each: ex_at(pred, &all), seed_mean: lds_example(pred, &ex_m) };
    let co_each = |pred: &[f64]| Against { each: co_at(pred, &all), seed_mean: spearman(pred, &co_m) };
    let co_interval = |pred: &[f64]| boot(&|i| mean(&co_at(pred, i)));
    let intervals = |rows: &[Vec<f64>], contributors: &[f64]| [boot(&|i| mean(&ex_at(rows, i))), co_interval(contributors)];

    let contributor_pred = |scores: &Scores| additive_prediction(scores, &contrib_subsets);
    let corrupted = corrupted_rows > 0;
    let mut methods = Vec::new();
    for (m, scores, seconds) in &method_scores {
        let inf = scores.row_influence();
        let neg: Vec<f64> = inf.iter().map(|x| -x).collect();
        let (by_row, by_contributor) = (predicted(scores, &row_subsets), contributor_pred(scores));
        methods.push(
            MethodFigures {
                name: m.name().to_string(),
                auc_influence: corrupted.then(|| auc(&neg, &labels)),
                auc_self: corrupted.then(|| auc(&scores.self_influence, &labels)),
                ..MethodFigures::lds(m.name(), ex_each(&by_row), co_each(&by_contributor))
            }
            .with_intervals(intervals(&by_row, &by_contributor))
            .with_cost(*seconds, epoch_seconds),
        );
    }
    methods.push(
        MethodFigures::lds(GROUP_ROW, ex_each(&group_rows), co_each(&group_contributors))
            .with_intervals(intervals(&group_rows, &group_contributors))
            .with_cost(group_seconds, epoch_seconds),
    );
    methods.push(
        MethodFigures::lds(CHECKPOINTS_ROW, ex_each(&ensemble_rows), co_each(&ensemble_contributors))
            .with_intervals(intervals(&ensemble_rows, &ensemble_contributors))
            .with_cost(ensemble_seconds, epoch_seconds),
    );
    methods.push(MethodFigures { auc_influence: corrupted.then(|| auc(&train_loss, &labels)), ..MethodFigures::named("training loss") });
    let mut rng = StdRng::seed_from_u64(cfg.kb.seed ^ 0xa11ce);
    let random = Scores {
        n_train: n,
        n_val: val.len(),
        pair: (0..n * val.len()).map(|_| rng.random::<f64>() - 0.5).collect(),
        self_influence: (0..n).map(|_| rng.random::<f64>()).collect(),
    };
    let (by_row, by_contributor) = (predicted(&random, &row_subsets), contributor_pred(&random));
    methods.push(
        MethodFigures {
            auc_influence: corrupted.then(|| auc(&random.row_influence(), &labels)),
            auc_self: corrupted.then(|| auc(&random.self_influence, &labels)),
            ..MethodFigures::lds("random", ex_each(&by_row), co_each(&by_contributor))
        }
        .with_intervals(intervals(&by_row, &by_contributor)),
    );
    // The oracle knows the falsified rows: a subset's loss rises with how many it keeps.
    let oracle_pred: Vec<f64> =
        contrib_subsets.iter().map(|rows| rows.iter().filter(|&&i| labels[i]).count() as f64).collect();
    let oracle = MethodFigures::named("oracle: falsified rows kept");
    methods.push(if corrupted {
        let Against { each, seed_mean } = co_each(&oracle_pred);
        MethodFigures {
            lds_contributor: Some(mean(&each)),
            lds_contributor_each: Some(each),
            lds_contributor_seed_mean: Some(seed_mean),
            lds_contributor_interval: Some(co_interval(&oracle_pred)),
            ..oracle
        }
    } else {
        oracle
    });
    let contributor_lds = ContributorLdsData {
        row_contributor: kb.train.iter().map(|r| r.contributor).collect(),
        row_region: kb.train.iter().map(|r| r.region).collect(),
        row_falsified: labels.clone(),
        row_question: kb.train.iter().map(|r| question_of(&r.prompt).name()).collect(),
        val_region: kb.val.iter().map(|r| r.region).collect(),
        val_question: kb.val.iter().map(|r| question_of(&r.prompt).name()).collect(),
        kept,
        loss: [co_a, co_b],
        group: group_contributors,
        group_checkpoints: ensemble_contributors,
        group_checkpoint_epochs: epochs,
        detail: Some(LdsDetail {
            val_loss: [cv_a, cv_b],
            val_loss_full,
            group: group_contributor_rows,
            pair: method_scores.iter().map(|(m, s, _)| (m.name().to_string(), s.pair.clone())).collect(),
        }),
    };
    Ok(ScenarioReport {
        name: name.to_string(),
        train_rows: n,
        corrupted_rows,
        val_rows: val.len(),
        contributors,
        base_val_loss: full.base_val_loss,
        trained_val_loss: full.final_val_loss,
        epoch_seconds,
        ceiling_example,
        ceiling_contributor,
        ceiling_intervals,
        methods,
        contributor_lds,
        retrainings: jobs.len(),
        group_predict_seconds,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Run the benchmark: the corrupted scenario, then the clean one.
pub fn run(base: &BaseModel, cfg: &EvalConfig, progress: &(dyn Fn(EvalProgress) + Sync)) -> Result<EvalReport> {
    if cfg.subsets < 2 {
        return Err(Error::InvalidArgument("LDS needs at least 2 subsets".into()));
    }
    // Every setting is checked before the first training, not minutes later.
    cfg.train.validate()?;
    for &m in &cfg.methods {
        cfg.attribution(m).validate()?;
    }
    if let Some(d) = cfg.group_damping {
        group::check_damping(d)?;
    }
    let started = Instant::now();
    let mut scenarios = Vec::new();
    for (name, frac) in [("corrupted", cfg.corrupt_frac), ("clean", 0.0)] {
        let kb = KbSpec { corrupt_frac: frac, ..cfg.kb.clone() }.generate();
        scenarios.push(scenario(name, base, &kb, cfg, progress)?);
    }
    Ok(EvalReport { config: cfg.clone(), scenarios, seconds: started.elapsed().as_secs_f64() })
}

/// A random half of `contributors` contributors, sorted.
fn contributor_half(rng: &mut StdRng, contributors: usize) -> Vec<usize> {
    let mut cs: Vec<usize> = (0..contributors).collect();
    cs.shuffle(rng);
    cs.truncate(contributors / 2);
    cs.sort_unstable();
    cs
}

/// `v`, sorted.
fn sorted(v: &[usize]) -> Vec<usize> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

/// `n` flags, set at `rows`.
fn kept_mask(n: usize, rows: &[usize]) -> Vec<bool> {
    let mut kept = vec![false; n];
    rows.iter().for_each(|&i| kept[i] = true);
    kept
}

/// Each subset's mean validation loss as `scores` predict it, up to a constant: minus the summed
/// influence of the rows it keeps (a method's contributor-level prediction).
fn additive_prediction(scores: &Scores, subsets: &[Vec<usize>]) -> Vec<f64> {
    let inf = scores.row_influence();
    subsets.iter().map(|rows| -rows.iter().map(|&i| inf[i]).sum::<f64>()).collect()
}

/// The training and validation rows' gradients under `adapter`, as the group prediction takes them.
fn group_grads(base: &BaseModel, adapter: &Adapter, train: &[Encoded], val: &[Encoded]) -> Result<(GradBlocks, GradBlocks)> {
    let (chunk, pad) = (AttributionConfig::new(Method::ExactBlock).chunk, base.tokenizer.eot());
    Ok((grads::per_example_grads(&base.model, adapter, train, pad, chunk)?, grads::per_example_grads(&base.model, adapter, val, pad, chunk)?))
}

/// The training rows of `kb` owned by the contributors in `kept` (sorted).
fn rows_of(kb: &KbDatanet, kept: &[usize]) -> Vec<usize> {
    (0..kb.train.len()).filter(|&i| kept.binary_search(&kb.train[i].contributor).is_ok()).collect()
}

/// Retrainings of a contributor-level datamodel (Ilyas et al. 2022): what a model of the loss fitted
/// to many retrainings can predict, the reference an attribution method is measured against.
#[derive(Debug, Clone, Serialize)]
pub struct ContributorRetrainings {
    /// The settings the retrainings ran under.
    pub config: EvalConfig,
    /// Which of the two retraining seeds of the eval every subset was trained from (0 or 1).
    pub replica: u64,
    /// The seed the subsets were drawn from (the eval's own subsets come from another stream).
    pub draw_seed: u64,
    /// Contributors kept by each retraining (sorted).
    pub kept: Vec<Vec<usize>>,
    /// Each validation row's loss under each retraining.
    pub val_loss: Vec<Vec<f64>>,
    /// Wall seconds.
    pub seconds: f64,
}

/// Retrain the corrupted scenario of `cfg` on `subsets` random halves of the contributors, drawn
/// from `draw_seed`, each from the eval's retraining seed `replica` (with common seeds, 0 is the
/// attributed run's own seed, 1 the other one), and measure every validation row
/// ([`retrain_contributors`]). A model fitted to these can be scored on an eval report's own subsets
/// (`bench/datamodel_bound.py`). `draw_seed` may not be the stream the eval draws its subsets from.
pub fn contributor_retrainings(
    base: &BaseModel,
    cfg: &EvalConfig,
    subsets: usize,
    draw_seed: u64,
    replica: u64,
    progress: &(dyn Fn(EvalProgress) + Sync),
) -> Result<ContributorRetrainings> {
    if draw_seed == cfg.kb.seed ^ SUBSET_STREAM {
        return Err(Error::InvalidArgument(format!(
            "draw seed {draw_seed} is the eval's own subset stream for datanet seed {}; pick another",
            cfg.kb.seed
        )));
    }
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(draw_seed);
    let kept: Vec<Vec<usize>> = (0..subsets).map(|_| contributor_half(&mut rng, cfg.kb.contributors.max(1))).collect();
    let val_loss = retrain_contributors(base, cfg, &kept, replica, progress)?;
    Ok(ContributorRetrainings {
        config: cfg.clone(),
        replica,
        draw_seed,
        kept,
        val_loss,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Retrain the corrupted scenario of `cfg` on the rows of each set of contributors in `kept`, exactly
/// as [`run`] retrains its contributor-level subsets: the same datanet, training settings and seeds
/// (the `j`-th set gets the seed of the eval's `j`-th contributor subset and retraining `replica`, 0 or
/// 1). Returns every validation row's loss under each retraining; on the eval's own subsets these
/// are the report's `detail.val_loss[replica]`, to the bit.
pub fn retrain_contributors(
    base: &BaseModel,
    cfg: &EvalConfig,
    kept: &[Vec<usize>],
    replica: u64,
    progress: &(dyn Fn(EvalProgress) + Sync),
) -> Result<Vec<Vec<f64>>> {
    if replica > 1 {
        return Err(Error::InvalidArgument(format!("retraining seed {replica}: the eval has two, 0 and 1")));
    }
    cfg.train.validate()?;
    let kb = KbSpec { corrupt_frac: cfg.corrupt_frac, ..cfg.kb.clone() }.generate();
    check_contributors(cfg, kept)?;
    let tok = &base.tokenizer;
    let (train, val) = (encode(tok, &kb.train)?, encode(tok, &kb.val)?);
    let jobs: Vec<Retraining> = kept
        .iter()
        .enumerate()
        .map(|(j, cs)| {
            Retraining { rows: rows_of(&kb, &sorted(cs)), seed: cfg.seeds.seed(cfg.train.seed, 1, j, replica) }
        })
        .collect();
    run_all(base, &train, &val, &cfg.train, &jobs, cfg.threads, progress)
}

/// What the attributed run predicts for sets of kept contributors (see [`contributor_predictions`]).
#[derive(Debug, Clone, Serialize)]
pub struct ContributorPredictions {
    /// The settings.
    pub config: EvalConfig,
    /// Contributors kept by each subset.
    pub kept: Vec<Vec<usize>>,
    /// The group prediction of each subset: the predicted rise of the mean validation loss (the
    /// `exact-block (group)` row).
    pub group: Vec<f64>,
    /// Each method's additive prediction of each subset's mean validation loss, up to a constant
    /// (minus the kept rows' summed influence; the method's row of the table).
    pub additive: Vec<(String, Vec<f64>)>,
}

/// The corrupted scenario's attributed run (trained on every row, as [`run`] trains it) and what
/// it predicts for the subsets in `kept` — the group prediction and each of `cfg.methods`' additive
/// prediction — so that they can be scored on as many retrainings as [`contributor_retrainings`] makes
/// (`bench/datamodel_bound.py --predictions`). On the eval's own subsets they are the report's.
pub fn contributor_predictions(base: &BaseModel, cfg: &EvalConfig, kept: &[Vec<usize>]) -> Result<ContributorPredictions> {
    cfg.train.validate()?;
    for &m in &cfg.methods {
        cfg.attribution(m).validate()?;
    }
    let kb = KbSpec { corrupt_frac: cfg.corrupt_frac, ..cfg.kb.clone() }.generate();
    check_contributors(cfg, kept)?;
    let (train, val) = (encode(&base.tokenizer, &kb.train)?, encode(&base.tokenizer, &kb.val)?);
    let pad = base.tokenizer.eot();
    let full = train_adapter(&base.model, &train, &val, &cfg.train, pad, None, &mut Quiet)?;
    let subsets: Vec<Vec<usize>> = kept.iter().map(|cs| rows_of(&kb, &sorted(cs))).collect();
    let (train_grads, val_grads) = group_grads(base, &full.adapter, &train, &val)?;
    let predictor = GroupPredictor::new(&train_grads, &val_grads, cfg.group_damping.unwrap_or(group::DEFAULT_DAMPING))?;
    let group = subsets.iter().map(|rows| predictor.predict(&kept_mask(train.len(), rows)).map(|rise| mean(&rise))).collect::<Result<_>>()?;
    let mut additive = Vec::new();
    for &m in &cfg.methods {
        let scores = attribute_with(base, &full, &train, &val, cfg, m)?;
        additive.push((m.name().to_string(), additive_prediction(&scores, &subsets)));
    }
    Ok(ContributorPredictions { config: cfg.clone(), kept: kept.to_vec(), group, additive })
}

/// Refuse a contributor the datanet of `cfg` does not have.
fn check_contributors(cfg: &EvalConfig, kept: &[Vec<usize>]) -> Result<()> {
    match kept.iter().flatten().find(|&&c| c >= cfg.kb.contributors) {
        Some(bad) => Err(Error::InvalidArgument(format!("contributor {bad}: the datanet has {}", cfg.kb.contributors))),
        None => Ok(()),
    }
}

fn fmt_opt(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.2}"),
        _ => "–".into(),
    }
}

/// The methods that have a figure `get` gives (`[example, contributor]`, each a value — a pair of
/// seeds, an interval, one number — or none), with the corrupted and clean scenarios' figures
/// formatted by `fmt` ("–" where missing).
fn pair_figures<'a, T>(
    corrupted: &'a ScenarioReport,
    clean: &'a ScenarioReport,
    get: impl Fn(&MethodFigures) -> [Option<T>; 2],
    fmt: impl Fn(T) -> String,
) -> Vec<(&'a str, [String; 4])> {
    let text = |x: Option<T>| x.map_or_else(|| "–".to_string(), &fmt);
    corrupted
        .methods
        .iter()
        .zip(&clean.methods)
        .filter_map(|(mc, mk)| {
            let ([e, c], [ke, kc]) = (get(mc), get(mk));
            (e.is_some() || c.is_some()).then(|| (mc.name.as_str(), [text(e), text(c), text(ke), text(kc)]))
        })
        .collect()
}

fn fmt_frac(x: Option<f64>, ceiling: f64) -> String {
    match x {
        Some(v) if v.is_finite() && ceiling > 0.0 => format!("{v:.2} ({:.0}%)", 100.0 * v / ceiling),
        other => fmt_opt(other),
    }
}

impl EvalReport {
    /// The report without the per-validation-row detail (a few hundred kilobytes per method): what
    /// `--format json` prints; `--output` keeps everything.
    pub fn without_detail(mut self) -> Self {
        for s in &mut self.scenarios {
            s.contributor_lds.detail = None;
        }
        self
    }

    /// The results as one Markdown table: every method and baseline, both scenarios side by side.
    pub fn markdown(&self) -> String {
        let (Some(c), Some(k)) = (self.scenarios.first(), self.scenarios.get(1)) else { return String::new() };
        let mut out = String::new();
        out.push_str(
            "| method | AUC train→val | AUC self-infl. | example LDS (of ceiling) | contributor LDS (of ceiling) | clean: example LDS | clean: contributor LDS | cost (epochs) |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|\n");
        for (mc, mk) in c.methods.iter().zip(&k.methods) {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                mc.name,
                fmt_opt(mc.auc_influence),
                fmt_opt(mc.auc_self),
                fmt_frac(mc.lds_example, c.ceiling_example),
                fmt_frac(mc.lds_contributor, c.ceiling_contributor),
                fmt_frac(mk.lds_example, k.ceiling_example),
                fmt_frac(mk.lds_contributor, k.ceiling_contributor),
                mc.cost_epochs.map(|x| format!("{x:.2}×")).unwrap_or_else(|| "–".into()),
            ));
        }
        out.push_str(&format!(
            "| noise ceiling (2nd seed) | – | – | {:.2} | {:.2} | {:.2} | {:.2} | – |\n",
            c.ceiling_example, c.ceiling_contributor, k.ceiling_example, k.ceiling_contributor
        ));
        // One paragraph listing every method's four figures: `head:` then `name: e, c, clean e, c;`….
        let paragraph = |out: &mut String, head: &str, rows: Vec<(&str, [String; 4])>| {
            out.push_str(head);
            for (name, [e, c, ke, kc]) in rows {
                out.push_str(&format!(" {name}: {e}, {c}, clean {ke}, {kc};"));
            }
            out.pop();
            out.push_str(".\n");
        };
        let each = |[a, b]: [f64; 2]| format!("{a:.2}/{b:.2}");
        paragraph(
            &mut out,
            "\nEach LDS above is the mean of the LDS against the first and against the second seed's retrainings:",
            pair_figures(c, k, |f| [f.lds_example_each, f.lds_contributor_each], each),
        );
        paragraph(
            &mut out,
            "\nAgainst the mean of each subset's two retrainings (half the seed noise in the measured loss; no ceiling measured):",
            pair_figures(c, k, |f| [f.lds_example_seed_mean, f.lds_contributor_seed_mean], |x: f64| format!("{x:.2}")),
        );
        out.push_str(&format!(
            "\n95% bootstrap intervals (the {} subsets resampled {BOOTSTRAP_DRAWS} times, the same resamples for every row):\n\n",
            self.config.subsets
        ));
        out.push_str("| method | example LDS | contributor LDS | clean: example LDS | clean: contributor LDS |\n|---|---|---|---|---|\n");
        let span = |[lo, hi]: [f64; 2]| format!("{lo:.2} – {hi:.2}");
        for (name, [e, c, ke, kc]) in pair_figures(c, k, |f| [f.lds_example_interval, f.lds_contributor_interval], span) {
            out.push_str(&format!("| {name} | {e} | {c} | {ke} | {kc} |\n"));
        }
        let [[ce, cc], [ke, kc]] = [c, k].map(|s| s.ceiling_intervals.map(span));
        out.push_str(&format!("| noise ceiling (2nd seed) | {ce} | {cc} | {ke} | {kc} |\n"));
        out.push_str(&format!(
            "\n{} training rows ({} falsified in the corrupted scenario), {} validation rows, {} contributors; \
             training: {} epochs of {}-row batches{}; validation loss {:.3} → {:.3} (corrupted) / {:.3} → {:.3} (clean); \
             one epoch {:.2}s; {} + {} retrainings, seeds {}; {:.0}s in all; \
             exact-block's curvature: {}; the group prediction's cost counts building it, and predicting {} subsets took \
             {:.2}s / {:.2}s more; the checkpoint row sums it over the ends of epochs {:?}, at one group predictor's cost per \
             checkpoint.\n",
            c.train_rows,
            c.corrupted_rows,
            c.val_rows,
            c.contributors,
            self.config.train.epochs,
            self.config.train.batch_size,
            match self.config.train.group_by_length {
                0 => String::new(),
                k => format!(", grouped by length in groups of {k} batches"),
            },
            c.base_val_loss,
            c.trained_val_loss,
            k.base_val_loss,
            k.trained_val_loss,
            c.epoch_seconds,
            c.retrainings,
            k.retrainings,
            self.config.seeds,
            self.seconds,
            self.config.curvature,
            2 * self.config.subsets,
            c.group_predict_seconds,
            k.group_predict_seconds,
            c.contributor_lds.group_checkpoint_epochs
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_apply_and_a_bad_value_names_its_variable() -> Result<()> {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let mut cfg = EvalConfig::default();
        cfg.override_from(vars(&[]))?;
        assert_eq!(serde_json::to_value(&cfg)?, serde_json::to_value(EvalConfig::default())?, "no variables, no change");
        cfg.override_from(vars(&[
            ("TRIBUTARY_EVAL_TRAIN", r#"{"epochs":3}"#),
            ("TRIBUTARY_EVAL_KB", r#"{"seed":12,"regions":4,"train_rows":40,"val_per_region":2,"contributors":6,"corrupt_frac":0.2}"#),
            ("TRIBUTARY_EVAL_DAMPING", "0.5"),
            ("TRIBUTARY_EVAL_GROUP_DAMPING", "3"),
            ("TRIBUTARY_EVAL_SEEDS", "independent"),
            ("TRIBUTARY_EVAL_THREADS", "1"),
            ("TRIBUTARY_EVAL_GRADIENTS", "grads"),
            ("TRIBUTARY_EVAL_METHODS", "exact-block,graddot"),
        ]))?;
        assert_eq!((cfg.train.epochs, cfg.train.lr), (3, TrainConfig::default().lr), "unnamed fields keep their defaults");
        assert_eq!((cfg.kb.seed, cfg.kb.contributors), (12, 6));
        assert_eq!((cfg.damping, cfg.group_damping, cfg.seeds, cfg.threads), (Some(0.5), Some(3.0), RetrainSeeds::Independent, 1));
        assert_eq!(cfg.gradients.as_deref(), Some(Path::new("grads")));
        assert_eq!(cfg.methods, [Method::ExactBlock, Method::GradDot]);
        for (name, value) in [
            ("TRIBUTARY_EVAL_THREADS", "two"),
            ("TRIBUTARY_EVAL_DAMPING", "1e"),
            ("TRIBUTARY_EVAL_SEEDS", "shared"),
            ("TRIBUTARY_EVAL_METHODS", "exact-block,shapley"),
            ("TRIBUTARY_EVAL_TRAIN", "{\"epochs\":"),
        ] {
            let err = EvalConfig::default().override_from(|n: &str| (n == name).then(|| value.to_string())).expect_err(name);
            assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains(name), "{name}={value}: {err}");
        }
        Ok(())
    }

    #[test]
    fn npy_matrices_have_numpys_header_and_row_major_payload() -> Result<()> {
        let data: Vec<f32> = (0..6).map(|x| x as f32 * 0.5).collect();
        let bytes = npy_f32(2, 3, &data)?;
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        // NumPy requires the payload to start on a 64-byte boundary, after a newline.
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + len]).map_err(|e| Error::Internal(e.to_string()))?;
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"), "{header}");
        assert!(header.ends_with('\n'));
        let payload: Vec<f32> =
            bytes[10 + len..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(payload, data);
        assert!(npy_f32(2, 2, &data).is_err(), "a shape that does not fit the values is refused");
        Ok(())
    }

    #[test]
    fn common_seeds_rerun_the_attributed_run_and_one_other_seed() -> Result<()> {
        let run = TrainConfig::default().seed;
        for kind in 0..2 {
            for subset in 0..20 {
                assert_eq!(RetrainSeeds::Common.seed(run, kind, subset, 0), run);
                assert_eq!(RetrainSeeds::Common.seed(run, kind, subset, 1), RetrainSeeds::Common.seed(run, 0, 0, 1));
            }
        }
        assert_ne!(RetrainSeeds::Common.seed(run, 0, 0, 1), run);
        let mut independent: Vec<u64> = (0..2)
            .flat_map(|kind| (0..20).flat_map(move |j| (0..2).map(move |r| RetrainSeeds::Independent.seed(run, kind, j, r))))
            .collect();
        independent.push(run);
        let n = independent.len();
        independent.sort_unstable();
        independent.dedup();
        assert_eq!(independent.len(), n, "every independent retraining has its own seed, none the run's");
        assert_eq!("common".parse::<RetrainSeeds>()?, RetrainSeeds::Common);
        assert_eq!(RetrainSeeds::Independent.to_string().parse::<RetrainSeeds>()?, RetrainSeeds::Independent);
        match "fresh".parse::<RetrainSeeds>() {
            Err(e) => assert!(e.to_string().contains("common or independent"), "{e}"),
            Ok(s) => panic!("\"fresh\" parsed as {s}"),
        }
        Ok(())
    }

    #[test]
    fn bootstrap_intervals_bracket_the_figure_and_narrow_with_more_subsets() {
        assert_eq!(quantile(&[0.0, 1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert!((quantile(&[0.0, 1.0, 2.0, 3.0, 4.0], 0.025) - 0.1).abs() < 1e-12);
        assert!(quantile(&[], 0.5).is_nan());
        // A prediction that ranks every subset right stays at 1 on every resample.
        let x: Vec<f64> = (0..50).map(|i| i as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| v * v).collect();
        let [lo, hi] = bootstrap_interval(50, 200, 1, |i| spearman(&pick(&x, i), &pick(&y, i)));
        assert!(lo > 0.999 && hi <= 1.0 + 1e-12, "{lo} {hi}");
        // A noisy one: the interval holds the full-sample figure and shrinks as subsets are added.
        let mut rng = StdRng::seed_from_u64(5);
        let x: Vec<f64> = (0..400).map(|_| rng.random::<f64>()).collect();
        let y: Vec<f64> = x.iter().map(|v| v + rng.random::<f64>()).collect();
        let width = |n: usize| {
            let full = spearman(&x[..n], &y[..n]);
            let [lo, hi] = bootstrap_interval(n, 500, 2, |i| spearman(&pick(&x, i), &pick(&y, i)));
            assert!(lo < full && full < hi, "{lo} < {full} < {hi} with {n} subsets");
            assert_eq!([lo, hi], bootstrap_interval(n, 500, 2, |i| spearman(&pick(&x, i), &pick(&y, i))), "seeded");
            hi - lo
        };
        let (narrow, wide) = (width(400), width(25));
        assert!(narrow < wide / 2.0, "400 subsets give {narrow}, 25 give {wide}");
    }
}
