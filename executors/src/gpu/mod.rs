//! The GPU side of the executors (CUDA through cudarc, loaded at run time).
//!
//! Only device discovery exists so far: [`devices`] says which GPUs this process can use, or
//! why none. Stages that ask for `device: gpu` run on the CPU and their log says why.

mod device;

pub use device::{DeviceInfo, DeviceReport, GPU_SWITCH_ENV, devices, probe};
