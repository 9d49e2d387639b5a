//! Dense stages on a CUDA device: products through cuBLAS (`sgemm`), everything around them
//! (bias and activation, top-k selection) in small NVRTC kernels.
//!
//! Layouts are row-major like the CPU path. cuBLAS is column-major, so `C = A · Bᵀ` (A m×k,
//! B n×k, C m×n, all row-major) is computed as the column-major `Cᵀ = B · Aᵀ`: `op(B) = T`,
//! `op(A) = N`. `knn` computes a block of query×base scores with one `sgemm` and then, one
//! thread block per query, keeps the best `k` of the block merged with the best so far (each
//! thread selects its own best `k` of a strided part of the row, then pairs of threads merge
//! their lists in a tree). `k` is at most [`MAX_GPU_K`]; larger `k` runs on the CPU.
//!
//! The kernels' sources are plain text: [`emulation`] compiles them with the host's C++
//! compiler, one OS thread per CUDA thread, so their logic is tested without a GPU.

use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use amdahl_dags::{Activation, Metric};

use super::cuda::{GpuError, compiled, context, driver};
use super::{pinned, resident};
use crate::linalg::{Matrix, Mlp, Neighbour};

pub use amdahl_planner::kernel::MAX_GPU_K;

/// Threads per block of the top-k kernel: their lists (12 bytes × k each) share the block's
/// 48 KiB of static shared memory.
pub fn topk_threads(k: usize) -> u32 {
    if k <= 16 { 128 } else { 64 }
}
/// Queries and base rows per score block: 1024 × 65536 floats = 256 MiB of scores.
const QUERY_BLOCK: usize = 1024;
const BASE_BLOCK: usize = 65_536;

/// The cuBLAS handle of this process, on device 0's default stream.
struct Blas {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
}

fn blas() -> Result<&'static Mutex<Blas>, GpuError> {
    static BLAS: OnceLock<Result<Mutex<Blas>, String>> = OnceLock::new();
    BLAS.get_or_init(|| {
        // SAFETY: only tries to load the library; nothing is called.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err("libcublas is not installed".to_string());
        }
        let ctx = context().map_err(|e| e.to_string())?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| format!("cuBLAS: {e:?}"))?;
        Ok(Mutex::new(Blas { stream, blas }))
    })
    .as_ref()
    .map_err(|e| GpuError::Driver(e.clone()))
}

/// `c = a · bᵀ` on the device: a (m×k), b (n×k), c (m×n), all row-major.
fn gemm_abt(
    blas: &Blas,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    c: &mut CudaSlice<f32>,
    (m, n, k): (usize, usize, usize),
) -> Result<(), GpuError> {
    let int = |x: usize| {
        i32::try_from(x).map_err(|_| {
            GpuError::Unsupported(format!("a dimension of {x} (cuBLAS takes 32-bit sizes)"))
        })
    };
    let config = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: int(n)?,
        n: int(m)?,
        k: int(k)?,
        alpha: 1.0f32,
        lda: int(k)?,
        ldb: int(k)?,
        beta: 0.0f32,
        ldc: int(n)?,
    };
    // SAFETY: b holds n×k, a holds m×k and c holds m×n floats (the callers allocate them so),
    // which is what the column-major Cᵀ(n×m) = op(B)(n×k) · A(k×m) reads and writes.
    unsafe { blas.blas.gemm(config, b, a, c) }
        .map_err(|e| GpuError::Driver(format!("cuBLAS sgemm: {e:?}")))
}

/// Seconds of one `m`×`k` · (`n`×`k`)ᵀ sgemm on device-resident operands (random values),
/// the median of `reps` after a warm-up: the device's matrix throughput without copies.
pub fn sgemm_seconds(m: usize, n: usize, k: usize, reps: usize) -> Result<f64, GpuError> {
    let blas = blas()?.lock().expect("cuBLAS handle");
    let random = |len: usize, seed: u64| -> Vec<f32> {
        (0..len as u64)
            .map(|i| crate::linalg::uniform(seed, i))
            .collect()
    };
    let a = upload(&blas.stream, &random(m * k, 1))?;
    let b = upload(&blas.stream, &random(n * k, 2))?;
    let mut c = blas.stream.alloc_zeros::<f32>(m * n).map_err(driver)?;
    gemm_abt(&blas, &a, &b, &mut c, (m, n, k))?;
    blas.stream.synchronize().map_err(driver)?;
    let mut times = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let t = std::time::Instant::now();
        gemm_abt(&blas, &a, &b, &mut c, (m, n, k))?;
        blas.stream.synchronize().map_err(driver)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|x, y| x.total_cmp(y));
    Ok(times[times.len() / 2])
}

/// A matrix for a GPU stage: on the host, or already in device memory (a resident output of
/// an earlier stage).
pub enum Operand<'a> {
    Host(&'a Matrix),
    Device(resident::Entry<CudaSlice<f32>>),
}

impl Operand<'_> {
    pub fn rows(&self) -> usize {
        match self {
            Operand::Host(m) => m.rows,
            Operand::Device(e) => e.rows,
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            Operand::Host(m) => m.dim,
            Operand::Device(e) => e.dim,
        }
    }

    /// The data in device memory: uploaded from the host, or the resident buffer itself.
    fn on_device(&self, stream: &Arc<CudaStream>) -> Result<Arc<CudaSlice<f32>>, GpuError> {
        match self {
            Operand::Host(m) => Ok(Arc::new(upload(stream, &m.data)?)),
            Operand::Device(e) => Ok(e.data.clone()),
        }
    }
}

/// Copies host floats to the device, through the pinned pool when large.
fn upload(stream: &Arc<CudaStream>, data: &[f32]) -> Result<CudaSlice<f32>, GpuError> {
    let mut staged = pinned::stage(stream.context(), data)?;
    let device = pinned::send(stream, &mut staged)?;
    stream.synchronize().map_err(driver)?;
    Ok(device)
}

/// A result of a GPU stage: its values on the host (to write) and on the device (to keep
/// resident for the next stage).
pub struct Output {
    pub host: Vec<f32>,
    pub device: Arc<CudaSlice<f32>>,
}

/// `a · bᵀ` for row-major `a` (m×k) and `b` (n×k).
pub fn multiply_transposed(
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> Result<Vec<f32>, GpuError> {
    let a = Matrix::new(m, k, a.to_vec());
    let b = Matrix::new(n, k, b.to_vec());
    multiply_operands(&Operand::Host(&a), &Operand::Host(&b)).map(|o| o.host)
}

/// `a · bᵀ` of two operands (rows × the same dim each).
pub fn multiply_operands(a: &Operand<'_>, b: &Operand<'_>) -> Result<Output, GpuError> {
    let (m, n, k) = (a.rows(), b.rows(), a.dim());
    let guard = blas()?.lock().expect("cuBLAS handle");
    let stream = guard.stream.clone();
    let a_dev = a.on_device(&stream)?;
    let b_dev = b.on_device(&stream)?;
    let mut c_dev = stream.alloc_zeros::<f32>((m * n).max(1)).map_err(driver)?;
    if m > 0 && n > 0 {
        gemm_abt(&guard, &a_dev, &b_dev, &mut c_dev, (m, n, k))?;
    }
    let mut host = stream.clone_dtoh(&c_dev).map_err(driver)?;
    host.truncate(m * n);
    Ok(Output {
        host,
        device: Arc::new(c_dev),
    })
}

/// Adds the bias to each row and applies the activation (`act`: 0 none, 1 relu, 2 tanh,
/// 3 sigmoid).
pub const BIAS_SOURCE: &str = r#"
extern "C" __global__ void amdahl_bias(float* x, const float* bias, long long rows, int cols, int act) {
    long long total = rows * (long long)cols;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        float v = x[i] + bias[i % cols];
        if (act == 1) v = v > 0.0f ? v : 0.0f;
        else if (act == 2) v = tanhf(v);
        else if (act == 3) v = 1.0f / (1.0f + expf(-v));
        x[i] = v;
    }
}
"#;

/// Runs an MLP over `rows` input vectors on the device; returns rows × outputs.
pub fn mlp_forward(mlp: &Mlp, input: &[f32], rows: usize) -> Result<Vec<f32>, GpuError> {
    let m = Matrix::new(rows, mlp.inputs(), input.to_vec());
    mlp_operand(mlp, &Operand::Host(&m)).map(|o| o.host)
}

/// Runs an MLP over an operand's rows on the device.
pub fn mlp_operand(mlp: &Mlp, input: &Operand<'_>) -> Result<Output, GpuError> {
    let rows = input.rows();
    let guard = blas()?.lock().expect("cuBLAS handle");
    let stream = guard.stream.clone();
    let ctx = context()?;
    let bias_kernel = compiled(&ctx, BIAS_SOURCE, "amdahl_bias")?;
    let mut current = input.on_device(&stream)?;
    let last = mlp.layers.len() - 1;
    for (i, layer) in mlp.layers.iter().enumerate() {
        let weight = stream.clone_htod(&layer.weight).map_err(driver)?;
        let bias = stream.clone_htod(&layer.bias).map_err(driver)?;
        let mut next = stream
            .alloc_zeros::<f32>((rows * layer.outputs).max(1))
            .map_err(driver)?;
        if rows == 0 {
            current = Arc::new(next);
            continue;
        }
        gemm_abt(
            &guard,
            &current,
            &weight,
            &mut next,
            (rows, layer.outputs, layer.inputs),
        )?;
        let act: i32 = if i == last {
            0
        } else {
            match mlp.activation {
                Activation::Relu => 1,
                Activation::Tanh => 2,
                Activation::Sigmoid => 3,
            }
        };
        let (n, cols) = (rows as i64, layer.outputs as i32);
        let total = rows * layer.outputs;
        let config = LaunchConfig {
            grid_dim: (total.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = stream.launch_builder(&bias_kernel);
        launch
            .arg(&mut next)
            .arg(&bias)
            .arg(&n)
            .arg(&cols)
            .arg(&act);
        // SAFETY: `next` holds rows × cols floats and `bias` cols, as the kernel reads.
        unsafe { launch.launch(config) }.map_err(driver)?;
        current = Arc::new(next);
    }
    let mut host = stream.clone_dtoh(current.as_ref()).map_err(driver)?;
    host.truncate(rows * mlp.outputs());
    Ok(Output {
        host,
        device: current,
    })
}

/// Squared norms of rows (`norms`), and, when `normalized` is not null, the rows scaled to
/// unit length (zero rows stay zero), as the CPU computes them.
pub const ROWS_SOURCE: &str = r#"
extern "C" __global__ void amdahl_rows(const float* x, long long rows, int dim, float* norms, float* normalized, int normalize) {
    for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += (long long)gridDim.x * blockDim.x) {
        const float* row = x + r * dim;
        float s = 0.0f;
        for (int j = 0; j < dim; j++) s += row[j] * row[j];
        norms[r] = s;
        if (normalize) {
            float n = sqrtf(s);
            for (int j = 0; j < dim; j++) normalized[r * dim + j] = n > 0.0f ? row[j] / n : row[j];
        }
    }
}
"#;

/// Norms of an operand's rows and, for cosine, its rows normalised (a new buffer: resident
/// data is never changed).
fn rows_prepared(
    stream: &Arc<CudaStream>,
    data: &Arc<CudaSlice<f32>>,
    rows: usize,
    dim: usize,
    normalize: bool,
) -> Result<(Arc<CudaSlice<f32>>, CudaSlice<f32>), GpuError> {
    let ctx = context()?;
    let kernel = compiled(&ctx, ROWS_SOURCE, "amdahl_rows")?;
    let mut norms = stream.alloc_zeros::<f32>(rows.max(1)).map_err(driver)?;
    let mut normalized = stream
        .alloc_zeros::<f32>(if normalize { (rows * dim).max(1) } else { 1 })
        .map_err(driver)?;
    let (n, d, flag) = (rows as i64, dim as i32, normalize as i32);
    let config = LaunchConfig {
        grid_dim: (rows.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = stream.launch_builder(&kernel);
    launch
        .arg(data.as_ref())
        .arg(&n)
        .arg(&d)
        .arg(&mut norms)
        .arg(&mut normalized)
        .arg(&flag);
    // SAFETY: `data` holds rows × dim floats, `norms` rows, `normalized` rows × dim when used.
    unsafe { launch.launch(config) }.map_err(driver)?;
    let data = if normalize {
        Arc::new(normalized)
    } else {
        data.clone()
    };
    Ok((data, norms))
}

/// The top-k kernel for a given `k`: merges the best `k` of a block of scores (one row per
/// query) into each query's running list (`keys`/`ids`, `k` per query, best first; empty slots
/// have id -1).
pub fn topk_source(k: usize) -> String {
    format!(
        r#"
#define K {k}
#define THREADS {threads}
// Larger key first, then smaller id; NaN is worst; an empty slot (id -1) is worse still.
__device__ __forceinline__ bool better(float ka, long long ia, float kb, long long ib) {{
    if (ib < 0) return ia >= 0;
    if (ia < 0) return false;
    bool na = ka != ka, nb = kb != kb;
    if (na != nb) return nb;
    if (!na && ka != kb) return ka > kb;
    return ia < ib;
}}
// Inserts (key, id) into the sorted list (best first) if it beats the last.
__device__ __forceinline__ void offer(float* keys, long long* ids, float key, long long id) {{
    if (!better(key, id, keys[K - 1], ids[K - 1])) return;
    int at = K - 1;
    while (at > 0 && better(key, id, keys[at - 1], ids[at - 1])) {{
        keys[at] = keys[at - 1];
        ids[at] = ids[at - 1];
        at--;
    }}
    keys[at] = key;
    ids[at] = id;
}}
// scores: qn × bn (row-major), base ids start at b0. metric: 0 dot/cosine, 1 l2 (with norms).
extern "C" __global__ void amdahl_topk(const float* scores, long long qn, long long bn, long long b0,
                                       int metric, const float* qnorm, const float* bnorm,
                                       float* best_keys, long long* best_ids) {{
    __shared__ float sk[THREADS * K];
    __shared__ long long si[THREADS * K];
    long long q = blockIdx.x;
    if (q >= qn) return;
    int t = threadIdx.x;
    float keys[K];
    long long ids[K];
    for (int i = 0; i < K; i++) {{ keys[i] = 0.0f; ids[i] = -1; }}
    // Thread 0 starts from the running list; every thread scans a strided part of the row.
    if (t == 0) {{
        for (int i = 0; i < K; i++) offer(keys, ids, best_keys[q * K + i], best_ids[q * K + i]);
    }}
    for (long long j = t; j < bn; j += THREADS) {{
        float dot = scores[q * bn + j];
        float key = dot;
        if (metric == 1) {{
            float d = qnorm[q] + bnorm[b0 + j] - 2.0f * dot;
            key = -(d > 0.0f ? d : 0.0f);
        }}
        offer(keys, ids, key, b0 + j);
    }}
    for (int i = 0; i < K; i++) {{ sk[t * K + i] = keys[i]; si[t * K + i] = ids[i]; }}
    __syncthreads();
    // Tree merge: at each step thread t takes the list of thread t + step.
    for (int step = 1; step < THREADS; step *= 2) {{
        if (t % (2 * step) == 0 && t + step < THREADS) {{
            float mk[K];
            long long mi[K];
            int a = 0, b = 0;
            const float* ak = &sk[t * K]; const long long* ai = &si[t * K];
            const float* bk = &sk[(t + step) * K]; const long long* bi = &si[(t + step) * K];
            for (int i = 0; i < K; i++) {{
                if (b >= K || (a < K && better(ak[a], ai[a], bk[b], bi[b]))) {{ mk[i] = ak[a]; mi[i] = ai[a]; a++; }}
                else {{ mk[i] = bk[b]; mi[i] = bi[b]; b++; }}
            }}
            for (int i = 0; i < K; i++) {{ keys[i] = mk[i]; ids[i] = mi[i]; }}
        }}
        __syncthreads();
        if (t % (2 * step) == 0 && t + step < THREADS) {{
            for (int i = 0; i < K; i++) {{ sk[t * K + i] = keys[i]; si[t * K + i] = ids[i]; }}
        }}
        __syncthreads();
    }}
    if (t == 0) {{
        for (int i = 0; i < K; i++) {{ best_keys[q * K + i] = sk[i]; best_ids[q * K + i] = si[i]; }}
    }}
}}
"#,
        threads = topk_threads(k)
    )
}

/// The `k` nearest base rows of each query on the device (best first), like
/// [`crate::linalg::knn`].
pub fn knn(
    base: &Matrix,
    queries: &Matrix,
    k: usize,
    metric: Metric,
) -> Result<Vec<Vec<Neighbour>>, GpuError> {
    knn_operands(&Operand::Host(base), &Operand::Host(queries), k, metric)
}

/// [`knn`] over operands (either may be resident).
pub fn knn_operands(
    base: &Operand<'_>,
    queries: &Operand<'_>,
    k: usize,
    metric: Metric,
) -> Result<Vec<Vec<Neighbour>>, GpuError> {
    let (base_rows, query_rows, dim) = (base.rows(), queries.rows(), base.dim());
    let k = k.min(base_rows);
    if k == 0 || query_rows == 0 {
        return Ok(vec![Vec::new(); query_rows]);
    }
    if k > MAX_GPU_K {
        return Err(GpuError::Unsupported(format!(
            "k = {k} (the GPU keeps at most {MAX_GPU_K} neighbours per query)"
        )));
    }
    let guard = blas()?.lock().expect("cuBLAS handle");
    let stream = guard.stream.clone();
    let ctx = context()?;
    let topk = compiled(&ctx, &topk_source(k), "amdahl_topk")?;
    let cosine = metric == Metric::Cosine;
    let (base_dev, bnorm) =
        rows_prepared(&stream, &base.on_device(&stream)?, base_rows, dim, cosine)?;
    let (query_dev, query_norms) = rows_prepared(
        &stream,
        &queries.on_device(&stream)?,
        query_rows,
        dim,
        cosine,
    )?;
    let metric_flag: i32 = if metric == Metric::L2 { 1 } else { 0 };
    let mut results = Vec::with_capacity(query_rows);
    let block_rows = BASE_BLOCK.min(base_rows);
    let mut scores = stream
        .alloc_zeros::<f32>(QUERY_BLOCK.min(query_rows) * block_rows)
        .map_err(driver)?;
    for q0 in (0..query_rows).step_by(QUERY_BLOCK) {
        let qn = QUERY_BLOCK.min(query_rows - q0);
        let q_view = query_dev.slice(q0 * dim..(q0 + qn) * dim);
        let qnorm = query_norms.slice(q0..q0 + qn);
        let mut best_keys = stream.alloc_zeros::<f32>(qn * k).map_err(driver)?;
        let mut best_ids = stream.clone_htod(&vec![-1i64; qn * k]).map_err(driver)?;
        for b0 in (0..base_rows).step_by(BASE_BLOCK) {
            let bn = BASE_BLOCK.min(base_rows - b0);
            let b_view = base_dev.slice(b0 * dim..(b0 + bn) * dim);
            {
                let config = GemmConfig {
                    transa: cublasOperation_t::CUBLAS_OP_T,
                    transb: cublasOperation_t::CUBLAS_OP_N,
                    m: bn as i32,
                    n: qn as i32,
                    k: dim as i32,
                    alpha: 1.0f32,
                    lda: dim as i32,
                    ldb: dim as i32,
                    beta: 0.0f32,
                    ldc: bn as i32,
                };
                // SAFETY: the base view holds bn×dim floats, the query view qn×dim, and the
                // score buffer at least qn×bn: scores = queries · baseᵀ, row-major qn×bn.
                unsafe { guard.blas.gemm(config, &b_view, &q_view, &mut scores) }
                    .map_err(|e| GpuError::Driver(format!("cuBLAS sgemm: {e:?}")))?;
            }
            let (qn64, bn64, b064) = (qn as i64, bn as i64, b0 as i64);
            let config = LaunchConfig {
                grid_dim: (qn as u32, 1, 1),
                block_dim: (topk_threads(k), 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = stream.launch_builder(&topk);
            launch
                .arg(&scores)
                .arg(&qn64)
                .arg(&bn64)
                .arg(&b064)
                .arg(&metric_flag)
                .arg(&qnorm)
                .arg(&bnorm)
                .arg(&mut best_keys)
                .arg(&mut best_ids);
            // SAFETY: scores holds qn×bn floats, qnorm qn, bnorm every base row, and the best
            // lists qn×k each, as the kernel reads and writes.
            unsafe { launch.launch(config) }.map_err(driver)?;
        }
        let keys = stream.clone_dtoh(&best_keys).map_err(driver)?;
        let ids = stream.clone_dtoh(&best_ids).map_err(driver)?;
        for q in 0..qn {
            results.push(
                (0..k)
                    .filter(|&i| ids[q * k + i] >= 0)
                    .map(|i| Neighbour {
                        index: ids[q * k + i] as u64,
                        score: match metric {
                            Metric::L2 => (-keys[q * k + i]).sqrt(),
                            _ => keys[q * k + i],
                        },
                    })
                    .collect(),
            );
        }
    }
    Ok(results)
}

/// The kernels of this module compiled by the host's C++ compiler, each CUDA thread an OS
/// thread and `__syncthreads` a barrier, run over real inputs.
pub mod emulation {
    use std::fmt::Write as _;
    use std::path::Path;

    use super::{topk_source, topk_threads};
    use crate::gpu::cuda::GpuError;
    use crate::gpu::cuda::emulation::compile_and_run;

    const SHIM: &str = r#"
#include <barrier>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
struct Dim3 { unsigned x, y, z; };
static Dim3 blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
static thread_local Dim3 threadIdx = {0, 0, 0};
static std::barrier<>* block_barrier;
static inline void __syncthreads() { block_barrier->arrive_and_wait(); }
template <typename T> static std::vector<T> load(const char* path) {
    std::vector<T> v; FILE* f = std::fopen(path, "rb"); if (!f) return v;
    std::fseek(f, 0, SEEK_END); long n = std::ftell(f); std::fseek(f, 0, SEEK_SET);
    v.resize(n / sizeof(T)); if (n) std::fread(v.data(), 1, n, f); std::fclose(f); return v;
}
template <typename T> static void save(const char* path, const std::vector<T>& v) {
    FILE* f = std::fopen(path, "wb"); std::fwrite(v.data(), sizeof(T), v.size(), f); std::fclose(f);
}
"#;

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Runs the top-k kernel over `scores` (qn × bn) with running lists (`keys`, `ids`,
    /// qn × k); returns the merged lists.
    // Eight parameters: the kernel's own arguments, one for one, so the emulation is called
    // exactly as the device kernel is launched.
    #[allow(clippy::too_many_arguments)]
    pub fn topk(
        dir: &Path,
        k: usize,
        scores: &[f32],
        (qn, bn, b0): (usize, usize, usize),
        l2: bool,
        qnorm: &[f32],
        bnorm: &[f32],
        (keys, ids): (&[f32], &[i64]),
    ) -> Result<(Vec<f32>, Vec<i64>), GpuError> {
        let io = |e: std::io::Error| GpuError::Input(format!("{}: {e}", dir.display()));
        std::fs::write(dir.join("scores.bin"), floats(scores)).map_err(io)?;
        std::fs::write(dir.join("qnorm.bin"), floats(qnorm)).map_err(io)?;
        std::fs::write(dir.join("bnorm.bin"), floats(bnorm)).map_err(io)?;
        std::fs::write(dir.join("keys.bin"), floats(keys)).map_err(io)?;
        let id_bytes: Vec<u8> = ids.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(dir.join("ids.bin"), id_bytes).map_err(io)?;
        let threads = topk_threads(k);
        let mut main = String::new();
        let _ = write!(
            main,
            "int main() {{\n\
             auto scores = load<float>(\"scores.bin\"); auto qnorm = load<float>(\"qnorm.bin\");\n\
             auto bnorm = load<float>(\"bnorm.bin\"); auto keys = load<float>(\"keys.bin\");\n\
             auto ids = load<long long>(\"ids.bin\");\n\
             blockDim.x = {threads}; gridDim.x = {qn};\n\
             for (unsigned b = 0; b < {qn}; b++) {{\n\
               blockIdx.x = b;\n\
               std::barrier<> bar({threads}); block_barrier = &bar;\n\
               std::vector<std::thread> threads;\n\
               for (unsigned t = 0; t < {threads}; t++) threads.emplace_back([&, t] {{\n\
                 threadIdx.x = t;\n\
                 amdahl_topk(scores.data(), {qn}LL, {bn}LL, {b0}LL, {l2}, qnorm.data(), bnorm.data(), keys.data(), ids.data());\n\
               }});\n\
               for (auto& th : threads) th.join();\n\
             }}\n\
             save(\"keys.out\", keys); save(\"ids.out\", ids); return 0;\n}}\n",
            l2 = l2 as i32
        );
        let program = format!("{SHIM}\n{}\n{main}", topk_source(k));
        let ran = compile_and_run(dir, "topk", &program, &["-std=c++20", "-pthread"])?;
        if !ran.success() {
            return Err(GpuError::Input(format!("emulated top-k ended with {ran}")));
        }
        let keys = std::fs::read(dir.join("keys.out"))
            .map_err(io)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let ids = std::fs::read(dir.join("ids.out"))
            .map_err(io)?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok((keys, ids))
    }
}
