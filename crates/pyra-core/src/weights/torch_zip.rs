//! The PyTorch zip container (`torch.save` since 1.6): `<stem>/data.pkl` plus one raw
//! little-endian entry per storage under `<stem>/data/<key>`. The stem is whatever the file was
//! called when saved, so it is discovered, never assumed.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use half::{bf16, f16};

use super::pickle::{unpickle, StorageDType, TensorRef, Value};
use super::{NamedTensor, StateDict, TensorValues, WeightsError};

fn malformed(what: impl Into<String>) -> WeightsError {
    WeightsError::Malformed(what.into())
}

/// Parse a `torch.save(state_dict)` zip archive held in memory.
pub fn read_torch_zip(bytes: &[u8]) -> Result<StateDict, WeightsError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| malformed(format!("not a readable zip archive ({e})")))?;

    // Index the entries by name and find data.pkl.
    let mut entries: HashMap<String, usize> = HashMap::new();
    let mut pickle_name = None;
    for i in 0..archive.len() {
        let file = archive
            .by_index_raw(i)
            .map_err(|e| malformed(format!("zip entry {i} is unreadable ({e})")))?;
        let name = file.name().to_string();
        if name.ends_with("data.pkl") && name.matches('/').count() <= 1 {
            pickle_name = Some(name.clone());
        }
        entries.insert(name, i);
    }
    let pickle_name = pickle_name
        .ok_or_else(|| malformed("the zip archive has no data.pkl (not a torch.save file)"))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();

    let mut read_entry = |name: &str| -> Result<Vec<u8>, WeightsError> {
        let index = *entries
            .get(name)
            .ok_or_else(|| malformed(format!("the archive lacks the entry `{name}`")))?;
        let mut file = archive
            .by_index(index)
            .map_err(|e| malformed(format!("cannot open `{name}` in the archive ({e})")))?;
        // The size in the entry's header is the file's claim, not a fact: never reserve more
        // than the archive itself holds (entries are stored, not compressed).
        let mut out = Vec::with_capacity(file.size().min(bytes.len() as u64) as usize);
        file.read_to_end(&mut out)
            .map_err(|e| malformed(format!("cannot read `{name}` in the archive ({e})")))?;
        Ok(out)
    };

    let pickle = read_entry(&pickle_name)?;
    if let Ok(order) = read_entry(&format!("{prefix}byteorder")) {
        if order != b"little" {
            return Err(WeightsError::Format(format!(
                "storages are {}-endian; only little-endian checkpoints are supported",
                String::from_utf8_lossy(&order)
            )));
        }
    }

    let root = unpickle(&pickle)?;
    state_dict_from(root, |key| read_entry(&format!("{prefix}data/{key}")))
}

/// The state dict a checkpoint's root pickle describes, with each storage's bytes from
/// `storage(key)` (read once per storage).
pub(super) fn state_dict_from(
    root: Value,
    mut storage: impl FnMut(&str) -> Result<Vec<u8>, WeightsError>,
) -> Result<StateDict, WeightsError> {
    let dict = match root {
        Value::Dict(dict) => dict,
        _ => {
            return Err(WeightsError::Format(
                "the checkpoint is not a state dict (its top level is not a dict of tensors); \
                 save it with torch.save(model.state_dict(), path)"
                    .into(),
            ))
        }
    };

    // Some trainers wrap the state dict: {'state_dict': {...}} or {'model': {...}}.
    let dict = unwrap_nested(dict)?;

    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = StateDict::default();
    for (key, value) in dict {
        let name = match key {
            Value::Str(s) => s,
            _ => return Err(malformed("a state-dict key is not a string")),
        };
        let tensor = match value {
            Value::Tensor(t) => t,
            _ => {
                return Err(WeightsError::Format(format!(
                    "the entry `{name}` is not a tensor"
                )))
            }
        };
        if !storages.contains_key(&tensor.storage_key) {
            let bytes = storage(&tensor.storage_key)?;
            storages.insert(tensor.storage_key.clone(), bytes);
        }
        let storage = &storages[&tensor.storage_key];
        out.push(materialize(&name, &tensor, storage)?);
    }
    Ok(out)
}

fn unwrap_nested(dict: Vec<(Value, Value)>) -> Result<Vec<(Value, Value)>, WeightsError> {
    let all_tensors = dict.iter().all(|(_, v)| matches!(v, Value::Tensor(_)));
    if all_tensors {
        return Ok(dict);
    }
    for wrapper in ["state_dict", "model", "params", "params_ema"] {
        if let Some((_, Value::Dict(inner))) = dict
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == wrapper))
        {
            return Ok(inner.clone());
        }
    }
    Ok(dict)
}

fn dtype_name(dtype: StorageDType) -> &'static str {
    match dtype {
        StorageDType::F64 => "F64",
        StorageDType::F32 => "F32",
        StorageDType::F16 => "F16",
        StorageDType::BF16 => "BF16",
        StorageDType::I64 => "I64",
        StorageDType::I32 => "I32",
        StorageDType::I16 => "I16",
        StorageDType::I8 => "I8",
        StorageDType::U8 => "U8",
        StorageDType::Bool => "BOOL",
    }
}

/// Gather the strided view `tensor` out of the raw storage bytes into a contiguous array.
fn materialize(
    name: &str,
    tensor: &TensorRef,
    storage: &[u8],
) -> Result<NamedTensor, WeightsError> {
    let elem = tensor.dtype.size();
    if tensor.size.len() != tensor.stride.len() {
        return Err(malformed(format!(
            "`{name}` has {} sizes but {} strides",
            tensor.size.len(),
            tensor.stride.len()
        )));
    }
    if tensor.storage_numel.checked_mul(elem) != Some(storage.len()) {
        return Err(malformed(format!(
            "storage of `{name}` holds {} bytes, expected {} elements of {elem} bytes",
            storage.len(),
            tensor.storage_numel
        )));
    }
    let past_the_end = || {
        malformed(format!(
            "the view of `{name}` reaches past the end of its storage"
        ))
    };
    let numel = tensor
        .size
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(past_the_end)?;
    // A view of a saved weight never holds more elements than its storage; one that does
    // repeats them (stride 0) and would let a tiny file claim terabytes.
    if numel > tensor.storage_numel {
        return Err(malformed(format!(
            "`{name}` claims {numel} elements but its storage holds {}",
            tensor.storage_numel
        )));
    }
    // Highest element index touched by the view must lie inside the storage.
    let last = tensor
        .size
        .iter()
        .zip(&tensor.stride)
        .try_fold(tensor.offset, |sum, (&n, &s)| {
            sum.checked_add(n.saturating_sub(1).checked_mul(s)?)
        })
        .ok_or_else(past_the_end)?;
    if numel > 0 && last >= tensor.storage_numel {
        return Err(past_the_end());
    }
    let mut indices = Vec::with_capacity(numel);
    if numel > 0 {
        let rank = tensor.size.len();
        let mut idx = vec![0usize; rank];
        for _ in 0..numel {
            let flat: usize = tensor.offset
                + idx
                    .iter()
                    .zip(&tensor.stride)
                    .map(|(&i, &s)| i * s)
                    .sum::<usize>();
            indices.push(flat);
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < tensor.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    let at = |i: usize| &storage[i * elem..(i + 1) * elem];
    let values = match tensor.dtype {
        StorageDType::F32 => TensorValues::F32(
            indices
                .iter()
                .map(|&i| f32::from_le_bytes(at(i).try_into().unwrap()))
                .collect(),
        ),
        StorageDType::F16 => TensorValues::F32(
            indices
                .iter()
                .map(|&i| f16::from_le_bytes(at(i).try_into().unwrap()).to_f32())
                .collect(),
        ),
        StorageDType::BF16 => TensorValues::F32(
            indices
                .iter()
                .map(|&i| bf16::from_le_bytes(at(i).try_into().unwrap()).to_f32())
                .collect(),
        ),
        StorageDType::F64 => TensorValues::F32(
            indices
                .iter()
                .map(|&i| f64::from_le_bytes(at(i).try_into().unwrap()) as f32)
                .collect(),
        ),
        StorageDType::I64 => TensorValues::I64(
            indices
                .iter()
                .map(|&i| i64::from_le_bytes(at(i).try_into().unwrap()))
                .collect(),
        ),
        StorageDType::I32 => TensorValues::I64(
            indices
                .iter()
                .map(|&i| i32::from_le_bytes(at(i).try_into().unwrap()) as i64)
                .collect(),
        ),
        StorageDType::I16 => TensorValues::I64(
            indices
                .iter()
                .map(|&i| i16::from_le_bytes(at(i).try_into().unwrap()) as i64)
                .collect(),
        ),
        StorageDType::I8 => {
            TensorValues::I64(indices.iter().map(|&i| at(i)[0] as i8 as i64).collect())
        }
        StorageDType::U8 | StorageDType::Bool => {
            TensorValues::I64(indices.iter().map(|&i| at(i)[0] as i64).collect())
        }
    };
    Ok(NamedTensor {
        name: name.to_string(),
        shape: tensor.size.clone(),
        values,
        source_dtype: dtype_name(tensor.dtype),
    })
}
