//! SQL stages on DataFusion, on the CPU pool.
//!
//! Each stage gets a fresh `SessionContext` with its inputs registered as tables (upstream
//! outputs and datasets, by name), plans the query, and streams the result batch by batch
//! into Parquet, so a result larger than memory is never collected.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch};
use datafusion::physical_plan::{ExecutionPlan, collect, execute_stream};

use datafusion::execution::context::SessionContext;

use amdahl_dags::DatasetFormat;

use crate::gpu;
use crate::runtime::CpuRuntime;
pub use crate::runtime::QueryPool;
pub use crate::session::{query_only, register_input, session_config};
use crate::shards;
use crate::stage::{
    Device, Executor, LogSink, Route, Stage, StageError, StageOutcome, StageTimings, TableInput,
    Work,
};
use crate::storage::{PartWriter, finish_output, ms, reset_dir, stream_into};
use std::time::Instant;

/// Runs `sql` stages.
#[derive(Clone)]
pub struct SqlExecutor {
    runtime: CpuRuntime,
    ballista: crate::ballista::Ballista,
}

impl SqlExecutor {
    pub fn new(runtime: CpuRuntime) -> Self {
        SqlExecutor {
            runtime,
            ballista: crate::ballista::Ballista::default(),
        }
    }

    /// Runs `engine: ballista` stages on `ballista`'s cluster.
    pub fn with_ballista(self, ballista: crate::ballista::Ballista) -> Self {
        SqlExecutor { ballista, ..self }
    }

    /// Decides a deciding query over a task's inputs, on the CPU pool: its `when: { sql }`
    /// (whether the task runs) or a sensor's `wait: { sql }` (whether the wait is over);
    /// `label` names it in errors. The query returns one boolean column (the planner checked
    /// it; checked again here for the inputs as they are); no row or NULL is false, more than
    /// one row is an error.
    pub async fn condition(
        &self,
        query: &str,
        inputs: &[TableInput],
        log: &LogSink,
        label: &'static str,
    ) -> Result<bool, StageError> {
        let (query, inputs, log) = (query.to_string(), inputs.to_vec(), log.clone());
        let (partitions, env) = (self.runtime.threads(), self.runtime.datafusion_env());
        let handle = self.runtime.spawn(async move {
            let ctx = SessionContext::new_with_config_rt(session_config(partitions), env);
            let plan = plan(&ctx, &query, &inputs, &log).await?;
            amdahl_planner::check::one_boolean(&plan.schema())
                .map_err(|why| StageError::Failed(format!("`{label}` {why}")))?;
            let batches = collect(plan, ctx.task_ctx())
                .await
                .map_err(|e| StageError::Failed(format!("`{label}` failed: {}", e.find_root())))?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if rows > 1 {
                return Err(StageError::Failed(format!(
                    "`{label}` must return at most one row; it returned {rows}"
                )));
            }
            let value = batches
                .iter()
                .find(|b| b.num_rows() == 1)
                .and_then(|b| b.column(0).as_any().downcast_ref::<BooleanArray>())
                .is_some_and(|column| column.is_valid(0) && column.value(0));
            Ok(value)
        });
        handle
            .await
            .map_err(|e| StageError::Internal(format!("condition task ended abnormally: {e}")))?
    }
}

impl SqlExecutor {
    /// A mapped task's values (`map.over`): the one column of `query` over `inputs`, a value
    /// per row in the query's order. More than `max` rows fail the stage with the count
    /// (counted to the end, converting only the first `max`).
    pub async fn values(
        &self,
        query: &str,
        inputs: &[TableInput],
        log: &LogSink,
        max: usize,
    ) -> Result<Vec<serde_json::Value>, StageError> {
        use futures::StreamExt;
        let (query, inputs, log) = (query.to_string(), inputs.to_vec(), log.clone());
        let (partitions, env) = (self.runtime.threads(), self.runtime.datafusion_env());
        let handle = self.runtime.spawn(async move {
            let ctx = SessionContext::new_with_config_rt(session_config(partitions), env);
            let plan = plan(&ctx, &query, &inputs, &log).await?;
            let name = amdahl_planner::check::one_column(&plan.schema())
                .map_err(|why| StageError::Failed(format!("`map.over` {why}")))?
                .name()
                .clone();
            let failed = |e: datafusion::error::DataFusionError| {
                StageError::Failed(format!("`map.over` failed: {}", e.find_root()))
            };
            let mut stream = execute_stream(plan, ctx.task_ctx()).map_err(failed)?;
            let (mut values, mut count) = (Vec::new(), 0usize);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(failed)?;
                count += batch.num_rows();
                if count <= max {
                    values.extend(json_column(&batch, &name)?);
                }
            }
            amdahl_dags::mapping::check_count(count, max).map_err(StageError::Failed)?;
            Ok(values)
        });
        handle
            .await
            .map_err(|e| StageError::Internal(format!("map task ended abnormally: {e}")))?
    }

    /// What a SQL task skipped by its `when.sql` leaves behind: no rows, with the columns its
    /// query would have had (planned over the same inputs, not run), so a task that runs after
    /// it anyway (`trigger: none_failed`…) reads an empty table.
    pub async fn write_empty(
        &self,
        query: &str,
        inputs: &[TableInput],
        output_dir: &Path,
        log: &LogSink,
    ) -> Result<(u64, u64), StageError> {
        let (query, inputs, log) = (query.to_string(), inputs.to_vec(), log.clone());
        let output_dir = output_dir.to_path_buf();
        let (partitions, env) = (self.runtime.threads(), self.runtime.datafusion_env());
        let handle = self.runtime.spawn(async move {
            let ctx = SessionContext::new_with_config_rt(session_config(partitions), env);
            let plan = plan(&ctx, &query, &inputs, &log).await?;
            reset_dir(&output_dir)?;
            let writer = PartWriter::create(&output_dir, 0, plan.schema())?;
            finish_output(writer, &output_dir, &log)
        });
        handle
            .await
            .map_err(|e| StageError::Internal(format!("query task ended abnormally: {e}")))?
    }
}

impl SqlExecutor {
    /// Makes what a `produces_data` command wrote into its output folder a task output like
    /// any other: Parquet files are kept as they are, CSV files (with a header) are read
    /// with an inferred schema and rewritten as Parquet. Returns (rows, bytes).
    ///
    /// Nothing usable (no file, another extension, Parquet and CSV mixed, unreadable files)
    /// fails the attempt with what was found.
    pub async fn adopt_output(&self, dir: &Path, log: &LogSink) -> Result<(u64, u64), StageError> {
        let format = written_format(dir)?;
        let (dir, log) = (dir.to_path_buf(), log.clone());
        let (partitions, env) = (self.runtime.threads(), self.runtime.datafusion_env());
        let handle = self.runtime.spawn(async move {
            let ctx = SessionContext::new_with_config_rt(session_config(partitions), env);
            let input = TableInput::local("written", &dir, format);
            register_input(&ctx, &input).await.map_err(|e| {
                StageError::Failed(format!(
                    "cannot read what the command wrote to $AMDAHL_OUTPUT_DIR as {}: {}",
                    format.extension(),
                    e.find_root()
                ))
            })?;
            if format == DatasetFormat::Parquet {
                let batches = ctx
                    .sql("SELECT count(*) FROM written")
                    .await
                    .map_err(|e| StageError::Failed(e.find_root().to_string()))?
                    .collect()
                    .await
                    .map_err(|e| {
                        StageError::Failed(format!(
                            "cannot read the Parquet the command wrote: {}",
                            e.find_root()
                        ))
                    })?;
                let rows = amdahl_planner::preview::single_count(&batches).unwrap_or(0);
                let bytes = crate::storage::dir_bytes(&dir);
                log.system(format!(
                    "the command wrote {rows} rows ({bytes} bytes of Parquet) to {}",
                    dir.display()
                ));
                return Ok((rows, bytes));
            }
            // CSV: rewritten beside the folder, then put in its place.
            let frame = ctx.sql("SELECT * FROM written").await.map_err(|e| {
                StageError::Failed(format!(
                    "cannot read the CSV the command wrote: {}",
                    e.find_root()
                ))
            })?;
            let mut aside = dir.as_os_str().to_owned();
            aside.push(".parquet");
            let parquet = std::path::PathBuf::from(aside);
            reset_dir(&parquet)?;
            let schema = frame.schema().as_arrow().clone();
            let stream = frame.execute_stream().await.map_err(|e| {
                StageError::Failed(format!(
                    "cannot read the CSV the command wrote: {}",
                    e.find_root()
                ))
            })?;
            let mut writer = PartWriter::create(&parquet, 0, Arc::new(schema))?;
            stream_into(stream, &mut writer)
                .await
                .map_err(|e| match e {
                    StageError::Failed(m) => {
                        StageError::Failed(format!("cannot read the CSV the command wrote: {m}"))
                    }
                    other => other,
                })?;
            let rows = writer.finish()?;
            let internal =
                |e: std::io::Error| StageError::Internal(format!("{}: {e}", dir.display()));
            std::fs::remove_dir_all(&dir).map_err(internal)?;
            std::fs::rename(&parquet, &dir).map_err(internal)?;
            let bytes = crate::storage::dir_bytes(&dir);
            log.system(format!(
                "converted the command's CSV to Parquet: {rows} rows ({bytes} bytes) in {}",
                dir.display()
            ));
            Ok((rows, bytes))
        });
        handle
            .await
            .map_err(|e| StageError::Internal(format!("output task ended abnormally: {e}")))?
    }
}

/// The format of the files a command wrote into its output folder, if they are one usable
/// kind. Names starting with `.` or `_` (markers, temporary files) are ignored.
fn written_format(dir: &Path) -> Result<DatasetFormat, StageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        StageError::Failed(format!(
            "cannot list $AMDAHL_OUTPUT_DIR ({}): {e}",
            dir.display()
        ))
    })?;
    let (mut parquet, mut csv) = (0usize, 0usize);
    for entry in entries {
        let entry = entry.map_err(|e| StageError::Internal(format!("{}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if entry.path().is_dir() {
            return Err(StageError::Failed(format!(
                "the command wrote a folder `{name}` into $AMDAHL_OUTPUT_DIR; write .parquet or \
                 .csv files directly in it"
            )));
        } else if lower.ends_with(".parquet") {
            parquet += 1;
        } else if lower.ends_with(".csv") {
            csv += 1;
        } else {
            return Err(StageError::Failed(format!(
                "the command wrote `{name}` into $AMDAHL_OUTPUT_DIR, which is neither .parquet \
                 nor .csv; a task's output is Parquet or CSV files"
            )));
        }
    }
    match (parquet, csv) {
        (0, 0) => Err(StageError::Failed(
            "the command wrote no .parquet or .csv file into $AMDAHL_OUTPUT_DIR, and the task \
             has `produces_data: true`"
                .into(),
        )),
        (_, 0) => Ok(DatasetFormat::Parquet),
        (0, _) => Ok(DatasetFormat::Csv),
        (p, c) => Err(StageError::Failed(format!(
            "the command wrote {p} Parquet and {c} CSV file(s) into $AMDAHL_OUTPUT_DIR; an \
             output is one format"
        ))),
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
        let pool = QueryPool {
            partitions: self.runtime.threads(),
            env: self.runtime.datafusion_env(),
            memory: self.runtime.memory(),
        };
        let memory = self.runtime.memory();
        let log = log.clone();
        // Where the query runs was decided once, before the stage got here.
        let (gpu_choice, shards) = match stage.routed().route {
            Route::Cluster { note } => {
                if let Some(note) = note {
                    log.system(note);
                }
                let ballista = self.ballista.clone();
                let handle = self.runtime.spawn(async move {
                    ballista.run(&query, &inputs, &output_dir, pool, &log).await
                });
                return handle
                    .await
                    .map_err(|e| StageError::Internal(format!("query task ended abnormally: {e}")))?
                    .map_err(|e| out_of_memory(e, memory));
            }
            Route::Split { parts, lanes, note } => {
                (None, Some((parts as usize, shards::Lanes { lanes, note })))
            }
            Route::Gpu { asked } => (Some(asked), None),
            Route::Cpu { .. } => (None, None),
        };
        let handle = self.runtime.spawn(async move {
            if let Some((n, lanes)) = shards {
                return run_split(&query, &inputs, &output_dir, pool, n, lanes, &log).await;
            }
            run_query(&query, &inputs, &output_dir, pool, gpu_choice, &log).await
        });
        handle
            .await
            .map_err(|e| StageError::Internal(format!("query task ended abnormally: {e}")))?
            .map_err(|e| out_of_memory(e, memory))
    }
}

/// A query that ran out of the worker's memory budget even after spilling says so, and what
/// to do about it, beside DataFusion's account of who held the memory.
fn out_of_memory(error: StageError, memory: Option<usize>) -> StageError {
    match error {
        StageError::Failed(message) if message.contains("Resources exhausted") => {
            let budget = crate::budget::describe(memory);
            StageError::Failed(format!(
                "the query needs more memory than {budget} allows, even spilling to disk: \
                 give the worker more (--memory), or split the task (shards:). {message}"
            ))
        }
        other => other,
    }
}

/// Registers the inputs and plans the query on `ctx`.
async fn plan(
    ctx: &SessionContext,
    query: &str,
    inputs: &[TableInput],
    log: &LogSink,
) -> Result<Arc<dyn ExecutionPlan>, StageError> {
    for input in inputs {
        register_input(ctx, input).await.map_err(|e| {
            StageError::Failed(format!(
                "cannot read table `{}` at {}: {e}",
                input.name, input.location
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
    frame
        .create_physical_plan()
        .await
        .map_err(|e| StageError::Failed(format!("query failed to plan: {}", e.find_root())))
}

/// A query split into `n` parts (see [`shards`]); one that cannot be split runs whole, and
/// its note says why.
async fn run_split(
    query: &str,
    inputs: &[TableInput],
    output_dir: &Path,
    pool: QueryPool,
    n: usize,
    lanes: shards::Lanes,
    log: &LogSink,
) -> Result<StageOutcome, StageError> {
    let memory = pool.memory;
    let ctx = shards::session(pool.partitions, pool.env);
    let plan = plan(&ctx, query, inputs, log).await?;
    let shown = physical_text(&plan);
    match shards::find(&plan, inputs) {
        Ok(split) => shards::run(&ctx, plan, split, n, lanes, output_dir, log, memory)
            .await
            .map(|outcome| StageOutcome {
                plan: Some(shown),
                ..outcome
            }),
        Err(why) => {
            let why = format!("shards: {n} asked for, but the query runs whole: {why}");
            log.system(&why);
            let mut outcome = execute_on_cpu(&ctx, plan, output_dir, log).await?;
            outcome.note = Some(why);
            outcome.plan = Some(shown);
            Ok(outcome)
        }
    }
}

async fn run_query(
    query: &str,
    inputs: &[TableInput],
    output_dir: &Path,
    pool: QueryPool,
    gpu_choice: Option<String>,
    log: &LogSink,
) -> Result<StageOutcome, StageError> {
    let ctx = SessionContext::new_with_config_rt(session_config(pool.partitions), pool.env);
    let plan = plan(&ctx, query, inputs, log).await?;
    let shown = physical_text(&plan);
    let mut note = None;
    if let Some(asked) = gpu_choice {
        match on_gpu(&plan, &asked, log).await {
            Ok((batch, t, kernel)) => {
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
                    skipped: false,
                    waiting: false,
                    mapped: None,
                    plan: Some(format!("{shown}\nGPU kernel plan: {kernel}")),
                });
            }
            Err(why) => {
                log.system(&why);
                note = Some(why);
            }
        }
    }
    let mut outcome = execute_on_cpu(&ctx, plan, output_dir, log).await?;
    outcome.note = note;
    outcome.plan = Some(shown);
    Ok(outcome)
}

/// A physical plan as DataFusion prints it (one operator per line, indented), recorded with
/// the attempt for the task page and `amdahl tasks show`.
fn physical_text(plan: &Arc<dyn ExecutionPlan>) -> String {
    datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string()
}

/// Runs a plan on DataFusion, streaming its result into the output folder.
async fn execute_on_cpu(
    ctx: &SessionContext,
    plan: Arc<dyn ExecutionPlan>,
    output_dir: &Path,
    log: &LogSink,
) -> Result<StageOutcome, StageError> {
    let schema = plan.schema();
    let stream = execute_stream(plan, ctx.task_ctx())
        .map_err(|e| StageError::Failed(format!("query failed to start: {}", e.find_root())))?;
    reset_dir(output_dir)?;
    let mut writer = PartWriter::create(output_dir, 0, schema)?;
    let (compute, mut io) = stream_into(stream, &mut writer).await?;
    let closing = Instant::now();
    let (rows, bytes) = finish_output(writer, output_dir, log)?;
    io += ms(closing);
    Ok(
        StageOutcome::on_cpu(Some(rows), Some(bytes)).timed(StageTimings {
            io_ms: io,
            transfer_ms: 0.0,
            compute_ms: compute,
        }),
    )
}

/// Runs a planned query on the GPU, or says why it runs on the CPU instead (the plan has a
/// part the GPU cannot run, no GPU is usable, or the GPU run failed).
async fn on_gpu(
    plan: &Arc<dyn ExecutionPlan>,
    asked: &str,
    log: &LogSink,
) -> Result<(RecordBatch, gpu::cuda::GpuTimings, String), String> {
    let kernel = gpu::translate(plan).map_err(|why| {
        format!("{asked}, but the plan cannot run on the GPU ({why}); running on the CPU")
    })?;
    let shown = kernel.to_string();
    log.system(format!("GPU kernel plan: {shown}"));
    if let Some(problem) = gpu::health::unusable_reason() {
        return Err(format!(
            "{asked}, but no GPU is usable here ({problem}); running on the CPU"
        ));
    }
    let ran = tokio::task::spawn_blocking(move || gpu::cuda::run_timed(&kernel))
        .await
        .map_err(|e| format!("the GPU run ended abnormally ({e})"))
        .and_then(|r| {
            r.map_err(|e| {
                if gpu::health::observe(&e) {
                    log.system(format!(
                        "the GPU is lost for this process ({e}): later stages run on the CPU"
                    ));
                }
                e.to_string()
            })
        });
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
    Ok((batch, t, shown))
}

/// A batch's one column as JSON values (numbers stay numbers, NULL is `null`).
fn json_column(batch: &RecordBatch, name: &str) -> Result<Vec<serde_json::Value>, StageError> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let written = writer.write(batch).and_then(|()| writer.finish());
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = written
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let bytes = writer.into_inner();
            if bytes.is_empty() {
                Ok(Vec::new())
            } else {
                serde_json::from_slice(&bytes).map_err(|e| e.to_string())
            }
        })
        .map_err(|e| StageError::Failed(format!("`map.over`: a value is not data: {e}")))?;
    Ok(rows
        .into_iter()
        .map(|mut row| row.remove(name).unwrap_or(serde_json::Value::Null))
        .collect())
}
