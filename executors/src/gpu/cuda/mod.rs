//! Running a [`KernelPlan`] on a CUDA device: one fused kernel per plan, written as CUDA C from
//! the IR, compiled by NVRTC for the device's architecture and cached per process.
//!
//! The host reads the plan's Parquet columns, packs each into one contiguous array of its
//! device type (strings become dictionary codes, null masks become one byte per row and are
//! skipped for columns without nulls) and copies them to the device. The kernel walks the rows
//! with a grid-stride loop: it evaluates the filter, finds the row's group slot (direct
//! aggregation: each key's value range or dictionary is small enough to index), and folds the
//! aggregate arguments into per-block accumulators in shared memory, which each block then
//! adds to the global ones. Sums of integers and decimals are 128-bit (two words with carry),
//! so they are exact like DataFusion's; row arithmetic is 64-bit with overflow detected, and
//! an overflow makes the run fail, so the stage reruns on the CPU. The accumulators come back
//! and [`super::reference`] turns them into DataFusion's output rows.
//!
//! Nothing here may be called unless [`super::devices`] reported a usable device: cudarc
//! panics when the CUDA libraries are missing.
//!
//! The work is split by subject: `pack` turns Arrow columns into device arrays, `layout` places
//! the accumulators and reads them back into rows, `codegen` writes the kernel's CUDA C,
//! `launch` compiles (NVRTC, cached), uploads, runs and downloads, and [`emulation`] runs the
//! same kernel source on the host without a GPU.

mod codegen;
pub mod emulation;
mod launch;
mod layout;
mod pack;

use datafusion::arrow::array::ArrayRef;

use super::plan::KernelPlan;
use super::reference::{self as host, Dictionary};
use codegen::kernel_source;
use layout::Layout;
use pack::{Column, pack};

pub use super::error::GpuError;
pub(crate) use super::error::driver;
pub use launch::{GpuTimings, compile_ptx, plan_columns, run, run_batches, run_timed};
pub(crate) use launch::{compiled, context};

/// A plan made ready for a device: its columns packed, its accumulators laid out, its kernel
/// written. Nothing here touches CUDA.
struct Prepared {
    columns: Vec<Column>,
    dictionary: Dictionary,
    layout: Layout,
    source: String,
}

fn prepare(plan: &KernelPlan) -> Result<Prepared, GpuError> {
    let batches = host::read(plan).map_err(GpuError::Input)?;
    prepare_batches(plan, &batches)
}

fn prepare_batches(
    plan: &KernelPlan,
    batches: &[(Vec<ArrayRef>, usize)],
) -> Result<Prepared, GpuError> {
    let mut dictionary = Dictionary::default();
    let columns = pack(plan, batches, &mut dictionary)?;
    let layout = Layout::new(plan, &columns, &dictionary)?;
    let source = kernel_source(plan, &columns, &layout, &dictionary)?;
    Ok(Prepared {
        columns,
        dictionary,
        layout,
        source,
    })
}

/// The CUDA C source of the kernel that [`run`] would launch for `plan` (its inputs are read
/// to size the group slots and dictionaries).
pub fn source(plan: &KernelPlan) -> Result<String, GpuError> {
    Ok(prepare(plan)?.source)
}
