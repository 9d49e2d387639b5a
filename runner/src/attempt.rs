//! One attempt of one task, shared by every way of running one (the in-process runner and
//! the worker): build the stage, execute it with its log going to the store, record the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amdahl_dags::mapping::{Over, split_instance};
use amdahl_dags::{Dag, Generate, RunContext, TaskKind, template};
use amdahl_executors::storage::{DataRoot, attempt_output_dir, publish_output, task_output_dir};
use amdahl_executors::{
    Executors, LogSink, MapOver, Stage, StageError, StageOutcome, TableInput, Work,
};
use amdahl_placement::{Observation, OpKind, Place, Profile, learned};
use amdahl_planner::estimate::Produced;
use amdahl_planner::place::place_task;
use amdahl_planner::route::placeable;

use amdahl_scheduler::Clock;
use amdahl_scheduler::state::{AttemptState, TaskState};
use amdahl_scheduler::store::{FinishAttempt, PredictedAttempt, Prediction, Store, StoreError};

/// Log lines kept per attempt; the rest are read and dropped, with a note saying so.
pub const MAX_LOG_LINES: usize = 100_000;

/// What executing an attempt needs.
#[derive(Clone)]
pub struct AttemptEnv {
    pub store: Store,
    pub executors: Executors,
    pub clock: Arc<dyn Clock>,
    /// This machine's measured profile (`amdahl calibrate`), for placing `device: auto`
    /// stages; `None` leaves them to the size threshold.
    pub profile: Option<Arc<Profile>>,
}

/// The outputs a run's succeeded tasks published to the shared root (task → URL), which
/// their downstream tasks read; empty without a shared root (outputs are then found by
/// their place under the local root).
pub async fn published_outputs(
    store: &Store,
    run_id: i64,
    data_root: &DataRoot,
) -> Result<HashMap<String, String>, String> {
    if data_root.shared.is_none() {
        return Ok(HashMap::new());
    }
    let tasks = store
        .tasks(run_id)
        .await
        .map_err(|e| format!("cannot read where upstream outputs are: {e}"))?;
    Ok(tasks
        .into_iter()
        .filter(|t| matches!(t.state, TaskState::Success | TaskState::Skipped))
        .filter_map(|t| Some((t.task_id, t.output_path?)))
        .collect())
}

/// Renders the task's templates and resolves its inputs and output folder. With a shared
/// root, an upstream output is read from where it was published (`published`, see
/// [`published_outputs`]).
pub fn prepare_stage(
    dag: &Dag,
    context: &RunContext,
    task_id: &str,
    attempt: i64,
    data_root: &DataRoot,
    published: &HashMap<String, String>,
) -> Result<Stage, String> {
    let task = dag
        .task(task_id)
        .ok_or_else(|| format!("task `{task_id}` is not in the DAG"))?;
    let render = |located: &amdahl_dags::model::Located| {
        template::render(located, context).map_err(|e| e.message)
    };
    // Only commands read secrets (as environment variables); nothing else is given them.
    let secrets = if matches!(task.kind, TaskKind::Shell(_)) {
        dag.secrets
            .values()
            .map(|secret| Ok((secret.variable(), secret.resolve()?)))
            .collect::<Result<Vec<_>, String>>()?
    } else {
        Vec::new()
    };
    // A mapped task's first attempt reads its values (the expansion); its instances
    // (`task[3]`) run the task itself, with their value in `context`.
    let expansion = task
        .map
        .as_ref()
        .filter(|_| amdahl_dags::mapping::split_instance(task_id).1.is_none());
    let work = match (&task.kind, expansion) {
        (_, Some(map)) => Work::Map {
            over: match &map.over {
                Over::Sql(sql) => MapOver::Sql(render(sql)?),
                Over::List(list) => MapOver::Values(
                    amdahl_dags::mapping::list_values(list, context).map_err(|e| e.message)?,
                ),
            },
            max: map.max,
        },
        (kind, None) => work_of(dag, context, kind, &render)?,
    };
    let mut inputs: Vec<TableInput> = dag
        .datasets
        .values()
        .map(|dataset| TableInput::for_run(dataset, context, &dag.source.base_dir))
        .collect::<Result<_, String>>()?;
    for need in &task.needs {
        if !dag.task(need).is_some_and(|t| t.produces_data()) {
            continue;
        }
        // An upstream that ran after all (a trigger rule other than `all_success`) may have
        // left nothing: skipped before it started, or failed.
        let missing = || {
            format!(
                "task `{need}` left no output to read: it was skipped before it ran, or did not \
                 succeed (a SQL task skipped by its `when.sql` leaves an empty table)"
            )
        };
        let mut parts = Vec::new();
        let location = if data_root.shared.is_some() {
            if dag.task(need).is_some_and(|t| t.map.is_some()) {
                // Each instance published its own prefix: read in index order as one table.
                if !reads_through_sql(task, expansion.is_some()) {
                    return Err(format!(
                        "task `{need}` is mapped and its instances' outputs are in object \
                         storage: only a `sql` task without `shards` (or a `map.over` or \
                         `wait.sql` query) reads them as one table"
                    ));
                }
                let mut instances: Vec<(usize, &String)> = published
                    .iter()
                    .filter_map(|(id, url)| match split_instance(id) {
                        (task, Some(index)) if task == need => Some((index, url)),
                        _ => None,
                    })
                    .collect();
                instances.sort();
                let mut urls = instances.into_iter().map(|(_, url)| url);
                let first = urls.next().ok_or_else(missing)?;
                for url in urls {
                    parts.push(amdahl_dags::Location::parse(url, Path::new("/"))?);
                }
                amdahl_dags::Location::parse(first, Path::new("/"))?
            } else {
                let url = published.get(need).ok_or_else(missing)?;
                amdahl_dags::Location::parse(url, Path::new("/"))?
            }
        } else {
            let dir = task_output_dir(&data_root.local, context.run_id, need);
            if !dir.exists() {
                return Err(missing());
            }
            amdahl_dags::Location::Local(dir)
        };
        inputs.push(TableInput {
            name: need.clone(),
            location,
            format: amdahl_dags::DatasetFormat::Parquet,
            parts,
        });
    }
    Ok(Stage {
        dag_id: dag.id.clone(),
        run_id: context.run_id,
        task_id: task_id.to_string(),
        attempt: attempt as u32,
        work,
        inputs,
        output_dir: (task.produces_data() && expansion.is_none())
            .then(|| attempt_output_dir(&data_root.local, context.run_id, task_id, attempt as u32)),
        work_dir: dag.source.base_dir.clone(),
        device: task.device,
        placement: None,
        route: None,
        secrets,
        // An instance decides its own `when.sql`; the expansion runs whatever it says.
        condition: task
            .when
            .as_ref()
            .filter(|_| expansion.is_none())
            .and_then(|when| when.sql())
            .map(render)
            .transpose()?,
        shards: task.shards,
        engine: task.engine,
        export: task
            .output
            .as_ref()
            .map(|output| {
                Ok::<_, String>(amdahl_executors::export::Export {
                    location: output.location_for(context, &dag.source.base_dir)?,
                    mode: output.mode,
                    format: output.format,
                })
            })
            .transpose()?,
    })
}

/// Whether everything the task reads its inputs with registers them as tables (a query),
/// so an input in several parts reads whole: a `sql` task that is not split, a mapped task's
/// expansion (its `map.over`) and a sensor (`wait.sql`; a `wait.uri` reads no input).
fn reads_through_sql(task: &amdahl_dags::Task, expansion: bool) -> bool {
    expansion
        || matches!(task.kind, TaskKind::Wait(_))
        || (matches!(task.kind, TaskKind::Sql(_)) && task.shards <= 1)
}

/// What a task of `kind` does in this run, its templates rendered.
fn work_of(
    dag: &Dag,
    context: &RunContext,
    kind: &TaskKind,
    render: &dyn Fn(&amdahl_dags::model::Located) -> Result<String, String>,
) -> Result<Work, String> {
    Ok(match kind {
        TaskKind::Sql(sql) => Work::Sql {
            query: render(sql)?,
        },
        TaskKind::Shell(cmd) => Work::Shell {
            command: render(cmd)?,
        },
        TaskKind::Generate(Generate::Tpch {
            table,
            scale_factor,
        }) => Work::Tpch {
            table: *table,
            scale_factor: amdahl_dags::load::parse_scale_factor(&render(scale_factor)?)
                .map_err(|e| format!("scale_factor {e}"))?,
        },
        TaskKind::Generate(Generate::Vectors { rows, dim, seed }) => Work::Vectors {
            rows: *rows,
            dim: *dim,
            seed: *seed,
        },
        TaskKind::Empty => Work::Empty,
        TaskKind::Wait(wait) => Work::Wait {
            probe: match &wait.probe {
                amdahl_dags::Probe::Sql(sql) => amdahl_executors::wait::Probe::Sql(render(sql)?),
                amdahl_dags::Probe::Uri { .. } => amdahl_executors::wait::Probe::Location(
                    wait.location_for(context, &dag.source.base_dir)
                        .unwrap_or_else(|| Err("`wait.uri` names no location".into()))?,
                ),
            },
            poke: wait.poke,
            timeout: wait.timeout,
            soft_fail: wait.soft_fail,
        },
        TaskKind::Knn(k) => Work::Knn {
            base: k.base.name.clone(),
            queries: k.queries.name.clone(),
            column: k.column.clone(),
            k: k.k,
            metric: k.metric,
        },
        TaskKind::Matmul(m) => Work::Matmul {
            left: m.left.name.clone(),
            right: m.right.name.clone(),
            column: m.column.clone(),
        },
        TaskKind::Score(s) => Work::Score {
            input: s.input.name.clone(),
            column: s.column.clone(),
            model: dag.source.base_dir.join(&s.model),
            activation: s.activation,
        },
    })
}

/// The context a task instance renders its templates in: the run's, and for an instance
/// of a mapped task (`load[3]`) its value under the `map.as` name, read from the store.
pub async fn instance_context(
    store: &Store,
    dag: &Dag,
    context: &RunContext,
    task_id: &str,
) -> Result<RunContext, String> {
    let (Some(map), (_, Some(_))) = (
        dag.task(task_id).and_then(|t| t.map.as_ref()),
        amdahl_dags::mapping::split_instance(task_id),
    ) else {
        return Ok(context.clone());
    };
    let record = store
        .task(context.run_id, task_id)
        .await
        .map_err(|e| format!("cannot read the value of `{task_id}`: {e}"))?
        .ok_or_else(|| format!("task `{task_id}` is not in run {}", context.run_id))?;
    let value = match record.map_value.as_deref() {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| format!("the stored value of `{task_id}` is not JSON: {e}"))?,
        None => return Err(format!("`{task_id}` has no mapped value")),
    };
    Ok(context.clone().with_item(&map.name, value))
}

/// Decides where a `device: auto` stage runs, when this machine has a usable GPU and a
/// profile (otherwise the stage keeps the size threshold): the whole DAG is priced again with
/// the outputs this run has produced so far (see [`amdahl_executors::place`]), and the
/// prediction is stored with the attempt. Estimating can fail (a dataset went missing); then
/// the stage keeps the threshold too, and the next step reports the real problem.
pub async fn place_stage(
    env: &AttemptEnv,
    dag: &Dag,
    context: &RunContext,
    mut stage: Stage,
    attempt_id: i64,
) -> Stage {
    let Some(profile) = env.profile.as_deref() else {
        return stage;
    };
    // The worker's profile holds a cluster only when it may send queries there.
    if !placeable(
        &stage.ask(),
        amdahl_executors::gpu::usable(),
        profile.cluster.is_some(),
    ) {
        return stage;
    }
    // A GPU that is not usable now is no place to price.
    let without_gpu;
    let profile = if profile.gpu.is_some() && !amdahl_executors::gpu::usable() {
        without_gpu = amdahl_placement::Profile {
            gpu: None,
            ..profile.clone()
        };
        &without_gpu
    } else {
        profile
    };
    let Ok(tasks) = env.store.tasks(context.run_id).await else {
        return stage;
    };
    let produced: HashMap<String, Produced> = tasks
        .iter()
        .filter(|t| t.state == TaskState::Success)
        .filter_map(|t| {
            Some((
                t.task_id.clone(),
                Produced {
                    dir: PathBuf::from(t.output_path.as_ref()?),
                    place: t.device,
                },
            ))
        })
        .collect();
    // What earlier runs taught the model (a store that cannot say teaches nothing).
    let history = env
        .store
        .predicted_attempts(LEARN_FROM)
        .await
        .unwrap_or_default();
    let profile = learned(profile, &observations(&history));
    if let Ok(placement) = place_task(dag, context, &stage.task_id, &produced, &profile).await {
        let us = |s: f64| s.is_finite().then(|| (s * 1e6).round() as i64);
        let prediction = Prediction {
            cpu_us: us(placement.cpu_seconds),
            gpu_us: placement.gpu_seconds.and_then(us),
            kind: placement.kind.map(|k| k.name().to_string()),
            cpu_factor: placement.cpu_factor,
            gpu_factor: placement.gpu_factor,
        };
        // For `runs show` and learning; a failed write must not stop the task. A split task's
        // time is neither device's time for the whole input: nothing to learn from.
        if stage.shards <= 1 {
            let _ = env.store.record_prediction(attempt_id, &prediction).await;
        }
        stage.placement = Some(placement);
    }
    stage
}

/// Placed attempts the model learns from: the latest this many.
pub const LEARN_FROM: i64 = 500;

/// The stored attempts as observations of the uncorrected model (predicted ÷ the factor it
/// included), on the place each ran.
pub fn observations(history: &[PredictedAttempt]) -> Vec<Observation> {
    history
        .iter()
        .filter_map(|a| {
            let kind = OpKind::ALL.into_iter().find(|k| k.name() == a.kind)?;
            let place = a.device?;
            let (us, factor) = match place {
                Place::Gpu => (a.gpu_us?, a.gpu_factor),
                Place::Cpu => (a.cpu_us?, a.cpu_factor),
                // The cluster's prediction is not stored: nothing to learn from.
                Place::Cluster => return None,
            };
            (factor > 0.0).then(|| Observation {
                kind,
                place,
                model: us as f64 / 1e6 / factor,
                actual: a.took_ms as f64 / 1e3,
            })
        })
        .collect()
}

/// Decides where a prepared stage's attempt runs, once (see [`Stage::routed`]): the route is
/// set on the stage, which the executors then carry out, and its label returned for the
/// attempt's record. Called before the attempt is executed, so that an attempt stopped on the
/// way (a timeout) still records where it was sent.
pub fn route_stage(prepared: &mut Result<Stage, String>) -> Option<String> {
    let stage = prepared.as_mut().ok()?;
    let routed = stage.routed();
    let label = routed.route.label();
    stage.route = Some(routed);
    Some(label)
}

/// Executes a prepared stage, storing its log lines as they come. Dropping the future stops
/// the stage (the executors promise that) and the log writer ends with it.
pub async fn execute_attempt(
    env: &AttemptEnv,
    prepared: Result<Stage, String>,
    attempt_id: i64,
    data_root: &DataRoot,
) -> (Result<StageOutcome, StageError>, Option<String>) {
    if let Ok(stage) = &prepared
        && matches!(stage.work, Work::Empty)
        && stage.device != amdahl_dags::DevicePreference::Gpu
    {
        // Nothing to log and nothing to wait for: no log writer either.
        let (sink, _lines) = LogSink::channel();
        return (env.executors.execute(stage, &sink).await, None);
    }
    let (sink, mut lines) = LogSink::channel();
    let store = env.store.clone();
    let clock = env.clock.clone();
    // Secret values never reach the store: not in a log line, not in an error.
    let secrets: Vec<String> = prepared
        .as_ref()
        .map(|stage| stage.secrets.iter().map(|(_, v)| v.clone()).collect())
        .unwrap_or_default();
    let masked = {
        let secrets = secrets.clone();
        move |text: String| {
            if secrets.is_empty() {
                text
            } else {
                amdahl_executors::stage::mask(&text, secrets.iter().map(String::as_str))
            }
        }
    };
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut stored = 0usize;
        while let Some(line) = lines.recv().await {
            if stored >= MAX_LOG_LINES {
                // Keep draining so the stage never blocks on a full pipe.
                continue;
            }
            batch.push((
                line.stream.name().to_string(),
                masked(line.text),
                clock.now_ms(),
            ));
            while let Ok(more) = lines.try_recv() {
                batch.push((
                    more.stream.name().to_string(),
                    masked(more.text),
                    clock.now_ms(),
                ));
                if batch.len() >= 500 {
                    break;
                }
            }
            stored += batch.len();
            if stored >= MAX_LOG_LINES {
                let note = format!("log truncated after {MAX_LOG_LINES} lines");
                batch.push(("system".into(), note, clock.now_ms()));
            }
            // A log line that cannot be stored must not fail the task; the attempt's own
            // result is what matters.
            let _ = store.append_logs(attempt_id, &batch).await;
            batch.clear();
        }
    });
    let (result, output_dir) = match prepared {
        Ok(mut stage) => {
            // Where the attempt runs is decided once (by the caller's `route_stage`, or here
            // for a stage handed over without a route); the executors carry it out.
            let routed = stage.routed();
            if routed.placement.is_some() {
                sink.system(routed.describe());
            }
            stage.route = Some(routed);
            let mut result = env.executors.execute(&stage, &sink).await;
            // Why the route is what it is (placement's decision, a pin, no usable GPU…) is
            // the attempt's device note unless the executor had a reason of its own (a
            // fallback): every attempt says why it ran where it did.
            if let (Ok(outcome), Some(routed)) = (&mut result, stage.route.as_ref())
                && outcome.note.is_none()
            {
                outcome.note = Some(routed.why.clone());
            }
            if matches!(stage.work, Work::Map { .. }) && result.is_ok() {
                // A new expansion's instances write afresh: what an earlier one's left (the
                // task was cleared) is not read with theirs.
                let _ = std::fs::remove_dir_all(task_output_dir(
                    &data_root.local,
                    stage.run_id,
                    &stage.task_id,
                ));
            }
            match (&result, &stage.output_dir) {
                // A task skipped by its `when.sql` publishes what it wrote (a SQL task: an
                // empty table with its columns); other kinds write nothing.
                (Ok(outcome), Some(written)) if outcome.skipped && !written.exists() => {
                    let _ = std::fs::remove_dir_all(written);
                    (result, None)
                }
                (Ok(outcome), Some(written)) => {
                    // `output:` is written before publication: a task whose output could not
                    // be written out fails, and publishes nothing (a skipped one writes none).
                    let exported = match &stage.export {
                        Some(export) if !outcome.skipped => amdahl_executors::export::export(
                            written,
                            export,
                            stage.run_id,
                            stage.attempt,
                        )
                        .await
                        .map(|line| sink.system(line)),
                        _ => Ok(()),
                    };
                    match exported {
                        Err(e) => {
                            let _ = std::fs::remove_dir_all(written);
                            (Err(StageError::Failed(e)), None)
                        }
                        Ok(()) => match publish(&stage, written, data_root, &sink).await {
                            Ok(published) => (result, Some(published)),
                            Err(e) => (Err(StageError::Internal(e)), None),
                        },
                    }
                }
                (Err(_), Some(written)) => {
                    // A failed attempt's partial output is nobody's: removed (best effort;
                    // what stays is hidden and never read).
                    let _ = std::fs::remove_dir_all(written);
                    (result, None)
                }
                (_, None) => (result, None),
            }
        }
        Err(e) => (Err(StageError::Failed(e)), None),
    };
    drop(sink);
    let _ = writer.await;
    let result = if secrets.is_empty() {
        result
    } else {
        let mask =
            |text: &str| amdahl_executors::stage::mask(text, secrets.iter().map(String::as_str));
        match result {
            Err(StageError::Failed(e)) => Err(StageError::Failed(mask(&e))),
            Err(StageError::Internal(e)) => Err(StageError::Internal(mask(&e))),
            Err(StageError::OutOfMemory(e)) => Err(StageError::OutOfMemory(mask(&e))),
            Ok(mut outcome) => {
                outcome.note = outcome.note.map(|n| mask(&n));
                Ok(outcome)
            }
        }
    };
    (result, output_dir)
}

/// Makes a succeeded attempt's output the task's; returns where it now is. Locally: its
/// folder is renamed to the task's (see `attempt_output_dir`). With a shared root: its files
/// are uploaded under the attempt's own prefix and the local folder removed; the state store
/// recording that prefix is what publishes it.
async fn publish(
    stage: &Stage,
    written: &Path,
    data_root: &DataRoot,
    sink: &LogSink,
) -> Result<String, String> {
    if let Some(target) = data_root.shared_output(stage.run_id, &stage.task_id, stage.attempt) {
        let uploaded = amdahl_executors::objects::upload_dir(written, &target).await;
        let _ = std::fs::remove_dir_all(written);
        let bytes = match uploaded {
            Ok(bytes) => bytes,
            Err(e) => {
                // What did get there is nobody's (nothing records it); tidy it if possible.
                let _ = amdahl_executors::objects::delete_prefix(&target).await;
                return Err(e);
            }
        };
        sink.system(format!("uploaded {bytes} bytes to {}", target.url));
        return Ok(target.url);
    }
    let task_dir = task_output_dir(&data_root.local, stage.run_id, &stage.task_id);
    publish_output(written, &task_dir).map_err(|e| {
        format!(
            "cannot publish the output {} as {}: {e}",
            written.display(),
            task_dir.display()
        )
    })?;
    Ok(task_dir.display().to_string())
}

/// A sensor's wait, read off its stage before the stage runs (see [`after_poke`]).
#[derive(Clone, Copy, Debug)]
pub struct WaitPolicy {
    pub poke: std::time::Duration,
    pub timeout: std::time::Duration,
    pub soft_fail: bool,
}

impl WaitPolicy {
    /// The wait of a prepared `wait:` stage; `None` for every other kind.
    pub fn of(prepared: &Result<Stage, String>) -> Option<WaitPolicy> {
        match prepared.as_ref().ok()?.work {
            Work::Wait {
                poke,
                timeout,
                soft_fail,
                ..
            } => Some(WaitPolicy {
                poke,
                timeout,
                soft_fail,
            }),
            _ => None,
        }
    }
}

/// How an attempt ends whose poke found nothing ([`StageOutcome::waiting`]), given its task
/// as the store has it: `rescheduled`, the task waiting (`up_for_retry`, holding no slot) for
/// its next poke; or, once the wait's `timeout` from its first poke has passed, the task
/// failed (not retried: waiting longer is what a longer timeout is for), or skipped with
/// `soft_fail`. Returns the attempt's state, the task's, its next poke and the result to
/// record.
pub fn after_poke(
    wait: &WaitPolicy,
    task: &amdahl_scheduler::store::TaskRecord,
    mut outcome: StageOutcome,
    now: i64,
) -> (
    AttemptState,
    TaskState,
    Option<i64>,
    Result<StageOutcome, String>,
) {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let since = task.waiting_since_ms.or(task.started_at_ms).unwrap_or(now);
    if let Some(at) =
        amdahl_scheduler::decide::next_poke(since, now, ms(wait.poke), ms(wait.timeout))
    {
        return (
            AttemptState::Rescheduled,
            TaskState::UpForRetry,
            Some(at),
            Ok(outcome),
        );
    }
    let what = outcome.note.take().unwrap_or_default();
    let why = format!(
        "the wait timed out after {} (wait.timeout): {what}",
        amdahl_dags::model::format_duration(wait.timeout)
    );
    if wait.soft_fail {
        outcome.waiting = false;
        outcome.skipped = true;
        outcome.note = Some(format!("skipped (soft_fail): {why}"));
        (AttemptState::Success, TaskState::Skipped, None, Ok(outcome))
    } else {
        (AttemptState::Failed, TaskState::Failed, None, Err(why))
    }
}

/// The state of a task whose attempt succeeded: `skipped` when its `when.sql` was false.
pub fn ended_well(outcome: &StageOutcome) -> TaskState {
    if outcome.skipped {
        TaskState::Skipped
    } else {
        TaskState::Success
    }
}

/// How an attempt ended, for [`record_result`].
pub struct AttemptEnd<'a> {
    pub run_id: i64,
    pub task_id: &'a str,
    pub attempt_id: i64,
    pub attempt: i64,
    pub attempt_state: AttemptState,
    pub task_state: TaskState,
    pub retry_at_ms: Option<i64>,
    pub now: i64,
    /// Where the attempt was sent (see [`route_stage`]); `None` when it ended before.
    pub route: Option<String>,
    /// What it ran after templating ([`Stage::rendered`]), read before it ran.
    pub rendered: Option<String>,
    /// The task's `produces:`: a success records an event for each, with the end.
    pub produces: &'a [String],
}

/// The store write that records an attempt's end.
pub fn finish_of(
    end: &AttemptEnd<'_>,
    result: Result<(StageOutcome, Option<String>), String>,
) -> FinishAttempt {
    let (mut io_us, mut transfer_us, mut compute_us) = (None, None, None);
    let (mut plan, mut mapped) = (None, None);
    let (device, device_note, output_path, rows, bytes, error) = match result {
        Ok((outcome, output)) => {
            if let Some(t) = &outcome.timings {
                let us = |ms: f64| Some((ms * 1e3).round() as i64);
                (io_us, transfer_us, compute_us) =
                    (us(t.io_ms), us(t.transfer_ms), us(t.compute_ms));
            }
            // A skipped task's reason is where a rule-skipped task's is: its `error`, which
            // `runs show` and the run table print.
            let reason = outcome.skipped.then(|| outcome.note.clone()).flatten();
            plan = outcome.plan;
            mapped = outcome
                .mapped
                .map(|values| values.iter().map(|v| v.to_string()).collect());
            (
                Some(outcome.device),
                outcome.note,
                output,
                outcome.rows.map(|r| r as i64),
                outcome.bytes.map(|b| b as i64),
                reason,
            )
        }
        Err(e) => (Some(Place::Cpu), None, None, None, None, Some(e)),
    };
    FinishAttempt {
        run_id: end.run_id,
        task_id: end.task_id.to_string(),
        attempt_id: end.attempt_id,
        attempt: end.attempt,
        attempt_state: end.attempt_state,
        task_state: end.task_state,
        retry_at_ms: end.retry_at_ms,
        device,
        device_note,
        output_path,
        rows_out: rows,
        bytes_out: bytes,
        error,
        now_ms: end.now,
        io_us,
        transfer_us,
        compute_us,
        route: end.route.clone(),
        rendered: end.rendered.clone(),
        plan,
        produces: end.produces.to_vec(),
        mapped,
    }
}

/// A failed attempt's error goes into its log as well, as the log's last line (a skipped
/// task's reason is logged when it is decided).
pub async fn log_failure(store: &Store, finish: &FinishAttempt) -> Result<(), StoreError> {
    if finish.attempt_state == AttemptState::Success {
        return Ok(());
    }
    if let Some(error) = &finish.error {
        let line = format!(
            "attempt {} {}: {error}",
            finish.attempt, finish.attempt_state
        );
        store
            .append_logs(finish.attempt_id, &[("system".into(), line, finish.now_ms)])
            .await?;
    }
    Ok(())
}

/// Stores an attempt's end (fenced by attempt number: a stale report is a `Conflict`).
pub async fn record_result(
    store: &Store,
    end: &AttemptEnd<'_>,
    result: Result<(StageOutcome, Option<String>), String>,
) -> Result<(), StoreError> {
    let finish = finish_of(end, result);
    log_failure(store, &finish).await?;
    store.finish_attempt(&finish).await
}

#[cfg(test)]
#[path = "attempt_tests.rs"]
mod tests;
