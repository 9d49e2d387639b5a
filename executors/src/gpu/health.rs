//! Whether the GPU this process found at start is still there.
//!
//! Some CUDA errors mean the device is gone or its context is unusable for the rest of the
//! process (CUDA calls them sticky: an uncorrectable ECC error, an illegal address in a
//! kernel, the device falling off the bus). After one of them, every later GPU call of this
//! process would fail the same way, so the first such error marks the GPU lost: stages run
//! on the CPU and say why, and a worker stops advertising the GPU and claiming `device: gpu`
//! tasks (another worker takes them). Restarting the process is what brings a repaired GPU
//! back. Errors that leave the context usable (out of memory, a compile error, a bad input)
//! fall back for that stage only.

use std::sync::Mutex;

use super::GpuError;

static LOST: Mutex<Option<String>> = Mutex::new(None);

/// Driver results (as cudarc prints them) after which the device or this process's context
/// cannot be used again.
const LOSING: &[&str] = &[
    "CUDA_ERROR_NO_DEVICE",
    "CUDA_ERROR_DEVICE_UNAVAILABLE",
    "CUDA_ERROR_DEVICES_UNAVAILABLE",
    "CUDA_ERROR_ECC_UNCORRECTABLE",
    "CUDA_ERROR_NVLINK_UNCORRECTABLE",
    "CUDA_ERROR_HARDWARE_STACK_ERROR",
    "CUDA_ERROR_ILLEGAL_INSTRUCTION",
    "CUDA_ERROR_ILLEGAL_ADDRESS",
    "CUDA_ERROR_MISALIGNED_ADDRESS",
    "CUDA_ERROR_INVALID_ADDRESS_SPACE",
    "CUDA_ERROR_INVALID_PC",
    "CUDA_ERROR_LAUNCH_FAILED",
    "CUDA_ERROR_CONTEXT_IS_DESTROYED",
    "CUDA_ERROR_SYSTEM_NOT_READY",
    "CUDA_ERROR_EXTERNAL_DEVICE",
];

/// Whether a driver error's text names a result after which the GPU cannot be used again.
pub fn is_lasting(error_text: &str) -> bool {
    LOSING.iter().any(|code| error_text.contains(code))
}

/// Looks at a failed GPU run: a lasting driver error marks the GPU lost for this process.
/// Returns whether it did.
pub fn observe(error: &GpuError) -> bool {
    match error {
        GpuError::Driver(text) if is_lasting(text) => {
            mark_lost(text);
            true
        }
        _ => false,
    }
}

/// Marks the GPU lost (the first reason is kept). Called on a lasting driver error, and by
/// fault-injection tests.
pub fn mark_lost(reason: &str) {
    let mut lost = LOST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if lost.is_none() {
        *lost = Some(reason.to_string());
    }
}

/// Why the GPU was lost, if it was.
pub fn lost() -> Option<String> {
    LOST.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Why no GPU can run a stage now: it was lost, or none was usable from the start.
pub fn unusable_reason() -> Option<String> {
    if let Some(reason) = lost() {
        return Some(format!(
            "the GPU was lost earlier in this process: {reason}"
        ));
    }
    super::devices().problem.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lasting_errors_are_told_from_passing_ones() {
        for text in [
            "DriverError(CUDA_ERROR_ECC_UNCORRECTABLE, \"uncorrectable ECC error encountered\")",
            "DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, \"an illegal memory access was encountered\")",
            "DriverError(CUDA_ERROR_NO_DEVICE, \"no CUDA-capable device is detected\")",
        ] {
            assert!(is_lasting(text), "{text}");
        }
        for text in [
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
            "DriverError(CUDA_ERROR_INVALID_VALUE, \"invalid argument\")",
            "NVRTC could not compile the kernel",
        ] {
            assert!(!is_lasting(text), "{text}");
        }
    }

    #[test]
    fn an_out_of_memory_error_does_not_lose_the_gpu_but_an_ecc_error_does() {
        assert!(!observe(&GpuError::Driver(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into()
        )));
        assert_eq!(lost(), None);
        assert!(observe(&GpuError::Driver(
            "DriverError(CUDA_ERROR_ECC_UNCORRECTABLE, \"uncorrectable ECC error\")".into()
        )));
        mark_lost("a later reason is not kept");
        let reason = unusable_reason().unwrap();
        assert!(
            reason.starts_with("the GPU was lost earlier in this process")
                && reason.contains("ECC"),
            "{reason}"
        );
    }
}
