//! The tensor backend: burn 0.22 selects it at run time through the `Device` value. Pyra's
//! code takes a `Device` everywhere and never names a backend; this module picks the default.
//!
//! - CPU: burn's pure-Rust Flex backend (always compiled), with Pyra's own convolution and
//!   attention kernels.
//! - GPU, `gpu` cargo feature: burn's wgpu backend (cubecl's WGSL shaders, which wgpu's naga
//!   turns into SPIR-V on Vulkan). It builds without a network beyond the crate registry.
//!   burn's `vulkan` feature (cubecl's own SPIR-V compiler) builds too, but Debian 12's
//!   lavapipe (Mesa 22.3.6) segfaults compiling its first shader (`create_compute_pipeline`);
//!   the WGSL route runs there (the official PANet forward matches to 8e-7).
//! - GPU, `cuda` cargo feature: burn's CUDA backend (its build downloads an LLVM bundle; see
//!   the README).
//!
//! A build with a GPU backend computes on the GPU by default. [`select`] (the commands'
//! `--device cpu|gpu`) or `BURN_DEVICE` (`cpu`/`flex`, `gpu`/`vulkan`/`cuda`) chooses.

use std::sync::OnceLock;

use burn::tensor::Device;

/// Where a command computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The Flex CPU backend.
    Cpu,
    /// The GPU backend compiled in (`gpu`: Vulkan, `cuda`: CUDA).
    Gpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(DeviceChoice::Cpu),
            "gpu" | "vulkan" | "cuda" => Ok(DeviceChoice::Gpu),
            _ => Err(format!("unknown device `{text}` (expected cpu or gpu)")),
        }
    }
}

/// One device of a data-parallel list (`pyra train --devices cuda:0,cuda:1`): `cpu`, or
/// `gpu`/`cuda`/`vulkan` with an optional `:N`. Without an index, the GPU of [`gpu`]; with
/// one, CUDA device N (the `cuda` build) or the N-th discrete adapter (the `gpu` build).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    pub choice: DeviceChoice,
    pub index: Option<usize>,
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, index) = match text.split_once(':') {
            Some((name, index)) => {
                let index = index
                    .parse()
                    .map_err(|_| format!("device `{text}`: `{index}` is not a device index"))?;
                (name, Some(index))
            }
            None => (text, None),
        };
        let choice: DeviceChoice = name.parse()?;
        if choice == DeviceChoice::Cpu && index.is_some_and(|i| i > 0) {
            return Err(format!("device `{text}`: there is one CPU device, `cpu`"));
        }
        Ok(DeviceSpec { choice, index })
    }
}

impl DeviceSpec {
    /// The device, or why this build cannot compute on it.
    pub fn device(self) -> Result<Device, String> {
        match (self.choice, self.index) {
            (DeviceChoice::Cpu, _) => Ok(Device::flex()),
            (DeviceChoice::Gpu, _) if !gpu_compiled() => Err(NO_GPU_BACKEND.into()),
            (DeviceChoice::Gpu, None) => Ok(gpu()),
            (DeviceChoice::Gpu, Some(index)) => Ok(gpu_at(index)),
        }
    }
}

const NO_GPU_BACKEND: &str = "this build has no GPU backend: build with `--features gpu` \
     (Vulkan) or `--features cuda`, or use --device cpu";

static SELECTED: OnceLock<DeviceChoice> = OnceLock::new();

/// Whether a GPU backend is compiled in.
pub fn gpu_compiled() -> bool {
    cfg!(any(feature = "gpu", feature = "cuda"))
}

/// The name of the compiled GPU backend, `None` without one.
pub fn gpu_backend_name() -> Option<&'static str> {
    if cfg!(feature = "cuda") {
        Some("CUDA")
    } else if cfg!(feature = "gpu") {
        Some("Vulkan")
    } else {
        None
    }
}

/// Makes `choice` the device of [`default_device`] for the rest of the process, and checks
/// that it can compute: a GPU choice in a build without a GPU backend, or on a machine whose
/// driver offers no adapter, is an error (one line, for the user). Returns the device's
/// description ([`describe`]). Only the first call of a process chooses.
pub fn select(choice: DeviceChoice) -> Result<String, String> {
    if choice == DeviceChoice::Gpu && !gpu_compiled() {
        return Err(NO_GPU_BACKEND.into());
    }
    let chosen = *SELECTED.get_or_init(|| choice);
    let device = device_of(chosen);
    describe(&device)
}

/// What `BURN_DEVICE` asks for, if it is set to a known name.
fn from_environment() -> Option<DeviceChoice> {
    std::env::var("BURN_DEVICE").ok()?.parse().ok()
}

/// The device Pyra runs on: what [`select`] chose, else `BURN_DEVICE`, else the GPU when a
/// GPU backend is compiled in, else the CPU.
pub fn default_device() -> Device {
    device_of(default_choice())
}

/// The choice behind [`default_device`].
pub fn default_choice() -> DeviceChoice {
    if let Some(choice) = SELECTED.get() {
        return *choice;
    }
    match from_environment() {
        Some(DeviceChoice::Gpu) if gpu_compiled() => DeviceChoice::Gpu,
        Some(_) => DeviceChoice::Cpu,
        None if gpu_compiled() => DeviceChoice::Gpu,
        None => DeviceChoice::Cpu,
    }
}

fn device_of(choice: DeviceChoice) -> Device {
    match choice {
        DeviceChoice::Cpu => Device::flex(),
        DeviceChoice::Gpu => gpu(),
    }
}

/// The GPU device of the compiled GPU backend (the first adapter the driver offers). Falls
/// back to the CPU in a build without one.
pub fn gpu() -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda(0)
    }
    #[cfg(all(feature = "gpu", not(feature = "cuda")))]
    {
        Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
    }
    #[cfg(not(any(feature = "gpu", feature = "cuda")))]
    {
        Device::flex()
    }
}

/// GPU number `index` of the compiled GPU backend: CUDA device `index`, or the `index`-th
/// discrete adapter of wgpu. The CPU in a build without a GPU backend.
pub fn gpu_at(index: usize) -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda(index)
    }
    #[cfg(all(feature = "gpu", not(feature = "cuda")))]
    {
        Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index))
    }
    #[cfg(not(any(feature = "gpu", feature = "cuda")))]
    {
        let _ = index;
        Device::flex()
    }
}

/// Whether [`default_device`] is the CPU.
pub fn default_is_cpu() -> bool {
    default_choice() == DeviceChoice::Cpu
}

/// Whether `device` is the Flex CPU backend (with or without autodiff).
pub fn is_cpu(device: &Device) -> bool {
    device == &Device::flex() || device == &Device::flex().autodiff()
}

/// The CPU device (Flex), whatever else is compiled in.
pub fn cpu() -> Device {
    Device::flex()
}

/// `device` with automatic differentiation enabled (for training and gradient checks).
pub fn with_autodiff(device: Device) -> Device {
    device.autodiff()
}

/// One line naming where `device` computes: `CPU (Flex): <model>` or `Vulkan GPU: <adapter>`.
/// Opening a GPU that is not there is an error, not a panic.
pub fn describe(device: &Device) -> Result<String, String> {
    if is_cpu(device) {
        return Ok(format!("CPU (Flex): {}", cpu_model()));
    }
    let backend = gpu_backend_name().unwrap_or("GPU");
    let name = open_quietly(device)
        .map_err(|why| format!("no {backend} device could be opened ({why}); use --device cpu"))?;
    Ok(format!("{backend} GPU: {name}"))
}

/// The adapter's name, opening the device; a panic of the driver layer becomes an error.
#[cfg(any(feature = "gpu", feature = "cuda"))]
fn open_quietly(device: &Device) -> Result<String, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(|| device.identity().map(|i| i.name));
    std::panic::set_hook(hook);
    match opened {
        Ok(Some(name)) => Ok(name),
        Ok(None) => Ok("unnamed device".into()),
        Err(payload) => Err(payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the driver failed".into())
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()),
    }
}

#[cfg(not(any(feature = "gpu", feature = "cuda")))]
fn open_quietly(_device: &Device) -> Result<String, String> {
    Err("this build has no GPU backend".into())
}

/// The CPU's model name as /proc/cpuinfo gives it, its family and model numbers where it
/// gives them (a generic name such as "AMD EPYC" spans several generations), and the
/// instruction set Pyra's kernels use: "AMD EPYC (family 25 model 1), avx2".
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let numbers = match (field("cpu family"), field("model")) {
        (Some(family), Some(number)) => format!(" (family {family} model {number})"),
        _ => String::new(),
    };
    format!("{model}{numbers}, {}", crate::ops::isa::isa().name())
}
