//! Page-locked (pinned) host buffers, kept and reused by every GPU stage of the process.
//!
//! Copies to the device reach the link's full bandwidth only from pinned memory; pinning costs
//! milliseconds per buffer (and much more for gigabytes), so buffers are pooled: a stage takes
//! the smallest free buffer that fits (or pins a new one, rounded up to a power of two), fills
//! it, copies from it, and gives it back. At most [`POOL_BYTES`] stay pinned while unused.

use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DevicePtrMut, DeviceRepr, PinnedHostSlice,
};

use super::error::{GpuError, driver};

/// Pinned bytes the pool keeps while no stage uses them.
pub const POOL_BYTES: usize = 4 << 30;
/// Below this, a plain (pageable) copy: pinning would cost more than it saves.
pub const SMALL_BYTES: usize = 1 << 20;

static POOL: Mutex<Vec<PinnedHostSlice<u8>>> = Mutex::new(Vec::new());

/// A pinned buffer taken from the pool; it goes back when dropped.
pub struct Pinned {
    buffer: Option<PinnedHostSlice<u8>>,
}

impl Pinned {
    /// A buffer of at least `bytes`.
    pub fn take(ctx: &Arc<CudaContext>, bytes: usize) -> Result<Pinned, GpuError> {
        let mut pool = POOL.lock().expect("pinned pool");
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= bytes)
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i);
        let buffer = match best {
            Some(i) => pool.swap_remove(i),
            None => {
                drop(pool);
                let size = bytes.next_power_of_two().max(SMALL_BYTES);
                // SAFETY: the buffer's bytes are written before they are read (`fill`).
                unsafe { ctx.alloc_pinned::<u8>(size) }.map_err(driver)?
            }
        };
        Ok(Pinned {
            buffer: Some(buffer),
        })
    }

    fn buffer(&mut self) -> &mut PinnedHostSlice<u8> {
        self.buffer.as_mut().expect("held until drop")
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let Some(buffer) = self.buffer.take() else {
            return;
        };
        let mut pool = POOL.lock().expect("pinned pool");
        let held: usize = pool.iter().map(|b| b.len()).sum();
        if held + buffer.len() <= POOL_BYTES {
            pool.push(buffer);
        }
    }
}

/// Host data on its way to the device: in a pooled pinned buffer when large.
pub enum Staged<'a, T> {
    Pinned { buffer: Pinned, len: usize },
    Pageable(&'a [T]),
}

/// Puts `data` where the copy to the device is fastest: a pooled pinned buffer when large.
pub fn stage<'a, T: DeviceRepr + Copy>(
    ctx: &Arc<CudaContext>,
    data: &'a [T],
) -> Result<Staged<'a, T>, GpuError> {
    let bytes = std::mem::size_of_val(data);
    if bytes < SMALL_BYTES {
        return Ok(Staged::Pageable(data));
    }
    let mut pinned = Pinned::take(ctx, bytes)?;
    let host = pinned.buffer().as_mut_slice().map_err(driver)?;
    // SAFETY: `T` is plain data (`DeviceRepr + Copy`); its bytes are copied as they are.
    let raw = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), bytes) };
    host[..bytes].copy_from_slice(raw);
    Ok(Staged::Pinned {
        buffer: pinned,
        len: data.len(),
    })
}

/// Starts copying staged data to a new device buffer on `stream`; the copy is done when the
/// stream is synchronised, and the staged data must live until then.
pub fn send<T: DeviceRepr + Copy>(
    stream: &Arc<CudaStream>,
    staged: &mut Staged<'_, T>,
) -> Result<CudaSlice<T>, GpuError> {
    match staged {
        Staged::Pageable(data) => stream.clone_htod(*data).map_err(driver),
        Staged::Pinned { buffer, len } => {
            let bytes = *len * std::mem::size_of::<T>();
            // SAFETY: the device buffer is written whole by the copy below before it is read.
            let mut device = unsafe { stream.alloc::<T>(*len) }.map_err(driver)?;
            {
                let (dst, _record) = device.device_ptr_mut(stream);
                let src = buffer.buffer().as_slice().map_err(driver)?;
                // SAFETY: `dst` holds `bytes` bytes; `src[..bytes]` is pinned and, as the
                // caller keeps `staged` alive until the stream is synchronised, stays valid.
                unsafe {
                    cudarc::driver::result::memcpy_htod_async(
                        dst,
                        &src[..bytes],
                        stream.cu_stream(),
                    )
                }
                .map_err(driver)?;
            }
            Ok(device)
        }
    }
}
