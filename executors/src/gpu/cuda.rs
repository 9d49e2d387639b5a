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
//! and [`super::host`] turns them into DataFusion's output rows.
//!
//! Nothing here may be called unless [`super::devices`] reported a usable device: cudarc
//! panics when the CUDA libraries are missing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, Ptx};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, UInt8Type, UInt16Type, UInt32Type,
};

use super::host::{self, Acc, Dictionary, Value};
use super::pinned;
use super::plan::{AggFunc, ArithOp, CmpOp, Expr, KernelPlan, Lit, Ty};

pub use super::error::GpuError;
pub(crate) use super::error::driver;

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
    let sms = super::devices()
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

/// The generated kernel, compiled by the host's C++ compiler with the CUDA built-ins written
/// as single-threaded equivalents, run block after block over the plan's real columns. It
/// checks what the kernel computes (expressions, null logic, slots, 128-bit sums with carries
/// between blocks, the merge of block accumulators) on machines without a GPU; what it cannot
/// check is the device itself (compilation by NVRTC, concurrency, speed).
pub mod emulation {
    use std::fmt::Write as _;
    use std::path::Path;
    use std::process::Command;

    use datafusion::arrow::array::RecordBatch;

    use super::{GpuError, Packed, prepare};
    use crate::gpu::host;
    use crate::gpu::plan::KernelPlan;

    /// CUDA's built-ins for one thread of one block at a time.
    const SHIM: &str = r#"
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __constant__ static
#define __shared__
struct Dim3 { unsigned x, y, z; };
static Dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
unsigned long long a[4096];
static inline void __syncthreads() {}
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { unsigned long long o = *p; *p = o + v; return o; }
static inline double atomicAdd(double* p, double v) { double o = *p; *p = o + v; return o; }
static inline long long atomicMin(long long* p, long long v) { long long o = *p; if (v < o) *p = v; return o; }
static inline long long atomicMax(long long* p, long long v) { long long o = *p; if (v > o) *p = v; return o; }
static inline int atomicExch(int* p, int v) { int o = *p; *p = v; return o; }
static inline long long __double_as_longlong(double x) { long long b; std::memcpy(&b, &x, 8); return b; }
static inline double __longlong_as_double(long long b) { double x; std::memcpy(&x, &b, 8); return x; }
static inline long long __mul64hi(long long x, long long y) { return (long long)(((__int128)x * (__int128)y) >> 64); }
template <typename T> static std::vector<T> load(const char* path) {
    std::vector<T> v; FILE* f = std::fopen(path, "rb"); if (!f) return v;
    std::fseek(f, 0, SEEK_END); long n = std::ftell(f); std::fseek(f, 0, SEEK_SET);
    v.resize(n / sizeof(T)); if (n) std::fread(v.data(), 1, n, f); std::fclose(f); return v;
}
"#;

    /// Compiles `program` as `dir/<name>.cpp` with the host's C++ compiler and runs it in
    /// `dir`.
    pub(crate) fn compile_and_run(
        dir: &Path,
        name: &str,
        program: &str,
        flags: &[&str],
    ) -> Result<std::process::ExitStatus, GpuError> {
        let io = |e: std::io::Error| GpuError::Input(format!("{}: {e}", dir.display()));
        let source = format!("{name}.cpp");
        std::fs::write(dir.join(&source), program).map_err(io)?;
        let compiled = Command::new("c++")
            .args(flags)
            .args(["-O1", "-w", "-o", name, &source])
            .current_dir(dir)
            .output()
            .map_err(io)?;
        if !compiled.status.success() {
            return Err(GpuError::Compile(
                String::from_utf8_lossy(&compiled.stderr).into(),
            ));
        }
        Command::new(dir.join(name))
            .current_dir(dir)
            .status()
            .map_err(io)
    }

    /// Runs the plan's kernel on the host in `dir` (a scratch folder) with `blocks` blocks.
    pub fn run(plan: &KernelPlan, dir: &Path, blocks: u32) -> Result<RecordBatch, GpuError> {
        let prepared = prepare(plan)?;
        let io = |e: std::io::Error| GpuError::Input(format!("{}: {e}", dir.display()));
        let rows = prepared.columns.first().map_or(0, |c| c.len);
        let mut main = String::from("int main() {\n");
        let mut args = vec![format!("(long long){rows}")];
        for (i, column) in prepared.columns.iter().enumerate() {
            let bytes: Vec<u8> = match &column.values {
                Packed::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Packed::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Packed::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Packed::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Packed::U8(v) => v.clone(),
            };
            std::fs::write(dir.join(format!("c{i}.bin")), bytes).map_err(io)?;
            let ty = column.values.c_type();
            let _ = writeln!(main, "auto c{i} = load<{ty}>(\"c{i}.bin\");");
            args.push(format!("c{i}.data()"));
            if let Some(mask) = &column.valid {
                std::fs::write(dir.join(format!("m{i}.bin")), mask).map_err(io)?;
                let _ = writeln!(main, "auto m{i} = load<unsigned char>(\"m{i}.bin\");");
                args.push(format!("m{i}.data()"));
            }
        }
        let initial: Vec<u8> = prepared
            .layout
            .initial()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        std::fs::write(dir.join("acc.bin"), initial).map_err(io)?;
        let _ = writeln!(
            main,
            "auto acc = load<unsigned long long>(\"acc.bin\");\nint failed = 0;\n\
             gridDim.x = {blocks};\n\
             for (unsigned b = 0; b < {blocks}; b++) {{ blockIdx.x = b; amdahl_plan({}, acc.data(), &failed); }}\n\
             FILE* out = std::fopen(\"acc.out\", \"wb\"); std::fwrite(acc.data(), 8, acc.size(), out); std::fclose(out);\n\
             return failed ? 3 : 0;\n}}",
            args.join(", ")
        );
        let program = format!("{SHIM}\n{}\n{main}", prepared.source);
        let ran = compile_and_run(dir, "kernel", &program, &["-std=c++17"])?;
        match ran.code() {
            Some(0) => {}
            Some(3) => return Err(GpuError::Overflow),
            other => {
                return Err(GpuError::Input(format!(
                    "emulated kernel ended with {other:?}"
                )));
            }
        }
        let words: Vec<u64> = std::fs::read(dir.join("acc.out"))
            .map_err(io)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let rows = prepared.layout.rows(plan, &words)?;
        host::assemble(plan, rows, &prepared.dictionary).map_err(GpuError::Input)
    }
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

/// The CUDA C source of the kernel that [`run`] would launch for `plan` (its inputs are read
/// to size the group slots and dictionaries).
pub fn source(plan: &KernelPlan) -> Result<String, GpuError> {
    Ok(prepare(plan)?.source)
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
    let arch = super::devices()
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

/// A column's values in their device type.
enum Packed {
    I32(Vec<i32>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    U32(Vec<u32>),
    U8(Vec<u8>),
}

impl Packed {
    fn bytes(&self) -> usize {
        match self {
            Packed::I32(v) => v.len() * 4,
            Packed::I64(v) => v.len() * 8,
            Packed::F64(v) => v.len() * 8,
            Packed::U32(v) => v.len() * 4,
            Packed::U8(v) => v.len(),
        }
    }

    fn c_type(&self) -> &'static str {
        match self {
            Packed::I32(_) => "int",
            Packed::I64(_) => "long long",
            Packed::F64(_) => "double",
            Packed::U32(_) => "unsigned int",
            Packed::U8(_) => "unsigned char",
        }
    }
}

struct Column {
    values: Packed,
    /// One byte per row (1 = present); `None` when the column has no nulls.
    valid: Option<Vec<u8>>,
    len: usize,
    /// For integer-like columns: the smallest and largest value present.
    range: Option<(i64, i64)>,
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

/// Reads the plan's columns and packs each into one array of its device type.
fn pack(
    plan: &KernelPlan,
    batches: &[(Vec<ArrayRef>, usize)],
    dictionary: &mut Dictionary,
) -> Result<Vec<Column>, GpuError> {
    let mut columns = Vec::with_capacity(plan.columns.len());
    for (index, input) in plan.columns.iter().enumerate() {
        let arrays: Vec<&ArrayRef> = batches.iter().map(|(b, _)| &b[index]).collect();
        let len: usize = arrays.iter().map(|a| a.len()).sum();
        let nulls: usize = arrays.iter().map(|a| a.null_count()).sum();
        let valid = (nulls > 0).then(|| {
            let mut mask = Vec::with_capacity(len);
            for a in &arrays {
                mask.extend((0..a.len()).map(|i| a.is_valid(i) as u8));
            }
            mask
        });
        let values = pack_values(&input.data_type, &arrays, dictionary)?;
        let range = match &values {
            Packed::I32(v) => min_max(v.iter().map(|&x| x as i64), valid.as_deref()),
            Packed::I64(v) => min_max(v.iter().copied(), valid.as_deref()),
            Packed::U32(v) => min_max(v.iter().map(|&x| x as i64), valid.as_deref()),
            Packed::U8(v) => min_max(v.iter().map(|&x| x as i64), valid.as_deref()),
            Packed::F64(_) => None,
        };
        columns.push(Column {
            values,
            valid,
            len,
            range,
        });
    }
    Ok(columns)
}

fn min_max(values: impl Iterator<Item = i64>, valid: Option<&[u8]>) -> Option<(i64, i64)> {
    let mut range: Option<(i64, i64)> = None;
    for (i, v) in values.enumerate() {
        if valid.is_some_and(|m| m[i] == 0) {
            continue;
        }
        range = Some(range.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
    }
    range
}

fn pack_values(
    data_type: &DataType,
    arrays: &[&ArrayRef],
    dictionary: &mut Dictionary,
) -> Result<Packed, GpuError> {
    macro_rules! prim {
        ($t:ty, $variant:ident, $conv:expr) => {{
            let mut out = Vec::new();
            for a in arrays {
                out.extend(a.as_primitive::<$t>().values().iter().map($conv));
            }
            Packed::$variant(out)
        }};
    }
    Ok(match data_type {
        DataType::Int8 => prim!(Int8Type, I32, |&v| v as i32),
        DataType::Int16 => prim!(Int16Type, I32, |&v| v as i32),
        DataType::Int32 => prim!(Int32Type, I32, |&v| v),
        DataType::UInt8 => prim!(UInt8Type, I32, |&v| v as i32),
        DataType::UInt16 => prim!(UInt16Type, I32, |&v| v as i32),
        DataType::Date32 => prim!(Date32Type, I32, |&v| v),
        DataType::Int64 => prim!(Int64Type, I64, |&v| v),
        DataType::UInt32 => prim!(UInt32Type, I64, |&v| v as i64),
        DataType::Decimal128(precision, _) if *precision <= 18 => {
            // At most 18 digits: every value fits 64 bits.
            prim!(Decimal128Type, I64, |&v| v as i64)
        }
        DataType::Decimal128(precision, _) => {
            return Err(GpuError::Unsupported(format!(
                "decimal columns of {precision} digits (the GPU reads up to 18)"
            )));
        }
        DataType::Float32 => prim!(Float32Type, F64, |&v| v as f64),
        DataType::Float64 => prim!(Float64Type, F64, |&v| v),
        DataType::Boolean => {
            let mut out = Vec::new();
            for a in arrays {
                let a = a.as_boolean();
                out.extend((0..a.len()).map(|i| a.value(i) as u8));
            }
            Packed::U8(out)
        }
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
            let mut out = Vec::new();
            for a in arrays {
                let code = |s: Option<&str>, d: &mut Dictionary| s.map_or(0, |s| d.code(s));
                match a.data_type() {
                    DataType::Utf8 => {
                        out.extend(a.as_string::<i32>().iter().map(|s| code(s, dictionary)))
                    }
                    DataType::LargeUtf8 => {
                        out.extend(a.as_string::<i64>().iter().map(|s| code(s, dictionary)))
                    }
                    _ => out.extend(a.as_string_view().iter().map(|s| code(s, dictionary))),
                }
            }
            Packed::U32(out)
        }
        other => {
            return Err(GpuError::Unsupported(format!("columns of type {other}")));
        }
    })
}

/// How the accumulators are laid out: per group slot, a row count and each aggregate's words.
struct Layout {
    /// Per key: (column, smallest value, number of values including the null slot).
    keys: Vec<(usize, i64, u64)>,
    slots: u64,
    /// Per aggregate: its first word within a slot.
    offsets: Vec<usize>,
    /// Words per slot.
    stride: usize,
    kinds: Vec<Word>,
}

/// What one accumulator word holds, and how blocks combine into it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Word {
    /// A count or the low half of a 128-bit sum: added.
    Add,
    /// The high half of a 128-bit sum: added with the carry of the word before.
    High,
    /// A double: added as a double.
    AddF64,
    Min,
    Max,
}

/// Direct aggregation only: all key slots together at most this many.
const MAX_SLOTS: u64 = 1 << 20;
/// Per-block accumulators live in shared memory when they fit in this much.
const SHARED_BYTES: usize = 32 * 1024;

impl Layout {
    fn new(
        plan: &KernelPlan,
        columns: &[Column],
        dictionary: &Dictionary,
    ) -> Result<Layout, GpuError> {
        let mut keys = Vec::new();
        let mut slots: u64 = 1;
        for key in &plan.keys {
            let Expr::Column { index, ty } = key else {
                return Err(GpuError::Unsupported(
                    "group keys computed from columns (the GPU groups by columns)".into(),
                ));
            };
            let column = &columns[*index];
            let (lo, count) = match ty {
                Ty::Text => (0, dictionary.len() as u64 + 1),
                Ty::Bool => (0, 3),
                _ => match column.range {
                    Some((lo, hi)) => (lo, (hi as i128 - lo as i128 + 2) as u64),
                    None => (0, 1),
                },
            };
            keys.push((*index, lo, count));
            slots = slots.saturating_mul(count);
        }
        if slots > MAX_SLOTS {
            return Err(GpuError::Unsupported(format!(
                "group keys spanning {slots} slots (direct aggregation holds {MAX_SLOTS}; hash \
                 aggregation is not built yet)"
            )));
        }
        let mut kinds = vec![Word::Add]; // the slot's row count
        let mut offsets = Vec::new();
        for aggregate in &plan.aggregates {
            offsets.push(kinds.len());
            let float = aggregate.arg.ty() == Ty::Float;
            match aggregate.func {
                AggFunc::Count => kinds.push(Word::Add),
                AggFunc::Sum | AggFunc::Avg if float => kinds.extend([Word::AddF64, Word::Add]),
                AggFunc::Sum | AggFunc::Avg => kinds.extend([Word::Add, Word::High, Word::Add]),
                AggFunc::Min => kinds.extend([Word::Min, Word::Add]),
                AggFunc::Max => kinds.extend([Word::Max, Word::Add]),
            }
        }
        Ok(Layout {
            keys,
            slots,
            offsets,
            stride: kinds.len(),
            kinds,
        })
    }

    fn words(&self) -> usize {
        self.slots as usize * self.stride
    }

    fn shared(&self) -> bool {
        self.words() * 8 <= SHARED_BYTES
    }

    fn shared_bytes(&self) -> u32 {
        if self.shared() {
            (self.words() * 8) as u32
        } else {
            0
        }
    }

    fn identity(kind: Word) -> u64 {
        match kind {
            Word::Min => i64::MAX as u64,
            Word::Max => i64::MIN as u64,
            _ => 0,
        }
    }

    fn initial(&self) -> Vec<u64> {
        (0..self.words())
            .map(|w| Self::identity(self.kinds[w % self.stride]))
            .collect()
    }

    /// The accumulators as rows of keys-then-aggregates, for slots that saw rows.
    fn rows(&self, plan: &KernelPlan, words: &[u64]) -> Result<Vec<Vec<Value>>, GpuError> {
        let mut rows = Vec::new();
        for slot in 0..self.slots as usize {
            let base = slot * self.stride;
            let seen = words[base];
            if seen == 0 && !plan.keys.is_empty() {
                continue;
            }
            let mut row = Vec::with_capacity(plan.keys.len() + plan.aggregates.len());
            // Keys: the slot index in mixed radix, last key fastest.
            let mut rest = slot as u64;
            let mut keys = vec![Value::Null; self.keys.len()];
            for (k, (_, lo, count)) in self.keys.iter().enumerate().rev() {
                let digit = rest % count;
                rest /= count;
                keys[k] = if digit == count - 1 {
                    Value::Null
                } else {
                    match plan.keys[k].ty() {
                        Ty::Text => Value::Text(digit as u32),
                        Ty::Bool => Value::Bool(digit == 1),
                        _ => Value::Int((*lo as i128) + digit as i128),
                    }
                };
            }
            row.extend(keys);
            for (aggregate, &offset) in plan.aggregates.iter().zip(&self.offsets) {
                let w = &words[base + offset..];
                let float = aggregate.arg.ty() == Ty::Float;
                let acc = match aggregate.func {
                    AggFunc::Count => Acc::Count(w[0] as i64),
                    AggFunc::Sum | AggFunc::Avg if float => Acc::Sum {
                        int: 0,
                        float: f64::from_bits(w[0]),
                        count: w[1] as i64,
                    },
                    AggFunc::Sum | AggFunc::Avg => Acc::Sum {
                        int: ((w[1] as u128) << 64 | w[0] as u128) as i128,
                        float: 0.0,
                        count: w[2] as i64,
                    },
                    AggFunc::Min | AggFunc::Max => Acc::Extreme {
                        best: if w[1] == 0 {
                            Value::Null
                        } else if float {
                            Value::Float(from_ordered(w[0] as i64))
                        } else {
                            Value::Int(w[0] as i64 as i128)
                        },
                        max: aggregate.func == AggFunc::Max,
                    },
                };
                row.push(
                    acc.finish(aggregate.func, aggregate.arg.ty(), &aggregate.output)
                        .map_err(GpuError::Input)?,
                );
            }
            rows.push(row);
        }
        Ok(rows)
    }
}

/// Inverse of the kernel's `ordered()`: total-order key back to the double.
fn from_ordered(key: i64) -> f64 {
    let bits = key ^ ((((key >> 63) as u64) >> 1) as i64);
    f64::from_bits(bits as u64)
}

/// The CUDA C source of the plan's kernel.
fn kernel_source(
    plan: &KernelPlan,
    columns: &[Column],
    layout: &Layout,
    dictionary: &Dictionary,
) -> Result<String, GpuError> {
    let mut params = vec!["const long long n".to_string()];
    for (i, column) in columns.iter().enumerate() {
        params.push(format!(
            "const {}* __restrict__ c{i}",
            column.values.c_type()
        ));
        if column.valid.is_some() {
            params.push(format!("const unsigned char* __restrict__ m{i}"));
        }
    }
    params.push("unsigned long long* __restrict__ acc".into());
    params.push("int* __restrict__ failed".into());

    let mut body = Body {
        code: String::new(),
        next: 0,
        columns,
        dictionary,
    };
    let filter = match &plan.filter {
        Some(filter) => {
            let (v, ok) = body.expr(filter)?;
            format!("if (!({ok} && {v})) continue;")
        }
        None => String::new(),
    };
    let filter_code = std::mem::take(&mut body.code);

    // The slot: mixed radix over the keys, the last key fastest.
    let mut slot = String::from("unsigned long long slot = 0;\n");
    for (index, lo, count) in &layout.keys {
        let c = &columns[*index];
        let valid = if c.valid.is_some() {
            format!("m{index}[i]")
        } else {
            "1".into()
        };
        let _ = writeln!(
            slot,
            "slot = slot * {count}ULL + ({valid} ? (unsigned long long)((long long)c{index}[i] - ({lo}LL)) : {last}ULL);",
            last = count - 1
        );
    }

    let mut updates = String::new();
    let _ = writeln!(updates, "atomicAdd(&a[base], 1ULL);");
    for (aggregate, &offset) in plan.aggregates.iter().zip(&layout.offsets) {
        let (v, ok) = body.expr(&aggregate.arg)?;
        let code = std::mem::take(&mut body.code);
        let w = format!("base + {offset}");
        let float = aggregate.arg.ty() == Ty::Float;
        let update = match aggregate.func {
            AggFunc::Count => format!("atomicAdd(&a[{w}], 1ULL);"),
            AggFunc::Sum | AggFunc::Avg if float => {
                format!("atomicAdd((double*)&a[{w}], {v}); atomicAdd(&a[{w} + 1], 1ULL);")
            }
            AggFunc::Sum | AggFunc::Avg => {
                format!("add128(&a[{w}], (long long){v}); atomicAdd(&a[{w} + 2], 1ULL);")
            }
            AggFunc::Min | AggFunc::Max => {
                let f = if aggregate.func == AggFunc::Min {
                    "atomicMin"
                } else {
                    "atomicMax"
                };
                let key = if float {
                    format!("ordered({v})")
                } else {
                    format!("(long long){v}")
                };
                format!("{f}((long long*)&a[{w}], {key}); atomicAdd(&a[{w} + 1], 1ULL);")
            }
        };
        let _ = writeln!(updates, "{{\n{code}if ({ok}) {{ {update} }}\n}}");
    }

    let stride = layout.stride;
    let words = layout.words();
    let shared = layout.shared();
    let kinds: Vec<String> = layout
        .kinds
        .iter()
        .map(|k| {
            match k {
                Word::Add => "0",
                Word::High => "1",
                Word::AddF64 => "2",
                Word::Min => "3",
                Word::Max => "4",
            }
            .to_string()
        })
        .collect();
    let mut src = String::new();
    let _ = writeln!(
        src,
        "#define STRIDE {stride}\n__constant__ int kinds[STRIDE] = {{{}}};",
        kinds.join(", ")
    );
    src.push_str(PRELUDE);
    let _ = writeln!(
        src,
        "extern \"C\" __global__ void amdahl_plan({}) {{",
        params.join(", ")
    );
    if shared {
        let _ = writeln!(
            src,
            "extern __shared__ unsigned long long a[];\n\
             for (int w = threadIdx.x; w < {words}; w += blockDim.x) a[w] = identity(kinds[w % {stride}]);\n\
             __syncthreads();"
        );
    } else {
        src.push_str("unsigned long long* a = acc;\n");
    }
    let _ = writeln!(
        src,
        "bool bad = false;\n\
         for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {{\n\
         {filter_code}{filter}\n{slot}unsigned long long base = slot * {stride}ULL;\n{updates}}}\n\
         if (bad) atomicExch(failed, 1);"
    );
    if shared {
        let _ = writeln!(
            src,
            "__syncthreads();\n\
             for (int w = threadIdx.x; w < {words}; w += blockDim.x) {{\n\
               if (kinds[w % {stride}] == 1) continue; // high halves go with their low half\n\
               merge(acc, a, w);\n\
             }}"
        );
    }
    src.push_str("}\n");
    Ok(src)
}

/// Helpers every kernel uses.
const PRELUDE: &str = r#"
__device__ __forceinline__ long long ordered(double x) {
    long long b = __double_as_longlong(x);
    return b ^ (long long)(((unsigned long long)(b >> 63)) >> 1);
}
__device__ __forceinline__ bool total_lt(double x, double y) { return ordered(x + 0.0) < ordered(y + 0.0); }
__device__ __forceinline__ bool total_eq(double x, double y) { return ordered(x + 0.0) == ordered(y + 0.0); }
__device__ __forceinline__ unsigned long long identity(int kind) {
    return kind == 3 ? 0x7fffffffffffffffULL : (kind == 4 ? 0x8000000000000000ULL : 0ULL);
}
// Adds a signed 64-bit value to a 128-bit sum held as (low, high) words.
__device__ __forceinline__ void add128(unsigned long long* w, long long v) {
    unsigned long long u = (unsigned long long)v;
    unsigned long long old = atomicAdd(&w[0], u);
    unsigned long long carry = (old + u < old) ? 1ULL : 0ULL;
    unsigned long long high = (v < 0 ? 0xffffffffffffffffULL : 0ULL) + carry;
    if (high != 0ULL) atomicAdd(&w[1], high);
}
// Adds a block's word into the global accumulators (words of slots the block never saw stay
// out: they hold identities).
__device__ __forceinline__ void merge(unsigned long long* g, const unsigned long long* s, int w) {
    int at = w % STRIDE;
    int kind = kinds[at];
    if (s[w - at] == 0ULL) return;
    unsigned long long v = s[w];
    if (kind == 0) {
        bool wide = at + 1 < STRIDE && kinds[at + 1] == 1;
        unsigned long long carry = 0ULL;
        if (v != 0ULL) {
            unsigned long long old = atomicAdd(&g[w], v);
            carry = (old + v < old) ? 1ULL : 0ULL;
        }
        if (wide) {
            unsigned long long high = s[w + 1] + carry;
            if (high != 0ULL) atomicAdd(&g[w + 1], high);
        }
    } else if (kind == 2) {
        atomicAdd((double*)&g[w], __longlong_as_double((long long)v));
    } else if (kind == 3) {
        atomicMin((long long*)&g[w], (long long)v);
    } else if (kind == 4) {
        atomicMax((long long*)&g[w], (long long)v);
    }
}
__device__ __forceinline__ bool add_ck(long long a, long long b, long long* r) {
    *r = (long long)((unsigned long long)a + (unsigned long long)b);
    return ((a ^ *r) & (b ^ *r)) < 0;
}
__device__ __forceinline__ bool sub_ck(long long a, long long b, long long* r) {
    *r = (long long)((unsigned long long)a - (unsigned long long)b);
    return ((a ^ b) & (a ^ *r)) < 0;
}
__device__ __forceinline__ bool mul_ck(long long a, long long b, long long* r) {
    *r = (long long)((unsigned long long)a * (unsigned long long)b);
    long long high = __mul64hi(a, b);
    return high != (*r >> 63);
}
"#;

/// Writes the statements that evaluate expressions, one local pair (value, present) per node.
struct Body<'a> {
    code: String,
    next: usize,
    columns: &'a [Column],
    dictionary: &'a Dictionary,
}

impl Body<'_> {
    fn fresh(&mut self) -> (String, String) {
        self.next += 1;
        (format!("v{}", self.next), format!("k{}", self.next))
    }

    fn c_type(ty: Ty) -> &'static str {
        match ty {
            Ty::Bool => "bool",
            Ty::Float => "double",
            Ty::Text => "unsigned int",
            Ty::Int | Ty::Date | Ty::Decimal { .. } => "long long",
        }
    }

    fn literal(&self, value: &Lit, ty: Ty) -> Result<(String, bool), GpuError> {
        Ok(match value {
            Lit::Null => (format!("({})0", Self::c_type(ty)), false),
            Lit::Bool(b) => (b.to_string(), true),
            Lit::Int(i) => {
                let i = i64::try_from(*i).map_err(|_| {
                    GpuError::Unsupported(format!("the literal {i} (wider than 64 bits)"))
                })?;
                if i == i64::MIN {
                    ("(-9223372036854775807LL - 1)".into(), true)
                } else {
                    (format!("({i}LL)"), true)
                }
            }
            Lit::Float(f) => (
                format!("__longlong_as_double({}LL)", f.to_bits() as i64),
                true,
            ),
            Lit::Text(t) => (format!("{}U", self.dictionary.lookup(t)), true),
        })
    }

    /// Emits code for `expr`; returns the names of its value and its presence flag.
    fn expr(&mut self, expr: &Expr) -> Result<(String, String), GpuError> {
        let (v, k) = self.fresh();
        let ty = Self::c_type(expr.ty());
        match expr {
            Expr::Column { index, .. } => {
                let present = if self.columns[*index].valid.is_some() {
                    format!("m{index}[i] != 0")
                } else {
                    "true".into()
                };
                let _ = writeln!(
                    self.code,
                    "{ty} {v} = ({ty})c{index}[i]; bool {k} = {present};"
                );
            }
            Expr::Literal { value, ty: lty } => {
                let (value, present) = self.literal(value, *lty)?;
                let _ = writeln!(self.code, "{ty} {v} = {value}; bool {k} = {present};");
            }
            Expr::Compare { op, left, right } => {
                let float = left.ty() == Ty::Float;
                let (a, ka) = self.expr(left)?;
                let (b, kb) = self.expr(right)?;
                let (lt, eq) = if float {
                    (format!("total_lt({a}, {b})"), format!("total_eq({a}, {b})"))
                } else {
                    (format!("({a} < {b})"), format!("({a} == {b})"))
                };
                let gt = if float {
                    format!("total_lt({b}, {a})")
                } else {
                    format!("({a} > {b})")
                };
                let test = match op {
                    CmpOp::Eq => eq,
                    CmpOp::NotEq => format!("!{eq}"),
                    CmpOp::Lt => lt,
                    CmpOp::LtEq => format!("!{gt}"),
                    CmpOp::Gt => gt,
                    CmpOp::GtEq => format!("!{lt}"),
                };
                let _ = writeln!(
                    self.code,
                    "bool {k} = {ka} && {kb}; bool {v} = {k} && {test};"
                );
            }
            Expr::And(left, right) | Expr::Or(left, right) => {
                let (a, ka) = self.expr(left)?;
                let (b, kb) = self.expr(right)?;
                if matches!(expr, Expr::And(..)) {
                    let _ = writeln!(
                        self.code,
                        "bool f{v} = ({ka} && !{a}) || ({kb} && !{b}); bool {k} = f{v} || ({ka} && {kb}); bool {v} = !f{v} && {k};"
                    );
                } else {
                    let _ = writeln!(
                        self.code,
                        "bool t{v} = ({ka} && {a}) || ({kb} && {b}); bool {k} = t{v} || ({ka} && {kb}); bool {v} = t{v};"
                    );
                }
            }
            Expr::Not(inner) => {
                let (a, ka) = self.expr(inner)?;
                let _ = writeln!(self.code, "bool {k} = {ka}; bool {v} = {ka} && !{a};");
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                let (_, ka) = self.expr(inner)?;
                let test = if matches!(expr, Expr::IsNull(_)) {
                    format!("!{ka}")
                } else {
                    ka
                };
                let _ = writeln!(self.code, "bool {k} = true; bool {v} = {test};");
            }
            Expr::Arith {
                op,
                left,
                right,
                ty: result,
            } => {
                let (a, ka) = self.expr(left)?;
                let (b, kb) = self.expr(right)?;
                let _ = writeln!(self.code, "bool {k} = {ka} && {kb}; {ty} {v} = 0;");
                if *result == Ty::Float {
                    let sign = match op {
                        ArithOp::Add => "+",
                        ArithOp::Sub => "-",
                        ArithOp::Mul => "*",
                    };
                    let _ = writeln!(self.code, "if ({k}) {v} = {a} {sign} {b};");
                } else {
                    let (mut a, mut b) = (a, b);
                    if matches!(op, ArithOp::Add | ArithOp::Sub) {
                        a = self.rescale(&a, result.scale() - left.ty().scale());
                        b = self.rescale(&b, result.scale() - right.ty().scale());
                    }
                    let f = match op {
                        ArithOp::Add => "add_ck",
                        ArithOp::Sub => "sub_ck",
                        ArithOp::Mul => "mul_ck",
                    };
                    let _ = writeln!(self.code, "if ({k}) bad |= {f}({a}, {b}, &{v});");
                }
            }
            Expr::Negate(inner) => {
                let (a, ka) = self.expr(inner)?;
                if inner.ty() == Ty::Float {
                    let _ = writeln!(self.code, "bool {k} = {ka}; double {v} = -{a};");
                } else {
                    let _ = writeln!(
                        self.code,
                        "bool {k} = {ka}; long long {v} = 0; if ({k}) bad |= sub_ck(0LL, {a}, &{v});"
                    );
                }
            }
            Expr::InList {
                expr: inner,
                list,
                negated,
            } => {
                let (a, ka) = self.expr(inner)?;
                let mut found = Vec::new();
                let mut saw_null = false;
                for item in list {
                    if *item == Lit::Null {
                        saw_null = true;
                        continue;
                    }
                    let (value, _) = self.literal(item, inner.ty())?;
                    found.push(format!("({a} == {value})"));
                }
                let found = if found.is_empty() {
                    "false".to_string()
                } else {
                    found.join(" || ")
                };
                let _ = writeln!(
                    self.code,
                    "bool f{v} = {found}; bool {k} = {ka} && (f{v} || !{saw_null}); bool {v} = {k} && (f{v} != {negated});"
                );
            }
            Expr::Cast {
                expr: inner,
                ty: to,
            } => {
                let from = inner.ty();
                let (a, ka) = self.expr(inner)?;
                match to {
                    Ty::Float => {
                        let divisor = 10f64.powi(from.scale() as i32);
                        let _ = writeln!(
                            self.code,
                            "bool {k} = {ka}; double {v} = (double){a} / {divisor:?};"
                        );
                    }
                    Ty::Decimal { scale, .. } => {
                        let scaled = self.rescale(&a, scale - from.scale());
                        let _ = writeln!(self.code, "bool {k} = {ka}; long long {v} = {scaled};");
                    }
                    _ => {
                        let _ = writeln!(self.code, "bool {k} = {ka}; {ty} {v} = ({ty}){a};");
                    }
                }
            }
        }
        Ok((v, k))
    }

    /// `value * 10^by`, overflow checked; returns the name holding it.
    fn rescale(&mut self, value: &str, by: i8) -> String {
        if by <= 0 {
            return value.to_string();
        }
        let factor = 10i64.checked_pow(by as u32).unwrap_or(i64::MAX);
        self.next += 1;
        let name = format!("r{}", self.next);
        let _ = writeln!(
            self.code,
            "long long {name} = 0; bad |= mul_ck({value}, {factor}LL, &{name});"
        );
        name
    }
}
