//! The decoder against the independent numpy reference (`jobs/reference/`), the KV cache, and
//! refusals of malformed checkpoints.

use std::path::PathBuf;

use burn::tensor::{Int, Tensor, TensorData};
use tributary_jobs::Error;
use tributary_jobs::attribute::linalg::to_vec;
use tributary_jobs::model::loader::load_model;
use tributary_jobs::model::{KvCache, ModelFiles, ModelInput};

use crate::common::device;

fn reference_dir(variant: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference").join(format!("tiny-llama-{variant}"))
}

#[derive(serde::Deserialize)]
struct Reference {
    tokens: Vec<Vec<i64>>,
    logits: Vec<Vec<Vec<f64>>>,
}

fn tokens_tensor(rows: &[Vec<i64>]) -> Tensor<2, Int> {
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [b, t]), &device())
}

fn check_reference(variant: &str) {
    let dir = reference_dir(variant);
    let files = ModelFiles::read_dir(&dir).expect("reference checkpoint");
    let model = load_model(&files, variant, &device()).expect("loads through the production loader");
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("reference.json")).expect("json");
    let logits = model.forward_logits(ModelInput::causal(tokens_tensor(&reference.tokens), 0), None, None);
    let [b, t, v] = logits.dims();
    assert_eq!([b, t, v], [reference.tokens.len(), reference.tokens[0].len(), model.config.vocab_size]);
    let got = to_vec(&logits).expect("logits");
    let mut worst: f64 = 0.0;
    for (bi, seq) in reference.logits.iter().enumerate() {
        for (ti, row) in seq.iter().enumerate() {
            for (vi, want) in row.iter().enumerate() {
                let g = got[(bi * t + ti) * v + vi] as f64;
                worst = worst.max((g - want).abs() / (1.0 + want.abs()));
            }
        }
    }
    assert!(worst < 1e-4, "variant {variant}: worst relative logit error {worst}");
}

#[test]
fn loader_reproduces_reference_logits_untied_gqa_f32() {
    check_reference("a");
}

#[test]
fn loader_reproduces_reference_logits_tied_bias_bf16() {
    check_reference("b");
}

#[test]
fn kv_cache_decoding_matches_full_forward() {
    let files = ModelFiles::read_dir(&reference_dir("a")).expect("checkpoint");
    let model = load_model(&files, "a", &device()).expect("loads");
    let seq: Vec<i64> = vec![3, 14, 15, 9, 26, 5, 35, 8];
    let full = model.forward_logits(ModelInput::causal(tokens_tensor(std::slice::from_ref(&seq)), 0), None, None);
    let full = to_vec(&full).expect("full");
    let v = model.config.vocab_size;
    // Prefill the first three tokens, then decode one token at a time.
    let mut cache = KvCache::new();
    let pre = model.forward_logits(ModelInput::causal(tokens_tensor(&[seq[..3].to_vec()]), 0), Some(&mut cache), None);
    let mut got = to_vec(&pre).expect("prefill");
    for (i, tok) in seq.iter().enumerate().skip(3) {
        let step = model.forward_logits(ModelInput::causal(tokens_tensor(&[vec![*tok]]), i), Some(&mut cache), None);
        got.extend(to_vec(&step).expect("step"));
    }
    assert_eq!(cache.len(), seq.len());
    assert_eq!(got.len(), full.len());
    let worst = got.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "cached decoding differs from the full forward by {worst} (vocab {v})");
}

#[test]
fn malformed_checkpoints_are_refused_precisely() {
    let good = ModelFiles::read_dir(&reference_dir("a")).expect("checkpoint");

    let mut truncated = good.clone();
    truncated.weights.truncate(truncated.weights.len() / 2);
    assert!(matches!(load_model(&truncated, "t", &device()), Err(Error::Checkpoint { .. })));

    let mut garbage = good.clone();
    garbage.weights = b"not a safetensors file at all".to_vec();
    assert!(matches!(load_model(&garbage, "g", &device()), Err(Error::Checkpoint { .. })));

    let mut wrong_shape = good.clone();
    let mut cfg: serde_json::Value = serde_json::from_str(&good.config).expect("json");
    cfg["intermediate_size"] = serde_json::json!(41);
    wrong_shape.config = cfg.to_string();
    match load_model(&wrong_shape, "w", &device()) {
        Err(Error::Checkpoint { reason, .. }) => assert!(reason.contains("shape"), "{reason}"),
        other => panic!("expected a shape error, got {other:?}"),
    }

    let mut untied_missing_head = good.clone();
    let mut cfg: serde_json::Value = serde_json::from_str(&good.config).expect("json");
    cfg["num_hidden_layers"] = serde_json::json!(3);
    untied_missing_head.config = cfg.to_string();
    match load_model(&untied_missing_head, "m", &device()) {
        Err(Error::Checkpoint { reason, .. }) => assert!(reason.contains("model.layers.2"), "{reason}"),
        other => panic!("expected a missing-tensor error, got {other:?}"),
    }

    for (key, value, needle) in [
        ("rope_scaling", serde_json::json!({"rope_type": "llama3", "factor": 8.0}), "rope_scaling"),
        ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
        ("num_key_value_heads", serde_json::json!(3), "multiple"),
    ] {
        let mut bad = good.clone();
        let mut cfg: serde_json::Value = serde_json::from_str(&good.config).expect("json");
        cfg[key] = value;
        bad.config = cfg.to_string();
        match load_model(&bad, "c", &device()) {
            Err(Error::ModelConfig { reason, .. }) => assert!(reason.contains(needle), "{key}: {reason}"),
            other => panic!("{key}: expected a config error, got {other:?}"),
        }
    }
    let mut not_json = good;
    not_json.config = "{".into();
    assert!(matches!(load_model(&not_json, "j", &device()), Err(Error::ModelConfig { .. })));
}
