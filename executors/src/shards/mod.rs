//! Shards: a `sql` task's largest input split into row ranges that run as separate parts, on
//! the CPU and the GPU side by side, and the parts' results combined (`shards: N`).
//!
//! The query is planned once. [`find()`] looks in the physical plan for the lowest node above
//! the input's scan that needs all of its rows at once (the final half of an aggregate, a
//! merge of sorted partitions, a coalesce, a global sort or limit): the subtree below it (the
//! *part*) is what each shard runs over its rows, and everything from that node up runs once
//! over the parts' outputs. Between the scan and that node only row-local operators may stand
//! (filters, projections, repartitioning, the partial half of an aggregate, sorts within a
//! partition, joins whose kept side is the split input): then the union of the parts'
//! outputs is exactly what the whole input would give there, and the answer is DataFusion's
//! own. A plan with no such node (a row-returning query) is split at its root, and each part
//! writes its rows as one output file.
//!
//! Parts are row ranges of the Parquet files (DataFusion reads them through a
//! `ParquetRowSelection`), so a single file splits too; CSV inputs split by whole files.
//! Each part is cut again into as many ranges as the plan had scan partitions, so a part
//! keeps every core busy. Which device runs which part is [`amdahl_placement::share`]'s
//! choice from the predicted CPU and GPU times; a GPU part runs the partial aggregate as a
//! kernel ([`crate::gpu::translate_partial`]) and falls back to the CPU with a note.

mod find;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionContext;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect_partitioned, execute_stream};

use amdahl_placement::{Lane, Place, share};

use crate::budget::Budget;
use crate::gpu;
use crate::session::session_config;
use crate::stage::{Device, LogSink, StageError, StageOutcome, StageTimings};
use crate::storage::{PartWriter, finish_output, ms, reset_dir, stream_into};
use find::{file_scan, same};

pub use find::find;

type Plan = Arc<dyn ExecutionPlan>;

/// A session for a query that will be split: DataFusion keeps an aggregate's partial and final
/// halves apart (so a part can stop after the partial half) and pushes no filters learned
/// while running into scans (a bound learned from one part must not prune another's rows).
pub fn session(partitions: usize, env: Arc<RuntimeEnv>) -> SessionContext {
    let mut config = session_config(partitions);
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(env)
        .with_default_features()
        .build();
    let rules = state
        .physical_optimizers()
        .iter()
        .filter(|rule| rule.name() != "CombinePartialFinalAggregate")
        .cloned()
        .collect();
    let state = SessionStateBuilder::new_from_existing(state)
        .with_physical_optimizer_rules(rules)
        .build();
    SessionContext::new_with_state(state)
}

/// Where a plan splits.
pub struct Split {
    /// The input split into parts.
    pub table: String,
    /// The subtree each part runs.
    part: Plan,
    /// The split input's scan inside `part`.
    scan: Plan,
    /// Whether nodes above `part` combine the parts' outputs (otherwise the outputs are the
    /// result).
    pub combines: bool,
    /// Whether the node above merges sorted streams: then every partition of every part's
    /// output stays a stream of its own; otherwise partition `j` of every part goes into
    /// partition `j`, which keeps the partitioning the node above expects (one partition, or
    /// rows hashed by key).
    sorted_streams: bool,
    /// The input's files, each whole, with their row counts (`None`: CSV, split by file).
    files: Vec<(PartitionedFile, Option<u64>)>,
    /// How many partitions the scan had (each part is cut as finely).
    groups: usize,
}

/// One part: pieces of the input's files, and about how many bytes they hold.
#[derive(Clone, Debug)]
pub struct Part {
    pieces: Vec<(usize, Option<Range<u64>>)>,
    pub bytes: u64,
    pub rows: Option<u64>,
}

impl Split {
    /// The input cut into at most `n` parts of about equal rows (whole files for CSV): fewer
    /// when there are fewer rows (or CSV files) than `n`.
    pub fn parts(&self, n: usize) -> Vec<Part> {
        let n = n.max(1);
        if self.files.iter().any(|(_, rows)| rows.is_none()) {
            return self.parts_by_file(n);
        }
        let rows: Vec<u64> = self.files.iter().map(|(_, r)| r.unwrap_or(0)).collect();
        let total: u64 = rows.iter().sum();
        let n = n.min(total.max(1) as usize);
        (0..n as u64)
            .map(|k| {
                let range = (k * total / n as u64)..((k + 1) * total / n as u64);
                let pieces = cut(&rows, range.clone());
                let bytes = pieces
                    .iter()
                    .map(|(f, r)| self.piece_bytes(*f, r.as_ref()))
                    .sum();
                Part {
                    pieces,
                    bytes,
                    rows: Some(range.end - range.start),
                }
            })
            .collect()
    }

    fn parts_by_file(&self, n: usize) -> Vec<Part> {
        let n = n.min(self.files.len()).max(1);
        let sizes: Vec<u64> = self.files.iter().map(|(f, _)| f.object_meta.size).collect();
        let total: u64 = sizes.iter().sum::<u64>().max(1);
        let mut parts: Vec<Part> = (0..n)
            .map(|_| Part {
                pieces: Vec::new(),
                bytes: 0,
                rows: None,
            })
            .collect();
        let mut before = 0u64;
        for (i, size) in sizes.iter().enumerate() {
            // A file goes to the part its middle byte falls in.
            let middle = before + size / 2;
            let k = ((middle as u128 * n as u128) / total as u128).min(n as u128 - 1) as usize;
            parts[k].pieces.push((i, None));
            parts[k].bytes += size;
            before += size;
        }
        parts.retain(|p| !p.pieces.is_empty());
        parts
    }

    fn piece_bytes(&self, file: usize, rows: Option<&Range<u64>>) -> u64 {
        let (f, total) = &self.files[file];
        match (rows, total) {
            (Some(r), Some(total)) if *total > 0 => {
                ((f.object_meta.size as u128 * (r.end - r.start) as u128) / *total as u128) as u64
            }
            _ => f.object_meta.size,
        }
    }

    /// The subtree `part` runs: the split input's scan reads only the part's rows, cut into
    /// as many ranges as the scan had partitions.
    pub fn part_plan(&self, part: &Part) -> Result<Plan, String> {
        let config = file_scan(&self.scan).ok_or("not a file scan")?;
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); self.groups];
        let mut pieces: Vec<(usize, Option<Range<u64>>)> = Vec::new();
        for (file, rows) in &part.pieces {
            match (rows, self.files[*file].1) {
                (Some(range), Some(_)) => {
                    // Cut the piece as finely as the scan was partitioned.
                    let len = range.end - range.start;
                    let g = (self.groups as u64).min(len.max(1));
                    for j in 0..g {
                        let start = range.start + j * len / g;
                        let end = range.start + (j + 1) * len / g;
                        pieces.push((*file, Some(start..end)));
                    }
                }
                _ => pieces.push((*file, None)),
            }
        }
        for (i, (file, rows)) in pieces.into_iter().enumerate() {
            let (whole, total) = &self.files[file];
            let mut piece = whole.clone();
            if let (Some(range), Some(total)) = (rows, total)
                && (range.start > 0 || range.end < *total)
            {
                piece = piece.with_extension(ParquetRowSelection::new(selection(range, *total)));
            }
            groups[i % self.groups].push(piece);
        }
        let scan_config = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .build();
        let scan: Plan = DataSourceExec::from_data_source(scan_config);
        replace(&self.part, &self.scan, scan)
            .map_err(|e| format!("cannot build a part's plan: {e}"))
    }

    /// The whole plan with the parts' outputs (per part, per partition) in place of the part.
    pub fn combining_plan(
        &self,
        plan: &Plan,
        outputs: Vec<Vec<Vec<RecordBatch>>>,
    ) -> Result<Plan, String> {
        let partitions: Vec<Vec<RecordBatch>> = if self.sorted_streams {
            outputs.into_iter().flatten().collect()
        } else {
            let count = self
                .part
                .properties()
                .output_partitioning()
                .partition_count()
                .max(1);
            let mut partitions = vec![Vec::new(); count];
            for part in outputs {
                for (j, batches) in part.into_iter().enumerate() {
                    partitions[j % count].extend(batches);
                }
            }
            partitions
        };
        let source = MemorySourceConfig::try_new(&partitions, self.part.schema(), None)
            .map_err(|e| format!("cannot hold the parts' outputs: {e}"))?;
        let source: Plan = DataSourceExec::from_data_source(source);
        replace(plan, &self.part, source)
            .map_err(|e| format!("cannot build the combining plan: {e}"))
    }
}

/// `plan` with `old` replaced by `new`, ready to run again: operators that keep state from
/// a run (a hash join's build side) start afresh, since every part runs its own copy.
fn replace(plan: &Plan, old: &Plan, new: Plan) -> datafusion::error::Result<Plan> {
    let replaced = plan
        .clone()
        .transform_up(|node| {
            Ok(if same(&node, old) {
                Transformed::yes(new.clone())
            } else {
                Transformed::no(node)
            })
        })?
        .data;
    reset_plan_states(replaced)
}

/// The rows `range` of files with `rows` rows each, read one after another, as pieces:
/// (file, rows within it).
fn cut(rows: &[u64], range: Range<u64>) -> Vec<(usize, Option<Range<u64>>)> {
    let mut pieces = Vec::new();
    let mut before = 0u64;
    for (i, &n) in rows.iter().enumerate() {
        let (start, end) = (before, before + n);
        before = end;
        let lo = range.start.max(start);
        let hi = range.end.min(end);
        if lo < hi {
            pieces.push((i, Some((lo - start)..(hi - start))));
        }
    }
    pieces
}

/// A selection of `range` out of a file's `total` rows.
fn selection(range: Range<u64>, total: u64) -> RowSelection {
    let mut selectors = Vec::new();
    if range.start > 0 {
        selectors.push(RowSelector::skip(range.start as usize));
    }
    selectors.push(RowSelector::select((range.end - range.start) as usize));
    if range.end < total {
        selectors.push(RowSelector::skip((total - range.end) as usize));
    }
    RowSelection::from(selectors)
}

/// Which devices may take parts, and what a part is predicted to cost on each.
pub struct Lanes {
    pub lanes: Vec<Lane>,
    /// Why the GPU takes no part, when it could have.
    pub note: Option<String>,
}

/// Runs a query split into `n` parts and writes its result into `output_dir`.
// Eight parameters: the stage's session, plan, split point, part count, devices, output
// folder, log and memory limit each come from a different place in the one caller, which
// passes them straight on; a struct holding them would exist for this call only.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    ctx: &SessionContext,
    plan: Plan,
    split: Split,
    n: usize,
    lanes: Lanes,
    output_dir: &Path,
    log: &LogSink,
    memory: Option<usize>,
) -> Result<StageOutcome, StageError> {
    let started = Instant::now();
    let parts = split.parts(n);
    let sizes: Vec<u64> = parts.iter().map(|p| p.bytes).collect();
    let mut lane_list = lanes.lanes.clone();
    if lane_list.is_empty() || !split.combines {
        // Row-returning parts run on the CPU only (the GPU runs aggregates).
        lane_list.retain(|l| l.place == Place::Cpu);
        if lane_list.is_empty() {
            lane_list.push(Lane {
                place: Place::Cpu,
                per_part_seconds: 0.0,
                whole_seconds: 1.0,
            });
        }
    }
    let shares = share(&sizes, &lane_list);
    let place_of = |part: usize| lane_list[shares.lane_of[part]].place;
    let on_gpu: Vec<usize> = (0..parts.len())
        .filter(|&p| place_of(p) == Place::Gpu)
        .collect();
    log.system(format!(
        "split `{}` into {} part(s) of about {} rows: {} on the CPU, {} on the GPU{}",
        split.table,
        parts.len(),
        parts
            .first()
            .and_then(|p| p.rows)
            .map_or("-".into(), |r| r.to_string()),
        parts.len() - on_gpu.len(),
        on_gpu.len(),
        lanes
            .note
            .as_ref()
            .map_or(String::new(), |n| format!(" ({n})"))
    ));
    let mut plans = Vec::with_capacity(parts.len());
    for part in &parts {
        plans.push(split.part_plan(part).map_err(StageError::Internal)?);
    }
    reset_dir(output_dir)?;
    if !split.combines {
        // Each part's rows are one output file.
        let (mut compute, mut io, mut rows) = (0.0, 0.0, 0u64);
        for (i, part) in plans.iter().enumerate() {
            let stream = execute_stream(part.clone(), ctx.task_ctx()).map_err(|e| {
                StageError::Failed(format!("query failed to start: {}", e.find_root()))
            })?;
            let mut writer = PartWriter::create(output_dir, i, part.schema())?;
            let (c, w) = stream_into(stream, &mut writer).await?;
            compute += c;
            io += w;
            rows += writer.finish()?;
        }
        let bytes = crate::storage::dir_bytes(output_dir);
        log.system(format!(
            "wrote {rows} rows ({bytes} bytes) in {} file(s) to {}",
            plans.len(),
            output_dir.display()
        ));
        let mut outcome = StageOutcome::on_cpu(Some(rows), Some(bytes)).timed(StageTimings {
            io_ms: io,
            transfer_ms: 0.0,
            compute_ms: compute,
        });
        outcome.note = Some(format!(
            "split `{}` into {} part(s); on the CPU {} took {}; one output file per part",
            split.table,
            plans.len(),
            plans.len(),
            amdahl_placement::seconds(ms(started) / 1e3)
        ));
        return Ok(outcome);
    }

    // The lanes run side by side; each takes its parts one after another.
    let cpu_parts: Vec<usize> = (0..parts.len())
        .filter(|&p| place_of(p) == Place::Cpu)
        .collect();
    // The parts' outputs are held until they are combined: on the worker's memory budget.
    let budget = std::sync::Mutex::new(Budget::new(
        &ctx.runtime_env(),
        memory,
        "the outputs of a split query's parts",
    ));
    let hold = |p: usize, output: &Vec<Vec<RecordBatch>>| {
        let bytes = output
            .iter()
            .flatten()
            .map(|b| b.get_array_memory_size())
            .sum();
        let mut budget = budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        budget.claim(
            bytes,
            &format!("holding part {p}'s output until the parts are combined"),
        )
    };
    let cpu_lane = async {
        let lane_started = Instant::now();
        let mut outputs = Vec::new();
        for &p in &cpu_parts {
            let output = run_on_cpu(ctx, &plans[p]).await?;
            hold(p, &output)?;
            outputs.push((p, output));
        }
        Ok::<_, StageError>((outputs, ms(lane_started)))
    };
    let gpu_lane = async {
        let lane_started = Instant::now();
        let mut outputs = Vec::new();
        let mut fell_back = Vec::new();
        let mut transfer = 0.0;
        for &p in &on_gpu {
            match run_on_gpu(&plans[p]).await {
                Ok((batch, t)) => {
                    transfer += t.stage_ms + t.upload_ms + t.download_ms;
                    let output = vec![vec![batch]];
                    hold(p, &output)?;
                    outputs.push((p, output));
                }
                Err(why) => {
                    log.system(format!(
                        "part {p} could not run on the GPU ({why}); running it on the CPU"
                    ));
                    fell_back.push(why);
                    let output = run_on_cpu(ctx, &plans[p]).await?;
                    hold(p, &output)?;
                    outputs.push((p, output));
                }
            }
        }
        Ok::<_, StageError>((outputs, ms(lane_started), transfer, fell_back))
    };
    let ((cpu_outputs, cpu_ms), (gpu_outputs, gpu_ms, transfer_ms, fell_back)) =
        futures::try_join!(cpu_lane, gpu_lane)?;
    let parts_ms = ms(started);
    let mut by_part: Vec<Option<Vec<Vec<RecordBatch>>>> = vec![None; parts.len()];
    for (p, output) in cpu_outputs.into_iter().chain(gpu_outputs) {
        by_part[p] = Some(output);
    }
    let outputs: Vec<Vec<Vec<RecordBatch>>> = by_part.into_iter().flatten().collect();
    let combining = split
        .combining_plan(&plan, outputs)
        .map_err(StageError::Internal)?;
    let combine_started = Instant::now();
    let stream = execute_stream(combining, ctx.task_ctx())
        .map_err(|e| StageError::Failed(format!("query failed to start: {}", e.find_root())))?;
    let mut writer = PartWriter::create(output_dir, 0, plan.schema())?;
    let (combine_compute, mut io) = stream_into(stream, &mut writer).await?;
    let closing = Instant::now();
    let (rows, bytes) = finish_output(writer, output_dir, log)?;
    io += ms(closing);
    let gpu_done = on_gpu.len() - fell_back.len();
    let took = |ms: f64| amdahl_placement::seconds(ms / 1e3);
    let lane = |place: Place, parts: usize, ms: f64| {
        let predicted = lane_list
            .iter()
            .position(|l| l.place == place)
            .map(|i| amdahl_placement::seconds(shares.finish[i]));
        match (predicted, lanes.lanes.is_empty()) {
            (Some(predicted), false) => format!("{parts} took {}, predicted {predicted}", took(ms)),
            _ => format!("{parts} took {}", took(ms)),
        }
    };
    let mut summary = format!(
        "split `{}` into {} part(s); on the CPU {}",
        split.table,
        parts.len(),
        lane(Place::Cpu, parts.len() - gpu_done, cpu_ms)
    );
    if lane_list.iter().any(|l| l.place == Place::Gpu) {
        summary.push_str(&format!(
            ", on the GPU {}",
            lane(Place::Gpu, gpu_done, gpu_ms)
        ));
    }
    summary.push_str(&format!("; combined in {}", took(ms(combine_started))));
    log.system(&summary);
    let mut outcome = StageOutcome::on_cpu(Some(rows), Some(bytes)).timed(StageTimings {
        io_ms: io,
        transfer_ms,
        compute_ms: (parts_ms - transfer_ms).max(0.0) + combine_compute,
    });
    if gpu_done > 0 {
        outcome.device = Device::Gpu;
    }
    let mut note = summary;
    if let Some(why) = lanes.note.as_ref().or(fell_back.first()) {
        note.push_str(&format!("; {why}"));
    }
    outcome.note = Some(note);
    Ok(outcome)
}

/// A part on DataFusion: its output per partition.
async fn run_on_cpu(
    ctx: &SessionContext,
    part: &Plan,
) -> Result<Vec<Vec<RecordBatch>>, StageError> {
    collect_partitioned(part.clone(), ctx.task_ctx())
        .await
        .map_err(|e| StageError::Failed(format!("query failed: {}", e.find_root())))
}

/// A part's partial aggregate as a kernel, its output in the part's schema.
async fn run_on_gpu(part: &Plan) -> Result<(RecordBatch, gpu::cuda::GpuTimings), String> {
    let kernel = gpu::translate_partial(part).map_err(|e| e.to_string())?;
    let (batch, timings) = tokio::task::spawn_blocking(move || gpu::cuda::run_timed(&kernel))
        .await
        .map_err(|e| format!("the GPU run ended abnormally ({e})"))?
        .map_err(|e| e.to_string())?;
    Ok((to_schema(batch, &part.schema())?, timings))
}

/// A batch cast column by column to `schema` (a partial `avg`'s count comes as `Int64`).
pub fn to_schema(
    batch: RecordBatch,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<RecordBatch, String> {
    if batch.num_columns() != schema.fields().len() {
        return Err(format!(
            "the kernel made {} columns, the part has {}",
            batch.num_columns(),
            schema.fields().len()
        ));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| cast(column, field.data_type()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}
