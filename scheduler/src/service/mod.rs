//! The scheduler and worker services: runs driven through the database, not by one process.
//!
//! [`SchedulerService`] moves every ownerless run forward with the same pure [`decide`] the
//! in-process runner uses, but leaves dispatch to workers: it queues ready tasks, propagates
//! failures, finishes runs, and reaps tasks whose worker stopped renewing its lease. Any number
//! of schedulers may run at once: every write is fenced, and a `Conflict` only means another
//! scheduler made the same move first.
//!
//! The worker (`amdahl_runner::Worker`) claims queued tasks (best first; `FOR UPDATE SKIP LOCKED` on PostgreSQL), holds
//! a lease it renews while they run, executes them with the task's timeout, and reports each
//! end fenced by the attempt number, so a report after its lease was reaped changes nothing.
//!
//! Both decide service runs with [`advance`]: schedulers on every pass, a worker right after
//! one of the run's tasks ended (see `amdahl_runner::HAND_OFF_MAX_TASKS`).

mod scheduler;

pub use scheduler::SchedulerService;

use std::collections::HashMap;

use amdahl_dags::Dag;

use crate::Clock;
use crate::backfill::{self, DateView};
use crate::decide::{Command, Dispatcher, decide};
use crate::runs::{logical_text, past_of, pool_free_for, timeout_at_ms, timeout_reason, view_of};
use crate::state::{RunState, TaskState};
use crate::store::{
    BackfillRecord, Claim, NextClaim, RunRecord, Store, StoreError, TaskRecord, Topic,
};

/// Why a task was skipped by its trigger rule (the note on its state change).
pub const SKIPPED_BY_RULE: &str =
    "skipped: its trigger rule cannot be met by how its upstream tasks ended";

/// Treats "someone else already did it" as done.
fn tolerate_conflict(result: Result<(), StoreError>) -> Result<(), StoreError> {
    match result {
        Err(StoreError::Conflict(_)) => Ok(()),
        other => other,
    }
}

/// A backfill's dates with the runs each has: its own and the newest other one.
pub async fn backfill_plan(
    store: &Store,
    dag: &Dag,
    backfill: &BackfillRecord,
) -> Result<Vec<DateView>, StoreError> {
    let parse = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| StoreError::Corrupt(format!("backfill {}: `{text}`: {e}", backfill.id)))
    };
    let cron = dag.cron().ok_or_else(|| {
        StoreError::Corrupt(format!(
            "backfill {}: the DAG has no valid schedule",
            backfill.id
        ))
    })?;
    let dates = backfill::dates(
        &cron,
        parse(&backfill.from_date)?,
        parse(&backfill.to_date)?,
    )
    .map_err(StoreError::Corrupt)?;
    let runs = store
        .dated_runs(&dag.id, &backfill.from_date, &backfill.to_date)
        .await?;
    Ok(dates
        .into_iter()
        .map(|logical| {
            let text = logical_text(logical);
            let of_date = runs.iter().filter(|r| r.logical_date == text);
            let own = of_date
                .clone()
                .filter(|r| r.backfill_id == Some(backfill.id))
                .map(|r| r.state)
                .next_back();
            let other = of_date
                .filter(|r| r.backfill_id != Some(backfill.id))
                .map(|r| r.state)
                .next_back();
            DateView {
                logical,
                own,
                other,
            }
        })
        .collect())
}

/// Decides a service run just created, as a scheduler's pass would, so that its first tasks
/// are queued (and workers woken) without waiting for a scheduler to hear of it: what
/// `amdahl trigger` does after creating a run. A run that cannot start now (its DAG is
/// paused) or a decision that fails is left to the schedulers, which are signalled; every
/// move is fenced, so a scheduler deciding the same run at once changes nothing twice.
/// Returns whether the run was decided here.
pub async fn start_now(store: &Store, clock: &dyn Clock, run_id: i64) -> bool {
    let mut moved = Moved::default();
    let decided = async {
        let runs = store.service_runs(Some(run_id)).await?;
        let found = !runs.is_empty();
        for run in runs {
            advance(store, clock, run, false, &mut moved).await?;
        }
        Ok::<bool, StoreError>(found)
    }
    .await;
    if moved.queued > 0 {
        store.signal(Topic::Queued).await;
    }
    let decided = decided.unwrap_or(false);
    if moved.finished || !decided {
        store.signal(Topic::Progress).await;
    }
    decided
}

/// Applies one decision to a service run (as just read), leaving dispatch to workers. Both
/// schedulers and workers (right after a task of the run ends) call it; every move is
/// fenced, so two of them deciding the same run at once make each move once.
///
/// With `skip_if_settled`, a running run none of whose tasks waits for a decision (none
/// `scheduled` or `up_for_retry`, and some still unfinished) is left alone after one counting
/// query, without reading its tasks: a wide run's passes then cost little while its tasks run.
pub async fn advance(
    store: &Store,
    clock: &dyn Clock,
    run: RunRecord,
    skip_if_settled: bool,
    moved: &mut Moved,
) -> Result<(), StoreError> {
    if run.state.is_terminal() {
        return Ok(());
    }
    // A run to cancel or past its timeout has a decision to make whatever its tasks say.
    // (`service_runs` left out paused DAGs' runs, unless someone asked to cancel them.)
    let pressing = run.cancel_requested_at_ms.is_some()
        || timeout_at_ms(&run).is_some_and(|at| at <= clock.now_ms());
    if skip_if_settled && run.state == RunState::Running && !pressing {
        let (waiting, unfinished) = store.undecided_tasks(run.id).await?;
        if waiting == 0 && unfinished > 0 {
            return Ok(());
        }
    }
    let tasks = store.tasks(run.id).await?;
    advance_with(store, clock, run, tasks, None, moved).await
}

/// [`advance`] (without `skip_if_settled`) with the run's tasks already read, as a worker
/// reads them beside the run to save a round trip. The tasks may be read after the run:
/// every move is fenced by the state it leaves.
///
/// With `next`, the worker deciding after one of its tasks ended takes the task the decision
/// readies into the freed slot, when that decision readies exactly one (a chain's next link):
/// [`Store::claim_next`] claims it instead of queueing it, and [`Moved::claimed`] returns the
/// claim. Where that claim does not hold, the task is queued as usual.
pub async fn advance_with(
    store: &Store,
    clock: &dyn Clock,
    run: RunRecord,
    tasks: Vec<TaskRecord>,
    next: Option<&NextClaim<'_>>,
    moved: &mut Moved,
) -> Result<(), StoreError> {
    let run_id = run.id;
    let cancel = run.cancel_requested_at_ms.is_some();
    if run.state.is_terminal() {
        return Ok(());
    }
    let now = clock.now_ms();
    let decision = decide(
        &view_of(
            &run,
            &tasks,
            cancel,
            Dispatcher::Workers,
            pool_free_for(store, &tasks).await?,
            &past_of(store, &run, &tasks).await?,
        ),
        now,
    );
    let by_id: HashMap<&str, &TaskRecord> = tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
    // Tasks outside pools are queued together, one statement per state they leave.
    let mut batched: HashMap<TaskState, Vec<&str>> = HashMap::new();
    for command in &decision.commands {
        let result = match command {
            Command::StartRun => {
                store
                    .set_run_state(run_id, RunState::Queued, RunState::Running, now, None)
                    .await
            }
            Command::Queue(task_id) => {
                let Some(task) = by_id.get(task_id.as_str()) else {
                    continue;
                };
                match task.pool.as_deref() {
                    None => {
                        batched.entry(task.state).or_default().push(task_id);
                        continue;
                    }
                    Some(pool) => {
                        store
                            .queue_task(run_id, task_id, task.state, Some(pool), now)
                            .await
                    }
                }
            }
            Command::MarkUpstreamFailed(task_id) => {
                store
                    .set_task_state(
                        run_id,
                        task_id,
                        TaskState::Scheduled,
                        TaskState::UpstreamFailed,
                        now,
                        Some("an upstream task did not succeed"),
                    )
                    .await
            }
            Command::Skip(task_id) => {
                let note = by_id
                    .get(task_id.as_str())
                    .and_then(|t| t.skip_note.as_deref())
                    .unwrap_or(SKIPPED_BY_RULE);
                store
                    .set_task_state(
                        run_id,
                        task_id,
                        TaskState::Scheduled,
                        TaskState::Skipped,
                        now,
                        Some(note),
                    )
                    .await
            }
            Command::FinishRun(state) => {
                let note = (*state == RunState::Cancelled).then_some("cancelled by the user");
                let from = if run.state == RunState::Queued {
                    // Cancelled before it started: StartRun came first in this decision.
                    RunState::Running
                } else {
                    run.state
                };
                store.set_run_state(run_id, from, *state, now, note).await
            }
            // The run ends (cancelled, or past its `run_timeout`) and takes the task with it.
            Command::Cancel(task_id) | Command::TimeOut(task_id) => {
                let Some(t) = by_id.get(task_id.as_str()) else {
                    continue;
                };
                let cancel = matches!(command, Command::Cancel(_));
                let (state, reason) = if cancel {
                    (TaskState::Cancelled, "run cancelled".to_string())
                } else {
                    (TaskState::Failed, timeout_reason(&run))
                };
                match t.state {
                    // The worker sees its lease gone at its next renewal and stops.
                    TaskState::Running if cancel => {
                        store
                            .cancel_running_task(run_id, task_id, t.attempts, now)
                            .await
                    }
                    TaskState::Running => {
                        store
                            .time_out_running_task(run_id, task_id, t.attempts, now, &reason)
                            .await
                    }
                    from => {
                        store
                            .set_task_state(run_id, task_id, from, state, now, Some(&reason))
                            .await
                    }
                }
            }
            Command::TimeOutRun => {
                store
                    .set_run_state(
                        run_id,
                        run.state,
                        RunState::Failed,
                        now,
                        Some(&timeout_reason(&run)),
                    )
                    .await
            }
            // Workers claim queued tasks and enforce their timeouts.
            Command::Dispatch(_) | Command::Expire(_) => continue,
        };
        if result.is_ok() {
            match command {
                Command::Queue(_) => moved.queued += 1,
                Command::FinishRun(_) | Command::TimeOutRun => moved.finished = true,
                _ => {}
            }
        }
        tolerate_conflict(result)?;
    }
    let readies_one = batched.len() == 1 && moved.queued == 0;
    for (from, task_ids) in batched {
        if let (Some(next), TaskState::Scheduled, [only], true) =
            (next, from, task_ids.as_slice(), readies_one)
            && let Some(claim) = store.claim_next(next, run_id, only, now).await?
        {
            moved.claimed = Some(claim);
            continue;
        }
        moved.queued += store.queue_tasks(run_id, from, &task_ids, now).await?;
    }
    Ok(())
}

/// The one task a run's decision readies right after one of its tasks ended, where that is
/// all the decision does and it needs nothing but the run and its tasks (no pool's free
/// slots, no earlier run's states to read): the task [`advance_with`] would claim for the
/// deciding worker, with nothing else to write. A store deciding inside the end's
/// transaction asks this (see [`crate::store::FollowOn`]); `None` leaves the decision to
/// [`advance_with`].
pub fn lone_ready(run: &RunRecord, tasks: &[TaskRecord], now_ms: i64) -> Option<String> {
    let reads_more =
        |t: &TaskRecord| t.pool.is_some() || (t.depends_on_past && t.state == TaskState::Scheduled);
    if run.state.is_terminal() || tasks.iter().any(reads_more) {
        return None;
    }
    let view = view_of(
        run,
        tasks,
        run.cancel_requested_at_ms.is_some(),
        Dispatcher::Workers,
        Default::default(),
        &Default::default(),
    );
    // What advance_with acts on: workers dispatch, and expire their own tasks.
    let mut acts = decide(&view, now_ms)
        .commands
        .into_iter()
        .filter(|c| !matches!(c, Command::Dispatch(_) | Command::Expire(_)));
    match (acts.next(), acts.next()) {
        (Some(Command::Queue(task_id)), None) => tasks
            .iter()
            .any(|t| t.task_id == task_id && t.state == TaskState::Scheduled)
            .then_some(task_id),
        _ => None,
    }
}

/// What one pass of decisions did, for the signals sent after it.
#[derive(Default)]
pub struct Moved {
    /// How many tasks were queued: workers may claim them.
    pub queued: u64,
    /// The task claimed for the deciding worker instead of queued (see [`advance_with`]).
    pub claimed: Option<Claim>,
    /// Runs finished.
    pub finished: bool,
}

/// Loads the DAG version a run or backfill pinned, from the YAML the store kept.
pub async fn load_pinned(store: &Store, version_id: i64) -> Result<Dag, String> {
    let version = store
        .dag_version(version_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("DAG version {version_id} is missing"))?;
    amdahl_dags::load_bytes(
        &version.source_path,
        std::path::Path::new(&version.base_dir),
        version.yaml.as_bytes(),
    )
    .map_err(|e| format!("the pinned DAG version no longer loads:\n{}", e.render()))
}
