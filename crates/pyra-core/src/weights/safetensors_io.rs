//! safetensors reading and writing through the `safetensors` crate.

use std::collections::HashMap;
use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::{NamedTensor, StateDict, TensorValues, WeightsError};

/// Parse a safetensors file held in memory. Tensors keep the file's (sorted) order.
pub fn read_safetensors(bytes: &[u8]) -> Result<StateDict, WeightsError> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| WeightsError::Malformed(format!("not a valid safetensors file ({e})")))?;
    let mut names: Vec<String> = file.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    let mut out = StateDict::default();
    for name in names {
        let view = file
            .tensor(&name)
            .map_err(|e| WeightsError::Malformed(format!("tensor `{name}` is unreadable ({e})")))?;
        let data = view.data();
        let (values, source_dtype) = match view.dtype() {
            Dtype::F32 => (
                TensorValues::F32(
                    data.chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                ),
                "F32",
            ),
            Dtype::F16 => (
                TensorValues::F32(
                    data.chunks_exact(2)
                        .map(|b| f16::from_le_bytes(b.try_into().unwrap()).to_f32())
                        .collect(),
                ),
                "F16",
            ),
            Dtype::BF16 => (
                TensorValues::F32(
                    data.chunks_exact(2)
                        .map(|b| bf16::from_le_bytes(b.try_into().unwrap()).to_f32())
                        .collect(),
                ),
                "BF16",
            ),
            Dtype::F64 => (
                TensorValues::F32(
                    data.chunks_exact(8)
                        .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                        .collect(),
                ),
                "F64",
            ),
            Dtype::I64 => (
                TensorValues::I64(
                    data.chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                ),
                "I64",
            ),
            Dtype::I32 => (
                TensorValues::I64(
                    data.chunks_exact(4)
                        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                        .collect(),
                ),
                "I32",
            ),
            Dtype::U8 => (
                TensorValues::I64(data.iter().map(|&b| b as i64).collect()),
                "U8",
            ),
            other => {
                return Err(WeightsError::Format(format!(
                    "tensor `{name}` has the unsupported dtype {other:?}"
                )))
            }
        };
        out.push(NamedTensor {
            name,
            shape: view.shape().to_vec(),
            values,
            source_dtype,
        });
    }
    Ok(out)
}

/// Serialize a state dict to safetensors bytes (f32 stays F32, i64 stays I64).
pub fn write_safetensors(
    dict: &StateDict,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, WeightsError> {
    let buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = dict
        .tensors
        .iter()
        .map(|t| {
            let (dtype, bytes) = match &t.values {
                TensorValues::F32(v) => {
                    (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                TensorValues::I64(v) => {
                    (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
            };
            (t.name.clone(), dtype, t.shape.clone(), bytes)
        })
        .collect();
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| WeightsError::Format(format!("cannot serialize `{name}` ({e})")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, metadata)
        .map_err(|e| WeightsError::Format(format!("cannot serialize safetensors ({e})")))
}

/// Write a state dict as a safetensors file, atomically (temporary file, then rename), so an
/// interrupted write never leaves a truncated file under the final name.
pub fn save_safetensors(
    dict: &StateDict,
    metadata: Option<HashMap<String, String>>,
    path: impl AsRef<Path>,
) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let bytes = write_safetensors(dict, metadata)?;
    crate::fs::write_atomic(path, &bytes).map_err(|source| WeightsError::Io {
        path: path.display().to_string(),
        source,
    })
}
