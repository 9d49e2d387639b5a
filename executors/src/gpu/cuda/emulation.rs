//! The generated kernel, compiled by the host's C++ compiler with the CUDA built-ins written
//! as single-threaded equivalents, run block after block over the plan's real columns. It
//! checks what the kernel computes (expressions, null logic, slots, 128-bit sums with carries
//! between blocks, the merge of block accumulators) on machines without a GPU; what it cannot
//! check is the device itself (compilation by NVRTC, concurrency, speed).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use datafusion::arrow::array::RecordBatch;

use super::pack::Packed;
use super::{GpuError, prepare};
use crate::gpu::plan::KernelPlan;
use crate::gpu::reference as host;

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
