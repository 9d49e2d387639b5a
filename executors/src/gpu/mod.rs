//! The GPU side of the executors (CUDA through cudarc, loaded at run time).
//!
//! [`devices`] says which GPUs this process can use, or why none; [`choice`] whether a stage
//! tries one. [`plan`] turns a DataFusion physical plan into a kernel plan (or says which node
//! keeps it on the CPU); [`host`] is the reference evaluation of a kernel plan that the GPU
//! kernels must agree with; [`cuda`] writes, compiles (NVRTC, cached) and runs the kernel.
//! [`dense`] runs `knn`, `matmul` and `score` with cuBLAS and NVRTC kernels. [`pinned`] pools
//! page-locked upload buffers; [`resident`] keeps GPU-made outputs in device memory for the
//! next stage.

pub mod cuda;
pub mod dense;
mod device;
mod error;
pub mod health;
pub mod host;
pub mod measure;
pub mod pinned;
pub mod plan;
pub mod resident;

pub use device::{DeviceInfo, DeviceReport, GPU_SWITCH_ENV, devices, probe};
pub use error::GpuError;
pub use plan::{KernelPlan, ScanFile, Unsupported, translate, translate_partial};

use amdahl_dags::DevicePreference;

use crate::stage::Stage;
use crate::storage::path_bytes;

/// Inputs at least this large go to a usable GPU when a task says `device: auto` and no
/// placement was decided for it (the worker has no profile, or estimating failed).
pub const AUTO_GPU_BYTES: u64 = 64 << 20;

/// Whether this process can run stages on a GPU now: one was usable at start and has not
/// been lost since (see [`health`]).
pub fn usable() -> bool {
    health::unusable_reason().is_none()
}

/// Why `stage` should try the GPU (the start of its note if it does not get there), or `None`
/// for the CPU.
pub fn choice(stage: &Stage) -> Option<String> {
    match stage.device {
        DevicePreference::Gpu => Some("device: gpu was asked for".into()),
        DevicePreference::Cpu => None,
        DevicePreference::Auto => {
            if !usable() {
                return None;
            }
            if let Some(placement) = &stage.placement {
                return (placement.place == amdahl_placement::Place::Gpu)
                    .then(|| placement.reason.clone());
            }
            let bytes: u64 = stage
                .inputs
                .iter()
                .filter_map(|i| i.path().map(path_bytes))
                .sum();
            auto_choice(bytes)
        }
    }
}

/// `device: auto` with a usable GPU: the GPU for inputs of at least [`AUTO_GPU_BYTES`].
fn auto_choice(bytes: u64) -> Option<String> {
    (bytes >= AUTO_GPU_BYTES).then(|| {
        format!(
            "device: auto chose the GPU for {} MiB of input (at least {} MiB)",
            bytes >> 20,
            AUTO_GPU_BYTES >> 20
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_the_gpu_from_the_threshold_on() {
        assert_eq!(auto_choice(AUTO_GPU_BYTES - 1), None);
        assert_eq!(
            auto_choice(AUTO_GPU_BYTES * 2).as_deref(),
            Some("device: auto chose the GPU for 128 MiB of input (at least 64 MiB)")
        );
    }
}
