//! Adapters in the warehouse: `adapters/<datanet>/<version>/`.
//!
//! | file | content |
//! |---|---|
//! | `adapter.safetensors` | the LoRA factors under PEFT's tensor names |
//! | `adapter_model.safetensors` | the same bytes under the file name PEFT looks for |
//! | `adapter_config.json` | PEFT's config, so `PeftModel.from_pretrained` loads the folder |
//! | `checkpoints/epoch-<k>.safetensors` | the adapter at the end of epoch `k` (TracIn-CP) |
//! | `checkpoint.safetensors` | resume state of an unfinished run (deleted when it finishes) |
//! | `adapter.json` | Tributary's record; written last, so its presence means "complete" |
//!
//! A version is named `e<epoch>-v<training-set delta version>-<config hash>`: training the same
//! rows with the same settings always lands in the same folder, which is what makes `train`
//! idempotent and resumable.

use object_store::ObjectStoreExt;
use object_store::PutPayload;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};
use tributary_pipeline::Warehouse;
use tributary_pipeline::storage::prefix;

use crate::dataset::ValidationSource;
use crate::error::{Error, Result};
use crate::model::{Adapter, LlamaModel, LoraConfig};
use crate::train::{EpochMetrics, TrainConfig};

/// Format tag of `adapter.json`.
pub const FORMAT: &str = "tributary-adapter/1";

/// The base model an adapter was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModelRef {
    /// Name under `models/`.
    pub name: String,
    /// Hex sha256 of its `model.safetensors`.
    pub sha256: String,
}

/// Exactly which training rows were used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSetRef {
    /// `gold.training_set`.
    pub table: String,
    /// The Delta version read.
    pub delta_version: i64,
    /// Rows trained on.
    pub rows: usize,
    /// Hex sha256 of the ordered contribution ids.
    pub rows_sha256: String,
}

/// The validation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationRef {
    /// Where it came from.
    pub source: ValidationSource,
    /// Rows.
    pub rows: usize,
}

/// A TracIn checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// Epoch (1-based) at whose end it was taken.
    pub epoch: usize,
    /// Mean learning rate over that epoch (TracIn's step weight).
    pub lr: f64,
    /// File, relative to the adapter folder.
    pub file: String,
}

/// Training metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterMetrics {
    /// Validation loss of the base model (the adapter at initialization).
    pub base_val_loss: f64,
    /// Validation loss after training.
    pub final_val_loss: f64,
    /// Per-epoch metrics.
    pub epochs: Vec<EpochMetrics>,
    /// Optimizer steps.
    pub steps: usize,
    /// Training seconds (summed over resumed runs).
    pub seconds: f64,
}

/// `adapter.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterRecord {
    /// [`FORMAT`].
    pub format: String,
    /// Datanet.
    pub datanet: String,
    /// Version (the folder name).
    pub version: String,
    /// Epoch the adapter belongs to (it is trained on rows of epochs `<=` this).
    pub epoch: i64,
    /// Base model.
    pub base_model: BaseModelRef,
    /// Rank, alpha, dropout, target modules.
    #[serde(flatten)]
    pub lora: LoraConfig,
    /// Training rows.
    pub training_set: TrainingSetRef,
    /// Validation rows.
    pub validation: ValidationRef,
    /// Every training setting (seed included).
    pub train: TrainConfig,
    /// Losses.
    pub metrics: AdapterMetrics,
    /// TracIn checkpoints.
    pub checkpoints: Vec<CheckpointRef>,
    /// Compute backend (recomputation is bit-exact only on the same one).
    pub backend: String,
    /// RFC 3339 time of completion.
    pub created_at: String,
}

/// One adapter folder.
#[derive(Debug, Clone)]
pub struct AdapterDir {
    warehouse: Warehouse,
    /// Datanet.
    pub datanet: String,
    /// Version.
    pub version: String,
}

/// Names of the files in an adapter folder.
pub mod files {
    /// Tributary's record.
    pub const RECORD: &str = "adapter.json";
    /// LoRA factors (DESIGN name).
    pub const WEIGHTS: &str = "adapter.safetensors";
    /// LoRA factors (PEFT's name).
    pub const PEFT_WEIGHTS: &str = "adapter_model.safetensors";
    /// PEFT config.
    pub const PEFT_CONFIG: &str = "adapter_config.json";
    /// Resume state.
    pub const RESUME: &str = "checkpoint.safetensors";
}

impl AdapterDir {
    /// The folder `adapters/<datanet>/<version>/`.
    pub fn new(warehouse: &Warehouse, datanet: &str, version: &str) -> AdapterDir {
        AdapterDir { warehouse: warehouse.clone(), datanet: datanet.to_string(), version: version.to_string() }
    }

    /// Key of `file` inside the folder.
    pub fn key(&self, file: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{}/{}/{file}", prefix::ADAPTERS, self.datanet, self.version))
    }

    /// Read `file`, or `None` if absent.
    pub async fn get(&self, file: &str) -> Result<Option<Vec<u8>>> {
        match self.warehouse.store().get(&self.key(file)).await {
            Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Write `file` (atomically on every store: a put replaces the object whole).
    pub async fn put(&self, file: &str, bytes: Vec<u8>) -> Result<()> {
        self.warehouse.store().put(&self.key(file), PutPayload::from(bytes)).await?;
        Ok(())
    }

    /// Delete `file` if present.
    pub async fn delete(&self, file: &str) -> Result<()> {
        match self.warehouse.store().delete(&self.key(file)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The record, if the adapter is complete.
    pub async fn record(&self) -> Result<Option<AdapterRecord>> {
        match self.get(files::RECORD).await? {
            Some(b) => Ok(Some(serde_json::from_slice(&b)?)),
            None => Ok(None),
        }
    }

    /// Load the trained factors for `model`.
    pub async fn load_adapter(&self, record: &AdapterRecord, model: &LlamaModel) -> Result<Adapter> {
        let bytes = self.get(files::WEIGHTS).await?.ok_or_else(|| Error::NotFound(self.key(files::WEIGHTS).to_string()))?;
        Adapter::from_safetensors(&bytes, self.key(files::WEIGHTS).as_ref(), &record.lora, model)
    }

    /// Load the TracIn checkpoints as (adapter, learning rate).
    pub async fn load_checkpoints(&self, record: &AdapterRecord, model: &LlamaModel) -> Result<Vec<(Adapter, f64)>> {
        let mut out = Vec::new();
        for c in &record.checkpoints {
            let bytes = self.get(&c.file).await?.ok_or_else(|| Error::NotFound(self.key(&c.file).to_string()))?;
            out.push((Adapter::from_safetensors(&bytes, self.key(&c.file).as_ref(), &record.lora, model)?, c.lr));
        }
        Ok(out)
    }
}

/// PEFT's `adapter_config.json` for `record`.
pub fn peft_config(record: &AdapterRecord) -> serde_json::Value {
    let targets: Vec<&str> = record.lora.targets.iter().map(|t| t.module_name()).collect();
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": record.base_model.name,
        "r": record.lora.rank,
        "lora_alpha": record.lora.alpha,
        "lora_dropout": record.lora.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "use_rslora": false,
        "use_dora": false,
        "revision": null,
    })
}

/// Every complete adapter of `datanet`.
pub async fn list(warehouse: &Warehouse, datanet: &str) -> Result<Vec<AdapterRecord>> {
    let root = ObjectPath::from(format!("{}/{datanet}", prefix::ADAPTERS));
    let listing = warehouse.store().list_with_delimiter(Some(&root)).await?;
    let mut out = Vec::new();
    for p in listing.common_prefixes {
        let Some(version) = p.filename() else { continue };
        if let Some(r) = AdapterDir::new(warehouse, datanet, version).record().await? {
            out.push(r);
        }
    }
    out.sort_by(|a, b| (a.epoch, a.training_set.delta_version, &a.created_at).cmp(&(b.epoch, b.training_set.delta_version, &b.created_at)));
    Ok(out)
}

/// The adapter of `datanet` for `epoch` (the newest one if several), or the named `version`.
pub async fn find(warehouse: &Warehouse, datanet: &str, epoch: Option<i64>, version: Option<&str>) -> Result<AdapterRecord> {
    if let Some(v) = version {
        return AdapterDir::new(warehouse, datanet, v)
            .record()
            .await?
            .ok_or_else(|| Error::NotFound(format!("adapter {datanet}/{v} (not trained, or unfinished)")));
    }
    let all = list(warehouse, datanet).await?;
    all.into_iter()
        .rev()
        .find(|r| epoch.is_none_or(|e| r.epoch == e))
        .ok_or_else(|| match epoch {
            Some(e) => Error::NotFound(format!("an adapter of {datanet} for epoch {e} (run `tributary train --datanet {datanet} --epoch {e}`)")),
            None => Error::NotFound(format!("an adapter of {datanet} (run `tributary train --datanet {datanet}`)")),
        })
}
