//! The scheduler and worker services: runs driven through the database, not by one process.
//!
//! [`SchedulerService`] moves every ownerless run forward with the same pure [`decide`] the
//! in-process runner uses, but leaves dispatch to workers: it queues ready tasks, propagates
//! failures, finishes runs, and reaps tasks whose worker stopped renewing its lease. Any number
//! of schedulers may run at once: every write is fenced, and a `Conflict` only means another
//! scheduler made the same move first.
//!
//! [`Worker`] claims queued tasks (best first; `FOR UPDATE SKIP LOCKED` on PostgreSQL), holds
//! a lease it renews while they run, executes them with the task's timeout, and reports each
//! end fenced by the attempt number, so a report after its lease was reaped changes nothing.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinSet;

use amdahl_dags::{Dag, DevicePreference, RunContext};

use crate::Clock;
use crate::attempt::{AttemptEnd, AttemptEnv, execute_attempt, prepare_stage, record_result};
use crate::backfill::{self, DateView, Reprocess, Step};
use crate::decide::{Command, Dispatcher, after_failure, decide};
use crate::runner::{
    RunOrigin, create_run, logical_text, pool_free_for, record_version, state_of, task_view,
    view_of,
};
use crate::state::{AttemptState, RunState, TaskState};
use crate::store::{
    BackfillRecord, Claim, ClaimRequest, ReapLease, RunRecord, Store, StoreError, Topic, WorkerInfo,
};
use crate::triggers::{ScheduleView, due_runs};

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
    let cron = dag
        .schedule
        .as_deref()
        .and_then(|s| amdahl_dags::schedule::parse_cron(s).ok())
        .ok_or_else(|| {
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

/// Applies one decision to a service run (as just read), leaving dispatch to workers. Both
/// schedulers and workers (right after a task of the run ends) call it; every move is
/// fenced, so two of them deciding the same run at once make each move once.
pub(crate) async fn advance(
    store: &Store,
    clock: &dyn Clock,
    run: RunRecord,
    moved: &mut Moved,
) -> Result<(), StoreError> {
    let run_id = run.id;
    // `service_runs` left out paused DAGs' runs, unless someone asked to cancel them.
    let cancel = run.cancel_requested_at_ms.is_some();
    if run.state.is_terminal() {
        return Ok(());
    }
    let tasks = store.tasks(run_id).await?;
    let now = clock.now_ms();
    let decision = decide(
        &view_of(
            run.state,
            &tasks,
            run.max_active_tasks,
            cancel,
            Dispatcher::Workers,
            pool_free_for(store, &tasks).await?,
        ),
        now,
    );
    for command in decision.commands {
        let result = match &command {
            Command::StartRun => {
                store
                    .set_run_state(run_id, RunState::Queued, RunState::Running, now, None)
                    .await
            }
            Command::Queue(task_id) => {
                let from = state_of(&tasks, task_id);
                let pool = tasks
                    .iter()
                    .find(|t| &t.task_id == task_id)
                    .and_then(|t| t.pool.as_deref());
                store.queue_task(run_id, task_id, from, pool, now).await
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
            Command::Cancel(task_id) => {
                let record = tasks.iter().find(|t| &t.task_id == task_id);
                match record {
                    Some(t) if t.state == TaskState::Running => {
                        // The worker sees its lease gone at its next renewal and stops.
                        store
                            .cancel_running_task(run_id, task_id, t.attempts, now)
                            .await
                    }
                    Some(t) => {
                        store
                            .set_task_state(
                                run_id,
                                task_id,
                                t.state,
                                TaskState::Cancelled,
                                now,
                                Some("run cancelled"),
                            )
                            .await
                    }
                    None => continue,
                }
            }
            // Workers claim queued tasks and enforce their timeouts.
            Command::Dispatch(_) | Command::Expire(_) => continue,
        };
        if result.is_ok() {
            match command {
                Command::Queue(_) => moved.queued = true,
                Command::FinishRun(_) => moved.finished = true,
                _ => {}
            }
        }
        tolerate_conflict(result)?;
    }
    Ok(())
}

/// What one pass of decisions did, for the signals sent after it.
#[derive(Default)]
pub(crate) struct Moved {
    queued: bool,
    finished: bool,
}

/// Drives ownerless runs, creates cron runs for the DAGs in a folder, reaps expired leases.
pub struct SchedulerService {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// How often to look for work.
    pub poll: Duration,
    /// Where DAG files live; `None` schedules nothing by cron.
    pub dags_folder: Option<PathBuf>,
    /// What each DAG file held when last read, by path.
    files: Mutex<HashMap<PathBuf, KnownFile>>,
}

/// A DAG file as last read: its modification time and, if it was valid, the DAG.
struct KnownFile {
    modified: Option<std::time::SystemTime>,
    dag: Option<Arc<Dag>>,
}

impl SchedulerService {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        poll: Duration,
        dags_folder: Option<PathBuf>,
    ) -> Self {
        SchedulerService {
            store,
            clock,
            poll,
            dags_folder,
            files: Mutex::new(HashMap::new()),
        }
    }

    /// Runs until `shutdown` resolves. A [`Topic::Progress`] signal (a run created, an attempt
    /// ended) makes it decide at once; cron, DAG files and leases are looked at every `poll`.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), StoreError> {
        tokio::pin!(shutdown);
        let mut progress = self.store.subscribe(Topic::Progress).await?;
        let mut next_tick = tokio::time::Instant::now();
        loop {
            let pass = tokio::time::Instant::now();
            if pass >= next_tick {
                self.tick().await?;
                next_tick = tokio::time::Instant::now() + self.poll;
            } else {
                self.advance_runs().await?;
            }
            // Rest as long as the pass took before the next one: a stream of signals (a wide
            // run finishing thousands of tasks) then costs at most half a core, and every
            // signal that comes meanwhile is answered by the next pass.
            let spent = pass.elapsed().min(Duration::from_millis(100));
            tokio::select! {
                _ = tokio::time::sleep(spent) => {}
                _ = &mut shutdown => return Ok(()),
            }
            let until_tick = next_tick.saturating_duration_since(tokio::time::Instant::now());
            tokio::select! {
                _ = progress.wait(until_tick) => {}
                _ = &mut shutdown => return Ok(()),
            }
        }
    }

    /// One pass: cron runs that are due, every unfinished service run, expired leases.
    pub async fn tick(&self) -> Result<(), StoreError> {
        self.schedule_due_runs().await?;
        self.advance_runs().await?;
        self.reap_expired_leases().await
    }

    /// Decides every unfinished service run until nothing changes, then wakes workers if
    /// tasks were queued and waiters if runs finished.
    async fn advance_runs(&self) -> Result<(), StoreError> {
        let mut moved = Moved::default();
        // One decision per run and pass: `decide` already follows a cascade (a failure
        // marking every downstream task) within one decision. A move that lost a race to
        // another scheduler is looked at again on the next pass.
        for run in self.store.service_runs(None).await? {
            advance(&self.store, self.clock.as_ref(), run, &mut moved).await?;
        }
        if moved.queued {
            self.store.signal(Topic::Queued).await;
        }
        if moved.finished {
            self.store.signal(Topic::Progress).await;
        }
        self.run_backfills().await
    }

    /// Creates the runs each unfinished backfill wants now (its free slots, oldest dates
    /// first) and finishes backfills that have nothing left. Another scheduler creating the
    /// same run first is a `Conflict`, which is fine.
    async fn run_backfills(&self) -> Result<(), StoreError> {
        let backfills = self.store.running_backfills().await?;
        if backfills.is_empty() {
            return Ok(());
        }
        let mut created = false;
        for backfill in backfills {
            let now = self.clock.now_ms();
            let dag = match load_pinned(&self.store, backfill.dag_version_id).await {
                Ok(dag) => dag,
                Err(e) => {
                    eprintln!("scheduler: backfill {} fails: {e}", backfill.id);
                    tolerate_conflict(
                        self.store
                            .finish_backfill(backfill.id, RunState::Failed, now)
                            .await,
                    )?;
                    continue;
                }
            };
            let plan = backfill_plan(&self.store, &dag, &backfill).await?;
            let reprocess = Reprocess::parse(&backfill.reprocess).unwrap_or(Reprocess::None);
            match backfill::step(&plan, reprocess, backfill.max_active_runs.max(1) as usize) {
                Step::Wait => {}
                Step::Finish(state) => {
                    tolerate_conflict(self.store.finish_backfill(backfill.id, state, now).await)?;
                    eprintln!(
                        "scheduler: backfill {} of `{}` {state}",
                        backfill.id, dag.id
                    );
                    created = true;
                }
                Step::Create(dates) => {
                    let params = serde_json::from_str(&backfill.params_json).unwrap_or_default();
                    for logical in dates {
                        let origin = RunOrigin::Backfill {
                            backfill_id: backfill.id,
                            logical,
                        };
                        match create_run(&self.store, self.clock.as_ref(), &dag, &params, origin)
                            .await
                        {
                            Ok(_) | Err(StoreError::Conflict(_)) => created = true,
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        if created {
            self.store.signal(Topic::Progress).await;
        }
        Ok(())
    }

    /// Re-reads changed DAG files (recording new versions, reporting invalid files once) and
    /// returns the valid DAGs, one per id.
    async fn sync_dags(&self) -> Result<Vec<Arc<Dag>>, StoreError> {
        let Some(folder) = &self.dags_folder else {
            return Ok(Vec::new());
        };
        let mut files = self.files.lock().await;
        let found = amdahl_dags::discover::dag_files(std::slice::from_ref(folder));
        files.retain(|path, _| found.contains(path));
        for path in found {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            if files
                .get(&path)
                .is_some_and(|known| known.modified == modified)
            {
                continue;
            }
            let problems = match amdahl_dags::load_file(&path) {
                Ok(dag) => {
                    let problems = amdahl_executors::check::check_sql(&dag).await;
                    if problems.is_empty() {
                        Ok(dag)
                    } else {
                        Err(problems.len())
                    }
                }
                Err(e) => Err(e.diagnostics.len()),
            };
            let dag = match problems {
                Ok(dag) => Some(dag),
                Err(count) => {
                    eprintln!(
                        "scheduler: skipping {}: {count} problem(s); `amdahl dags validate {}` shows them",
                        path.display(),
                        path.display()
                    );
                    None
                }
            };
            if let Some(dag) = &dag {
                record_version(&self.store, dag, self.clock.now_ms()).await?;
            }
            files.insert(
                path,
                KnownFile {
                    modified,
                    dag: dag.map(Arc::new),
                },
            );
        }
        let mut seen = std::collections::HashSet::new();
        let mut dags = Vec::new();
        let mut paths: Vec<_> = files.keys().cloned().collect();
        paths.sort();
        for path in paths {
            if let Some(dag) = files.get(&path).and_then(|k| k.dag.clone()) {
                if seen.insert(dag.id.clone()) {
                    dags.push(dag);
                } else {
                    eprintln!(
                        "scheduler: {} defines DAG `{}` again; ignored",
                        path.display(),
                        dag.id
                    );
                }
            }
        }
        Ok(dags)
    }

    /// Creates the cron runs that are due (see `triggers`); a run another scheduler created
    /// first is a `Conflict`, which is fine.
    async fn schedule_due_runs(&self) -> Result<(), StoreError> {
        for dag in self.sync_dags().await? {
            let Some(schedule) = &dag.schedule else {
                continue;
            };
            let Ok(cron) = amdahl_dags::schedule::parse_cron(schedule) else {
                continue;
            };
            if self.store.is_paused(&dag.id).await? {
                continue;
            }
            let (last, active) = self.store.schedule_state(&dag.id).await?;
            let last_logical = last
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc));
            // Without a start date there is nothing to catch up from.
            let start = dag
                .start_date
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(chrono::DateTime::UNIX_EPOCH, |d| d.and_utc());
            let view = ScheduleView {
                cron: &cron,
                start,
                catchup: dag.catchup && dag.start_date.is_some(),
                last_logical,
                active_runs: active.max(0) as usize,
                max_active_runs: dag.max_active_runs.unwrap_or(16) as usize,
            };
            let now =
                chrono::DateTime::from_timestamp_millis(self.clock.now_ms()).unwrap_or_default();
            for tick in due_runs(&view, now, 64) {
                let origin = RunOrigin::Scheduled(tick);
                match create_run(&self.store, self.clock.as_ref(), &dag, &dag.params, origin).await
                {
                    Ok(run_id) => eprintln!("scheduler: run {run_id} of `{}` for {tick}", dag.id),
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    async fn reap_expired_leases(&self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        for lease in self.store.expired_leases(now).await? {
            let tasks = self.store.tasks(lease.run_id).await?;
            let Some(record) = tasks.iter().find(|t| t.task_id == lease.task_id) else {
                continue;
            };
            let (task_state, retry_at_ms) = after_failure(&task_view(record), now);
            let reason = format!(
                "worker {} stopped renewing its lease",
                lease.owner.as_deref().unwrap_or("(unknown)")
            );
            self.store
                .reap_lease(&ReapLease {
                    run_id: lease.run_id,
                    task_id: lease.task_id.clone(),
                    attempt: lease.attempt,
                    task_state,
                    retry_at_ms,
                    reason,
                    now_ms: now,
                })
                .await?;
        }
        Ok(())
    }
}

/// A worker decides a run itself after one of its tasks ends (instead of leaving that to a
/// scheduler) only when the task has downstream tasks and the DAG has at most this many
/// tasks: the decision reads every task of the run, so for wide runs the scheduler's
/// coalesced passes cost less than one decision per finished task.
pub const HAND_OFF_MAX_TASKS: usize = 500;

/// Who a worker is and what it has.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This worker's identity in leases, attempts and the `workers` table.
    pub owner: String,
    pub host: String,
    pub slots: usize,
    pub lease: Duration,
    /// Whether this worker takes tasks that asked for `device: gpu`.
    pub has_gpu: bool,
    pub memory_bytes: u64,
}

/// Claims and executes queued tasks.
pub struct Worker {
    pub env: AttemptEnv,
    pub data_root: PathBuf,
    pub config: WorkerConfig,
    pub poll: Duration,
    /// DAG versions already loaded, by version id.
    dags: Mutex<HashMap<i64, Arc<Dag>>>,
    /// Runs seen lately, by id: what an attempt reads of a run (version, params, logical
    /// date) never changes, so a chain of tasks reads it once.
    runs: std::sync::Mutex<HashMap<i64, Arc<RunRecord>>>,
}

impl Worker {
    pub fn new(env: AttemptEnv, data_root: PathBuf, mut config: WorkerConfig) -> Self {
        config.slots = config.slots.max(1);
        Worker {
            env,
            data_root,
            config,
            poll: Duration::from_millis(100),
            dags: Mutex::new(HashMap::new()),
            runs: std::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn advertise(&self, started_at_ms: i64) -> Result<(), StoreError> {
        let c = &self.config;
        self.env
            .store
            .register_worker(&WorkerInfo {
                worker_id: c.owner.clone(),
                host: c.host.clone(),
                slots: c.slots as i64,
                gpus: i64::from(c.has_gpu),
                memory_bytes: c.memory_bytes.min(i64::MAX as u64) as i64,
                started_at_ms,
                heartbeat_at_ms: self.env.clock.now_ms(),
            })
            .await
    }

    /// Runs until `shutdown` resolves; stages still running then are stopped, and their leases
    /// run out so that a scheduler retries them elsewhere.
    pub async fn run(
        self: Arc<Self>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StoreError> {
        tokio::pin!(shutdown);
        let mut running = JoinSet::new();
        let lease_ms = self.config.lease.as_millis() as i64;
        let mut renew = tokio::time::interval(self.config.lease / 3);
        let started_at_ms = self.env.clock.now_ms();
        let mut queued = self.env.store.subscribe(Topic::Queued).await?;
        // The stage of each claimed task, to stop it if the task is cancelled.
        let mut stages: HashMap<(i64, String), tokio::task::AbortHandle> = HashMap::new();
        loop {
            let mut free = self.config.slots.saturating_sub(running.len());
            if free > 0 {
                let claims = self
                    .env
                    .store
                    .claim_tasks(&ClaimRequest {
                        owner: &self.config.owner,
                        has_gpu: self.config.has_gpu,
                        limit: free as i64,
                        lease_ms,
                        now_ms: self.env.clock.now_ms(),
                    })
                    .await?;
                free -= claims.len();
                for claim in claims {
                    let worker = self.clone();
                    let key = (claim.run_id, claim.task_id.clone());
                    let stage = running.spawn(async move { worker.attempt(claim).await });
                    stages.insert(key, stage);
                }
            }
            tokio::select! {
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok(key) = done {
                        stages.remove(&key);
                    }
                }
                // With every slot busy, new work can wait for a slot to free up.
                _ = queued.wait(self.poll), if free > 0 => {}
                _ = renew.tick() => {
                    let held = self.env.store.extend_leases(&self.config.owner, lease_ms, self.env.clock.now_ms()).await?;
                    // A task no longer held was cancelled or reaped: stop its stage.
                    stages.retain(|key, stage: &mut tokio::task::AbortHandle| {
                        let keep = held.contains(key);
                        if !keep {
                            stage.abort();
                        }
                        keep
                    });
                    self.advertise(started_at_ms).await?;
                }
                _ = &mut shutdown => {
                    running.abort_all();
                    return Ok(());
                }
            }
        }
    }

    /// Runs one claimed attempt; returns its (run, task) key.
    async fn attempt(&self, claim: Claim) -> (i64, String) {
        let handed_off = match self.attempt_inner(&claim).await {
            Ok(true) => self.hand_off(claim.run_id).await,
            Ok(false) => false,
            Err(e) => {
                eprintln!(
                    "worker {}: run {} task {} attempt {}: {e}",
                    self.config.owner, claim.run_id, claim.task_id, claim.attempt
                );
                false
            }
        };
        if !handed_off {
            self.env.store.signal(Topic::Progress).await;
        }
        (claim.run_id, claim.task_id)
    }

    /// Decides the run right after one of its tasks ended, as a scheduler would (Airflow calls
    /// this the mini scheduler): the next task is queued, and this worker claims it as soon as
    /// this returns, without a round of signals through a scheduler. Returns whether that
    /// worked; if not, a scheduler is signalled to do it.
    async fn hand_off(&self, run_id: i64) -> bool {
        let store = &self.env.store;
        let mut moved = Moved::default();
        let decided = async {
            for run in store.service_runs(Some(run_id)).await? {
                advance(store, self.env.clock.as_ref(), run, &mut moved).await?;
            }
            Ok::<(), StoreError>(())
        }
        .await;
        if let Err(e) = decided {
            eprintln!("worker {}: deciding run {run_id}: {e}", self.config.owner);
            return false;
        }
        // Other workers and waiters hear about it without holding up this worker's claim.
        if moved.queued || moved.finished {
            let store = store.clone();
            tokio::spawn(async move {
                if moved.queued {
                    store.signal(Topic::Queued).await;
                }
                if moved.finished {
                    store.signal(Topic::Progress).await;
                }
            });
        }
        true
    }

    async fn dag(&self, version_id: i64) -> Result<Arc<Dag>, String> {
        let mut dags = self.dags.lock().await;
        if let Some(dag) = dags.get(&version_id) {
            return Ok(dag.clone());
        }
        let dag = Arc::new(load_pinned(&self.env.store, version_id).await?);
        dags.insert(version_id, dag.clone());
        Ok(dag)
    }

    async fn run_record(&self, run_id: i64) -> Result<Arc<RunRecord>, StoreError> {
        if let Some(run) = self.lock_runs().get(&run_id) {
            return Ok(run.clone());
        }
        let run = Arc::new(
            self.env
                .store
                .run(run_id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?,
        );
        let mut runs = self.lock_runs();
        if runs.len() >= 1_024 {
            runs.clear();
        }
        runs.insert(run_id, run.clone());
        Ok(run)
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<RunRecord>>> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the attempt and reports it; returns whether this worker should decide the run
    /// itself now (see [`HAND_OFF_MAX_TASKS`]).
    async fn attempt_inner(&self, claim: &Claim) -> Result<bool, StoreError> {
        let store = &self.env.store;
        let run = self.run_record(claim.run_id).await?;
        let loaded = self.dag(run.dag_version_id).await;
        let params = serde_json::from_str(&run.params_json).unwrap_or_default();
        let hand_off = loaded.as_ref().is_ok_and(|dag| {
            dag.tasks.len() <= HAND_OFF_MAX_TASKS
                && dag.tasks.iter().any(|t| t.needs.contains(&claim.task_id))
        });
        let (prepared, timeout, gpu) = match &loaded {
            Ok(dag) => {
                let context = RunContext {
                    dag_id: dag.id.clone(),
                    run_id: run.id,
                    logical_date: run.logical_date.clone(),
                    params,
                };
                let task = dag.task(&claim.task_id);
                (
                    prepare_stage(
                        dag,
                        &context,
                        &claim.task_id,
                        claim.attempt,
                        &self.data_root,
                    ),
                    task.and_then(|t| t.timeout),
                    task.is_some_and(|t| t.device == DevicePreference::Gpu),
                )
            }
            Err(e) => (Err(e.clone()), None, false),
        };
        let execution = execute_attempt(&self.env, prepared, claim.attempt_id, gpu);
        let (attempt_state, result) = match timeout {
            Some(limit) => match tokio::time::timeout(limit, execution).await {
                Ok(done) => outcome(done),
                Err(_) => (
                    AttemptState::TimedOut,
                    Err(format!(
                        "timed out after {}",
                        amdahl_dags::model::format_duration(limit)
                    )),
                ),
            },
            None => outcome(execution.await),
        };
        let now = self.env.clock.now_ms();
        let (task_state, retry_at_ms) = if result.is_ok() {
            (TaskState::Success, None)
        } else {
            let record = store
                .task(claim.run_id, &claim.task_id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("task {}", claim.task_id)))?;
            after_failure(&task_view(&record), now)
        };
        let end = AttemptEnd {
            run_id: claim.run_id,
            task_id: &claim.task_id,
            attempt_id: claim.attempt_id,
            attempt: claim.attempt,
            attempt_state,
            task_state,
            retry_at_ms,
            now,
        };
        match record_result(store, &end, result).await.map(|()| hand_off) {
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(
                "the task was cancelled, or its lease lost, before the attempt ended; its report was refused".into(),
            )),
            other => other,
        }
    }
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

type Outcome = (
    AttemptState,
    Result<(amdahl_executors::StageOutcome, Option<PathBuf>), String>,
);

fn outcome(
    (result, output_dir): (
        Result<amdahl_executors::StageOutcome, amdahl_executors::StageError>,
        Option<PathBuf>,
    ),
) -> Outcome {
    match result {
        Ok(stage) => (AttemptState::Success, Ok((stage, output_dir))),
        Err(e) => (AttemptState::Failed, Err(e.to_string())),
    }
}
