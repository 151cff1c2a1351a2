//! The Llama-style decoder: RMSNorm, rotary position embeddings (Hugging Face's rotate-half
//! convention), grouped-query attention, a SwiGLU MLP, tied or untied output embeddings.
//!
//! The weights are plain tensors, not Burn `Param`s: a base model is loaded from a Hugging Face
//! checkpoint, shared read-only by every adapter, and trained only by `base-model init` (which
//! marks them as gradient leaves itself). Linear weights are stored transposed from the checkpoint
//! (`[in, out]`, so a projection is `x·W`); one-dimensional weights (norms, biases) are stored as
//! `[1, n]` rows so that every weight is a rank-2 tensor and one visitor reaches them all.
//!
//! Every projection calls the [`LoraHook`] after its base matmul and adds whatever low-rank update
//! the hook returns. The update is never merged into the base weight, which is what lets a batch
//! carry a different adapter per row (see [`super::lora::LoraWeights::PerRow`]).

use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::embedding;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::config::LlamaConfig;
use super::lora::{LoraHook, LoraTarget};

/// How a stored weight relates to its Hugging Face tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Stored as in the checkpoint (the embedding matrix `[vocab, hidden]`).
    Same,
    /// A linear weight: stored `[in, out]`, the checkpoint holds `[out, in]`.
    Transposed,
    /// A vector (norm weight, bias): stored `[1, n]`, the checkpoint holds `[n]`.
    Row,
}

/// A projection `y = x·W (+ b)`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[in, out]`.
    pub weight: Tensor<2>,
    /// `[1, out]`, when the checkpoint has a bias (Qwen2's q/k/v projections).
    pub bias: Option<Tensor<2>>,
}

impl Linear {
    /// Apply to `x: [batch, seq, in]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let y = matmul_2d(x, &self.weight);
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<3>(),
            None => y,
        }
    }
}

/// `x: [batch, seq, in] · w: [in, out]` as one `[batch·seq, in]` matrix product.
pub fn matmul_2d(x: Tensor<3>, w: &Tensor<2>) -> Tensor<3> {
    let [b, t, i] = x.dims();
    let o = w.dims()[1];
    x.reshape([b * t, i]).matmul(w.clone()).reshape([b, t, o])
}

/// Root-mean-square layer norm with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// `[1, hidden]`.
    pub weight: Tensor<2>,
    /// Added to the mean square before the square root.
    pub eps: f64,
}

impl RmsNorm {
    /// Normalize the last dimension of `x: [batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let inv = x.clone().powi_scalar(2).mean_dim(2).add_scalar(self.eps).sqrt().recip();
        x * inv * self.weight.clone().unsqueeze::<3>()
    }
}

/// Attention projections of one layer.
#[derive(Debug, Clone)]
pub struct Attention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub o_proj: Linear,
}

/// SwiGLU MLP of one layer: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// Gate projection.
    pub gate_proj: Linear,
    /// Up projection.
    pub up_proj: Linear,
    /// Down projection.
    pub down_proj: Linear,
}

/// One pre-norm decoder block.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Attention.
    pub self_attn: Attention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// MLP.
    pub mlp: Mlp,
}

/// Keys and values of the tokens seen so far, per layer: `[batch, kv_heads, seen, head_dim]`.
///
/// A plain concatenating cache: each forward appends its keys and values. All rows of a batch
/// share the same number of cached positions; callers with ragged rows pass an explicit mask.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        KvCache::default()
    }

    /// Positions cached so far (0 when empty).
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map(|(k, _)| k.dims()[2]).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A cache holding these keys and values per layer (`[batch, kv_heads, seen, head_dim]`), for
    /// callers that manage rows themselves (the serving tier's continuous batching).
    pub fn from_layers(layers: Vec<(Tensor<4>, Tensor<4>)>) -> KvCache {
        KvCache { layers: layers.into_iter().map(Some).collect() }
    }

    /// The cached keys and values per layer.
    pub fn into_layers(self) -> Vec<(Tensor<4>, Tensor<4>)> {
        self.layers.into_iter().flatten().collect()
    }

    fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }
}

/// One forward pass's input.
#[derive(Debug, Clone)]
pub struct ModelInput {
    /// Token ids, `[batch, seq]`.
    pub tokens: Tensor<2, Int>,
    /// Absolute position of each token, `[batch, seq]` (rotary embeddings).
    pub positions: Tensor<2, Int>,
    /// `[batch, 1, seq, cached + seq]`, `true` where a query must not see a key. `None` means
    /// causal attention over the cache and the new tokens, the same for every row.
    pub mask: Option<Tensor<4, Bool>>,
}

impl ModelInput {
    /// Causal input: row `b`'s token `t` sits at position `offset + t`.
    pub fn causal(tokens: Tensor<2, Int>, offset: usize) -> ModelInput {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let pos: Vec<i64> = (0..b).flat_map(|_| (0..t).map(|i| (offset + i) as i64)).collect();
        let positions = Tensor::<2, Int>::from_data(TensorData::new(pos, [b, t]), &device);
        ModelInput { tokens, positions, mask: None }
    }
}

/// Rotary tables: `cos`/`sin` of `position · inv_freq`, `[max_positions, head_dim / 2]`.
#[derive(Debug, Clone)]
struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    fn new(config: &LlamaConfig, device: &Device) -> Rope {
        let half = config.head_dim() / 2;
        let max = config.max_position_embeddings.max(1);
        // Same arithmetic as Hugging Face: inv_freq and the angles in f32.
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / (config.rope_theta as f32).powf((2 * i) as f32 / config.head_dim() as f32))
            .collect();
        let mut cos = Vec::with_capacity(max * half);
        let mut sin = Vec::with_capacity(max * half);
        for p in 0..max {
            for f in &inv {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Rope {
            cos: Tensor::from_data(TensorData::new(cos, [max, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max, half]), device),
        }
    }

    /// The tables at `positions: [batch, seq]`, shaped `[batch, 1, seq, half]`.
    fn at(&self, positions: &Tensor<2, Int>) -> (Tensor<4>, Tensor<4>) {
        let [b, t] = positions.dims();
        let idx = positions.clone().reshape([b * t]);
        let half = self.cos.dims()[1];
        let c = self.cos.clone().select(0, idx.clone()).reshape([b, 1, t, half]);
        let s = self.sin.clone().select(0, idx).reshape([b, 1, t, half]);
        (c, s)
    }
}

/// Rotate `x: [batch, heads, seq, head_dim]` by the tables (rotate-half convention).
fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let r1 = x1.clone() * cos.clone() - x2.clone() * sin.clone();
    let r2 = x2 * cos.clone() + x1 * sin.clone();
    Tensor::cat(vec![r1, r2], 3)
}

/// A Llama-family causal language model.
#[derive(Debug, Clone)]
pub struct LlamaModel {
    /// The shape.
    pub config: LlamaConfig,
    /// `[vocab, hidden]`.
    pub embed_tokens: Tensor<2>,
    /// The decoder blocks.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// `[hidden, vocab]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Tensor<2>>,
    rope: Rope,
}

fn lora_add(y: Tensor<3>, hook: Option<&dyn LoraHook>, layer: usize, target: LoraTarget, x: &Tensor<3>) -> Tensor<3> {
    match hook.and_then(|h| h.delta(layer, target, x)) {
        Some(d) => y + d,
        None => y,
    }
}

impl LlamaModel {
    /// Assemble a model from its parts (the loader and `base-model init` use this).
    pub fn from_parts(
        config: LlamaConfig,
        embed_tokens: Tensor<2>,
        layers: Vec<DecoderLayer>,
        norm: RmsNorm,
        lm_head: Option<Tensor<2>>,
    ) -> LlamaModel {
        let rope = Rope::new(&config, &embed_tokens.device());
        LlamaModel { config, embed_tokens, layers, norm, lm_head, rope }
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.embed_tokens.device()
    }

    /// Run the decoder and return the final hidden states `[batch, seq, hidden]` (after the final
    /// norm). Appends to `cache` when given. `lora` supplies low-rank updates per projection.
    pub fn forward(&self, input: ModelInput, mut cache: Option<&mut KvCache>, lora: Option<&dyn LoraHook>) -> Tensor<3> {
        let [b, t] = input.tokens.dims();
        let cfg = &self.config;
        let (h, kvh, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let groups = h / kvh;
        let offset = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let (cos, sin) = self.rope.at(&input.positions);
        let mask = match input.mask {
            Some(m) => m,
            None => causal_mask(t, offset, &self.device()),
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let mut x = embedding(self.embed_tokens.clone(), input.tokens);
        for (li, layer) in self.layers.iter().enumerate() {
            let a = &layer.self_attn;
            let hn = layer.input_layernorm.forward(x.clone());
            let q = lora_add(a.q_proj.forward(hn.clone()), lora, li, LoraTarget::Q, &hn);
            let k = lora_add(a.k_proj.forward(hn.clone()), lora, li, LoraTarget::K, &hn);
            let v = lora_add(a.v_proj.forward(hn.clone()), lora, li, LoraTarget::V, &hn);
            let q = apply_rope(q.reshape([b, t, h, hd]).swap_dims(1, 2), &cos, &sin);
            let k = apply_rope(k.reshape([b, t, kvh, hd]).swap_dims(1, 2), &cos, &sin);
            let v = v.reshape([b, t, kvh, hd]).swap_dims(1, 2);
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.append(li, k, v),
                None => (k, v),
            };
            let s = k.dims()[2];
            // Grouped-query attention without copying K/V once per query head: query head
            // `g·groups + j` reads KV head `g`, so the queries are regrouped as
            // `[b, kvh, groups·t, hd]` against K/V `[b, kvh, s, hd]` (the cache is read in place).
            let q = q.reshape([b, kvh, groups * t, hd]);
            let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale).reshape([b, kvh, groups, t, s]);
            let [mb, _, mt, ms] = mask.dims();
            let m = mask.clone().reshape([mb, 1, 1, mt, ms]).expand([b, kvh, groups, t, s]);
            let probs = softmax(scores.mask_fill(m, -1.0e9), 4).reshape([b, kvh, groups * t, s]);
            let ctx = probs.matmul(v).reshape([b, h, t, hd]).swap_dims(1, 2).reshape([b, t, h * hd]);
            let o = lora_add(a.o_proj.forward(ctx.clone()), lora, li, LoraTarget::O, &ctx);
            x = x + o;

            let m = &layer.mlp;
            let hn = layer.post_attention_layernorm.forward(x.clone());
            let gate = lora_add(m.gate_proj.forward(hn.clone()), lora, li, LoraTarget::Gate, &hn);
            let up = lora_add(m.up_proj.forward(hn.clone()), lora, li, LoraTarget::Up, &hn);
            let act = silu(gate) * up;
            let down = lora_add(m.down_proj.forward(act.clone()), lora, li, LoraTarget::Down, &act);
            x = x + down;
        }
        self.norm.forward(x)
    }

    /// Project hidden states to vocabulary logits `[batch, seq, vocab]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let w = match &self.lm_head {
            Some(w) => w.clone(),
            None => self.embed_tokens.clone().transpose(),
        };
        matmul_2d(hidden, &w)
    }

    /// `forward` followed by `logits`.
    pub fn forward_logits(&self, input: ModelInput, cache: Option<&mut KvCache>, lora: Option<&dyn LoraHook>) -> Tensor<3> {
        let hidden = self.forward(input, cache, lora);
        self.logits(hidden)
    }

    /// Visit every weight with its Hugging Face name and layout (the loader, the saver and
    /// `base-model init`'s optimizer use this). The closure may replace the tensor.
    pub fn visit_weights_mut(&mut self, f: &mut dyn FnMut(&str, Layout, &mut Tensor<2>)) {
        f("model.embed_tokens.weight", Layout::Same, &mut self.embed_tokens);
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            f(&format!("{p}.input_layernorm.weight"), Layout::Row, &mut l.input_layernorm.weight);
            f(&format!("{p}.post_attention_layernorm.weight"), Layout::Row, &mut l.post_attention_layernorm.weight);
            let a = &mut l.self_attn;
            for (name, lin) in
                [("q_proj", &mut a.q_proj), ("k_proj", &mut a.k_proj), ("v_proj", &mut a.v_proj), ("o_proj", &mut a.o_proj)]
            {
                visit_linear(&format!("{p}.self_attn.{name}"), lin, f);
            }
            let m = &mut l.mlp;
            for (name, lin) in [("gate_proj", &mut m.gate_proj), ("up_proj", &mut m.up_proj), ("down_proj", &mut m.down_proj)] {
                visit_linear(&format!("{p}.mlp.{name}"), lin, f);
            }
        }
        f("model.norm.weight", Layout::Row, &mut self.norm.weight);
        if let Some(w) = self.lm_head.as_mut() {
            f("lm_head.weight", Layout::Transposed, w);
        }
    }

    /// Read-only variant of [`LlamaModel::visit_weights_mut`].
    pub fn visit_weights(&self, f: &mut dyn FnMut(&str, Layout, &Tensor<2>)) {
        // Cloning a tensor is a reference-count bump; the visitor sees the same storage.
        let mut copy = self.clone();
        copy.visit_weights_mut(&mut |name, layout, t| f(name, layout, t));
    }

    /// Input and output width of the projection `target` (what a LoRA pair for it must match).
    pub fn projection_dims(&self, target: LoraTarget) -> (usize, usize) {
        let c = &self.config;
        let d = c.hidden_size;
        match target {
            LoraTarget::Q => (d, c.q_dim()),
            LoraTarget::K | LoraTarget::V => (d, c.kv_dim()),
            LoraTarget::O => (c.q_dim(), d),
            LoraTarget::Gate | LoraTarget::Up => (d, c.intermediate_size),
            LoraTarget::Down => (c.intermediate_size, d),
        }
    }
}

fn visit_linear(prefix: &str, lin: &mut Linear, f: &mut dyn FnMut(&str, Layout, &mut Tensor<2>)) {
    f(&format!("{prefix}.weight"), Layout::Transposed, &mut lin.weight);
    if let Some(b) = lin.bias.as_mut() {
        f(&format!("{prefix}.bias"), Layout::Row, b);
    }
}

/// `[1, 1, seq, offset + seq]`: query `i` (at `offset + i`) may see keys `0..=offset + i`.
pub fn causal_mask(seq: usize, offset: usize, device: &Device) -> Tensor<4, Bool> {
    let total = offset + seq;
    let data: Vec<bool> = (0..seq).flat_map(|i| (0..total).map(move |j| j > offset + i)).collect();
    Tensor::<2, Bool>::from_data(TensorData::new(data, [seq, total]), device).reshape([1, 1, seq, total])
}
