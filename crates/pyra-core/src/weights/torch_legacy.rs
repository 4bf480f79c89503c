//! The legacy PyTorch container (`torch.save` before 1.6, and `_use_new_zipfile_serialization
//! =False`), as `torch/serialization.py`'s `_legacy_save` writes it: five things in a row,
//!
//! 1. a pickle of the magic number `0x1950a86a20f9469cfc6c`,
//! 2. a pickle of the protocol version (1001),
//! 3. a pickle of `sys_info` (`little_endian`, type sizes),
//! 4. the pickle of the object, whose storages are persistent ids
//!    `('storage', StorageClass, key, location, numel, None)`,
//! 5. a pickle of the sorted list of storage keys,
//!
//! then, for each key in that order, the storage: its element count as a little-endian `i64`
//! and the raw little-endian elements. The same restricted unpickler as for zip files reads
//! every pickle (nothing is executed), and every length is checked against the file.

use std::collections::HashMap;

use super::pickle::{unpickle_prefix, StorageDType, Value};
use super::torch_zip::state_dict_from;
use super::{StateDict, WeightsError};

/// The first pickle of every legacy file: protocol 2, `LONG1` of 10 bytes holding the magic
/// number, `STOP`.
const MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";

fn malformed(what: impl Into<String>) -> WeightsError {
    WeightsError::Malformed(what.into())
}

/// Whether `bytes` start like a legacy torch file.
pub fn is_legacy_torch(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Parse a legacy `torch.save(state_dict)` file held in memory.
pub fn read_torch_legacy(bytes: &[u8]) -> Result<StateDict, WeightsError> {
    if !is_legacy_torch(bytes) {
        return Err(malformed("not a legacy torch file (no magic number)"));
    }
    let mut pos = MAGIC.len();
    let mut next = |what: &str| -> Result<Value, WeightsError> {
        let (value, used) = unpickle_prefix(&bytes[pos..])
            .map_err(|e| malformed(format!("its {what} does not unpickle ({e})")))?;
        pos += used;
        Ok(value)
    };
    match next("protocol version")? {
        Value::Int(1001) => {}
        other => return Err(malformed(format!("protocol version {other:?}, not 1001"))),
    }
    let little_endian = match next("system information")? {
        Value::Dict(items) => items.iter().any(|(k, v)| {
            matches!(k, Value::Str(s) if s == "little_endian") && matches!(v, Value::Bool(true))
        }),
        _ => false,
    };
    if !little_endian {
        return Err(WeightsError::Format(
            "the file was written on a big-endian machine; only little-endian checkpoints are \
             supported"
                .into(),
        ));
    }
    let root = next("state dict")?;
    let keys = match next("storage key list")? {
        Value::List(keys) => keys
            .into_iter()
            .map(|k| match k {
                Value::Str(k) => Ok(k),
                _ => Err(malformed("a storage key is not a string")),
            })
            .collect::<Result<Vec<String>, _>>()?,
        _ => return Err(malformed("the storage keys are not a list")),
    };

    let mut dtypes = HashMap::new();
    storage_dtypes(&root, &mut dtypes, 0)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in keys {
        let dtype = *dtypes
            .get(&key)
            .ok_or_else(|| malformed(format!("storage `{key}` is listed but never used")))?;
        let header = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| malformed(format!("the file ends before storage `{key}`")))?;
        let numel = i64::from_le_bytes(header.try_into().unwrap());
        pos += 8;
        let length = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(dtype.size()))
            .filter(|&n| n <= bytes.len() - pos)
            .ok_or_else(|| {
                malformed(format!(
                    "storage `{key}` claims {numel} elements, more than the file holds"
                ))
            })?;
        storages.insert(key, bytes[pos..pos + length].to_vec());
        pos += length;
    }
    state_dict_from(root, |key| {
        storages
            .remove(key)
            .ok_or_else(|| malformed(format!("storage `{key}` is not in the file")))
    })
}

/// The dtype of every storage the tensors of `value` use.
fn storage_dtypes(
    value: &Value,
    out: &mut HashMap<String, StorageDType>,
    depth: usize,
) -> Result<(), WeightsError> {
    if depth > 64 {
        return Err(malformed("the state dict nests too deeply"));
    }
    match value {
        Value::Tensor(t) => {
            out.insert(t.storage_key.clone(), t.dtype);
        }
        Value::Dict(items) => {
            for (_, v) in items {
                storage_dtypes(v, out, depth + 1)?;
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for v in items {
                storage_dtypes(v, out, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        assert!(read_torch_legacy(b"\x80\x02K\x01.").is_err());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(b"\x80\x02M\xe9\x03.");
        assert!(read_torch_legacy(&bytes).is_err());
    }
}
