//! The in-process runner: drives one DAG run to its end inside this process.
//!
//! A loop around the pure core: read the run from the store, ask [`decide`] what to do, apply
//! the commands (state changes through the store, stages to the executors), then sleep until a
//! stage finishes, a retry or timeout is due, or the user cancels. The run is owned by this
//! process (`runs.owner`) and kept alive by heartbeats; [`reap_orphans`] fails runs whose owner
//! died so none stays "running" without one.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use amdahl_dags::{Dag, RunContext};
use amdahl_executors::storage::DataRoot;
use amdahl_executors::{Executors, Stage, StageError, StageOutcome};

use crate::Clock;
use crate::attempt::{
    AttemptEnd, AttemptEnv, execute_attempt, place_stage, prepare_stage, published_outputs,
    record_result,
};
use crate::decide::{Command, Dispatcher, RunView, TaskView, after_failure, decide};
use crate::state::{AttemptState, RunState, TaskState};
use crate::store::{NewRun, NewTask, Store, StoreError, TaskRecord, Topic, TriggerKind};

/// How often a running process proves it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A run whose owner has not beaten for this long is taken to be orphaned.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(60);

/// Hears about progress, for progress bars and logs. Both methods default to doing nothing.
pub trait RunObserver: Send + Sync {
    fn task_changed(&self, _task_id: &str, _state: TaskState) {}
    fn run_changed(&self, _state: RunState) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl RunObserver for Quiet {}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// Runs DAGs in this process.
#[derive(Clone)]
pub struct LocalRunner {
    pub store: Store,
    pub executors: Executors,
    pub data_root: DataRoot,
    pub owner: String,
    pub clock: Arc<dyn Clock>,
    /// This machine's profile, for placing `device: auto` stages (see
    /// [`crate::attempt::place_stage`]).
    pub profile: Option<Arc<amdahl_placement::Profile>>,
}

/// A stage that is executing.
struct Active {
    handle: JoinHandle<()>,
    attempt_id: i64,
    attempt: i64,
}

/// What an execution reports back to the loop.
struct Finished {
    task_id: String,
    attempt_id: i64,
    attempt: i64,
    result: Result<StageOutcome, StageError>,
    output_dir: Option<String>,
}

impl LocalRunner {
    /// Records the DAG's version and creates a queued run owned by this process.
    pub async fn create_run(
        &self,
        dag: &Dag,
        params: &BTreeMap<String, serde_json::Value>,
    ) -> Result<i64, RunError> {
        Ok(create_run(
            &self.store,
            self.clock.as_ref(),
            dag,
            params,
            RunOrigin::InProcess(self.owner.clone()),
        )
        .await?)
    }

    /// Drives `run_id` until it ends; `cancel` resolving cancels it. Returns the final state.
    pub async fn drive(
        &self,
        dag: &Dag,
        run_id: i64,
        observer: &dyn RunObserver,
        cancel: impl Future<Output = ()>,
    ) -> Result<RunState, RunError> {
        let run = self
            .store
            .run(run_id)
            .await?
            .ok_or_else(|| RunError::Invalid(format!("run {run_id} does not exist")))?;
        let params: BTreeMap<String, serde_json::Value> = serde_json::from_str(&run.params_json)
            .map_err(|e| RunError::Invalid(format!("run {run_id} has unreadable params: {e}")))?;
        let context = RunContext {
            dag_id: dag.id.clone(),
            run_id,
            logical_date: run.logical_date.clone(),
            params,
        };
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut active: HashMap<String, Active> = HashMap::new();
        let mut cancel_requested = false;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        tokio::pin!(cancel);

        loop {
            let run = self
                .store
                .run(run_id)
                .await?
                .ok_or_else(|| RunError::Invalid(format!("run {run_id} disappeared")))?;
            if run.state.is_terminal() {
                return Ok(run.state);
            }
            // `amdahl runs cancel` from another terminal.
            cancel_requested |= run.cancel_requested_at_ms.is_some();
            let tasks = self.store.tasks(run_id).await?;
            let view = view_of(
                run.state,
                &tasks,
                run.max_active_tasks,
                cancel_requested,
                Dispatcher::InProcess,
                pool_free_for(&self.store, &tasks).await?,
            );
            let now = self.clock.now_ms();
            let decision = decide(&view, now);
            // State changed: decide again at once, since one change may enable the next (a
            // timed-out task fails its downstream). Only a quiet decision waits for events.
            let changed = !decision.commands.is_empty();
            let mut not_queued: Vec<String> = Vec::new();
            for command in decision.commands {
                match command {
                    Command::StartRun => {
                        self.store
                            .set_run_state(run_id, RunState::Queued, RunState::Running, now, None)
                            .await?;
                        observer.run_changed(RunState::Running);
                    }
                    Command::Queue(task_id) => {
                        let from = state_of(&tasks, &task_id);
                        let pool = find(&tasks, &task_id)?.pool.as_deref();
                        match self
                            .store
                            .queue_task(run_id, &task_id, from, pool, now)
                            .await
                        {
                            Ok(()) => observer.task_changed(&task_id, TaskState::Queued),
                            // Another process took the pool's last slot first: the task waits.
                            Err(StoreError::Conflict(_)) if pool.is_some() => {
                                not_queued.push(task_id);
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Command::MarkUpstreamFailed(task_id) => {
                        self.store
                            .set_task_state(
                                run_id,
                                &task_id,
                                TaskState::Scheduled,
                                TaskState::UpstreamFailed,
                                now,
                                Some("an upstream task did not succeed"),
                            )
                            .await?;
                        observer.task_changed(&task_id, TaskState::UpstreamFailed);
                    }
                    Command::Dispatch(task_id) => {
                        if not_queued.contains(&task_id) {
                            continue;
                        }
                        let (attempt_id, attempt) = self
                            .store
                            .start_attempt(run_id, &task_id, &self.owner, now)
                            .await?;
                        observer.task_changed(&task_id, TaskState::Running);
                        let handle = self.spawn_stage(
                            dag,
                            &context,
                            &task_id,
                            attempt_id,
                            attempt,
                            done_tx.clone(),
                        );
                        active.insert(
                            task_id,
                            Active {
                                handle,
                                attempt_id,
                                attempt,
                            },
                        );
                    }
                    Command::Expire(task_id) => {
                        let Some(stage) = active.remove(&task_id) else {
                            continue;
                        };
                        stage.handle.abort();
                        let record = find(&tasks, &task_id)?;
                        let limit = record.timeout_ms.unwrap_or_default();
                        let error = format!(
                            "timed out after {}",
                            amdahl_dags::model::format_duration(Duration::from_millis(
                                limit as u64
                            ))
                        );
                        let (state, retry_at) = after_failure(&task_view(record), now);
                        self.finish(
                            run_id,
                            &task_id,
                            (stage.attempt_id, stage.attempt),
                            AttemptState::TimedOut,
                            state,
                            retry_at,
                            Err(error),
                            now,
                        )
                        .await?;
                        observer.task_changed(&task_id, state);
                    }
                    Command::Cancel(task_id) => {
                        if let Some(stage) = active.remove(&task_id) {
                            stage.handle.abort();
                            self.finish(
                                run_id,
                                &task_id,
                                (stage.attempt_id, stage.attempt),
                                AttemptState::Cancelled,
                                TaskState::Cancelled,
                                None,
                                Err("cancelled".into()),
                                now,
                            )
                            .await?;
                        } else {
                            let from = state_of(&tasks, &task_id);
                            self.store
                                .set_task_state(
                                    run_id,
                                    &task_id,
                                    from,
                                    TaskState::Cancelled,
                                    now,
                                    Some("run cancelled"),
                                )
                                .await?;
                        }
                        observer.task_changed(&task_id, TaskState::Cancelled);
                    }
                    Command::FinishRun(state) => {
                        let note =
                            (state == RunState::Cancelled).then_some("cancelled by the user");
                        self.store
                            .set_run_state(run_id, RunState::Running, state, now, note)
                            .await?;
                        observer.run_changed(state);
                        return Ok(state);
                    }
                }
            }
            if changed {
                continue;
            }

            let sleep = decision
                .wake_at_ms
                .map(|at| Duration::from_millis((at - self.clock.now_ms()).clamp(0, 60_000) as u64))
                .unwrap_or(Duration::from_secs(60));
            tokio::select! {
                Some(done) = done_rx.recv() => {
                    self.complete(run_id, done, &mut active, observer).await?;
                    // Take every other result that is already waiting before deciding again.
                    while let Ok(done) = done_rx.try_recv() {
                        self.complete(run_id, done, &mut active, observer).await?;
                    }
                }
                _ = tokio::time::sleep(sleep) => {}
                _ = heartbeat.tick() => {
                    self.store.heartbeat(run_id, &self.owner, self.clock.now_ms()).await?;
                }
                _ = &mut cancel, if !cancel_requested => {
                    cancel_requested = true;
                }
            }
        }
    }

    /// Records a finished execution; a stale report (the attempt was expired or cancelled
    /// meanwhile) is refused by the store and ignored here.
    async fn complete(
        &self,
        run_id: i64,
        done: Finished,
        active: &mut HashMap<String, Active>,
        observer: &dyn RunObserver,
    ) -> Result<(), RunError> {
        match active.get(&done.task_id) {
            Some(a) if a.attempt_id == done.attempt_id => {
                active.remove(&done.task_id);
            }
            _ => return Ok(()),
        }
        let now = self.clock.now_ms();
        let tasks = self.store.tasks(run_id).await?;
        let record = find(&tasks, &done.task_id)?;
        let stage = (done.attempt_id, done.attempt);
        let (attempt_state, task_state, retry_at, result) = match done.result {
            Ok(outcome) => (
                AttemptState::Success,
                TaskState::Success,
                None,
                Ok((outcome, done.output_dir)),
            ),
            Err(e) => {
                let (state, retry_at) = after_failure(&task_view(record), now);
                (AttemptState::Failed, state, retry_at, Err(e.to_string()))
            }
        };
        match self
            .finish(
                run_id,
                &done.task_id,
                stage,
                attempt_state,
                task_state,
                retry_at,
                result,
                now,
            )
            .await
        {
            Ok(()) => observer.task_changed(&done.task_id, task_state),
            Err(RunError::Store(StoreError::Conflict(_))) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        run_id: i64,
        task_id: &str,
        (attempt_id, attempt): (i64, i64),
        attempt_state: AttemptState,
        task_state: TaskState,
        retry_at_ms: Option<i64>,
        result: Result<(StageOutcome, Option<String>), String>,
        now: i64,
    ) -> Result<(), RunError> {
        record_result(
            &self.store,
            &AttemptEnd {
                run_id,
                task_id,
                attempt_id,
                attempt,
                attempt_state,
                task_state,
                retry_at_ms,
                now,
            },
            result,
        )
        .await?;
        Ok(())
    }

    /// Builds the stage for a task and starts it; its result arrives on `done`.
    fn spawn_stage(
        &self,
        dag: &Dag,
        context: &RunContext,
        task_id: &str,
        attempt_id: i64,
        attempt: i64,
        done: mpsc::UnboundedSender<Finished>,
    ) -> JoinHandle<()> {
        let env = self.attempt_env();
        let data_root = self.data_root.clone();
        let task_id = task_id.to_string();
        // Placement and a shared root's published outputs are read in the task, with the DAG
        // cloned into it; otherwise the stage is prepared here.
        let placing = env
            .profile
            .as_ref()
            .is_some_and(|profile| profile.cluster.is_some() || amdahl_executors::gpu::usable());
        let preparation = if placing || data_root.shared.is_some() {
            Preparation::Later(dag.clone(), context.clone())
        } else {
            let none = HashMap::new();
            Preparation::Ready(prepare_stage(
                dag, context, &task_id, attempt, &data_root, &none,
            ))
        };
        tokio::spawn(async move {
            let prepared = match preparation {
                Preparation::Ready(prepared) => prepared,
                Preparation::Later(dag, context) => {
                    let prepared = published_outputs(&env.store, context.run_id, &data_root)
                        .await
                        .and_then(|published| {
                            prepare_stage(&dag, &context, &task_id, attempt, &data_root, &published)
                        });
                    match prepared {
                        Ok(stage) if placing => {
                            Ok(place_stage(&env, &dag, &context, stage, attempt_id).await)
                        }
                        prepared => prepared,
                    }
                }
            };
            let (result, output_dir) =
                execute_attempt(&env, prepared, attempt_id, &data_root).await;
            let _ = done.send(Finished {
                task_id,
                attempt_id,
                attempt,
                result,
                output_dir,
            });
        })
    }

    fn attempt_env(&self) -> AttemptEnv {
        AttemptEnv {
            store: self.store.clone(),
            executors: self.executors.clone(),
            clock: self.clock.clone(),
            profile: self.profile.clone(),
        }
    }
}

/// A stage prepared before its task is spawned, or what preparing it in the task needs.
enum Preparation {
    Ready(Result<Stage, String>),
    Later(Dag, RunContext),
}

/// Who asked for a run, which decides who drives it.
#[derive(Clone, Debug)]
pub enum RunOrigin {
    /// `amdahl run`: this process (the owner) drives it.
    InProcess(String),
    /// `amdahl trigger`: the scheduler service drives it; logical date = now.
    Manual,
    /// A cron tick: the scheduler service drives it; logical date = the interval's start.
    Scheduled(chrono::DateTime<chrono::Utc>),
    /// One date of a backfill: the scheduler service drives it.
    Backfill {
        backfill_id: i64,
        logical: chrono::DateTime<chrono::Utc>,
    },
}

/// Records the DAG's version and creates a queued run. A scheduled run that exists already
/// (another scheduler was first) is a `Conflict`.
pub async fn create_run(
    store: &Store,
    clock: &dyn Clock,
    dag: &Dag,
    params: &BTreeMap<String, serde_json::Value>,
    origin: RunOrigin,
) -> Result<i64, StoreError> {
    let now = clock.now_ms();
    let (owner, trigger, logical_date, backfill_id) = match origin {
        RunOrigin::InProcess(owner) => (Some(owner), TriggerKind::Manual, rfc3339(now), None),
        RunOrigin::Manual => (None, TriggerKind::Manual, rfc3339(now), None),
        RunOrigin::Scheduled(tick) => (None, TriggerKind::Schedule, logical_text(tick), None),
        RunOrigin::Backfill {
            backfill_id,
            logical,
        } => (
            None,
            TriggerKind::Backfill,
            logical_text(logical),
            Some(backfill_id),
        ),
    };
    let version_id = record_version(store, dag, now).await?;
    let tasks = dag
        .tasks
        .iter()
        .map(|t| NewTask {
            task_id: t.id.clone(),
            device: t.device.to_string(),
            kind: t.kind.name().to_string(),
            needs: t.needs.clone(),
            priority: i64::from(t.priority),
            retries: i64::from(t.retries),
            retry_delay_ms: t.retry_delay.as_millis() as i64,
            timeout_ms: t.timeout.map(|d| d.as_millis() as i64),
            pool: t.pool.clone(),
        })
        .collect();
    let run_id = store
        .create_run(&NewRun {
            dag_id: dag.id.clone(),
            trigger,
            dag_version_id: version_id,
            params_json: serde_json::to_string(params).unwrap_or_else(|_| "{}".into()),
            logical_date,
            max_active_tasks: i64::from(dag.max_active_tasks.unwrap_or(16)),
            owner,
            backfill_id,
            now_ms: now,
            tasks,
        })
        .await?;
    store.signal(Topic::Progress).await;
    Ok(run_id)
}

pub(crate) fn find<'a>(tasks: &'a [TaskRecord], task_id: &str) -> Result<&'a TaskRecord, RunError> {
    tasks
        .iter()
        .find(|t| t.task_id == task_id)
        .ok_or_else(|| RunError::Invalid(format!("task `{task_id}` is missing from the run")))
}

pub(crate) fn state_of(tasks: &[TaskRecord], task_id: &str) -> TaskState {
    tasks
        .iter()
        .find(|t| t.task_id == task_id)
        .map_or(TaskState::Scheduled, |t| t.state)
}

pub(crate) fn task_view(t: &TaskRecord) -> TaskView {
    TaskView {
        task_id: t.task_id.clone(),
        state: t.state,
        needs: t.needs.clone(),
        priority: t.priority as i32,
        attempts: t.attempts as u32,
        retries: t.retries as u32,
        retry_delay_ms: t.retry_delay_ms,
        retry_at_ms: t.retry_at_ms,
        timeout_ms: t.timeout_ms,
        started_at_ms: t.started_at_ms,
        pool: t.pool.clone(),
    }
}

/// Free pool slots, read only when one of `tasks` is in a pool.
pub(crate) async fn pool_free_for(
    store: &Store,
    tasks: &[TaskRecord],
) -> Result<BTreeMap<String, usize>, StoreError> {
    if tasks.iter().any(|t| t.pool.is_some()) {
        store.pool_free().await
    } else {
        Ok(BTreeMap::new())
    }
}

pub(crate) fn view_of(
    state: RunState,
    tasks: &[TaskRecord],
    max_active_tasks: i64,
    cancel_requested: bool,
    dispatcher: Dispatcher,
    pool_free: BTreeMap<String, usize>,
) -> RunView {
    RunView {
        state,
        tasks: tasks.iter().map(task_view).collect(),
        max_active_tasks: max_active_tasks.max(1) as usize,
        cancel_requested,
        dispatcher,
        pool_free,
    }
}

/// Records the DAG's source as a version (idempotent by its hash); returns the version id.
pub async fn record_version(store: &Store, dag: &Dag, now_ms: i64) -> Result<i64, StoreError> {
    store
        .record_dag_version(
            &dag.id,
            &dag.source.hash,
            &dag.source.display_path,
            &dag.source.base_dir.display().to_string(),
            &dag.source.text,
            now_ms,
        )
        .await
}

/// How logical dates are stored: RFC 3339, UTC, whole seconds (so text order is time order).
pub fn logical_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// This process's identity as a run owner: `host:pid:start-ms`.
pub fn owner_id(now_ms: i64) -> String {
    format!("{}:{}:{now_ms}", host_name(), std::process::id())
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Fails every unfinished run whose owner is gone: a process on this host that no longer
/// exists, or any owner silent for longer than [`ORPHAN_AFTER`]. Returns the runs it failed.
pub async fn reap_orphans(
    store: &Store,
    clock: &dyn Clock,
    own_owner: &str,
) -> Result<Vec<i64>, StoreError> {
    let now = clock.now_ms();
    let host = host_name();
    let mut reaped = Vec::new();
    for (run_id, owner, heartbeat) in store.unfinished_runs().await? {
        // Runs without an owner belong to the scheduler service, whose workers hold leases.
        let Some(owner) = owner else { continue };
        if owner == own_owner {
            continue;
        }
        let owner = Some(owner);
        let dead_here = owner.as_deref().and_then(|o| {
            let mut parts = o.split(':');
            let owner_host = parts.next()?;
            let pid: i32 = parts.next()?.parse().ok()?;
            (owner_host == host).then(|| !process_alive(pid))
        });
        let silent = heartbeat.is_none_or(|at| now - at > ORPHAN_AFTER.as_millis() as i64);
        let reason = match (dead_here, silent) {
            (Some(true), _) => format!(
                "owner process {} exited before the run finished",
                owner.as_deref().unwrap_or("?")
            ),
            (_, true) => format!(
                "owner {} stopped sending heartbeats",
                owner.as_deref().unwrap_or("(none)")
            ),
            _ => continue,
        };
        if store
            .fail_orphaned_run(run_id, owner.as_deref(), &reason, now)
            .await?
        {
            reaped.push(run_id);
        }
    }
    Ok(reaped)
}
