//! LoRA: a fresh adapter (B = 0) is the base model; per-row adapters equal separate runs; adapters
//! round-trip through PEFT-named safetensors.

use std::collections::BTreeMap;

use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;
use tributary_jobs::attribute::linalg::to_vec;
use tributary_jobs::model::{Adapter, LoraConfig, LoraSet, LoraTarget, LoraWeights, ModelInput};

use crate::common::{base, device};

fn tokens(base: &tributary_jobs::model::BaseModel, texts: &[&str]) -> Tensor<2, burn::tensor::Int> {
    let enc: Vec<Vec<i64>> = texts
        .iter()
        .map(|t| base.tokenizer.encode(t).expect("encode").into_iter().map(i64::from).take(8).collect())
        .collect();
    let len = enc.iter().map(Vec::len).min().unwrap_or(0);
    let flat: Vec<i64> = enc.iter().flat_map(|e| e[..len].to_vec()).collect();
    Tensor::from_data(TensorData::new(flat, [texts.len(), len]), &device())
}

/// An adapter with random, non-zero factors.
fn random_adapter(model: &tributary_jobs::model::LlamaModel, cfg: &LoraConfig, seed: u64) -> Adapter {
    let mut a = Adapter::init(model, cfg, seed).expect("init");
    let mut s = seed;
    for (_, b) in a.weights.values_mut() {
        let [r, o] = b.dims();
        let vals: Vec<f32> = (0..r * o)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect();
        *b = Tensor::from_data(TensorData::new(vals, [r, o]), &device());
    }
    a
}

#[test]
fn lora_with_b_zero_equals_the_base_model() {
    let base = base();
    let cfg = LoraConfig { targets: LoraTarget::ALL.to_vec(), ..LoraConfig::default() };
    let adapter = Adapter::init(&base.model, &cfg, 3).expect("init");
    let input = ModelInput::causal(tokens(&base, &["Tell me about the region of Velmora.", "What does Drask export?"]), 0);
    let plain = to_vec(&base.model.forward_logits(input.clone(), None, None)).expect("base");
    let with = to_vec(&base.model.forward_logits(input.clone(), None, Some(&adapter.hook()))).expect("adapted");
    assert_eq!(plain, with, "a fresh adapter (B = 0) must not change a single logit");
    // And a non-zero B does change them: the hook is really applied.
    let moved = random_adapter(&base.model, &cfg, 4);
    let changed = to_vec(&base.model.forward_logits(input, None, Some(&moved.hook()))).expect("moved");
    assert!(plain.iter().zip(&changed).any(|(a, b)| (a - b).abs() > 1e-4));
}

#[test]
fn per_row_adapters_equal_separate_runs() {
    let base = base();
    let cfg = LoraConfig::default();
    let (a1, a2) = (random_adapter(&base.model, &cfg, 11), random_adapter(&base.model, &cfg, 12));
    let toks = tokens(&base, &["What is the capital of Orinth?", "What is Lumen known for?"]);
    let [_, t] = toks.dims();
    // Row 0 with adapter 1, row 1 with adapter 2, in one batch (gathered BGMV form).
    let mut set = LoraSet::default();
    for (key, (x1, y1)) in &a1.weights {
        let (x2, y2) = &a2.weights[key];
        let a = Tensor::stack::<3>(vec![x1.clone(), x2.clone()], 0);
        let b = Tensor::stack::<3>(vec![y1.clone(), y2.clone()], 0);
        let scale = Tensor::<3>::full([2, 1, 1], cfg.scale(), &device());
        set.weights.insert(*key, LoraWeights::PerRow { a, b, scale });
    }
    let mixed = to_vec(&base.model.forward_logits(ModelInput::causal(toks.clone(), 0), None, Some(&set))).expect("mixed");
    let v = base.model.config.vocab_size;
    for (row, adapter) in [(0usize, &a1), (1, &a2)] {
        let one = toks.clone().narrow(0, row, 1);
        let alone = to_vec(&base.model.forward_logits(ModelInput::causal(one, 0), None, Some(&adapter.hook()))).expect("alone");
        let part = &mixed[row * t * v..(row + 1) * t * v];
        let worst = part.iter().zip(&alone).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "row {row}: per-row result differs by {worst}");
    }
}

#[test]
fn adapters_round_trip_through_peft_safetensors() {
    let base = base();
    let cfg = LoraConfig { rank: 3, alpha: 6.0, dropout: 0.05, targets: vec![LoraTarget::Q, LoraTarget::V, LoraTarget::Down] };
    let adapter = random_adapter(&base.model, &cfg, 21);
    let bytes = adapter.to_safetensors().expect("serialize");

    // PEFT names and orientation: lora_A is [r, in], lora_B is [out, r].
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let d = base.model.config.hidden_size;
    let q_a = st.tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").expect("q lora_A");
    assert_eq!(q_a.shape(), &[3, d]);
    let down_b = st.tensor("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight").expect("down lora_B");
    assert_eq!(down_b.shape(), &[d, 3]);
    assert_eq!(st.names().len(), 2 * cfg.targets.len() * base.model.config.num_hidden_layers);

    let back = Adapter::from_safetensors(&bytes, "mem", &cfg, &base.model).expect("parse");
    let host = |a: &Adapter| -> BTreeMap<String, Vec<f32>> {
        a.to_host().expect("host").into_iter().map(|(k, v)| (k, v.data)).collect()
    };
    assert_eq!(host(&adapter), host(&back), "factors change in a round trip");

    // A file for another shape is refused with the tensor's name.
    let other = LoraConfig { rank: 4, ..cfg.clone() };
    match Adapter::from_safetensors(&bytes, "mem", &other, &base.model) {
        Err(tributary_jobs::Error::Checkpoint { reason, .. }) => assert!(reason.contains("lora_A"), "{reason}"),
        other => panic!("expected a shape error, got {other:?}"),
    }
    let missing = LoraConfig { targets: vec![LoraTarget::K], ..cfg };
    assert!(matches!(
        Adapter::from_safetensors(&bytes, "mem", &missing, &base.model),
        Err(tributary_jobs::Error::Checkpoint { .. })
    ));
}
