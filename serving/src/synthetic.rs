//! Synthetic models and adapters for the tests and the benchmark.
//!
//! [`tiny_base`] builds a base model through the same `jobs` code `tributary base-model init` uses
//! (the tokenizer trained on the base corpus, the `tiny` preset's shape, Hugging Face files in
//! `models/<name>/`), with random weights instead of pre-training: serving cost and correctness do
//! not depend on what the weights learned. [`random_adapter`] and [`publish`] make rank-r adapters
//! with random `A` *and* `B` (so each one visibly changes the output) and write them exactly as
//! `tributary train` does: PEFT-named `adapter.safetensors` plus `adapter.json`.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_jobs::adapter_store::{
    self, AdapterDir, AdapterMetrics, AdapterRecord, BaseModelRef, TrainingSetRef, ValidationRef, files,
};
use tributary_jobs::base_model::{Preset, init_model};
use tributary_jobs::dataset::ValidationSource;
use tributary_jobs::model::loader::model_files;
use tributary_jobs::model::{Adapter, BaseModel, LlamaModel, LoraConfig, LoraTarget};
use tributary_jobs::tokenizer::Tokenizer;
use tributary_jobs::train::TrainConfig;
use tributary_pipeline::Warehouse;

use crate::error::Result;

/// A base model of the `tiny` preset's shape with random weights, written to `models/<name>/`.
/// `docs` documents of the base corpus train the tokenizer (a few hundred suffice).
pub async fn tiny_base(warehouse: &Warehouse, name: &str, seed: u64, docs: usize, device: &Device) -> Result<BaseModel> {
    let corpus = tributary_jobs::corpus::base_corpus(seed, docs);
    let tokenizer = Tokenizer::train(&corpus, Preset::Tiny.vocab_size())?;
    let config = Preset::Tiny.config(tokenizer.vocab_size(), tokenizer.eot());
    let model = init_model(&config, seed, device);
    let files = model_files(&model, &tokenizer)?;
    files.write_warehouse(warehouse, name, &[]).await?;
    Ok(BaseModel::from_files(name, &files, device)?)
}

/// A rank-`rank` adapter over `targets` with every factor random: `A` uniform in `±1/√in` (PEFT's
/// initialization) and `B` uniform in `±b_scale`. Deterministic in `seed`.
pub fn random_adapter(model: &LlamaModel, rank: usize, alpha: f64, targets: &[LoraTarget], b_scale: f64, seed: u64) -> Adapter {
    let device = model.device();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut weights = BTreeMap::new();
    for layer in 0..model.config.num_hidden_layers {
        for &target in targets {
            let (din, dout) = model.projection_dims(target);
            let bound = 1.0 / (din as f64).sqrt();
            let a: Vec<f32> = (0..din * rank).map(|_| rng.random_range(-bound..bound) as f32).collect();
            let b: Vec<f32> = (0..rank * dout).map(|_| rng.random_range(-b_scale..b_scale) as f32).collect();
            weights.insert(
                (layer, target),
                (
                    Tensor::<2>::from_data(TensorData::new(a, [din, rank]), &device),
                    Tensor::<2>::from_data(TensorData::new(b, [rank, dout]), &device),
                ),
            );
        }
    }
    let config = LoraConfig { rank, alpha, dropout: 0.0, targets: targets.to_vec() };
    Adapter { config, weights }
}

/// The record `tributary train` would write for `adapter`, trained on `base`.
pub fn record(base: &BaseModel, datanet: &str, version: &str, adapter: &Adapter, epoch: i64, training_set_version: i64) -> AdapterRecord {
    AdapterRecord {
        format: adapter_store::FORMAT.into(),
        datanet: datanet.into(),
        version: version.into(),
        epoch,
        base_model: BaseModelRef { name: base.name.clone(), sha256: base.sha256.clone() },
        lora: adapter.config.clone(),
        training_set: TrainingSetRef {
            table: "gold.training_set".into(),
            delta_version: training_set_version,
            rows: 0,
            rows_sha256: String::new(),
        },
        validation: ValidationRef { source: ValidationSource::File { path: String::new() }, rows: 0 },
        train: TrainConfig { lora: adapter.config.clone(), ..TrainConfig::default() },
        metrics: AdapterMetrics { base_val_loss: 0.0, final_val_loss: 0.0, epochs: vec![], steps: 0, seconds: 0.0 },
        checkpoints: vec![],
        backend: "synthetic".into(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    }
}

/// Write `adapter` as `adapters/<datanet>/<version>/` (weights first, `adapter.json` last, as
/// `tributary train` does).
pub async fn publish(warehouse: &Warehouse, record: &AdapterRecord, adapter: &Adapter) -> Result<()> {
    let dir = AdapterDir::new(warehouse, &record.datanet, &record.version);
    dir.put(files::WEIGHTS, adapter.to_safetensors()?).await?;
    dir.put(files::RECORD, serde_json::to_vec_pretty(record)?).await?;
    Ok(())
}
