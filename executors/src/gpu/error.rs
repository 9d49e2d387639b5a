//! How a GPU run fails (the stage then runs on the CPU and says why).

/// Why a GPU run did not produce a result (the stage then runs on the CPU).
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("{0}")]
    Unsupported(String),
    #[error("CUDA: {0}")]
    Driver(String),
    #[error("NVRTC could not compile the kernel: {0}")]
    Compile(String),
    #[error("input: {0}")]
    Input(String),
    #[error("arithmetic overflow in a row (DataFusion decides on the CPU)")]
    Overflow,
}

pub(crate) fn driver(e: impl std::fmt::Debug) -> GpuError {
    GpuError::Driver(format!("{e:?}"))
}
