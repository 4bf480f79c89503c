//! Any bytes through the checkpoint reader (PyTorch zip + restricted unpickler, legacy
//! pickle, safetensors): a state dict or an error, never a panic, and never anything run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(dict) = pyra_core::weights::StateDict::from_bytes(bytes, "fuzz input") {
        for tensor in &dict.tensors {
            assert_eq!(tensor.numel(), tensor.to_f32().len());
        }
    }
});
