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

use crate::attempt::{
    AttemptEnd, AttemptEnv, WaitPolicy, after_poke, execute_attempt, instance_context, place_stage,
    prepare_stage, published_outputs, record_result, route_stage,
};
use amdahl_scheduler::Clock;
use amdahl_scheduler::decide::{Command, Dispatcher, after_failure, decide};
use amdahl_scheduler::runs::*;
use amdahl_scheduler::state::{AttemptState, RunState, TaskState};
use amdahl_scheduler::store::{Store, StoreError};

/// Hears about progress, for progress bars and logs. Both methods default to doing nothing.
pub trait RunObserver: Send + Sync {
    fn task_changed(&self, _task_id: &str, _state: TaskState) {}
    fn run_changed(&self, _state: RunState) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl RunObserver for Quiet {}

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

/// How [`LocalRunner::stop_task`] ends a task its run no longer runs.
struct Stop<'a> {
    task_state: TaskState,
    attempt_state: AttemptState,
    /// The error a running attempt ends with.
    attempt_error: &'a str,
    /// The note a task that was not running gets.
    note: &'a str,
}

/// What an execution reports back to the loop.
struct Finished {
    task_id: String,
    attempt_id: i64,
    attempt: i64,
    result: Result<StageOutcome, StageError>,
    output_dir: Option<String>,
    route: Option<String>,
    wait: Option<WaitPolicy>,
    rendered: Option<String>,
    /// The task's `produces:`, recorded as asset events with its success.
    produces: Vec<String>,
}

/// How often `amdahl run` looks whether another terminal asked to cancel its run (`amdahl
/// runs cancel` writes the request to the store; one row is read).
pub const CANCEL_POLL: Duration = Duration::from_millis(100);

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
        let context = RunContext::new(dag, run_id, run.logical_date.clone(), params);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut active: HashMap<String, Active> = HashMap::new();
        let mut cancel_requested = false;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut cancel_poll = tokio::time::interval(CANCEL_POLL);
        cancel_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                &run,
                &tasks,
                cancel_requested,
                Dispatcher::InProcess,
                pool_free_for(&self.store, &tasks).await?,
                &past_of(&self.store, &run, &tasks).await?,
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
                    Command::Skip(task_id) => {
                        let note = find(&tasks, &task_id)?
                            .skip_note
                            .clone()
                            .unwrap_or_else(|| amdahl_scheduler::service::SKIPPED_BY_RULE.into());
                        self.store
                            .set_task_state(
                                run_id,
                                &task_id,
                                TaskState::Scheduled,
                                TaskState::Skipped,
                                now,
                                Some(&note),
                            )
                            .await?;
                        observer.task_changed(&task_id, TaskState::Skipped);
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
                        record_result(
                            &self.store,
                            &AttemptEnd {
                                run_id,
                                task_id: &task_id,
                                attempt_id: stage.attempt_id,
                                attempt: stage.attempt,
                                attempt_state: AttemptState::TimedOut,
                                task_state: state,
                                retry_at_ms: retry_at,
                                now,
                                route: None,
                                rendered: None,
                                produces: &[],
                            },
                            Err(error),
                        )
                        .await?;
                        observer.task_changed(&task_id, state);
                    }
                    Command::Cancel(task_id) => {
                        let stop = Stop {
                            task_state: TaskState::Cancelled,
                            attempt_state: AttemptState::Cancelled,
                            attempt_error: "cancelled",
                            note: "run cancelled",
                        };
                        self.stop_task(run_id, &task_id, &tasks, &mut active, &stop, now)
                            .await?;
                        observer.task_changed(&task_id, TaskState::Cancelled);
                    }
                    Command::TimeOut(task_id) => {
                        let reason = timeout_reason(&run);
                        let stop = Stop {
                            task_state: TaskState::Failed,
                            attempt_state: AttemptState::TimedOut,
                            attempt_error: &reason,
                            note: &reason,
                        };
                        self.stop_task(run_id, &task_id, &tasks, &mut active, &stop, now)
                            .await?;
                        observer.task_changed(&task_id, TaskState::Failed);
                    }
                    Command::TimeOutRun => {
                        let reason = timeout_reason(&run);
                        self.store
                            .set_run_state(
                                run_id,
                                RunState::Running,
                                RunState::Failed,
                                now,
                                Some(&reason),
                            )
                            .await?;
                        observer.run_changed(RunState::Failed);
                        return Ok(RunState::Failed);
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
            let timer = tokio::time::sleep(sleep);
            tokio::pin!(timer);
            loop {
                tokio::select! {
                    Some(done) = done_rx.recv() => {
                        self.complete(run_id, done, &mut active, observer).await?;
                        // Take every other result that is already waiting before deciding again.
                        while let Ok(done) = done_rx.try_recv() {
                            self.complete(run_id, done, &mut active, observer).await?;
                        }
                    }
                    _ = &mut timer => {}
                    _ = heartbeat.tick() => {
                        self.store.heartbeat(run_id, &self.owner, self.clock.now_ms()).await?;
                    }
                    _ = &mut cancel, if !cancel_requested => {
                        cancel_requested = true;
                    }
                    // `amdahl runs cancel` from another terminal: one row read, and the run is
                    // looked at again only when it was asked.
                    _ = cancel_poll.tick(), if !cancel_requested => {
                        let asked = self
                            .store
                            .run(run_id)
                            .await?
                            .is_some_and(|r| r.cancel_requested_at_ms.is_some());
                        if !asked {
                            continue;
                        }
                    }
                }
                break;
            }
        }
    }

    /// Ends a task because its run ends (cancelled, or past its `run_timeout`): a running
    /// stage is aborted and its attempt recorded as `stop` says; a waiting task just moves.
    async fn stop_task(
        &self,
        run_id: i64,
        task_id: &str,
        tasks: &[amdahl_scheduler::store::TaskRecord],
        active: &mut HashMap<String, Active>,
        stop: &Stop<'_>,
        now: i64,
    ) -> Result<(), StoreError> {
        if let Some(stage) = active.remove(task_id) {
            stage.handle.abort();
            let end = AttemptEnd {
                run_id,
                task_id,
                attempt_id: stage.attempt_id,
                attempt: stage.attempt,
                attempt_state: stop.attempt_state,
                task_state: stop.task_state,
                retry_at_ms: None,
                now,
                route: None,
                rendered: None,
                produces: &[],
            };
            record_result(&self.store, &end, Err(stop.attempt_error.to_string())).await
        } else {
            let from = state_of(tasks, task_id);
            self.store
                .set_task_state(run_id, task_id, from, stop.task_state, now, Some(stop.note))
                .await
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
        let (attempt_state, task_state, retry_at, result) = match (done.result, done.wait) {
            // A sensor's poke that found nothing: wait for the next, or end the wait.
            (Ok(outcome), Some(wait)) if outcome.waiting => {
                let (a, t, at, result) = after_poke(&wait, record, outcome, now);
                (a, t, at, result.map(|outcome| (outcome, done.output_dir)))
            }
            (Ok(outcome), _) => (
                AttemptState::Success,
                crate::attempt::ended_well(&outcome),
                None,
                Ok((outcome, done.output_dir)),
            ),
            (Err(e), _) => {
                let (state, retry_at) = after_failure(&task_view(record), now);
                (AttemptState::Failed, state, retry_at, Err(e.to_string()))
            }
        };
        let end = AttemptEnd {
            run_id,
            task_id: &done.task_id,
            attempt_id: done.attempt_id,
            attempt: done.attempt,
            attempt_state,
            task_state,
            retry_at_ms: retry_at,
            now,
            route: done.route,
            rendered: done.rendered,
            produces: &done.produces,
        };
        match record_result(&self.store, &end, result).await {
            Ok(()) => observer.task_changed(&done.task_id, task_state),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
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
        let produces = dag
            .task(task_id)
            .map(|t| t.produces.clone())
            .unwrap_or_default();
        let task_id = task_id.to_string();
        // Placement and a shared root's published outputs are read in the task, with the DAG
        // cloned into it; otherwise the stage is prepared here.
        let placing = env
            .profile
            .as_ref()
            .is_some_and(|profile| profile.cluster.is_some() || amdahl_executors::gpu::usable());
        // A mapped task's instance reads its value from the store.
        let instance = amdahl_dags::mapping::split_instance(&task_id).1.is_some();
        let preparation = if placing || data_root.shared.is_some() || instance {
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
                    let prepared = match instance_context(&env.store, &dag, &context, &task_id)
                        .await
                    {
                        Ok(context) => published_outputs(&env.store, context.run_id, &data_root)
                            .await
                            .and_then(|published| {
                                prepare_stage(
                                    &dag, &context, &task_id, attempt, &data_root, &published,
                                )
                            })
                            .map(|stage| (stage, context)),
                        Err(e) => Err(e),
                    };
                    match prepared {
                        Ok((stage, context)) if placing => {
                            Ok(place_stage(&env, &dag, &context, stage, attempt_id).await)
                        }
                        prepared => prepared.map(|(stage, _)| stage),
                    }
                }
            };
            let mut prepared = prepared;
            let wait = WaitPolicy::of(&prepared);
            let rendered = prepared.as_ref().ok().and_then(Stage::rendered);
            let route = route_stage(&mut prepared);
            let (result, output_dir) =
                execute_attempt(&env, prepared, attempt_id, &data_root).await;
            let _ = done.send(Finished {
                task_id,
                attempt_id,
                attempt,
                result,
                output_dir,
                route,
                wait,
                rendered,
                produces,
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
