//! Launching a plan's kernel on device 0: the process's CUDA context, NVRTC compilation with a
//! per-process cache of compiled kernels, staging the packed columns in pinned buffers, the
//! upload, the run and reading the accumulators back, with the time each step took.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, Ptx};
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;

use super::pack::Packed;
use super::{GpuError, Prepared, driver, prepare_batches};
use crate::gpu::plan::KernelPlan;
use crate::gpu::{self, pinned, reference as host};

/// Where the time of a GPU run went.
#[derive(Clone, Copy, Debug, Default)]
pub struct GpuTimings {
    /// Reading Parquet and packing columns on the host.
    pub read_ms: f64,
    /// Copying the packed columns into pinned buffers.
    pub stage_ms: f64,
    pub upload_ms: f64,
    pub upload_bytes: u64,
    pub kernel_ms: f64,
    pub download_ms: f64,
    pub compile_ms: f64,
    pub rows: u64,
}

/// Runs `plan` on device 0 and returns its output in DataFusion's schema.
pub fn run(plan: &KernelPlan) -> Result<RecordBatch, GpuError> {
    run_timed(plan).map(|(batch, _)| batch)
}

/// [`run`], also saying where the time went.
pub fn run_timed(plan: &KernelPlan) -> Result<(RecordBatch, GpuTimings), GpuError> {
    let started = Instant::now();
    let batches = host::read(plan).map_err(GpuError::Input)?;
    run_batches(plan, &batches, started)
}

/// The columns `plan` reads, in its order, taken by name from record batches already in
/// memory (for [`run_batches`]); an absent column or one of another type is an error.
pub fn plan_columns(
    plan: &KernelPlan,
    batches: &[RecordBatch],
) -> Result<Vec<(Vec<ArrayRef>, usize)>, GpuError> {
    batches
        .iter()
        .map(|batch| {
            let columns = plan
                .columns
                .iter()
                .map(|c| {
                    let array = batch.column_by_name(&c.name).ok_or_else(|| {
                        GpuError::Input(format!("the batch has no column `{}`", c.name))
                    })?;
                    Ok(array.clone())
                })
                .collect::<Result<Vec<_>, GpuError>>()?;
            Ok((columns, batch.num_rows()))
        })
        .collect()
}

/// Runs `plan` over columns already in memory (per batch: the plan's columns in its order,
/// and the row count) instead of its files; timings count from `started`.
pub fn run_batches(
    plan: &KernelPlan,
    batches: &[(Vec<ArrayRef>, usize)],
    started: Instant,
) -> Result<(RecordBatch, GpuTimings), GpuError> {
    let mut timings = GpuTimings::default();
    for (columns, rows) in batches {
        if columns.len() != plan.columns.len() {
            return Err(GpuError::Input(format!(
                "{} columns given, the plan reads {}",
                columns.len(),
                plan.columns.len()
            )));
        }
        for (array, column) in columns.iter().zip(&plan.columns) {
            let strings = |t: &DataType| {
                matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            };
            let same_type = array.data_type() == &column.data_type
                || (strings(array.data_type()) && strings(&column.data_type));
            if !same_type || array.len() != *rows {
                return Err(GpuError::Input(format!(
                    "column `{}` is {} × {} rows, the plan reads {} × {rows}",
                    column.name,
                    array.data_type(),
                    array.len(),
                    column.data_type
                )));
            }
        }
    }
    let Prepared {
        columns,
        dictionary,
        layout,
        source,
    } = prepare_batches(plan, batches)?;
    let rows = columns.first().map_or(0, |c| c.len);
    timings.read_ms = ms(started);
    timings.rows = rows as u64;

    let ctx = context()?;
    let stream = ctx.default_stream();
    let compiling = Instant::now();
    let function = compiled(&ctx, &source, "amdahl_plan")?;
    timings.compile_ms = ms(compiling);

    // Stage the columns in pooled pinned buffers, then copy them all on the stream.
    let staging = Instant::now();
    let mut staged = Vec::with_capacity(columns.len());
    for column in &columns {
        let values = match &column.values {
            Packed::I32(v) => StagedValues::I32(pinned::stage(&ctx, v)?),
            Packed::I64(v) => StagedValues::I64(pinned::stage(&ctx, v)?),
            Packed::F64(v) => StagedValues::F64(pinned::stage(&ctx, v)?),
            Packed::U32(v) => StagedValues::U32(pinned::stage(&ctx, v)?),
            Packed::U8(v) => StagedValues::U8(pinned::stage(&ctx, v)?),
        };
        let valid = match &column.valid {
            Some(mask) => Some(pinned::stage(&ctx, mask)?),
            None => None,
        };
        timings.upload_bytes += column.values.bytes() as u64;
        timings.upload_bytes += column.valid.as_ref().map_or(0, |m| m.len() as u64);
        staged.push((values, valid));
    }
    timings.stage_ms = ms(staging);
    // Device time is measured with events on the stream.
    let timed = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let upload_start = stream.record_event(timed).map_err(driver)?;
    let mut buffers: Vec<DeviceColumn> = Vec::with_capacity(columns.len());
    for (values, valid) in &mut staged {
        let values = match values {
            StagedValues::I32(s) => DeviceValues::I32(pinned::send(&stream, s)?),
            StagedValues::I64(s) => DeviceValues::I64(pinned::send(&stream, s)?),
            StagedValues::F64(s) => DeviceValues::F64(pinned::send(&stream, s)?),
            StagedValues::U32(s) => DeviceValues::U32(pinned::send(&stream, s)?),
            StagedValues::U8(s) => DeviceValues::U8(pinned::send(&stream, s)?),
        };
        let valid = match valid {
            Some(s) => Some(pinned::send(&stream, s)?),
            None => None,
        };
        buffers.push(DeviceColumn { values, valid });
    }
    let mut accumulators = stream.clone_htod(&layout.initial()).map_err(driver)?;
    let mut error_flag = stream.alloc_zeros::<i32>(1).map_err(driver)?;
    let upload_end = stream.record_event(timed).map_err(driver)?;
    stream.synchronize().map_err(driver)?;
    timings.upload_ms = upload_start.elapsed_ms(&upload_end).map_err(driver)? as f64;
    drop(staged);

    let block = 256u32;
    let sms = gpu::devices()
        .devices
        .first()
        .map_or(80, |d| d.multiprocessors.max(1) as u32);
    let blocks_needed = rows.div_ceil(block as usize).max(1) as u32;
    let config = LaunchConfig {
        grid_dim: (blocks_needed.min(sms * 8), 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: layout.shared_bytes(),
    };
    let n = rows as i64;
    let kernel_start = stream.record_event(timed).map_err(driver)?;
    {
        let mut launch = stream.launch_builder(&function);
        launch.arg(&n);
        for column in &buffers {
            match &column.values {
                DeviceValues::I32(s) => launch.arg(s),
                DeviceValues::I64(s) => launch.arg(s),
                DeviceValues::F64(s) => launch.arg(s),
                DeviceValues::U32(s) => launch.arg(s),
                DeviceValues::U8(s) => launch.arg(s),
            };
            if let Some(valid) = &column.valid {
                launch.arg(valid);
            }
        }
        launch.arg(&mut accumulators);
        launch.arg(&mut error_flag);
        // SAFETY: the kernel's parameters are generated from the same columns, in the same
        // order, with the same element types; every buffer holds `rows` elements and the
        // accumulator buffer holds `layout.words()` words.
        unsafe { launch.launch(config) }.map_err(driver)?;
    }
    let kernel_end = stream.record_event(timed).map_err(driver)?;
    stream.synchronize().map_err(driver)?;
    timings.kernel_ms = kernel_start.elapsed_ms(&kernel_end).map_err(driver)? as f64;

    let download = Instant::now();
    let words = stream.clone_dtoh(&accumulators).map_err(driver)?;
    let flag = stream.clone_dtoh(&error_flag).map_err(driver)?;
    timings.download_ms = ms(download);
    if flag.first().copied().unwrap_or(0) != 0 {
        return Err(GpuError::Overflow);
    }
    let rows = layout.rows(plan, &words)?;
    let batch = host::assemble(plan, rows, &dictionary).map_err(GpuError::Input)?;
    Ok((batch, timings))
}

enum StagedValues<'a> {
    I32(pinned::Staged<'a, i32>),
    I64(pinned::Staged<'a, i64>),
    F64(pinned::Staged<'a, f64>),
    U32(pinned::Staged<'a, u32>),
    U8(pinned::Staged<'a, u8>),
}

enum DeviceValues {
    I32(CudaSlice<i32>),
    I64(CudaSlice<i64>),
    F64(CudaSlice<f64>),
    U32(CudaSlice<u32>),
    U8(CudaSlice<u8>),
}

struct DeviceColumn {
    values: DeviceValues,
    valid: Option<CudaSlice<u8>>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// The process's context on device 0, made once.
pub(crate) fn context() -> Result<Arc<CudaContext>, GpuError> {
    static CONTEXT: OnceLock<Result<Arc<CudaContext>, String>> = OnceLock::new();
    CONTEXT
        .get_or_init(|| CudaContext::new(0).map_err(|e| format!("{e:?}")))
        .clone()
        .map_err(GpuError::Driver)
}

/// Compiles CUDA C to PTX for `arch` (e.g. `sm_90`) with NVRTC. Needs the toolkit's NVRTC
/// library but no device, so kernels can be checked on a machine without a GPU.
pub fn compile_ptx(source: &str, arch: &str) -> Result<Ptx, GpuError> {
    // SAFETY: only tries to dlopen the library by its usual names; nothing is called.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(GpuError::Compile(
            "the CUDA runtime compiler is missing (libnvrtc.so could not be loaded)".into(),
        ));
    }
    cudarc::nvrtc::compile_ptx_with_opts(
        source,
        CompileOptions {
            options: vec![format!("--gpu-architecture={arch}"), "-std=c++17".into()],
            ..Default::default()
        },
    )
    .map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            GpuError::Compile(log.to_string_lossy().into_owned())
        }
        other => GpuError::Compile(format!("{other:?}")),
    })
}

/// Compiled kernels by source text: a plan shape compiles once per process.
pub(crate) fn compiled(
    ctx: &Arc<CudaContext>,
    source: &str,
    entry: &str,
) -> Result<CudaFunction, GpuError> {
    static CACHE: OnceLock<Mutex<HashMap<String, CudaFunction>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = format!("{entry}\n{source}");
    if let Some(function) = cache.lock().expect("kernel cache").get(&key) {
        return Ok(function.clone());
    }
    let arch = gpu::devices()
        .devices
        .first()
        .map(|d| d.arch())
        .unwrap_or_else(|| "sm_80".into());
    let ptx = compile_ptx(source, &arch)?;
    let module = ctx.load_module(ptx).map_err(driver)?;
    let function = module.load_function(entry).map_err(driver)?;
    cache
        .lock()
        .expect("kernel cache")
        .insert(key, function.clone());
    Ok(function)
}
