//! What the store takes and gives: plain records, and the row shapes they are read from.

use amdahl_dags::{DevicePreference, TriggerRule};
use amdahl_placement::Place;

use super::{Result, StoreError};
use crate::state::{AttemptState, RunState, TaskState};

/// Everything needed to create a run and its task instances.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub dag_id: String,
    pub trigger: TriggerKind,
    pub dag_version_id: i64,
    pub params_json: String,
    pub logical_date: String,
    pub max_active_tasks: i64,
    /// The process driving the run in-process; `None` for runs the scheduler service drives.
    pub owner: Option<String>,
    /// The backfill that made this run; it makes at most one run per logical date.
    pub backfill_id: Option<i64>,
    /// Whether its DAG version has notifiers: the run is then watched for events to notify.
    pub notify: bool,
    /// How long it may take from its start (`run_timeout`).
    pub run_timeout_ms: Option<i64>,
    pub now_ms: i64,
    pub tasks: Vec<NewTask>,
    /// For a run started by assets: the cursors it moves (fenced) and so the events that
    /// started it.
    pub assets: Vec<super::CursorMove>,
}

/// Why a run exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerKind {
    /// `amdahl run` or `amdahl trigger`.
    Manual,
    /// A cron tick; at most one run per DAG and logical date.
    Schedule,
    /// One date of a backfill; at most one run per backfill and logical date.
    Backfill,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Manual => "manual",
            TriggerKind::Schedule => "schedule",
            TriggerKind::Backfill => "backfill",
        }
    }
}

#[derive(Clone, Debug)]
pub struct NewTask {
    pub task_id: String,
    /// Where it asked to run: a `gpu` task is claimed only by a worker with a GPU.
    pub device: DevicePreference,
    pub kind: String,
    pub needs: Vec<String>,
    pub priority: i64,
    pub retries: i64,
    pub retry_delay_ms: i64,
    /// The longest wait of an exponential backoff; `None`: `retry_delay_ms` every time.
    pub max_retry_delay_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    /// The named pool whose slots this task takes while queued or running.
    pub pool: Option<String>,
    /// When it runs, given how its upstream tasks ended.
    pub trigger: TriggerRule,
    /// Why it is skipped in this run before it starts (its `when:` was false).
    pub skip_note: Option<String>,
    /// Waits for the same task of the previous run by logical date (`depends_on_past`, in a
    /// scheduled or backfilled run).
    pub depends_on_past: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub id: i64,
    pub dag_id: String,
    pub dag_version_id: i64,
    pub version_hash: String,
    pub state: RunState,
    pub params_json: String,
    pub logical_date: String,
    pub max_active_tasks: i64,
    pub owner: Option<String>,
    pub heartbeat_at_ms: Option<i64>,
    pub note: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// When `amdahl runs cancel` asked for the run to stop.
    pub cancel_requested_at_ms: Option<i64>,
    /// How long it may take from its start (`run_timeout`).
    pub run_timeout_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskRecord {
    pub task_id: String,
    pub kind: String,
    pub state: TaskState,
    pub needs: Vec<String>,
    pub priority: i64,
    pub retries: i64,
    pub retry_delay_ms: i64,
    /// The longest wait of an exponential backoff; `None`: `retry_delay_ms` every time.
    pub max_retry_delay_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub attempts: i64,
    pub retry_at_ms: Option<i64>,
    /// Where its latest attempt ran.
    pub device: Option<Place>,
    pub output_path: Option<String>,
    pub rows_out: Option<i64>,
    pub bytes_out: Option<i64>,
    pub error: Option<String>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub pool: Option<String>,
    pub trigger: TriggerRule,
    pub skip_note: Option<String>,
    pub depends_on_past: bool,
    /// A sensor's pokes that found nothing (attempts that are not tries: `attempts - pokes`
    /// is what retries count).
    pub pokes: i64,
    /// When the first poke of a sensor's current wait started (its timeout counts from
    /// there); `None` until a poke found nothing.
    pub waiting_since_ms: Option<i64>,
    /// A mapped task's instance (`task[3]`): its index, and its value as JSON text.
    pub map_index: Option<i64>,
    pub map_value: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRecord {
    pub id: i64,
    pub task_id: String,
    pub attempt: i64,
    pub state: AttemptState,
    pub device: Option<Place>,
    /// Why it ran where it did, when that is not what the task asked for.
    pub device_note: Option<String>,
    pub error: Option<String>,
    pub rows_out: Option<i64>,
    pub bytes_out: Option<i64>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// What placement predicted for it on the CPU and on the GPU (µs), when it decided.
    pub predicted_cpu_us: Option<i64>,
    pub predicted_gpu_us: Option<i64>,
    /// Where its time went (µs): data read and written, host↔device copies, compute.
    pub io_us: Option<i64>,
    pub transfer_us: Option<i64>,
    pub compute_us: Option<i64>,
    /// Where it was sent (`cpu`, `gpu`, `cluster`, `split into …`), decided once before it
    /// ran; `device` is where it ran. `None`: ended before it was routed, or recorded before
    /// routes were.
    pub route: Option<String>,
    /// What it ran after templating (see [`FinishAttempt::rendered`]).
    pub rendered: Option<String>,
    /// The physical plan a query ran.
    pub plan: Option<String>,
    /// When its start and its end were written, µs since the Unix epoch by the writing
    /// process's clock (see `wall_us`); `None` for attempts written before they were kept.
    pub started_at_us: Option<i64>,
    pub finished_at_us: Option<i64>,
}

/// What placement predicted for an attempt (see [`super::Store::record_prediction`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub cpu_us: Option<i64>,
    pub gpu_us: Option<i64>,
    /// The stage's main kind of work (`scan`, `gemm`, …).
    pub kind: Option<String>,
    pub cpu_factor: f64,
    pub gpu_factor: f64,
}

/// A successful attempt placement predicted, and what it took.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictedAttempt {
    pub kind: String,
    pub device: Option<Place>,
    pub cpu_us: Option<i64>,
    pub gpu_us: Option<i64>,
    pub cpu_factor: f64,
    pub gpu_factor: f64,
    pub took_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DagSummary {
    pub dag_id: String,
    pub paused: bool,
    pub latest_hash: String,
    pub source_path: String,
    pub runs: i64,
    pub last_run_state: Option<RunState>,
}

/// A recorded version of a DAG and the runs that used it (see [`super::Store::dag_versions_of`]).
#[derive(Clone, Debug, PartialEq)]
pub struct VersionSummary {
    pub id: i64,
    pub hash: String,
    pub source_path: String,
    pub recorded_at_ms: i64,
    pub runs: i64,
    pub last_run_id: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DagVersion {
    pub id: i64,
    pub dag_id: String,
    pub hash: String,
    pub source_path: String,
    pub base_dir: String,
    pub yaml: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    pub attempt: i64,
    pub stream: String,
    pub line: String,
}

/// How an attempt ended and what that does to its task.
#[derive(Clone, Debug)]
pub struct FinishAttempt {
    pub run_id: i64,
    pub task_id: String,
    pub attempt_id: i64,
    pub attempt: i64,
    pub attempt_state: AttemptState,
    pub task_state: TaskState,
    pub retry_at_ms: Option<i64>,
    pub device: Option<Place>,
    /// Why the attempt ran where it did, when not where it was asked to.
    pub device_note: Option<String>,
    pub output_path: Option<String>,
    pub rows_out: Option<i64>,
    pub bytes_out: Option<i64>,
    pub error: Option<String>,
    pub now_ms: i64,
    /// Where the attempt's time went (µs), when the executor measured it.
    pub io_us: Option<i64>,
    pub transfer_us: Option<i64>,
    pub compute_us: Option<i64>,
    /// Where the attempt was sent (see [`AttemptRecord::route`]).
    pub route: Option<String>,
    /// What the attempt ran after templating: the query, the command (secrets masked), the
    /// settings of other kinds; `None` for `empty` tasks.
    pub rendered: Option<String>,
    /// The physical plan a query ran (DataFusion's, and the GPU kernel plan).
    pub plan: Option<String>,
    /// The assets the task produces: a success records one event each, in the same
    /// transaction.
    pub produces: Vec<String>,
    /// A mapped task's expansion: its values (JSON texts), an instance each, created with the
    /// end in the same transaction (see [`super::Store::finish_attempt`]).
    pub mapped: Option<Vec<String>>,
}

/// A run as an attempt's end left it, read in the statement that recorded the end (see
/// [`super::Store::finish_and_read`]): what a worker's hand-off decides from.
#[derive(Clone, Debug)]
pub struct AfterEnd {
    /// The run, where a worker decides it (as [`super::Store::service_runs`] reads it): `None`
    /// when it ended, belongs to an `amdahl run` process, or its DAG is paused.
    pub run: Option<RunRecord>,
    /// Every task of the run, in DAG order, as the end left them (a task claimed after it, in
    /// `claimed`, still reads `scheduled` here).
    pub tasks: Vec<TaskRecord>,
    /// The task the end's transaction claimed for the worker (see [`super::FollowOn`]).
    pub claimed: Option<super::Claim>,
}

#[derive(sqlx::FromRow, serde::Deserialize)]
pub(super) struct TaskRow {
    task_id: String,
    kind: String,
    state: String,
    needs_json: String,
    priority: i64,
    retries: i64,
    retry_delay_ms: i64,
    timeout_ms: Option<i64>,
    attempts: i64,
    retry_at_ms: Option<i64>,
    device: Option<String>,
    output_path: Option<String>,
    rows_out: Option<i64>,
    bytes_out: Option<i64>,
    error: Option<String>,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    pool: Option<String>,
    trigger_rule: String,
    skip_note: Option<String>,
    max_retry_delay_ms: Option<i64>,
    depends_on_past: bool,
    pokes: i64,
    waiting_since_ms: Option<i64>,
    map_index: Option<i64>,
    map_value: Option<String>,
}

impl TaskRow {
    pub(super) fn into_record(self) -> Result<TaskRecord> {
        Ok(TaskRecord {
            state: TaskState::parse(&self.state)
                .ok_or_else(|| StoreError::Corrupt(format!("task state `{}`", self.state)))?,
            needs: serde_json::from_str(&self.needs_json)
                .map_err(|e| StoreError::Corrupt(format!("needs_json: {e}")))?,
            skip_note: self.skip_note,
            trigger: TriggerRule::parse(&self.trigger_rule).ok_or_else(|| {
                StoreError::Corrupt(format!("trigger rule `{}`", self.trigger_rule))
            })?,
            task_id: self.task_id,
            kind: self.kind,
            priority: self.priority,
            retries: self.retries,
            retry_delay_ms: self.retry_delay_ms,
            max_retry_delay_ms: self.max_retry_delay_ms,
            timeout_ms: self.timeout_ms,
            attempts: self.attempts,
            retry_at_ms: self.retry_at_ms,
            device: place_of(self.device)?,
            output_path: self.output_path,
            rows_out: self.rows_out,
            bytes_out: self.bytes_out,
            error: self.error,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            pool: self.pool,
            depends_on_past: self.depends_on_past,
            pokes: self.pokes,
            waiting_since_ms: self.waiting_since_ms,
            map_index: self.map_index,
            map_value: self.map_value,
        })
    }
}

#[derive(sqlx::FromRow, serde::Deserialize)]
pub(super) struct RunRow {
    id: i64,
    dag_id: String,
    dag_version_id: i64,
    hash: String,
    state: String,
    params_json: String,
    logical_date: String,
    max_active_tasks: i64,
    owner: Option<String>,
    heartbeat_at_ms: Option<i64>,
    note: Option<String>,
    created_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    cancel_requested_at_ms: Option<i64>,
    run_timeout_ms: Option<i64>,
}

impl RunRow {
    pub(super) fn into_record(self) -> Result<RunRecord> {
        Ok(RunRecord {
            state: RunState::parse(&self.state)
                .ok_or_else(|| StoreError::Corrupt(format!("run state `{}`", self.state)))?,
            id: self.id,
            dag_id: self.dag_id,
            dag_version_id: self.dag_version_id,
            version_hash: self.hash,
            params_json: self.params_json,
            logical_date: self.logical_date,
            max_active_tasks: self.max_active_tasks,
            owner: self.owner,
            heartbeat_at_ms: self.heartbeat_at_ms,
            note: self.note,
            created_at_ms: self.created_at_ms,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            cancel_requested_at_ms: self.cancel_requested_at_ms,
            run_timeout_ms: self.run_timeout_ms,
        })
    }
}

/// A stored device (`cpu`, `gpu`, `cluster`) as the place it names.
pub(super) fn place_of(text: Option<String>) -> Result<Option<Place>> {
    text.map(|t| Place::from_code(&t).ok_or_else(|| StoreError::Corrupt(format!("device `{t}`"))))
        .transpose()
}
