//! Shared fixtures: a tiny base model in a warehouse, random adapters in the PEFT format, a server
//! on a free loopback port, and the reference the batched engine is checked against (the adapter
//! merged into the base weights, one request at a time).

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};
use tributary_jobs::model::{Adapter, BaseModel, KvCache, LlamaModel, LoraTarget, ModelInput};
use tributary_pipeline::{Config, Tables, Warehouse};
use tributary_serving::client::Client;
use tributary_serving::sampling::argmax;
use tributary_serving::{Server, ServingBuilder, synthetic};

/// The admin token of test servers.
pub const TOKEN: &str = "test-admin-token";
/// Name of the test base model.
pub const BASE: &str = "test-base";

/// A warehouse with a base model.
pub struct Fixture {
    pub tables: Tables,
    pub warehouse: Warehouse,
    pub config: Arc<Config>,
    pub base: BaseModel,
}

/// Settings suited to fast tests.
pub fn test_config() -> Config {
    let mut c = Config { warehouse: "memory://".into(), ..Config::default() };
    let s = &mut c.serving;
    s.base_model = BASE.into();
    s.max_batch = 8;
    s.max_queue = 64;
    s.max_active_adapters = 8;
    s.publish_poll_secs = 1;
    s.usage_flush_ms = 100;
    s.usage_flush_rows = 64;
    s.credit_min_span_tokens = 4;
    s.max_new_tokens = 64;
    s.shutdown_grace_secs = 20;
    c
}

impl Fixture {
    /// A fresh in-memory warehouse holding the tiny base model, with `tweak` applied to the config.
    pub async fn new(tweak: impl FnOnce(&mut Config)) -> Fixture {
        Self::in_warehouse(Warehouse::in_memory(), tweak).await
    }

    /// The same in a given warehouse.
    pub async fn in_warehouse(warehouse: Warehouse, tweak: impl FnOnce(&mut Config)) -> Fixture {
        let mut config = test_config();
        tweak(&mut config);
        let base = synthetic::tiny_base(&warehouse, BASE, 1, 300, &Device::flex()).await.expect("tiny base model");
        Fixture { tables: Tables::new(warehouse.clone()), warehouse, config: Arc::new(config), base }
    }

    /// Publish a random adapter `datanet/version` of `rank` over `targets`.
    pub async fn adapter(&self, datanet: &str, version: &str, rank: usize, targets: &[LoraTarget], seed: u64) -> Adapter {
        let adapter = synthetic::random_adapter(&self.base.model, rank, 2.0 * rank as f64, targets, 0.5, seed);
        let record = synthetic::record(&self.base, datanet, version, &adapter, 0, 0);
        synthetic::publish(&self.warehouse, &record, &adapter).await.expect("publish adapter");
        adapter
    }

    /// A server over this warehouse on a free port.
    pub async fn start(&self) -> Server {
        self.builder().start().await.expect("server starts")
    }

    /// The builder `start` uses (to adjust before starting).
    pub fn builder(&self) -> ServingBuilder {
        ServingBuilder::new(self.config.clone(), self.tables.clone())
            .with_base_model(self.base.clone())
            .with_bind("127.0.0.1:0")
            .with_admin_token(Some(TOKEN.into()))
    }

    /// Prompt tokens as the server builds them for `/v1/completions` (raw continuation).
    pub fn prompt(&self, text: &str) -> Vec<u32> {
        self.base.tokenizer.encode_continuation(text).expect("encodes")
    }
}

/// A client of `server`.
pub fn client(server: &Server) -> Client {
    Client::new(server.url()).expect("client")
}

/// `model` with `adapter` merged into its weights: `W + (alpha/r)·A·B`.
pub fn merged(model: &LlamaModel, adapter: &Adapter) -> LlamaModel {
    let mut m = model.clone();
    let s = adapter.config.scale();
    for (&(layer, target), (a, b)) in &adapter.weights {
        let l = &mut m.layers[layer];
        let lin = match target {
            LoraTarget::Q => &mut l.self_attn.q_proj,
            LoraTarget::K => &mut l.self_attn.k_proj,
            LoraTarget::V => &mut l.self_attn.v_proj,
            LoraTarget::O => &mut l.self_attn.o_proj,
            LoraTarget::Gate => &mut l.mlp.gate_proj,
            LoraTarget::Up => &mut l.mlp.up_proj,
            LoraTarget::Down => &mut l.mlp.down_proj,
        };
        lin.weight = lin.weight.clone() + a.clone().matmul(b.clone()).mul_scalar(s);
    }
    m
}

fn ids(tokens: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = tokens.iter().map(|t| *t as i64).collect();
    Tensor::<2, Int>::from_data(TensorData::new(data, [1, tokens.len()]), device)
}

/// Logits of the last position after feeding `tokens` to `model` alone (no batch, no hook).
pub fn last_logits(model: &LlamaModel, tokens: &[u32]) -> Vec<f32> {
    let logits = model.forward_logits(ModelInput::causal(ids(tokens, &model.device()), 0), None, None);
    let [_, t, v] = logits.dims();
    logits.narrow(1, t - 1, 1).reshape([v]).try_into_vec_as::<f32>().expect("logits")
}

/// Greedy generation by `model` alone, one request at a time, with the jobs KV cache.
pub fn greedy(model: &LlamaModel, eot: u32, prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let device = model.device();
    let mut cache = KvCache::new();
    let mut input = ids(prompt, &device);
    let mut out = Vec::new();
    loop {
        let offset = cache.len();
        let logits = model.forward_logits(ModelInput::causal(input, offset), Some(&mut cache), None);
        let [_, t, v] = logits.dims();
        let last = logits.narrow(1, t - 1, 1).reshape([v]).try_into_vec_as::<f32>().expect("logits");
        let next = argmax(&last);
        if next == eot {
            return out;
        }
        out.push(next);
        if out.len() >= max_tokens {
            return out;
        }
        input = ids(&[next], &device);
    }
}

/// How far (in logits) a served greedy choice may fall below the reference's best and still count
/// as the same greedy decision: a near-tie that rounding differences can flip. The batched,
/// unmerged LoRA path and the merged weights agree to about 2e-4 per logit (see the batching
/// test), so two candidates closer than that may legitimately swap places.
pub const TIE_TOL: f32 = 1e-3;

/// Check `served` is what greedy decoding by `reference` (one request at a time, the adapter
/// merged into the weights) produces from `prompt` with at most `max_tokens` tokens.
///
/// Normally the tokens are identical. Where they are not, every served token must still be a
/// greedy choice of the reference given the served prefix (within [`TIE_TOL`] of the best logit),
/// and the answer must end where the reference could end it (end-of-text within [`TIE_TOL`] of the
/// best, or `max_tokens`): only float near-ties may make the answers differ, never a wrong token.
pub fn assert_greedy(reference: &LlamaModel, eot: u32, prompt: &[u32], served: &[u32], max_tokens: usize, what: &str) {
    let expected = greedy(reference, eot, prompt, max_tokens);
    if served == expected.as_slice() {
        return;
    }
    assert!(served.len() <= max_tokens, "{what}: {} tokens served, at most {max_tokens} asked", served.len());
    let mut seq = prompt.to_vec();
    let mut choices: Vec<u32> = served.to_vec();
    if served.len() < max_tokens {
        choices.push(eot);
    }
    for (step, &token) in choices.iter().enumerate() {
        let logits = last_logits(reference, &seq);
        let best = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let got = logits.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY);
        assert!(
            got >= best - TIE_TOL,
            "{what}: step {step} served token {token} (logit {got}) but the reference's best is {} (logit {best}); \
             served {served:?}, reference {expected:?}",
            argmax(&logits)
        );
        seq.push(token);
    }
}

/// The `token_ids` of a response's (or final chunk's) first choice.
pub fn token_ids(body: &serde_json::Value) -> Vec<u32> {
    body["choices"][0]["token_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_u64()).map(|t| t as u32).collect())
        .unwrap_or_default()
}
