//! Dense stages on the CPU: `knn`, `matmul` and `score`, over vector columns of Parquet tables.
//!
//! Vectors are read into row-major `f32` matrices; every product is a blocked GEMM from the
//! `gemm` crate (packed, SIMD micro-kernels, all cores), never a naive loop. `knn` computes the
//! query×base scores a block at a time (so memory stays bounded however large the base is) and
//! keeps the best `k` per query; `score` runs an MLP from a safetensors file, a batch of rows at
//! a time. Outputs are Parquet, like every data-producing stage.
//!
//! Vector columns may be `FixedSizeList`, `List` or `LargeList` of `Float32` or `Float64`; all
//! vectors of a table must have one length and none may be null.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Int32Array, Int64Array, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema, SchemaRef};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use amdahl_dags::{Activation, DatasetFormat, Metric};

use crate::gpu::{self, cuda::GpuError};
use crate::runtime::CpuRuntime;
use crate::stage::{Device, Executor, LogSink, Stage, StageError, StageOutcome, TableInput, Work};
use crate::storage::{PartWriter, dir_bytes, reset_dir};

/// Rows written per Parquet batch.
const WRITE_BATCH: usize = 8192;

/// A row-major matrix: `rows` vectors of `dim` floats.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn new(rows: usize, dim: usize, data: Vec<f32>) -> Matrix {
        assert_eq!(data.len(), rows * dim, "matrix data length");
        Matrix { rows, dim, data }
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// `a · bᵀ` for row-major `a` (m×k) and `b` (n×k): an m×n row-major result.
pub fn multiply_transposed(
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    threads: usize,
) -> Vec<f32> {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), n * k);
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    let parallelism = if threads > 1 && m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers and strides describe `out` (m×n, row-major), `a` (m×k, row-major)
    // and bᵀ (k×n: element (l, j) is b[j*k + l]), all in bounds by the asserts above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    out
}

/// One neighbour of a query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbour {
    pub index: u64,
    pub score: f32,
}

/// Heap entry ordered so that the *worst* kept neighbour is at the top.
#[derive(Clone, Copy)]
struct Kept {
    /// Larger is better (distances are negated).
    key: f32,
    index: u64,
}

impl Kept {
    /// Whether `self` is better than `other`: larger key, then smaller index; NaN is worst.
    fn better(&self, other: &Kept) -> bool {
        match (self.key.is_nan(), other.key.is_nan()) {
            (false, true) => true,
            (true, _) => false,
            _ => match self.key.partial_cmp(&other.key) {
                Some(Ordering::Greater) => true,
                Some(Ordering::Less) => false,
                _ => self.index < other.index,
            },
        }
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kept {
    /// The heap's greatest is the worst.
    fn cmp(&self, other: &Self) -> Ordering {
        if self.index == other.index && self.key.to_bits() == other.key.to_bits() {
            Ordering::Equal
        } else if self.better(other) {
            Ordering::Less
        } else {
            Ordering::Greater
        }
    }
}

/// Queries per block and base rows per block: a block of scores is at most 64 MB.
const QUERY_BLOCK: usize = 256;
const BASE_BLOCK: usize = 65_536;

/// The `k` nearest base rows of each query (best first). Cosine normalises both sides; L2
/// reports the Euclidean distance (smallest first); dot and cosine report the similarity.
pub fn knn(
    base: &Matrix,
    queries: &Matrix,
    k: usize,
    metric: Metric,
    threads: usize,
) -> Vec<Vec<Neighbour>> {
    knn_in_blocks(base, queries, k, metric, threads, (QUERY_BLOCK, BASE_BLOCK))
}

/// [`knn`] with the block sizes (queries, base rows) given.
fn knn_in_blocks(
    base: &Matrix,
    queries: &Matrix,
    k: usize,
    metric: Metric,
    threads: usize,
    (query_block, base_block): (usize, usize),
) -> Vec<Vec<Neighbour>> {
    assert_eq!(base.dim, queries.dim, "vector lengths");
    let dim = base.dim;
    let (base_data, query_data);
    let (base_m, query_m) = if metric == Metric::Cosine {
        base_data = normalised(base);
        query_data = normalised(queries);
        (&base_data[..], &query_data[..])
    } else {
        (&base.data[..], &queries.data[..])
    };
    let base_norms: Vec<f32> = if metric == Metric::L2 {
        (0..base.rows).map(|i| squared_norm(base.row(i))).collect()
    } else {
        Vec::new()
    };
    let k = k.min(base.rows);
    let mut results = Vec::with_capacity(queries.rows);
    for q0 in (0..queries.rows).step_by(query_block) {
        let qn = query_block.min(queries.rows - q0);
        let q_block = &query_m[q0 * dim..(q0 + qn) * dim];
        let query_norms: Vec<f32> = (0..qn)
            .map(|i| squared_norm(&q_block[i * dim..(i + 1) * dim]))
            .collect();
        let mut heaps: Vec<BinaryHeap<Kept>> =
            (0..qn).map(|_| BinaryHeap::with_capacity(k + 1)).collect();
        for b0 in (0..base.rows).step_by(base_block) {
            let bn = base_block.min(base.rows - b0);
            let b_block = &base_m[b0 * dim..(b0 + bn) * dim];
            let scores = multiply_transposed(q_block, b_block, qn, bn, dim, threads);
            for (qi, heap) in heaps.iter_mut().enumerate() {
                let row = &scores[qi * bn..(qi + 1) * bn];
                for (bj, &dot) in row.iter().enumerate() {
                    let key = match metric {
                        Metric::Dot | Metric::Cosine => dot,
                        // Larger is better: the negated squared distance.
                        Metric::L2 => -(query_norms[qi] + base_norms[b0 + bj] - 2.0 * dot).max(0.0),
                    };
                    let candidate = Kept {
                        key,
                        index: (b0 + bj) as u64,
                    };
                    if heap.len() < k {
                        heap.push(candidate);
                    } else if let Some(worst) = heap.peek()
                        && candidate.better(worst)
                    {
                        heap.pop();
                        heap.push(candidate);
                    }
                }
            }
        }
        for heap in heaps {
            let mut kept = heap.into_vec();
            kept.sort_by(|a, b| {
                if a.better(b) {
                    Ordering::Less
                } else if b.better(a) {
                    Ordering::Greater
                } else {
                    Ordering::Equal
                }
            });
            results.push(
                kept.into_iter()
                    .map(|n| Neighbour {
                        index: n.index,
                        score: match metric {
                            Metric::L2 => (-n.key).sqrt(),
                            _ => n.key,
                        },
                    })
                    .collect(),
            );
        }
    }
    results
}

fn squared_norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum()
}

/// Rows scaled to unit length (a zero row stays zero).
fn normalised(m: &Matrix) -> Vec<f32> {
    let mut out = m.data.clone();
    for row in out.chunks_mut(m.dim.max(1)) {
        let norm = squared_norm(row).sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
    out
}

/// A tensor's shape and values.
type Tensor = (Vec<usize>, Vec<f32>);

/// One dense layer: `out = W · in + b`, W row-major (out × in).
#[derive(Clone, Debug)]
pub struct Layer {
    pub name: String,
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A multi-layer perceptron: the activation between layers, none after the last.
#[derive(Clone, Debug)]
pub struct Mlp {
    pub layers: Vec<Layer>,
    pub activation: Activation,
}

impl Mlp {
    /// Reads `<layer>.weight` (out × in) and optional `<layer>.bias` (out) tensors; layers in
    /// the order of their names, numbers compared as numbers (`2` before `10`).
    pub fn load(path: &Path, activation: Activation) -> Result<Mlp, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| format!("{} is not a safetensors file: {e}", path.display()))?;
        let mut names: Vec<String> = Vec::new();
        for name in tensors.names() {
            let Some((layer, part)) = name.rsplit_once('.') else {
                return Err(format!(
                    "tensor `{name}`: names must be `<layer>.weight` or `<layer>.bias`"
                ));
            };
            if part != "weight" && part != "bias" {
                return Err(format!(
                    "tensor `{name}`: names must be `<layer>.weight` or `<layer>.bias`"
                ));
            }
            if !names.iter().any(|n| n == layer) {
                names.push(layer.to_string());
            }
        }
        names.sort_by_key(|a| natural(a));
        if names.is_empty() {
            return Err(format!("{} holds no layers", path.display()));
        }
        let floats = |name: &str| -> Result<Option<Tensor>, String> {
            let Ok(view) = tensors.tensor(name) else {
                return Ok(None);
            };
            let data = view.data();
            let values = match view.dtype() {
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
                safetensors::Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect(),
                other => {
                    return Err(format!(
                        "tensor `{name}` is {other:?}; save the model as float32 or float64"
                    ));
                }
            };
            Ok(Some((view.shape().to_vec(), values)))
        };
        let mut layers: Vec<Layer> = Vec::new();
        for name in names {
            let Some((shape, weight)) = floats(&format!("{name}.weight"))? else {
                return Err(format!("layer `{name}` has a bias but no `{name}.weight`"));
            };
            let [outputs, inputs] = shape[..] else {
                return Err(format!(
                    "`{name}.weight` has shape {shape:?}; a layer's weight is (outputs, inputs)"
                ));
            };
            let bias = match floats(&format!("{name}.bias"))? {
                Some((shape, bias)) if shape == [outputs] => bias,
                Some((shape, _)) => {
                    return Err(format!(
                        "`{name}.bias` has shape {shape:?}; expected [{outputs}]"
                    ));
                }
                None => vec![0.0; outputs],
            };
            if let Some(previous) = layers.last()
                && previous.outputs != inputs
            {
                return Err(format!(
                    "layer `{name}` takes {inputs} inputs but layer `{}` gives {}",
                    previous.name, previous.outputs
                ));
            }
            layers.push(Layer {
                name,
                inputs,
                outputs,
                weight,
                bias,
            });
        }
        Ok(Mlp { layers, activation })
    }

    pub fn inputs(&self) -> usize {
        self.layers[0].inputs
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().expect("at least one layer").outputs
    }

    /// Runs the network on `rows` input vectors (row-major); returns rows × outputs.
    pub fn forward(&self, input: &[f32], rows: usize, threads: usize) -> Vec<f32> {
        let mut current = input.to_vec();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let mut next = multiply_transposed(
                &current,
                &layer.weight,
                rows,
                layer.outputs,
                layer.inputs,
                threads,
            );
            for row in next.chunks_mut(layer.outputs.max(1)) {
                for (x, b) in row.iter_mut().zip(&layer.bias) {
                    *x += b;
                    if i != last {
                        *x = match self.activation {
                            Activation::Relu => x.max(0.0),
                            Activation::Tanh => x.tanh(),
                            Activation::Sigmoid => 1.0 / (1.0 + (-*x).exp()),
                        };
                    }
                }
            }
            current = next;
        }
        current
    }
}

/// A layer name as parts, numbers compared as numbers.
fn natural(name: &str) -> Vec<(u64, String)> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                parts.push((0, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                parts.push((digits.parse().unwrap_or(u64::MAX), String::new()));
                digits.clear();
            }
            text.push(c);
        }
    }
    if !digits.is_empty() {
        parts.push((digits.parse().unwrap_or(u64::MAX), String::new()));
    }
    if !text.is_empty() {
        parts.push((0, text));
    }
    parts
}

/// The Parquet files of an input, in part order (`part-2` before `part-10`).
fn files_of(input: &TableInput) -> Result<Vec<PathBuf>, StageError> {
    if input.format != DatasetFormat::Parquet {
        return Err(StageError::Failed(format!(
            "table `{}` is CSV; vector columns must come from Parquet",
            input.name
        )));
    }
    if !input.path.is_dir() {
        return Ok(vec![input.path.clone()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&input.path)
        .map_err(|e| StageError::Failed(format!("cannot read {}: {e}", input.path.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort_by(|a, b| {
        let key = |p: &PathBuf| natural(&p.file_name().unwrap_or_default().to_string_lossy());
        key(a).cmp(&key(b))
    });
    Ok(files)
}

/// Reads a vector column into a matrix.
pub fn read_vectors(input: &TableInput, column: &str) -> Result<Matrix, StageError> {
    let failed = |why: String| StageError::Failed(format!("table `{}`: {why}", input.name));
    let mut data = Vec::new();
    let mut rows = 0usize;
    let mut dim: Option<usize> = None;
    for path in files_of(input)? {
        let file = File::open(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        let schema = builder.schema().clone();
        let Ok(field) = schema.field_with_name(column) else {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(failed(format!(
                "no column `{column}` (columns: {})",
                names.join(", ")
            )));
        };
        if !is_vector(field.data_type()) {
            return Err(failed(format!(
                "column `{column}` is {}, not a list of floats",
                field.data_type()
            )));
        }
        let mask = ProjectionMask::columns(builder.parquet_schema(), [column]);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        for batch in reader {
            let batch = batch.map_err(|e| failed(format!("{}: {e}", path.display())))?;
            let array = batch.column(0);
            if array.null_count() > 0 {
                let row = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
                return Err(failed(format!("row {} of `{column}` is null", rows + row)));
            }
            for i in 0..array.len() {
                let values = list_values(array, i);
                let len = values.len();
                match dim {
                    None => dim = Some(len),
                    Some(d) if d != len => {
                        return Err(failed(format!(
                            "row {} of `{column}` has {len} values, earlier rows {d}",
                            rows + i
                        )));
                    }
                    _ => {}
                }
                extend_floats(&mut data, &values);
            }
            rows += array.len();
        }
    }
    Ok(Matrix::new(rows, dim.unwrap_or(0), data))
}

/// The vector columns of the first two inputs, which must have one length.
fn read_pair(inputs: &[TableInput], column: &str) -> Result<(Matrix, Matrix), StageError> {
    let first = read_vectors(&inputs[0], column)?;
    let second = read_vectors(&inputs[1], column)?;
    if first.rows > 0 && second.rows > 0 && first.dim != second.dim {
        return Err(StageError::Failed(format!(
            "`{}` vectors have {} values but `{}` vectors have {}",
            inputs[0].name, first.dim, inputs[1].name, second.dim
        )));
    }
    Ok((first, second))
}

/// Whether a column type holds vectors the dense stages read.
pub fn is_vector(data_type: &DataType) -> bool {
    match data_type {
        DataType::FixedSizeList(item, _) | DataType::List(item) | DataType::LargeList(item) => {
            matches!(item.data_type(), DataType::Float32 | DataType::Float64)
        }
        _ => false,
    }
}

fn list_values(array: &ArrayRef, i: usize) -> ArrayRef {
    match array.data_type() {
        DataType::FixedSizeList(..) => array.as_fixed_size_list().value(i),
        DataType::List(_) => array.as_list::<i32>().value(i),
        _ => array.as_list::<i64>().value(i),
    }
}

fn extend_floats(data: &mut Vec<f32>, values: &ArrayRef) {
    match values.data_type() {
        DataType::Float32 => data.extend(values.as_primitive::<Float32Type>().values().iter()),
        _ => data.extend(
            values
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .map(|&v| v as f32),
        ),
    }
}

fn vector_field(name: &str, dim: usize) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, false)),
            dim as i32,
        ),
        false,
    )
}

fn vector_array(field: &Field, dim: usize, values: Vec<f32>) -> Result<ArrayRef, StageError> {
    let DataType::FixedSizeList(item, _) = field.data_type() else {
        return Err(StageError::Internal("vector field is not a list".into()));
    };
    FixedSizeListArray::try_new(
        item.clone(),
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
    .map(|a| Arc::new(a) as ArrayRef)
    .map_err(|e| StageError::Internal(e.to_string()))
}

/// The schema of `generate: { vectors }`: `id` and `vector`.
pub fn generated_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        vector_field("vector", dim),
    ]))
}

/// Element `index` of the generated vectors of `seed`: uniform in [-1, 1) (SplitMix64 of the
/// pair, so any part can be made alone and the same seed always gives the same data).
pub fn uniform(seed: u64, index: u64) -> f32 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 24 random bits: exact in f32.
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// The output schemas of the dense kinds (the scalar ones; vector widths come at run time).
pub fn knn_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query", DataType::Int64, false),
        Field::new("rank", DataType::Int32, false),
        Field::new("neighbour", DataType::Int64, false),
        Field::new("score", DataType::Float32, false),
    ]))
}

/// Runs `knn`, `matmul` and `score` stages on the CPU pool.
#[derive(Clone)]
pub struct DenseExecutor {
    runtime: CpuRuntime,
}

impl DenseExecutor {
    pub fn new(runtime: CpuRuntime) -> Self {
        DenseExecutor { runtime }
    }
}

fn table<'a>(stage: &'a Stage, name: &str) -> Result<&'a TableInput, StageError> {
    stage
        .inputs
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| StageError::Failed(format!("no table `{name}` among the stage's inputs")))
}

impl Executor for DenseExecutor {
    async fn execute(&self, stage: &Stage, log: &LogSink) -> Result<StageOutcome, StageError> {
        let Some(output_dir) = stage.output_dir.clone() else {
            return Err(StageError::Internal(
                "dense stage without an output folder".into(),
            ));
        };
        let threads = self.runtime.threads();
        let work = stage.work.clone();
        let inputs: Vec<TableInput> = match &work {
            Work::Knn { base, queries, .. } => {
                vec![table(stage, base)?.clone(), table(stage, queries)?.clone()]
            }
            Work::Matmul { left, right, .. } => {
                vec![table(stage, left)?.clone(), table(stage, right)?.clone()]
            }
            Work::Score { input, .. } => vec![table(stage, input)?.clone()],
            Work::Vectors { .. } => Vec::new(),
            other => {
                return Err(StageError::Internal(format!(
                    "DenseExecutor got {} work",
                    other.kind()
                )));
            }
        };
        let log = log.clone();
        let gpu_choice = stage.gpu_choice();
        let handle = self.runtime.spawn_blocking(move || {
            run_dense(
                &work,
                &inputs,
                &output_dir,
                threads,
                gpu_choice.as_deref(),
                &log,
            )
        });
        handle
            .await
            .map_err(|e| StageError::Internal(format!("dense stage ended abnormally: {e}")))?
    }
}

/// Runs `work` on the GPU when the stage asked for one; `None` (and `note` says why) when it
/// was not asked, no GPU is usable, or the GPU run failed.
fn on_gpu<T>(
    gpu_choice: Option<&str>,
    log: &LogSink,
    note: &mut Option<String>,
    work: impl FnOnce() -> Result<T, GpuError>,
) -> Option<T> {
    let asked = gpu_choice?;
    let why = match &gpu::devices().problem {
        Some(problem) => {
            format!("{asked}, but no GPU is usable here ({problem}); running on the CPU")
        }
        None => match work() {
            Ok(value) => {
                log.system("ran on the GPU (cuBLAS and NVRTC kernels)");
                return Some(value);
            }
            Err(e) => format!("{asked}, but the GPU run failed ({e}); rerunning on the CPU"),
        },
    };
    log.system(&why);
    *note = Some(why);
    None
}

fn run_dense(
    work: &Work,
    inputs: &[TableInput],
    output_dir: &Path,
    threads: usize,
    gpu_choice: Option<&str>,
    log: &LogSink,
) -> Result<StageOutcome, StageError> {
    reset_dir(output_dir)?;
    let mut note = None;
    let mut device = Device::Cpu;
    let rows = match work {
        Work::Vectors { rows, dim, seed } => {
            let dim = *dim as usize;
            log.system(format!(
                "generating {rows} vectors of {dim} floats (seed {seed})"
            ));
            let schema = generated_schema(dim);
            let mut writer = PartWriter::create(output_dir, 0, schema.clone())?;
            let chunk = (WRITE_BATCH * 16 / dim.max(1)).max(1) as u64;
            for r0 in (0..*rows).step_by(chunk as usize) {
                let rn = chunk.min(rows - r0);
                let values: Vec<f32> = (r0 * dim as u64..(r0 + rn) * dim as u64)
                    .map(|i| uniform(*seed, i))
                    .collect();
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(
                            (r0..r0 + rn).map(|r| r as i64),
                        )),
                        vector_array(schema.field(1), dim, values)?,
                    ],
                )
                .map_err(|e| StageError::Internal(e.to_string()))?;
                writer.write(&batch)?;
            }
            writer.finish()?
        }
        Work::Knn {
            column, k, metric, ..
        } => {
            let (base, queries) = read_pair(inputs, column)?;
            log.system(format!(
                "knn: {} queries × {} base vectors of {} floats, k = {k}, metric {}",
                queries.rows,
                base.rows,
                base.dim,
                metric.name()
            ));
            let on_device = on_gpu(gpu_choice, log, &mut note, || {
                gpu::dense::knn(&base, &queries, *k as usize, *metric)
            });
            if on_device.is_some() {
                device = Device::Gpu;
            }
            let found =
                on_device.unwrap_or_else(|| knn(&base, &queries, *k as usize, *metric, threads));
            let mut writer = PartWriter::create(output_dir, 0, knn_schema())?;
            let flat: Vec<(i64, i32, i64, f32)> = found
                .iter()
                .enumerate()
                .flat_map(|(q, list)| {
                    list.iter()
                        .enumerate()
                        .map(move |(r, n)| (q as i64, r as i32 + 1, n.index as i64, n.score))
                })
                .collect();
            for chunk in flat.chunks(WRITE_BATCH) {
                let batch = RecordBatch::try_new(
                    knn_schema(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(chunk.iter().map(|c| c.0))),
                        Arc::new(Int32Array::from_iter_values(chunk.iter().map(|c| c.1))),
                        Arc::new(Int64Array::from_iter_values(chunk.iter().map(|c| c.2))),
                        Arc::new(Float32Array::from_iter_values(chunk.iter().map(|c| c.3))),
                    ],
                )
                .map_err(|e| StageError::Internal(e.to_string()))?;
                writer.write(&batch)?;
            }
            writer.finish()?
        }
        Work::Matmul { column, .. } => {
            let (left, right) = read_pair(inputs, column)?;
            log.system(format!(
                "matmul: ({} × {}) · ({} × {})ᵀ",
                left.rows, left.dim, right.rows, right.dim
            ));
            let mut writer = None;
            let whole = on_gpu(gpu_choice, log, &mut note, || {
                gpu::dense::multiply_transposed(
                    &left.data,
                    &right.data,
                    left.rows,
                    right.rows,
                    left.dim,
                )
            });
            for r0 in (0..left.rows).step_by(WRITE_BATCH) {
                let rn = WRITE_BATCH.min(left.rows - r0);
                let product = match &whole {
                    Some(all) => all[r0 * right.rows..(r0 + rn) * right.rows].to_vec(),
                    None => {
                        let block = &left.data[r0 * left.dim..(r0 + rn) * left.dim];
                        multiply_transposed(block, &right.data, rn, right.rows, left.dim, threads)
                    }
                };
                write_vectors(&mut writer, output_dir, r0, right.rows, "vector", product)?;
            }
            if whole.is_some() {
                device = Device::Gpu;
            }
            finish_vectors(writer, output_dir, right.rows, "vector")?
        }
        Work::Score {
            column,
            model,
            activation,
            ..
        } => {
            let mlp = Mlp::load(model, *activation).map_err(StageError::Failed)?;
            let input = read_vectors(&inputs[0], column)?;
            if input.rows > 0 && input.dim != mlp.inputs() {
                return Err(StageError::Failed(format!(
                    "the model takes {} inputs but `{}` vectors have {}",
                    mlp.inputs(),
                    inputs[0].name,
                    input.dim
                )));
            }
            log.system(format!(
                "score: {} rows through {} layer(s) ({} → {})",
                input.rows,
                mlp.layers.len(),
                mlp.inputs(),
                mlp.outputs()
            ));
            let outputs = mlp.outputs();
            let mut writer = None;
            let whole = on_gpu(gpu_choice, log, &mut note, || {
                gpu::dense::mlp_forward(&mlp, &input.data, input.rows)
            });
            for r0 in (0..input.rows).step_by(WRITE_BATCH) {
                let rn = WRITE_BATCH.min(input.rows - r0);
                let scores = match &whole {
                    Some(all) => all[r0 * outputs..(r0 + rn) * outputs].to_vec(),
                    None => {
                        let block = &input.data[r0 * input.dim..(r0 + rn) * input.dim];
                        mlp.forward(block, rn, threads)
                    }
                };
                write_vectors(&mut writer, output_dir, r0, outputs, "score", scores)?;
            }
            if whole.is_some() {
                device = Device::Gpu;
            }
            finish_vectors(writer, output_dir, outputs, "score")?
        }
        other => {
            return Err(StageError::Internal(format!(
                "DenseExecutor got {} work",
                other.kind()
            )));
        }
    };
    let bytes = dir_bytes(output_dir);
    log.system(format!(
        "wrote {rows} rows ({bytes} bytes) to {}",
        output_dir.display()
    ));
    Ok(StageOutcome {
        device,
        rows: Some(rows),
        bytes: Some(bytes),
        note,
    })
}

/// The schema of a matmul or score output: `row`, then the vector (or, for one value per
/// row, a plain `Float32` column).
pub fn vectors_schema(name: &str, dim: usize) -> SchemaRef {
    let value = if dim == 1 {
        Field::new(name, DataType::Float32, false)
    } else {
        vector_field(name, dim)
    };
    Arc::new(Schema::new(vec![
        Field::new("row", DataType::Int64, false),
        value,
    ]))
}

/// Appends rows `first_row..` (as many as `values` holds) to the output.
fn write_vectors(
    writer: &mut Option<PartWriter>,
    output_dir: &Path,
    first_row: usize,
    dim: usize,
    name: &str,
    values: Vec<f32>,
) -> Result<(), StageError> {
    let rows = values.len() / dim.max(1);
    let schema = vectors_schema(name, dim);
    if writer.is_none() {
        *writer = Some(PartWriter::create(output_dir, 0, schema.clone())?);
    }
    let value: ArrayRef = if dim == 1 {
        Arc::new(Float32Array::from(values))
    } else {
        vector_array(schema.field(1), dim, values)?
    };
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(
                (first_row..first_row + rows).map(|r| r as i64),
            )),
            value,
        ],
    )
    .map_err(|e| StageError::Internal(e.to_string()))?;
    writer.as_mut().expect("created above").write(&batch)
}

/// Closes the output, creating an empty one when there were no rows.
fn finish_vectors(
    writer: Option<PartWriter>,
    output_dir: &Path,
    dim: usize,
    name: &str,
) -> Result<u64, StageError> {
    let writer = match writer {
        Some(w) => w,
        None => PartWriter::create(output_dir, 0, vectors_schema(name, dim))?,
    };
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|l| a[i * k + l] * b[j * k + l]).sum();
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn gemm_equals_the_definition_on_odd_shapes() {
        for (m, n, k) in [(1, 1, 1), (3, 5, 7), (33, 17, 129), (70, 65, 3)] {
            let a = pseudo(m * k, 1);
            let b = pseudo(n * k, 2);
            let fast = multiply_transposed(&a, &b, m, n, k, 2);
            let slow = naive(&a, &b, m, n, k);
            for (x, y) in fast.iter().zip(&slow) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{m}×{n}×{k}: {x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn knn_equals_brute_force_for_every_metric() {
        let (rows, queries, dim) = (300, 37, 9);
        let base = Matrix::new(rows, dim, pseudo(rows * dim, 3));
        let q = Matrix::new(queries, dim, pseudo(queries * dim, 4));
        for (metric, blocks) in [
            (Metric::Dot, (7, 50)),
            (Metric::Cosine, (256, 65_536)),
            (Metric::L2, (10, 31)),
        ] {
            // Small blocks: the best of each base block must merge across blocks.
            let found = knn_in_blocks(&base, &q, 5, metric, 2, blocks);
            for (qi, list) in found.iter().enumerate() {
                let mut all: Vec<(f32, usize)> = (0..rows)
                    .map(|bi| {
                        let (x, y) = (q.row(qi), base.row(bi));
                        let dot: f32 = x.iter().zip(y).map(|(a, b)| a * b).sum();
                        let score = match metric {
                            Metric::Dot => dot,
                            Metric::Cosine => {
                                dot / (squared_norm(x).sqrt() * squared_norm(y).sqrt())
                            }
                            Metric::L2 => {
                                -x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
                            }
                        };
                        (score, bi)
                    })
                    .collect();
                all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
                let expected: Vec<usize> = all.iter().take(5).map(|x| x.1).collect();
                let got: Vec<usize> = list.iter().map(|n| n.index as usize).collect();
                // Float rounding may swap near-ties: compare scores, not only indices.
                for (r, (g, e)) in got.iter().zip(&expected).enumerate() {
                    let score_of = |i: usize| all.iter().find(|x| x.1 == i).unwrap().0;
                    assert!(
                        g == e || (score_of(*g) - score_of(*e)).abs() < 1e-5,
                        "{metric:?} query {qi} rank {r}: {got:?} vs {expected:?}"
                    );
                }
                if metric == Metric::L2 {
                    let want = (-all[0].0).sqrt();
                    assert!(
                        (list[0].score - want).abs() < 1e-4,
                        "distance {} vs {want}",
                        list[0].score
                    );
                }
            }
        }
    }

    #[test]
    fn knn_with_k_above_the_base_returns_the_whole_base_in_order() {
        let base = Matrix::new(3, 1, vec![1.0, 3.0, 2.0]);
        let q = Matrix::new(1, 1, vec![1.0]);
        let found = knn(&base, &q, 10, Metric::Dot, 1);
        let order: Vec<u64> = found[0].iter().map(|n| n.index).collect();
        assert_eq!(order, [1, 2, 0]);
    }

    #[test]
    fn natural_order_puts_2_before_10() {
        let mut names = vec!["layer10", "layer2", "layer1", "out"];
        names.sort_by_key(|a| natural(a));
        assert_eq!(names, ["layer1", "layer2", "layer10", "out"]);
    }
}
