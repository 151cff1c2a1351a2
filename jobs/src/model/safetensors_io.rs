//! Reading and writing safetensors files as host `f32` arrays, and moving them to and from Burn
//! tensors. Checkpoints may hold `F32`, `F16`, `BF16` or `F64` tensors; everything is computed in
//! `f32`.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Device, Tensor, TensorData, bf16, f16};
use safetensors::{Dtype, SafeTensors, View};

use crate::error::{Error, Result};

/// A host tensor: row-major `f32` values and their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A host copy of a rank-2 Burn tensor.
    pub fn from_tensor(t: &Tensor<2>) -> Result<HostTensor> {
        let shape = t.dims().to_vec();
        let data = t
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Internal(format!("reading tensor back: {e:?}")))?;
        Ok(HostTensor { shape, data })
    }

    /// Upload as a rank-2 tensor of shape `[rows, cols]` (a 1-D host tensor becomes `[1, n]`).
    pub fn to_tensor2(&self, device: &Device) -> Tensor<2> {
        let (r, c) = match self.shape.as_slice() {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            other => (other.iter().take(other.len().saturating_sub(1)).product(), other.last().copied().unwrap_or(1)),
        };
        Tensor::from_data(TensorData::new(self.data.clone(), [r, c]), device)
    }

    /// The transpose of a 2-D host tensor.
    pub fn transposed(&self) -> HostTensor {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                out[j * r + i] = self.data[i * c + j];
            }
        }
        HostTensor { shape: vec![c, r], data: out }
    }
}

struct F32View<'a> {
    shape: Vec<usize>,
    bytes: std::borrow::Cow<'a, [u8]>,
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.bytes.as_ref())
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Serialize `tensors` as an `F32` safetensors file, with optional string metadata.
pub fn write(tensors: &BTreeMap<String, HostTensor>, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let views: Vec<(String, F32View<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), F32View { shape: t.shape.clone(), bytes: std::borrow::Cow::Owned(bytes) })
        })
        .collect();
    safetensors::tensor::serialize(views, metadata).map_err(|e| Error::Internal(format!("safetensors serialize: {e}")))
}

/// Parse a safetensors file into host tensors (converted to `f32`), plus its metadata.
pub fn read(bytes: &[u8], path: &str) -> Result<(BTreeMap<String, HostTensor>, HashMap<String, String>)> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| Error::checkpoint(path, e.to_string()))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::checkpoint(path, e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
            Dtype::BF16 => {
                raw.chunks_exact(2).map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()
            }
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
            other => return Err(Error::checkpoint(path, format!("tensor {name} has unsupported dtype {other:?}"))),
        };
        out.insert(name, HostTensor { shape: view.shape().to_vec(), data });
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}
