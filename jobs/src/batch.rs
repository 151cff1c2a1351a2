//! Batching encoded rows and the per-example language-model loss.
//!
//! Rows are right-padded to the longest row of the batch. Causal attention alone keeps padding
//! from reaching real tokens (padding only ever follows them), and the loss mask removes padded
//! positions, so no attention mask is needed for training batches.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::model::{LlamaModel, LoraHook, ModelInput};
use crate::tokenizer::Encoded;

/// The share of the tokens of padded `batches` of `rows` (indices into `rows`) that is padding:
/// each batch is padded to its longest row.
pub fn padding_share(rows: &[Encoded], batches: &[Vec<usize>]) -> f64 {
    let real: usize = batches.iter().flatten().map(|&i| rows[i].tokens.len()).sum();
    let padded: usize = batches.iter().map(|b| b.len() * b.iter().map(|&i| rows[i].tokens.len()).max().unwrap_or(0)).sum();
    if padded == 0 { 0.0 } else { (padded - real) as f64 / padded as f64 }
}

/// A padded batch: inputs, next-token targets and the loss mask.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Model input (`tokens[..n-1]` of each row).
    pub input: ModelInput,
    /// Next-token targets (`tokens[1..]`), `[batch, seq]`.
    pub targets: Tensor<2, Int>,
    /// 1 where the target counts in the loss, `[batch, seq]`.
    pub mask: Tensor<2>,
    /// Loss tokens per row (at least 1), `[batch, 1]`.
    pub counts: Tensor<2>,
}

impl Batch {
    /// Pad `rows` into one batch. `pad` fills padded positions (it never counts in the loss).
    pub fn new(rows: &[&Encoded], pad: u32, device: &Device) -> Batch {
        let b = rows.len();
        let t = rows.iter().map(|r| r.tokens.len().saturating_sub(1)).max().unwrap_or(0).max(1);
        let mut tokens = vec![pad as i64; b * t];
        let mut targets = vec![pad as i64; b * t];
        let mut mask = vec![0f32; b * t];
        let mut counts = vec![0f32; b];
        for (i, r) in rows.iter().enumerate() {
            let n = r.tokens.len();
            for j in 0..n.saturating_sub(1) {
                tokens[i * t + j] = r.tokens[j] as i64;
                targets[i * t + j] = r.tokens[j + 1] as i64;
                if r.loss_mask[j + 1] {
                    mask[i * t + j] = 1.0;
                    counts[i] += 1.0;
                }
            }
            counts[i] = counts[i].max(1.0);
        }
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(tokens, [b, t]), device);
        Batch {
            input: ModelInput::causal(tokens, 0),
            targets: Tensor::from_data(TensorData::new(targets, [b, t]), device),
            mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
            counts: Tensor::from_data(TensorData::new(counts, [b, 1]), device),
        }
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.targets.dims()[0]
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which next tokens the loss scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets<'a> {
    /// The row's own tokens (the training loss).
    Observed,
    /// Tokens drawn from the model's own predictive distribution at each position. Row `b` of the
    /// batch draws from its own stream, seeded `streams[b]`; callers derive a row's stream from its
    /// index in the whole set, so its targets do not depend on how rows are chunked or ordered.
    /// Gradients of this loss have the Gauss–Newton matrix (the true Fisher) as their expected
    /// outer product, unlike the observed-token gradients (the empirical Fisher).
    Sampled(&'a [u64]),
}

/// Mean token cross-entropy of each row over its loss tokens, `[batch]`.
pub fn per_example_loss(model: &LlamaModel, batch: &Batch, lora: Option<&dyn LoraHook>) -> Tensor<1> {
    let logp = log_probs(model, batch, lora);
    masked_nll(logp, batch.targets.clone(), batch)
}

/// [`per_example_loss`] with observed or sampled targets (sampling reads the distribution back
/// from the device, hence the `Result`).
pub fn per_example_loss_with(
    model: &LlamaModel,
    batch: &Batch,
    lora: Option<&dyn LoraHook>,
    targets: Targets<'_>,
) -> crate::Result<Tensor<1>> {
    let logp = log_probs(model, batch, lora);
    let targets = match targets {
        Targets::Observed => batch.targets.clone(),
        Targets::Sampled(streams) => sample_targets(&logp, streams, &batch.targets.device())?,
    };
    Ok(masked_nll(logp, targets, batch))
}

fn log_probs(model: &LlamaModel, batch: &Batch, lora: Option<&dyn LoraHook>) -> Tensor<3> {
    log_softmax(model.forward_logits(batch.input.clone(), None, lora), 2)
}

/// `-mean log p(target)` over each row's loss positions.
fn masked_nll(logp: Tensor<3>, targets: Tensor<2, Int>, batch: &Batch) -> Tensor<1> {
    let [b, t, _] = logp.dims();
    let picked = logp.gather(2, targets.reshape([b, t, 1])).reshape([b, t]);
    let nll = (picked * batch.mask.clone()).sum_dim(1).neg() / batch.counts.clone();
    nll.reshape([b])
}

/// One token per position drawn from `exp(logp)`, row `b` from the stream seeded `streams[b]`.
fn sample_targets(logp: &Tensor<3>, streams: &[u64], device: &Device) -> crate::Result<Tensor<2, Int>> {
    use rand::{Rng, SeedableRng};
    let [b, t, v] = logp.dims();
    if streams.len() != b {
        return Err(crate::Error::Internal(format!("{} sampling streams for {b} rows", streams.len())));
    }
    let values = logp
        .clone()
        .inner()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| crate::Error::Internal(format!("reading log-probabilities: {e:?}")))?;
    let mut out = Vec::with_capacity(b * t);
    for (row, &stream) in values.chunks_exact(t * v).zip(streams) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(stream);
        for dist in row.chunks_exact(v) {
            let u: f64 = rng.random();
            let mut acc = 0.0f64;
            let mut pick = v - 1;
            for (k, lp) in dist.iter().enumerate() {
                acc += f64::from(lp.exp());
                if acc >= u {
                    pick = k;
                    break;
                }
            }
            out.push(pick as i64);
        }
    }
    Ok(Tensor::from_data(TensorData::new(out, [b, t]), device))
}

/// Per-row losses of `rows` under `model` + `lora`, in chunks of `chunk` rows (no gradients).
pub fn losses(
    model: &LlamaModel,
    rows: &[Encoded],
    lora: Option<&dyn LoraHook>,
    pad: u32,
    chunk: usize,
) -> crate::Result<Vec<f64>> {
    let device = model.device();
    let mut out = Vec::with_capacity(rows.len());
    for part in rows.chunks(chunk.max(1)) {
        let refs: Vec<&Encoded> = part.iter().collect();
        let batch = Batch::new(&refs, pad, &device);
        let l = per_example_loss(model, &batch, lora);
        let v = l
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| crate::Error::Internal(format!("reading losses: {e:?}")))?;
        out.extend(v.into_iter().map(f64::from));
    }
    Ok(out)
}
