//! SQL stages on DataFusion, on the CPU pool.
//!
//! Each stage gets a fresh `SessionContext` with its inputs registered as tables (upstream
//! outputs and datasets, by name), plans the query, and streams the result batch by batch
//! into Parquet, so a result larger than memory is never collected.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};

use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig};
use futures::StreamExt;

use amdahl_dags::DatasetFormat;

use crate::gpu;
use crate::runtime::CpuRuntime;
use crate::stage::{
    Device, Executor, LogSink, Stage, StageError, StageOutcome, StageTimings, TableInput, Work,
};
use crate::storage::{PartWriter, dir_bytes, reset_dir};
use std::time::Instant;

/// Session settings shared by execution and validate-time planning.
pub fn session_config(target_partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_target_partitions(target_partitions.max(1))
        .with_information_schema(false);
    config.options_mut().sql_parser.collect_spans = true;
    config
}

/// Statements a `sql` task may hold: queries only, no DDL, DML or `SET`.
pub fn query_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Registers an input under its name.
pub async fn register_input(
    ctx: &SessionContext,
    input: &TableInput,
) -> datafusion::error::Result<()> {
    let path = path_string(&input.path);
    match input.format {
        DatasetFormat::Parquet => {
            ctx.register_parquet(&input.name, &path, ParquetReadOptions::default())
                .await
        }
        DatasetFormat::Csv => {
            ctx.register_csv(&input.name, &path, CsvReadOptions::new().has_header(true))
                .await
        }
    }
}

/// DataFusion treats a path ending in `/` as a folder of files.
fn path_string(path: &Path) -> String {
    let mut text = path.display().to_string();
    if path.is_dir() && !text.ends_with('/') {
        text.push('/');
    }
    text
}

/// Runs `sql` stages.
#[derive(Clone)]
pub struct SqlExecutor {
    runtime: CpuRuntime,
}

impl SqlExecutor {
    pub fn new(runtime: CpuRuntime) -> Self {
        SqlExecutor { runtime }
    }
}

impl Executor for SqlExecutor {
    async fn execute(&self, stage: &Stage, log: &LogSink) -> Result<StageOutcome, StageError> {
        let Work::Sql { query } = &stage.work else {
            return Err(StageError::Internal(format!(
                "SqlExecutor got {} work",
                stage.work.kind()
            )));
        };
        let Some(output_dir) = stage.output_dir.clone() else {
            return Err(StageError::Internal(
                "sql stage without an output folder".into(),
            ));
        };
        let query = query.clone();
        let inputs = stage.inputs.clone();
        let partitions = self.runtime.threads();
        let log = log.clone();
        let gpu_choice = gpu::choice(stage);
        let handle = self.runtime.spawn(async move {
            run_query(&query, &inputs, &output_dir, partitions, gpu_choice, &log).await
        });
        handle
            .await
            .map_err(|e| StageError::Internal(format!("query task ended abnormally: {e}")))?
    }
}

async fn run_query(
    query: &str,
    inputs: &[TableInput],
    output_dir: &Path,
    partitions: usize,
    gpu_choice: Option<String>,
    log: &LogSink,
) -> Result<StageOutcome, StageError> {
    let ctx = SessionContext::new_with_config(session_config(partitions));
    for input in inputs {
        register_input(&ctx, input).await.map_err(|e| {
            StageError::Failed(format!(
                "cannot read table `{}` at {}: {e}",
                input.name,
                input.path.display()
            ))
        })?;
    }
    let frame = ctx
        .sql_with_options(query, query_only())
        .await
        .map_err(|e| StageError::Failed(format!("query failed to plan: {}", e.find_root())))?;
    let schema = frame.schema().as_arrow().clone();
    log.system(format!(
        "planned query over {} table(s); output columns: {}",
        inputs.len(),
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let plan = frame
        .create_physical_plan()
        .await
        .map_err(|e| StageError::Failed(format!("query failed to plan: {}", e.find_root())))?;
    let mut note = None;
    if let Some(asked) = gpu_choice {
        match on_gpu(&plan, &asked, log).await {
            Ok((batch, t)) => {
                let written = Instant::now();
                reset_dir(output_dir)?;
                let mut writer = PartWriter::create(output_dir, 0, batch.schema())?;
                writer.write(&batch)?;
                let (rows, bytes) = finish_output(writer, output_dir, log)?;
                return Ok(StageOutcome {
                    device: Device::Gpu,
                    rows: Some(rows),
                    bytes: Some(bytes),
                    note: None,
                    timings: Some(StageTimings {
                        io_ms: t.read_ms + ms(written),
                        transfer_ms: t.stage_ms + t.upload_ms + t.download_ms,
                        compute_ms: t.kernel_ms,
                    }),
                });
            }
            Err(why) => {
                log.system(&why);
                note = Some(why);
            }
        }
    }
    let mut stream = execute_stream(plan, ctx.task_ctx())
        .map_err(|e| StageError::Failed(format!("query failed to start: {}", e.find_root())))?;
    reset_dir(output_dir)?;
    let mut writer = PartWriter::create(output_dir, 0, crate::storage::schema_ref(schema))?;
    // The engine reads as it computes: waiting for a batch is compute, writing it is I/O.
    let (mut compute, mut io) = (0.0, 0.0);
    loop {
        let asked = Instant::now();
        let Some(batch) = stream.next().await else {
            compute += ms(asked);
            break;
        };
        compute += ms(asked);
        let batch =
            batch.map_err(|e| StageError::Failed(format!("query failed: {}", e.find_root())))?;
        let writing = Instant::now();
        writer.write(&batch)?;
        io += ms(writing);
    }
    let closing = Instant::now();
    let (rows, bytes) = finish_output(writer, output_dir, log)?;
    io += ms(closing);
    let mut outcome = StageOutcome::on_cpu(Some(rows), Some(bytes)).timed(StageTimings {
        io_ms: io,
        transfer_ms: 0.0,
        compute_ms: compute,
    });
    outcome.note = note;
    Ok(outcome)
}

/// Closes the output and logs its size: (rows, bytes).
fn finish_output(
    writer: PartWriter,
    output_dir: &Path,
    log: &LogSink,
) -> Result<(u64, u64), StageError> {
    let rows = writer.finish()?;
    let bytes = dir_bytes(output_dir);
    log.system(format!(
        "wrote {rows} rows ({bytes} bytes) to {}",
        output_dir.display()
    ));
    Ok((rows, bytes))
}

/// Runs a planned query on the GPU, or says why it runs on the CPU instead (the plan has a
/// part the GPU cannot run, no GPU is usable, or the GPU run failed).
fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

async fn on_gpu(
    plan: &Arc<dyn ExecutionPlan>,
    asked: &str,
    log: &LogSink,
) -> Result<(RecordBatch, gpu::cuda::GpuTimings), String> {
    let kernel = gpu::translate(plan).map_err(|why| {
        format!("{asked}, but the plan cannot run on the GPU ({why}); running on the CPU")
    })?;
    log.system(format!("GPU kernel plan: {kernel}"));
    let report = gpu::devices();
    if let Some(problem) = &report.problem {
        return Err(format!(
            "{asked}, but no GPU is usable here ({problem}); running on the CPU"
        ));
    }
    let ran = tokio::task::spawn_blocking(move || gpu::cuda::run_timed(&kernel))
        .await
        .map_err(|e| format!("the GPU run ended abnormally ({e})"))
        .and_then(|r| r.map_err(|e| e.to_string()));
    let (batch, t) = ran.map_err(|e| format!("the GPU run failed ({e}); rerunning on the CPU"))?;
    log.system(format!(
        "ran on the GPU: {} rows; read and pack {:.1} ms, pin {:.1} ms, compile {:.1} ms, \
         upload {} bytes in {:.1} ms, kernel {:.2} ms, download {:.2} ms",
        t.rows,
        t.read_ms,
        t.stage_ms,
        t.compile_ms,
        t.upload_bytes,
        t.upload_ms,
        t.kernel_ms,
        t.download_ms
    ));
    Ok((batch, t))
}
