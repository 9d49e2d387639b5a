//! Measurements of the GPU and its link for `amdahl calibrate` and the GPU benchmark: device
//! memory bandwidth, host↔device bandwidth from pinned and from pageable memory, the fixed
//! cost of a copy, and cuBLAS sgemm throughput. Every figure is the median of several timed
//! repetitions after a warm-up, over buffers filled with non-zero data.

use std::time::Instant;

use cudarc::driver::CudaContext;

use super::cuda::context;
use super::error::{GpuError, driver};

/// What one round of link and memory measurements found (bytes per second, seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkFigures {
    /// Device-to-device copy, counting bytes read plus bytes written.
    pub device_copy: f64,
    pub pinned_to_device: f64,
    pub pinned_to_host: f64,
    pub pageable_to_device: f64,
    pub pageable_to_host: f64,
    /// Median time of a 4-byte host→device copy (the fixed cost every copy pays).
    pub copy_latency: f64,
    /// Device memory free when measured.
    pub free_bytes: u64,
    pub total_bytes: u64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Times `f` once to warm up, then `reps` times; the median in seconds.
fn timed(reps: usize, mut f: impl FnMut() -> Result<(), GpuError>) -> Result<f64, GpuError> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// Measures the link and device memory with buffers of `bytes` (64 MiB is enough to reach
/// full bandwidth on PCIe and HBM; 1 GiB gives steadier figures).
pub fn link(bytes: usize) -> Result<LinkFigures, GpuError> {
    let ctx: std::sync::Arc<CudaContext> = context()?;
    let stream = ctx.default_stream();
    let (free_bytes, total_bytes) = ctx.mem_get_info().map_err(driver)?;
    let pattern: Vec<u8> = (0..bytes).map(|i| (i * 131 + 7) as u8).collect();
    let src = stream.clone_htod(&pattern).map_err(driver)?;
    let mut dst = stream.alloc_zeros::<u8>(bytes).map_err(driver)?;
    let reps = 5;
    let copy = timed(reps, || {
        stream.memcpy_dtod(&src, &mut dst).map_err(driver)?;
        stream.synchronize().map_err(driver)
    })?;
    // SAFETY: the pinned buffer is filled before anything reads it.
    let mut pinned = unsafe { ctx.alloc_pinned::<u8>(bytes) }.map_err(driver)?;
    pinned
        .as_mut_slice()
        .map_err(driver)?
        .copy_from_slice(&pattern);
    let pinned_in = timed(reps, || {
        stream.memcpy_htod(&pinned, &mut dst).map_err(driver)?;
        stream.synchronize().map_err(driver)
    })?;
    let pinned_out = timed(reps, || {
        stream.memcpy_dtoh(&src, &mut pinned).map_err(driver)?;
        stream.synchronize().map_err(driver)
    })?;
    let mut pageable = pattern.clone();
    let pageable_in = timed(reps, || {
        stream.memcpy_htod(&pattern, &mut dst).map_err(driver)?;
        stream.synchronize().map_err(driver)
    })?;
    let pageable_out = timed(reps, || {
        stream.memcpy_dtoh(&src, &mut pageable).map_err(driver)?;
        stream.synchronize().map_err(driver)
    })?;
    if pageable != pattern {
        return Err(GpuError::Driver(
            "a device→host copy returned other bytes than were sent".into(),
        ));
    }
    let tiny = [1u32];
    let mut one = stream.alloc_zeros::<u32>(1).map_err(driver)?;
    let latency = timed(21, || {
        stream.memcpy_htod(&tiny, &mut one).map_err(driver)?;
        stream.synchronize().map_err(driver)
    })?;
    let b = bytes as f64;
    Ok(LinkFigures {
        device_copy: 2.0 * b / copy,
        pinned_to_device: b / pinned_in,
        pinned_to_host: b / pinned_out,
        pageable_to_device: b / pageable_in,
        pageable_to_host: b / pageable_out,
        copy_latency: latency,
        free_bytes: free_bytes as u64,
        total_bytes: total_bytes as u64,
    })
}

/// cuBLAS sgemm on device-resident `n`×`n` matrices: floating-point operations per second.
pub fn sgemm_flops(n: usize) -> Result<f64, GpuError> {
    super::dense::sgemm_seconds(n, n, n, 5).map(|s| 2.0 * (n as f64).powi(3) / s)
}
