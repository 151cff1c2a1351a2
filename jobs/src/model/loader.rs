//! Loading and saving models in the Hugging Face layout: `config.json`, `model.safetensors`
//! (tensor names such as `model.layers.0.self_attn.q_proj.weight`), `tokenizer.json`.
//!
//! The same code loads the project's own base model from the warehouse (`models/<name>/`), the
//! committed reference checkpoint the tests compare against, and real small checkpoints.

use object_store::ObjectStoreExt;
use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Tensor};
use object_store::PutPayload;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use tributary_pipeline::Warehouse;
use tributary_pipeline::storage::prefix;

use super::config::LlamaConfig;
use super::llama::{Attention, DecoderLayer, Layout, Linear, LlamaModel, Mlp, RmsNorm};
use super::safetensors_io::{self, HostTensor};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// File names of the Hugging Face layout.
pub mod files {
    /// The model's shape.
    pub const CONFIG: &str = "config.json";
    /// The weights.
    pub const WEIGHTS: &str = "model.safetensors";
    /// The tokenizer.
    pub const TOKENIZER: &str = "tokenizer.json";
    /// Tributary's provenance record of a base model it trained.
    pub const PROVENANCE: &str = "tributary.json";
}

/// The bytes of a model directory.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// `config.json` text.
    pub config: String,
    /// `model.safetensors` bytes.
    pub weights: Vec<u8>,
    /// `tokenizer.json` text, when present.
    pub tokenizer: Option<String>,
}

impl ModelFiles {
    /// Read a local directory.
    pub fn read_dir(dir: &Path) -> Result<ModelFiles> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| Error::NotFound(format!("{}: {e}", dir.join(name).display())))
        };
        let config = String::from_utf8_lossy(&read(files::CONFIG)?).into_owned();
        let weights = read(files::WEIGHTS)?;
        let tokenizer = std::fs::read_to_string(dir.join(files::TOKENIZER)).ok();
        Ok(ModelFiles { config, weights, tokenizer })
    }

    /// Read `models/<name>/` from the warehouse.
    pub async fn read_warehouse(warehouse: &Warehouse, name: &str) -> Result<ModelFiles> {
        let store = warehouse.store();
        let key = |f: &str| ObjectPath::from(format!("{}/{name}/{f}", prefix::MODELS));
        let get = |f: &'static str| {
            let k = key(f);
            async move {
                match store.get(&k).await {
                    Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(Error::ObjectStore(e)),
                }
            }
        };
        let missing = || Error::NotFound(format!("base model `{name}` (run `tributary base-model init`)"));
        let config = get(files::CONFIG).await?.ok_or_else(missing)?;
        let weights = get(files::WEIGHTS).await?.ok_or_else(missing)?;
        let tokenizer = get(files::TOKENIZER).await?.map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok(ModelFiles { config: String::from_utf8_lossy(&config).into_owned(), weights, tokenizer })
    }

    /// Write to `models/<name>/` in the warehouse (weights last, so a reader that finds the
    /// weights finds the rest).
    pub async fn write_warehouse(&self, warehouse: &Warehouse, name: &str, extra: &[(&str, String)]) -> Result<()> {
        let store = warehouse.store();
        let put = |f: &str, bytes: Vec<u8>| {
            let k = ObjectPath::from(format!("{}/{name}/{f}", prefix::MODELS));
            async move { store.put(&k, PutPayload::from(bytes)).await.map(|_| ()) }
        };
        put(files::CONFIG, self.config.clone().into_bytes()).await?;
        if let Some(t) = &self.tokenizer {
            put(files::TOKENIZER, t.clone().into_bytes()).await?;
        }
        for (f, text) in extra {
            put(f, text.clone().into_bytes()).await?;
        }
        put(files::WEIGHTS, self.weights.clone()).await?;
        Ok(())
    }

    /// Write to a local directory.
    pub fn write_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(files::CONFIG), &self.config)?;
        std::fs::write(dir.join(files::WEIGHTS), &self.weights)?;
        if let Some(t) = &self.tokenizer {
            std::fs::write(dir.join(files::TOKENIZER), t)?;
        }
        Ok(())
    }

    /// Hex sha256 of the weights: the base model's identity in adapter records.
    pub fn weights_sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.weights))
    }
}

/// A loaded base model: weights, tokenizer and identity.
#[derive(Debug, Clone)]
pub struct BaseModel {
    /// The name under `models/` (or the directory it came from).
    pub name: String,
    /// Hex sha256 of `model.safetensors`.
    pub sha256: String,
    /// The decoder.
    pub model: LlamaModel,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
}

impl BaseModel {
    /// Load `models/<name>/` from the warehouse onto `device`.
    pub async fn load(warehouse: &Warehouse, name: &str, device: &Device) -> Result<BaseModel> {
        let files = ModelFiles::read_warehouse(warehouse, name).await?;
        Self::from_files(name, &files, device)
    }

    /// Build from the bytes of a model directory.
    pub fn from_files(name: &str, files: &ModelFiles, device: &Device) -> Result<BaseModel> {
        let model = load_model(files, name, device)?;
        let tokenizer = match &files.tokenizer {
            Some(t) => Tokenizer::from_json(t)?,
            None => return Err(Error::NotFound(format!("{name}/{}", files::TOKENIZER))),
        };
        if tokenizer.vocab_size() > model.config.vocab_size {
            return Err(Error::ModelConfig {
                path: format!("{name}/{}", files::CONFIG),
                reason: format!(
                    "tokenizer has {} tokens but vocab_size is {}",
                    tokenizer.vocab_size(),
                    model.config.vocab_size
                ),
            });
        }
        Ok(BaseModel { name: name.to_string(), sha256: files.weights_sha256(), model, tokenizer })
    }
}

/// Build a [`LlamaModel`] from `config.json` and `model.safetensors` bytes.
pub fn load_model(files: &ModelFiles, name: &str, device: &Device) -> Result<LlamaModel> {
    let cfg_path = format!("{name}/{}", files::CONFIG);
    let w_path = format!("{name}/{}", files::WEIGHTS);
    let config = LlamaConfig::from_json(&files.config, &cfg_path)?;
    let (mut tensors, _) = safetensors_io::read(&files.weights, &w_path)?;
    let (d, v) = (config.hidden_size, config.vocab_size);

    let mut w = Weights { tensors: &mut tensors, path: &w_path, device };
    let embed = w.take("model.embed_tokens.weight", &[v, d], Layout::Same)?;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let self_attn = Attention {
            q_proj: w.linear(&format!("{p}.self_attn.q_proj"), d, config.q_dim())?,
            k_proj: w.linear(&format!("{p}.self_attn.k_proj"), d, config.kv_dim())?,
            v_proj: w.linear(&format!("{p}.self_attn.v_proj"), d, config.kv_dim())?,
            o_proj: w.linear(&format!("{p}.self_attn.o_proj"), config.q_dim(), d)?,
        };
        let mlp = Mlp {
            gate_proj: w.linear(&format!("{p}.mlp.gate_proj"), d, config.intermediate_size)?,
            up_proj: w.linear(&format!("{p}.mlp.up_proj"), d, config.intermediate_size)?,
            down_proj: w.linear(&format!("{p}.mlp.down_proj"), config.intermediate_size, d)?,
        };
        let eps = config.rms_norm_eps;
        layers.push(DecoderLayer {
            input_layernorm: RmsNorm { weight: w.take(&format!("{p}.input_layernorm.weight"), &[d], Layout::Row)?, eps },
            self_attn,
            post_attention_layernorm: RmsNorm {
                weight: w.take(&format!("{p}.post_attention_layernorm.weight"), &[d], Layout::Row)?,
                eps,
            },
            mlp,
        });
    }
    let norm = RmsNorm { weight: w.take("model.norm.weight", &[d], Layout::Row)?, eps: config.rms_norm_eps };
    // A tied model may still carry a copy of the embedding as `lm_head.weight`; it is ignored, as
    // in Hugging Face.
    let lm_head =
        if config.tie_word_embeddings { None } else { Some(w.take("lm_head.weight", &[v, d], Layout::Transposed)?) };
    Ok(LlamaModel::from_parts(config, embed, layers, norm, lm_head))
}

/// The checkpoint's tensors, consumed as the model is assembled.
struct Weights<'a> {
    tensors: &'a mut BTreeMap<String, HostTensor>,
    path: &'a str,
    device: &'a Device,
}

impl Weights<'_> {
    fn take(&mut self, key: &str, shape: &[usize], layout: Layout) -> Result<Tensor<2>> {
        let t = self.tensors.remove(key).ok_or_else(|| Error::checkpoint(self.path, format!("missing tensor {key}")))?;
        if t.shape != shape {
            return Err(Error::checkpoint(self.path, format!("tensor {key} has shape {:?}, expected {shape:?}", t.shape)));
        }
        Ok(match layout {
            Layout::Transposed => t.transposed().to_tensor2(self.device),
            Layout::Same | Layout::Row => t.to_tensor2(self.device),
        })
    }

    /// A projection, with its bias when the checkpoint has one (Qwen2's q/k/v).
    fn linear(&mut self, prefix: &str, din: usize, dout: usize) -> Result<Linear> {
        let weight = self.take(&format!("{prefix}.weight"), &[dout, din], Layout::Transposed)?;
        let bias_key = format!("{prefix}.bias");
        let bias =
            if self.tensors.contains_key(&bias_key) { Some(self.take(&bias_key, &[dout], Layout::Row)?) } else { None };
        Ok(Linear { weight, bias })
    }
}

/// Host tensors of `model` under Hugging Face names and orientation.
pub fn model_to_host(model: &LlamaModel) -> Result<BTreeMap<String, HostTensor>> {
    let mut out = BTreeMap::new();
    let mut err = None;
    model.visit_weights(&mut |name, layout, t| match HostTensor::from_tensor(t) {
        Ok(h) => {
            let h = match layout {
                Layout::Same => h,
                Layout::Transposed => h.transposed(),
                Layout::Row => HostTensor { shape: vec![h.data.len()], data: h.data },
            };
            out.insert(name.to_string(), h);
        }
        Err(e) => err = Some(e),
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The files of `model` + `tokenizer` in the Hugging Face layout.
pub fn model_files(model: &LlamaModel, tokenizer: &Tokenizer) -> Result<ModelFiles> {
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    Ok(ModelFiles {
        config: serde_json::to_string_pretty(&model.config)?,
        weights: safetensors_io::write(&model_to_host(model)?, Some(meta))?,
        tokenizer: Some(tokenizer.to_json()?),
    })
}
