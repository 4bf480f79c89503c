//! Weights on disk: official PyTorch `model_best.pt` files (read-only, through a restricted
//! unpickler), safetensors (read and write), and strict loading into modules by state-dict key.
//!
//! Every file becomes a [`StateDict`]: an ordered list of named tensors with their source
//! dtype. Float storages of any width (f64, f32, f16, bf16) are converted to f32 exactly as
//! PyTorch's `load_state_dict` up-casts them; integer tensors (BatchNorm's
//! `num_batches_tracked`) are kept as i64.

mod apply;
pub mod pickle;
mod safetensors_io;
mod torch_legacy;
mod torch_zip;

use std::path::Path;

pub use apply::{
    alias_map, gradients_of, load_state_dict, state_dict_of, tie_shared_params, trainable_keys,
    LoadOptions, LoadReport,
};
pub use safetensors_io::{read_safetensors, save_safetensors, write_safetensors};
pub use torch_legacy::read_torch_legacy;
pub use torch_zip::read_torch_zip;

/// Errors of reading, writing and applying weights. Each names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("refusing to load this checkpoint: {0}")]
    UnsafePickle(String),
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("{0}")]
    Format(String),
    #[error("checkpoint does not match the model: {0}")]
    Mismatch(String),
}

/// Element values of a stored tensor after conversion.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorValues {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// One named tensor of a state dict.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: TensorValues,
    /// The dtype it had on disk ("F32", "F16", "I64", ...), for messages and model cards.
    pub source_dtype: &'static str,
}

impl NamedTensor {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Self {
        Self {
            name: name.into(),
            shape,
            values: TensorValues::F32(values),
            source_dtype: "F32",
        }
    }

    /// The values as f32 (integers are converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.values {
            TensorValues::F32(v) => v.clone(),
            TensorValues::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An ordered collection of named tensors, as `model.state_dict()` is in PyTorch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDict {
    pub tensors: Vec<NamedTensor>,
}

impl StateDict {
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Like [`StateDict::get`] but an error naming the key (and the file) when absent.
    pub fn require(&self, name: &str) -> Result<&NamedTensor, WeightsError> {
        self.get(name)
            .ok_or_else(|| WeightsError::Format(format!("no tensor named `{name}`")))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }

    pub fn push(&mut self, tensor: NamedTensor) {
        self.tensors.push(tensor);
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Read a `.pt` (PyTorch zip format) or `.safetensors` file, chosen by its content.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parse checkpoint bytes (`.pt` zip or legacy, or safetensors); `origin` names them in
    /// errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, WeightsError> {
        let named = |e: WeightsError| match e {
            WeightsError::Malformed(m) => WeightsError::Malformed(format!("{origin}: {m}")),
            WeightsError::UnsafePickle(m) => WeightsError::UnsafePickle(format!("{origin}: {m}")),
            WeightsError::Format(m) => WeightsError::Format(format!("{origin}: {m}")),
            other => other,
        };
        let dict = if bytes.starts_with(b"PK\x03\x04") {
            read_torch_zip(bytes).map_err(named)?
        } else if looks_like_safetensors(bytes) {
            read_safetensors(bytes).map_err(named)?
        } else if torch_legacy::is_legacy_torch(bytes) {
            read_torch_legacy(bytes).map_err(named)?
        } else if bytes.starts_with(&[0x80]) {
            return Err(named(WeightsError::Format(
                "a pickle, but not a torch.save file (no legacy magic number nor zip archive)"
                    .into(),
            )));
        } else {
            return Err(named(WeightsError::Format(
                "not a PyTorch checkpoint (zip or legacy) nor a safetensors file".into(),
            )));
        };
        Ok(dict.without_data_parallel_prefix())
    }

    /// The dict without the `module.` that `nn.DataParallel` puts before every key, when every
    /// key has it (as spandrel and the models' own loaders strip it).
    pub fn without_data_parallel_prefix(mut self) -> Self {
        let wrapped =
            !self.tensors.is_empty() && self.tensors.iter().all(|t| t.name.starts_with("module."));
        if wrapped {
            for tensor in &mut self.tensors {
                tensor.name.replace_range(.."module.".len(), "");
            }
        }
        self
    }
}

fn looks_like_safetensors(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && bytes[8] == b'{'
}
