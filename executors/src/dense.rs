//! Dense stages on the CPU: `knn`, `matmul` and `score`, over vector columns of Parquet tables.
//!
//! Vectors are read into row-major `f32` matrices and handed to [`crate::linalg`] (blocked GEMM,
//! bounded-memory `knn`, MLPs) or, for `device: gpu`, to [`crate::gpu::dense`]; results are
//! written as Parquet a batch at a time, like every data-producing stage.
//!
//! Vector columns may be `FixedSizeList`, `List` or `LargeList` of `Float32` or `Float64`; all
//! vectors of a table must have one length and none may be null.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Int32Array, Int64Array, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use amdahl_dags::DatasetFormat;

pub use amdahl_planner::schemas::{generated_schema, is_vector, knn_schema, vectors_schema};

use crate::budget::Budget;
use crate::gpu::{self, cuda::GpuError};
use crate::linalg::natural;
pub use crate::linalg::{
    Forward, Layer, Matrix, Mlp, Neighbour, knn, multiply_transposed, uniform,
};
use crate::runtime::CpuRuntime;
use crate::stage::{
    Device, Executor, LogSink, Stage, StageError, StageOutcome, StageTimings, TableInput, Work,
};
use crate::storage::{PartWriter, dir_bytes, reset_dir};

/// Rows written per Parquet batch.
const WRITE_BATCH: usize = 8192;

/// The Parquet files of an input, in part order (`part-2` before `part-10`).
fn files_of(input: &TableInput) -> Result<Vec<PathBuf>, StageError> {
    if input.format != DatasetFormat::Parquet {
        return Err(StageError::Failed(format!(
            "table `{}` is CSV; vector columns must come from Parquet",
            input.name
        )));
    }
    let Some(path) = input.path() else {
        return Err(StageError::Failed(format!(
            "table `{}` is in object storage ({}); dense stages read vectors from local files",
            input.name, input.location
        )));
    };
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| StageError::Failed(format!("cannot read {}: {e}", path.display())))?
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
/// The matrix is claimed from `budget` whole, once the vectors' length is known, before it
/// is filled.
pub fn read_vectors(
    input: &TableInput,
    column: &str,
    budget: &mut Budget,
) -> Result<Matrix, StageError> {
    let failed = |why: String| StageError::Failed(format!("table `{}`: {why}", input.name));
    let files = files_of(input)?;
    // Rows in every file, from their footers: the matrix is allocated once.
    let mut total_rows = 0usize;
    for path in &files {
        let file = File::open(path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        total_rows += builder.metadata().file_metadata().num_rows().max(0) as usize;
    }
    let mut data = Vec::new();
    let mut rows = 0usize;
    let mut dim: Option<usize> = None;
    for path in files {
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
                    None => {
                        dim = Some(len);
                        let floats = total_rows.saturating_mul(len);
                        budget.claim(
                            floats.saturating_mul(size_of::<f32>()),
                            &format!("reading `{}` ({total_rows} × {len} floats)", input.name),
                        )?;
                        data.reserve_exact(floats);
                    }
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
        // Inputs in object storage are copied next to the output first: vectors are read
        // from local files. The copies go when the stage ends.
        let mut fetched = None;
        let mut inputs = inputs;
        for input in &mut inputs {
            let amdahl_dags::Location::Object(object) = &input.location else {
                continue;
            };
            let scratch = match &fetched {
                Some(dir) => dir,
                None => {
                    let beside = output_dir.parent().unwrap_or(&output_dir);
                    let made = std::fs::create_dir_all(beside).and_then(|()| {
                        tempfile::Builder::new()
                            .prefix(".inputs-")
                            .tempdir_in(beside)
                    });
                    fetched.insert(made.map_err(|e| {
                        StageError::Internal(format!("scratch folder in {}: {e}", beside.display()))
                    })?)
                }
            };
            let local = scratch.path().join(&input.name);
            let bytes = crate::objects::download(object, &local)
                .await
                .map_err(|e| StageError::Failed(format!("table `{}`: {e}", input.name)))?;
            log.system(format!(
                "copied `{}` ({bytes} bytes) from {} to read its vectors",
                input.name, object.url
            ));
            input.location = amdahl_dags::Location::Local(local);
        }
        let log = log.clone();
        let gpu_choice = stage.routed().gpu_asked().map(str::to_string);
        let mut budget = Budget::new(
            &self.runtime.datafusion_env(),
            self.runtime.memory(),
            &format!("{} stage `{}`", work.kind(), stage.task_id),
        );
        let handle = self.runtime.spawn_blocking(move || {
            run_dense(
                &work,
                &inputs,
                &output_dir,
                threads,
                gpu_choice.as_deref(),
                &log,
                &mut budget,
            )
        });
        let result = handle
            .await
            .map_err(|e| StageError::Internal(format!("dense stage ended abnormally: {e}")))?;
        drop(fetched);
        result
    }
}

/// The GPU choice, if the whole output (`floats` of it) fits the memory budget on the host;
/// otherwise `None`, and the note says why the stage stays on the CPU.
fn whole_fits<'a>(
    gpu_choice: Option<&'a str>,
    budget: &mut Budget,
    floats: usize,
    log: &LogSink,
    note: &mut Option<String>,
) -> Option<&'a str> {
    let asked = gpu_choice?;
    if !gpu::usable() {
        return Some(asked);
    }
    match budget.claim(
        floats.saturating_mul(size_of::<f32>()),
        "the GPU's whole output",
    ) {
        Ok(()) => Some(asked),
        Err(e) => {
            let why = format!("{asked}, but {e}; running on the CPU a block at a time");
            log.system(&why);
            *note = Some(why);
            None
        }
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
    let why = match gpu::health::unusable_reason() {
        Some(problem) => {
            format!("{asked}, but no GPU is usable here ({problem}); running on the CPU")
        }
        None => match work() {
            Ok(value) => {
                log.system("ran on the GPU (cuBLAS and NVRTC kernels)");
                return Some(value);
            }
            Err(e) => {
                if gpu::health::observe(&e) {
                    log.system(format!(
                        "the GPU is lost for this process ({e}): later stages run on the CPU"
                    ));
                }
                format!("{asked}, but the GPU run failed ({e}); rerunning on the CPU")
            }
        },
    };
    log.system(&why);
    *note = Some(why);
    None
}

/// The vector tables of a dense stage: resident in device memory when a GPU stage of this
/// process made them and the stage runs on the GPU, read from storage otherwise (or when the
/// GPU run fails and the CPU needs them).
struct Operands<'a> {
    tables: &'a [TableInput],
    column: &'a str,
    resident: Vec<Option<gpu::resident::Entry<cudarc::driver::CudaSlice<f32>>>>,
    host: Vec<Option<Matrix>>,
}

impl<'a> Operands<'a> {
    fn gather(
        tables: &'a [TableInput],
        column: &'a str,
        gpu_choice: Option<&str>,
        log: &LogSink,
        budget: &mut Budget,
    ) -> Result<Self, StageError> {
        let mut resident = Vec::with_capacity(tables.len());
        let mut host = Vec::with_capacity(tables.len());
        let on_gpu = gpu_choice.is_some() && gpu::usable();
        for table in tables {
            let kept = on_gpu
                .then(|| {
                    let path = table.path()?;
                    gpu::resident::DEVICE
                        .lock()
                        .expect("resident outputs")
                        .find(path, column)
                })
                .flatten();
            match kept {
                Some(entry) => {
                    log.system(format!(
                        "reads `{}` ({} × {}) from device memory, where the stage that made it \
                         left it",
                        table.name, entry.rows, entry.dim
                    ));
                    resident.push(Some(entry));
                    host.push(None);
                }
                None => {
                    resident.push(None);
                    host.push(Some(read_vectors(table, column, budget)?));
                }
            }
        }
        Ok(Operands {
            tables,
            column,
            resident,
            host,
        })
    }

    fn rows(&self, i: usize) -> usize {
        match (&self.resident[i], &self.host[i]) {
            (Some(e), _) => e.rows,
            (None, Some(m)) => m.rows,
            (None, None) => 0,
        }
    }

    fn dim(&self, i: usize) -> usize {
        match (&self.resident[i], &self.host[i]) {
            (Some(e), _) => e.dim,
            (None, Some(m)) => m.dim,
            (None, None) => 0,
        }
    }

    /// The first two tables' vectors must have one length.
    fn same_dim(&self) -> Result<(), StageError> {
        if self.rows(0) > 0 && self.rows(1) > 0 && self.dim(0) != self.dim(1) {
            return Err(StageError::Failed(format!(
                "`{}` vectors have {} values but `{}` vectors have {}",
                self.tables[0].name,
                self.dim(0),
                self.tables[1].name,
                self.dim(1)
            )));
        }
        Ok(())
    }

    fn operand(&self, i: usize) -> gpu::dense::Operand<'_> {
        match (&self.resident[i], &self.host[i]) {
            (Some(e), _) => gpu::dense::Operand::Device(e.clone()),
            (None, Some(m)) => gpu::dense::Operand::Host(m),
            (None, None) => unreachable!("every table is resident or read"),
        }
    }

    /// Reads from storage the tables that were only in device memory (for the CPU).
    fn read_all(&mut self, budget: &mut Budget) -> Result<(), StageError> {
        for (table, host) in self.tables.iter().zip(&mut self.host) {
            if host.is_none() {
                *host = Some(read_vectors(table, self.column, budget)?);
            }
        }
        Ok(())
    }

    /// A table's vectors on the host (after [`Operands::read_all`]).
    fn host(&self, i: usize) -> &Matrix {
        self.host[i].as_ref().expect("read_all first")
    }
}

/// Keeps a GPU stage's vector output in device memory for the next stage.
fn keep_resident(
    output_dir: &Path,
    column: &str,
    rows: usize,
    dim: usize,
    data: Arc<cudarc::driver::CudaSlice<f32>>,
) {
    gpu::resident::DEVICE
        .lock()
        .expect("resident outputs")
        .keep(output_dir, column, rows, dim, data);
}

/// Runs `f`, adding its milliseconds to `total`.
fn timed<T>(total: &mut f64, f: impl FnOnce() -> T) -> T {
    let t = std::time::Instant::now();
    let out = f();
    *total += t.elapsed().as_secs_f64() * 1e3;
    out
}

fn run_dense(
    work: &Work,
    inputs: &[TableInput],
    output_dir: &Path,
    threads: usize,
    gpu_choice: Option<&str>,
    log: &LogSink,
    budget: &mut Budget,
) -> Result<StageOutcome, StageError> {
    let started = std::time::Instant::now();
    // Reading the operands is I/O; the rest (copies to a GPU included) counts as compute.
    let mut io_ms = 0.0;
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
            let mut tables = timed(&mut io_ms, || {
                Operands::gather(inputs, column, gpu_choice, log, budget)
            })?;
            tables.same_dim()?;
            log.system(format!(
                "knn: {} queries × {} base vectors of {} floats, k = {k}, metric {}",
                tables.rows(1),
                tables.rows(0),
                tables.dim(0),
                metric.name()
            ));
            // Each query's list, then the rows written from it.
            let found_bytes = size_of::<Neighbour>() + size_of::<(i64, i32, i64, f32)>();
            budget.claim(
                tables
                    .rows(1)
                    .saturating_mul(*k as usize)
                    .saturating_mul(found_bytes),
                &format!(
                    "the neighbours found ({} queries × k = {k})",
                    tables.rows(1)
                ),
            )?;
            let on_device = on_gpu(gpu_choice, log, &mut note, || {
                gpu::dense::knn_operands(
                    &tables.operand(0),
                    &tables.operand(1),
                    *k as usize,
                    *metric,
                )
            });
            let found = match on_device {
                Some(found) => {
                    device = Device::Gpu;
                    found
                }
                None => {
                    tables.read_all(budget)?;
                    knn(
                        tables.host(0),
                        tables.host(1),
                        *k as usize,
                        *metric,
                        threads,
                    )
                }
            };
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
            let mut tables = timed(&mut io_ms, || {
                Operands::gather(inputs, column, gpu_choice, log, budget)
            })?;
            tables.same_dim()?;
            let (rows, width, dim) = (tables.rows(0), tables.rows(1), tables.dim(0));
            log.system(format!("matmul: ({rows} × {dim}) · ({width} × {dim})ᵀ"));
            // The GPU hands back the whole product; the CPU makes it a block at a time.
            let gpu_choice = whole_fits(gpu_choice, budget, rows * width, log, &mut note);
            budget.claim(
                WRITE_BATCH.min(rows) * width * size_of::<f32>(),
                &format!(
                    "a block of the product ({} × {width})",
                    WRITE_BATCH.min(rows)
                ),
            )?;
            let whole = on_gpu(gpu_choice, log, &mut note, || {
                gpu::dense::multiply_operands(&tables.operand(0), &tables.operand(1))
            });
            if whole.is_none() {
                tables.read_all(budget)?;
            }
            let mut writer = None;
            for r0 in (0..rows).step_by(WRITE_BATCH) {
                let rn = WRITE_BATCH.min(rows - r0);
                let product = match &whole {
                    Some(all) => all.host[r0 * width..(r0 + rn) * width].to_vec(),
                    None => {
                        let (left, right) = (tables.host(0), tables.host(1));
                        let block = &left.data[r0 * dim..(r0 + rn) * dim];
                        multiply_transposed(block, &right.data, rn, width, dim, threads)
                    }
                };
                write_vectors(&mut writer, output_dir, r0, width, "vector", product)?;
            }
            let written = finish_vectors(writer, output_dir, width, "vector")?;
            if let Some(output) = whole {
                device = Device::Gpu;
                keep_resident(output_dir, "vector", rows, width, output.device);
            }
            written
        }
        Work::Score {
            column,
            model,
            activation,
            ..
        } => {
            let mlp = Mlp::load(model, *activation).map_err(StageError::Failed)?;
            let mut tables = timed(&mut io_ms, || {
                Operands::gather(inputs, column, gpu_choice, log, budget)
            })?;
            let rows = tables.rows(0);
            if rows > 0 && tables.dim(0) != mlp.inputs() {
                return Err(StageError::Failed(format!(
                    "the model takes {} inputs but `{}` vectors have {}",
                    mlp.inputs(),
                    inputs[0].name,
                    tables.dim(0)
                )));
            }
            log.system(format!(
                "score: {rows} rows through {} layer(s) ({} → {})",
                mlp.layers.len(),
                mlp.inputs(),
                mlp.outputs()
            ));
            let outputs = mlp.outputs();
            let gpu_choice = whole_fits(gpu_choice, budget, rows * outputs, log, &mut note);
            let whole = on_gpu(gpu_choice, log, &mut note, || {
                gpu::dense::mlp_operand(&mlp, &tables.operand(0))
            });
            if whole.is_none() {
                tables.read_all(budget)?;
            }
            let mut writer = None;
            for r0 in (0..rows).step_by(WRITE_BATCH) {
                let rn = WRITE_BATCH.min(rows - r0);
                let scores = match &whole {
                    Some(all) => all.host[r0 * outputs..(r0 + rn) * outputs].to_vec(),
                    None => {
                        let input = tables.host(0);
                        let block = &input.data[r0 * input.dim..(r0 + rn) * input.dim];
                        mlp.forward(block, rn, threads)
                    }
                };
                write_vectors(&mut writer, output_dir, r0, outputs, "score", scores)?;
            }
            let written = finish_vectors(writer, output_dir, outputs, "score")?;
            if let Some(output) = whole {
                device = Device::Gpu;
                if outputs > 1 {
                    keep_resident(output_dir, "score", rows, outputs, output.device);
                }
            }
            written
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
    let total = started.elapsed().as_secs_f64() * 1e3;
    Ok(StageOutcome {
        device,
        rows: Some(rows),
        bytes: Some(bytes),
        note,
        timings: Some(StageTimings {
            io_ms,
            transfer_ms: 0.0,
            compute_ms: (total - io_ms).max(0.0),
        }),
        skipped: false,
        waiting: false,
        mapped: None,
        plan: None,
    })
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
