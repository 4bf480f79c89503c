//! `--device cpu|gpu`, shared by every command that computes: it chooses the backend for the
//! whole process (`pyra_core::backend::select`) and prints where the command computes.

use anyhow::Result;
use clap::Args;
use pyra_core::backend::{self, DeviceChoice};
use pyra_core::burn::tensor::Device;

#[derive(Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// Where to compute: `cpu`, or `gpu` (a build with `--features gpu`: Vulkan; `cuda`:
    /// CUDA). Default: the GPU in a GPU build, else the CPU; `BURN_DEVICE` also chooses.
    #[arg(long, value_name = "cpu|gpu")]
    pub device: Option<DeviceChoice>,
}

impl DeviceArgs {
    /// Chooses the device, prints `device: ...` on stderr, and returns it.
    pub fn select(&self) -> Result<Device> {
        let choice = self.device.unwrap_or_else(backend::default_choice);
        let line = backend::select(choice).map_err(anyhow::Error::msg)?;
        eprintln!("device: {line}");
        Ok(backend::default_device())
    }

    /// The flag as a child process of this executable gets it.
    pub fn to_args(&self) -> Vec<String> {
        match self.device {
            Some(DeviceChoice::Cpu) => vec!["--device".into(), "cpu".into()],
            Some(DeviceChoice::Gpu) => vec!["--device".into(), "gpu".into()],
            None => Vec::new(),
        }
    }
}
