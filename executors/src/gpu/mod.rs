//! The GPU side of the executors (CUDA through cudarc, loaded at run time).
//!
//! [`devices`] says which GPUs this process can use, or why none. [`plan`] turns a DataFusion
//! physical plan into a kernel plan (or says which node keeps it on the CPU); [`host`] is the
//! reference evaluation of a kernel plan that the GPU kernels must agree with.

pub mod cuda;
pub mod dense;
mod device;
pub mod host;
pub mod pinned;
pub mod plan;

pub use device::{DeviceInfo, DeviceReport, GPU_SWITCH_ENV, devices, probe};
pub use plan::{KernelPlan, Unsupported, translate};
