//! The GPU side of the executors (CUDA through cudarc, loaded at run time).
//!
//! [`devices`] says which GPUs this process can use, or why none ([`usable`]: and not lost
//! since); whether a stage tries one is its route (`amdahl_planner::route`). [`plan`] turns a DataFusion physical plan into a kernel plan (or says which node
//! keeps it on the CPU); [`reference`] is the reference evaluation of a kernel plan that the GPU
//! kernels must agree with; [`cuda`] writes, compiles (NVRTC, cached) and runs the kernel.
//! [`dense`] runs `knn`, `matmul` and `score` with cuBLAS and NVRTC kernels. [`pinned`] pools
//! page-locked upload buffers; [`resident`] keeps GPU-made outputs in device memory for the
//! next stage.

pub mod cuda;
pub mod dense;
mod device;
mod error;
pub mod health;
pub mod measure;
pub mod pinned;
pub mod reference;
pub mod resident;

/// The kernel plan IR and its translation live with the planner.
pub use amdahl_planner::kernel as plan;
pub use device::{DeviceInfo, DeviceReport, GPU_SWITCH_ENV, devices, probe};
pub use error::GpuError;
pub use plan::{KernelPlan, ScanFile, Unsupported, translate, translate_partial};

pub use amdahl_planner::route::AUTO_GPU_BYTES;

/// Whether this process can run stages on a GPU now: one was usable at start and has not
/// been lost since (see [`health`]).
pub fn usable() -> bool {
    health::unusable_reason().is_none()
}
