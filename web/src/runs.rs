//! Runs and their tasks: the runs list, a run a page of tasks at a time, one task with its
//! attempts and inputs, logs, and the changes (cancel, clear).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use amdahl_scheduler::store::{
    AttemptRecord, NotificationRecord, RunRecord, StateCount, TaskRecord,
};
use amdahl_scheduler::{Clock, RunState, SystemClock};

use crate::auth::Caller;
use crate::extract::{ErrorDto, optional_json, page_limit, path_error};
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{run_id}", get(run))
        .route("/api/v1/runs/{run_id}/cancel", post(cancel))
        .route("/api/v1/runs/{run_id}/tasks/{task_id}", get(task))
        .route("/api/v1/runs/{run_id}/tasks/{task_id}/logs", get(logs))
        .route(
            "/api/v1/runs/{run_id}/tasks/{task_id}/preview",
            get(preview),
        )
        .route("/api/v1/runs/{run_id}/tasks/{task_id}/clear", post(clear))
}

/// A run.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunDto {
    pub run_id: i64,
    pub dag_id: String,
    pub state: String,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    pub logical_date: String,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub note: Option<String>,
    pub cancel_requested: bool,
    /// The DAG version it ran (see `/api/v1/dags/{dag_id}/versions/{version_id}`).
    pub dag_version_id: i64,
}

impl From<RunRecord> for RunDto {
    fn from(r: RunRecord) -> RunDto {
        RunDto {
            dag_version_id: r.dag_version_id,
            run_id: r.id,
            dag_id: r.dag_id,
            state: r.state.to_string(),
            params: serde_json::from_str(&r.params_json).unwrap_or(serde_json::Value::Null),
            logical_date: r.logical_date,
            created_at_ms: r.created_at_ms,
            started_at_ms: r.started_at_ms,
            finished_at_ms: r.finished_at_ms,
            note: r.note,
            cancel_requested: r.cancel_requested_at_ms.is_some(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    dag: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
    before: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/runs", params(
    ("dag" = Option<String>, Query, description = "only this DAG's runs"),
    ("state" = Option<String>, Query, pattern = "^(queued|running|success|failed|cancelled)$", description = "only runs in this state: queued, running, success, failed or cancelled"),
    ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "at most this many, newest first (1–1000, default 100)"),
    ("before" = Option<i64>, Query, description = "only runs older than this run id (the next page)")),
    responses((status = 200, body = [RunDto]), (status = 400, body = ErrorDto)))]
pub(crate) async fn list_runs(
    _: Caller,
    State(state): State<AppState>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<Vec<RunDto>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit("limit", query.limit, 100)?;
    let wanted = match query.state.as_deref() {
        None => None,
        Some(text) => Some(RunState::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`state` must be one of {}; found `{text}`",
                RunState::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
    };
    let runs = state
        .store
        .runs_before(query.dag.as_deref(), wanted, query.before, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(runs.into_iter().map(RunDto::from).collect()))
}

/// A task of a run.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TaskDto {
    pub task_id: String,
    pub kind: String,
    pub state: String,
    pub needs: Vec<String>,
    pub attempts: i64,
    /// Where its last attempt ran: `cpu` or `gpu`.
    pub device: Option<String>,
    pub rows_out: Option<i64>,
    pub bytes_out: Option<i64>,
    pub error: Option<String>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub pool: Option<String>,
    /// When it runs, given how its upstream tasks ended: `all_success` (the default),
    /// `all_done`, `all_failed`, `one_failed`, `one_success`, `none_failed`,
    /// `none_failed_min_one_success` or `always`.
    pub trigger: String,
    /// Whether, in a scheduled or backfilled run, it waits for the same task of the previous
    /// such run to have succeeded or been skipped.
    pub depends_on_past: bool,
    /// A sensor (`wait:`): its pokes that found nothing so far (attempts `rescheduled`).
    pub pokes: i64,
    /// A sensor waiting (`up_for_retry`): when it pokes next.
    pub retry_at_ms: Option<i64>,
    /// A sensor: when the first poke of its wait started (its timeout counts from there).
    pub waiting_since_ms: Option<i64>,
    /// An instance of a mapped task (`task[3]`): its index.
    pub map_index: Option<i64>,
    /// An instance of a mapped task: its value (JSON), what its templates saw.
    pub map_value: Option<serde_json::Value>,
}

impl From<TaskRecord> for TaskDto {
    fn from(t: TaskRecord) -> TaskDto {
        TaskDto {
            task_id: t.task_id,
            kind: t.kind,
            state: t.state.to_string(),
            needs: t.needs,
            attempts: t.attempts,
            device: t.device.map(|d| d.code().to_string()),
            rows_out: t.rows_out,
            bytes_out: t.bytes_out,
            error: t.error,
            started_at_ms: t.started_at_ms,
            finished_at_ms: t.finished_at_ms,
            pool: t.pool,
            trigger: t.trigger.name().to_string(),
            depends_on_past: t.depends_on_past,
            pokes: t.pokes,
            retry_at_ms: t.retry_at_ms,
            waiting_since_ms: t.waiting_since_ms,
            map_index: t.map_index,
            map_value: t.map_value.and_then(|v| serde_json::from_str(&v).ok()),
        }
    }
}

/// One attempt of a task: where it ran, why, what placement predicted and where the time
/// went.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AttemptDto {
    pub task_id: String,
    pub attempt: i64,
    pub state: String,
    /// Where it was sent, decided once before it ran (`cpu`, `gpu`, `cluster`, `split into
    /// N parts over …`); `device` is where it ran (a GPU route that fell back ran on the CPU).
    /// Absent for an attempt that ended before it was routed.
    pub route: Option<String>,
    /// What it ran after templating: the query, the command (secrets masked), the settings
    /// of other kinds; absent for `empty` tasks.
    pub rendered: Option<String>,
    /// The physical plan a query ran (DataFusion's; then the GPU kernel plan when it ran
    /// there).
    pub plan: Option<String>,
    pub device: Option<String>,
    /// Why it ran there (placement's reason, a fallback, how a split task was shared).
    pub device_note: Option<String>,
    pub error: Option<String>,
    pub rows_out: Option<i64>,
    pub bytes_out: Option<i64>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub predicted_cpu_us: Option<i64>,
    pub predicted_gpu_us: Option<i64>,
    pub io_us: Option<i64>,
    pub transfer_us: Option<i64>,
    pub compute_us: Option<i64>,
}

impl From<AttemptRecord> for AttemptDto {
    fn from(a: AttemptRecord) -> AttemptDto {
        AttemptDto {
            task_id: a.task_id,
            attempt: a.attempt,
            state: a.state.to_string(),
            route: a.route,
            rendered: a.rendered,
            plan: a.plan,
            device: a.device.map(|d| d.code().to_string()),
            device_note: a.device_note,
            error: a.error,
            rows_out: a.rows_out,
            bytes_out: a.bytes_out,
            started_at_ms: a.started_at_ms,
            finished_at_ms: a.finished_at_ms,
            predicted_cpu_us: a.predicted_cpu_us,
            predicted_gpu_us: a.predicted_gpu_us,
            io_us: a.io_us,
            transfer_us: a.transfer_us,
            compute_us: a.compute_us,
        }
    }
}

/// A run, how many of its tasks are in each state, and a page of its tasks (DAG order) with
/// their attempts.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    pub run: RunDto,
    /// Tasks by state, over the whole run whatever the page.
    pub counts: BTreeMap<String, i64>,
    /// Tasks in the run.
    pub task_count: i64,
    /// Position of this page's first task.
    pub tasks_from: i64,
    pub tasks: Vec<TaskDto>,
    /// Every attempt of this page's tasks, oldest first.
    pub attempts: Vec<AttemptDto>,
    /// `tasks_from` of the next page, when there is one.
    pub next_tasks_from: Option<i64>,
    /// Who was told about the run and its tasks (`on_failure`, `on_retry`, `on_success`),
    /// oldest first.
    pub notifications: Vec<NotificationDto>,
    /// The asset events that started the run (empty unless its DAG's `schedule:` waits on
    /// assets or on another DAG), oldest first, at most 100.
    pub caused_by: Vec<crate::assets::AssetEventDto>,
}

/// A notification about a run or one of its tasks, and how its delivery went.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct NotificationDto {
    /// Empty for the run's own end.
    pub task_id: String,
    /// `failure`, `retry` or `success`.
    pub event: String,
    /// `dag` (a notifier the DAG lists) or `task` (one the task lists).
    pub level: String,
    /// The attempt for a task's event, the run's finish time (ms) for the run's.
    pub occurrence: i64,
    /// `webhook` or `email`.
    pub kind: String,
    /// Where it went, secrets masked.
    pub target: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    /// The HTTP status or SMTP reply code of the last attempt.
    pub response_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

impl From<NotificationRecord> for NotificationDto {
    fn from(n: NotificationRecord) -> NotificationDto {
        NotificationDto {
            task_id: n.task_id,
            event: n.event,
            level: n.level,
            occurrence: n.occurrence,
            kind: n.kind,
            target: n.target,
            state: n.state.to_string(),
            attempts: n.attempts,
            response_code: n.response_code,
            last_error: n.last_error,
            created_at_ms: n.created_at_ms,
            finished_at_ms: n.finished_at_ms,
        }
    }
}

/// The largest page of a run's tasks; a 10,000-task run is ten requests, each quick.
pub const TASK_PAGE_MAX: i64 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    tasks_from: Option<i64>,
    tasks_limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}", params(("run_id" = i64, Path, minimum = 1, description = "the run's id"),
    ("tasks_from" = Option<i64>, Query, minimum = 0, description = "position of the first task (default 0)"),
    ("tasks_limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "tasks per page (1–1000, default 500)")),
    responses((status = 200, body = RunDetail), (status = 400, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub(crate) async fn run(
    _: Caller,
    State(state): State<AppState>,
    run_id: Result<Path<i64>, PathRejection>,
    query: Result<Query<RunQuery>, QueryRejection>,
) -> Result<Json<RunDetail>, ApiError> {
    let Path(run_id) = run_id.map_err(path_error)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let from = query.tasks_from.unwrap_or(0);
    if from < 0 {
        return Err(ApiError::bad_request(format!(
            "`tasks_from` must be 0 or more, not {from}"
        )));
    }
    let limit = page_limit("tasks_limit", query.tasks_limit, 500)?;
    let run = find_run(&state, run_id).await?;
    let (counts, task_count) = counts(&state, run_id).await?;
    let tasks = state
        .store
        .tasks_page(run_id, from, limit)
        .await
        .map_err(ApiError::internal)?;
    let attempts = state
        .store
        .attempts_at(run_id, from, from.saturating_add(limit))
        .await
        .map_err(ApiError::internal)?;
    let notifications = state
        .store
        .notifications(run_id)
        .await
        .map_err(ApiError::internal)?;
    let caused_by = state
        .store
        .run_causes(run.id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(RunDetail {
        caused_by: caused_by.into_iter().map(Into::into).collect(),
        run: run.into(),
        counts,
        task_count,
        tasks_from: from,
        tasks: tasks.into_iter().map(TaskDto::from).collect(),
        attempts: attempts.into_iter().map(AttemptDto::from).collect(),
        next_tasks_from: from.checked_add(limit).filter(|&next| next < task_count),
        notifications: notifications
            .into_iter()
            .map(NotificationDto::from)
            .collect(),
    }))
}

pub(crate) async fn find_run(state: &AppState, run_id: i64) -> Result<RunRecord, ApiError> {
    state
        .store
        .run(run_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no run {run_id}")))
}

/// A run's tasks by state, and how many there are.
pub(crate) async fn counts(
    state: &AppState,
    run_id: i64,
) -> Result<(BTreeMap<String, i64>, i64), ApiError> {
    let counts = state
        .store
        .state_counts(run_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(count_states(&counts))
}

pub(crate) fn count_states(counts: &[StateCount]) -> (BTreeMap<String, i64>, i64) {
    let total = counts.iter().map(|c| c.tasks).sum();
    let by_state = counts.iter().map(|c| (c.state.clone(), c.tasks)).collect();
    (by_state, total)
}

/// A task of a run with its attempts, the tasks it needs (their outputs are its inputs) and
/// the run it belongs to.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TaskDetail {
    pub run: RunDto,
    pub task: TaskDto,
    /// Its attempts, oldest first: where each ran, why, predicted and actual times.
    pub attempts: Vec<AttemptDto>,
    /// The tasks it needs, in DAG order.
    pub inputs: Vec<TaskDto>,
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}/tasks/{task_id}",
    params(("run_id" = i64, Path, minimum = 1, description = "the run's id"), ("task_id" = String, Path, description = "the task's id")), responses(
    (status = 200, body = TaskDetail), (status = 400, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub(crate) async fn task(
    _: Caller,
    State(state): State<AppState>,
    ids: Result<Path<(i64, String)>, PathRejection>,
) -> Result<Json<TaskDetail>, ApiError> {
    let Path((run_id, task_id)) = ids.map_err(path_error)?;
    let run = find_run(&state, run_id).await?;
    let task = find_task(&state, run_id, &task_id).await?;
    let names = std::slice::from_ref(&task_id);
    let attempts = state
        .store
        .attempts_of(run_id, names)
        .await
        .map_err(ApiError::internal)?;
    let inputs = state
        .store
        .tasks_named(run_id, &task.needs)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(TaskDetail {
        run: run.into(),
        task: task.into(),
        attempts: attempts.into_iter().map(AttemptDto::from).collect(),
        inputs: inputs.into_iter().map(TaskDto::from).collect(),
    }))
}

async fn find_task(state: &AppState, run_id: i64, task_id: &str) -> Result<TaskRecord, ApiError> {
    state
        .store
        .task(run_id, task_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no task `{task_id}` in run {run_id}")))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CancelDto {
    pub run_id: i64,
    /// False when the run had already finished.
    pub cancel_requested: bool,
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/cancel", params(("run_id" = i64, Path, minimum = 1, description = "the run's id")), responses(
    (status = 200, body = CancelDto), (status = 400, body = ErrorDto), (status = 403, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub(crate) async fn cancel(
    caller: Caller,
    State(state): State<AppState>,
    run_id: Result<Path<i64>, PathRejection>,
) -> Result<Json<CancelDto>, ApiError> {
    caller.admin()?;
    let Path(run_id) = run_id.map_err(path_error)?;
    find_run(&state, run_id).await?;
    let requested = state
        .store
        .request_cancel(run_id, SystemClock.now_ms())
        .await
        .map_err(ApiError::internal)?;
    state.store.signal(amdahl_scheduler::Topic::Progress).await;
    Ok(Json(CancelDto {
        run_id,
        cancel_requested: requested,
    }))
}

/// A log line of a task.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LogDto {
    pub attempt: i64,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    pub line: String,
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}/tasks/{task_id}/logs",
    params(("run_id" = i64, Path, minimum = 1, description = "the run's id"), ("task_id" = String, Path, description = "the task's id")), responses(
    (status = 200, body = [LogDto]), (status = 400, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub(crate) async fn logs(
    _: Caller,
    State(state): State<AppState>,
    ids: Result<Path<(i64, String)>, PathRejection>,
) -> Result<Json<Vec<LogDto>>, ApiError> {
    let Path((run_id, task_id)) = ids.map_err(path_error)?;
    find_task(&state, run_id, &task_id).await?;
    let lines = state
        .store
        .logs(run_id, &task_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        lines
            .into_iter()
            .map(|l| LogDto {
                attempt: l.attempt,
                stream: l.stream,
                line: l.line,
            })
            .collect(),
    ))
}

/// The first rows of a task's output.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PreviewDto {
    /// Each column's name and Arrow type.
    pub columns: Vec<ColumnDto>,
    /// The first rows, each cell as text (`NULL` for a null; at most 200 characters, longer
    /// ones end in `…`).
    pub rows: Vec<Vec<String>>,
    /// Rows in the whole output, as recorded when it was published.
    pub total_rows: Option<i64>,
    /// Bytes of the whole output, as recorded when it was published.
    pub bytes: Option<i64>,
    /// Parquet files the output is made of (the rows come from the first ones, in name order).
    pub files: usize,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ColumnDto {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

#[derive(Deserialize)]
pub struct PreviewQuery {
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}/tasks/{task_id}/preview",
    params(("run_id" = i64, Path, minimum = 1, description = "the run's id"), ("task_id" = String, Path, description = "the task's id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "at most this many rows (1–1000, default 100)")),
    responses(
    (status = 200, body = PreviewDto), (status = 400, body = ErrorDto),
    (status = 403, body = ErrorDto, description = "a viewer token on a deployment started with --no-preview"),
    (status = 404, body = ErrorDto, description = "no such run or task, or the task has published no output"),
    (status = 422, body = ErrorDto, description = "the output could not be read")))]
pub(crate) async fn preview(
    caller: Caller,
    State(state): State<AppState>,
    ids: Result<Path<(i64, String)>, PathRejection>,
    query: Result<Query<PreviewQuery>, QueryRejection>,
) -> Result<Json<PreviewDto>, ApiError> {
    let Path((run_id, task_id)) = ids.map_err(path_error)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit("limit", query.limit, 100)?;
    if !state.viewer_previews {
        caller.admin().map_err(|_| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "this deployment shows outputs' rows to admin tokens only (--no-preview)",
            )
        })?;
    }
    let task = find_task(&state, run_id, &task_id).await?;
    let Some(output) = task.output_path.as_deref() else {
        return Err(ApiError::not_found(format!(
            "task `{task_id}` of run {run_id} has published no output"
        )));
    };
    let location = amdahl_dags::Location::parse(output, std::path::Path::new("/"))
        .map_err(ApiError::internal)?;
    let shown = amdahl_planner::preview::preview(&location, limit as usize)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(Json(PreviewDto {
        columns: shown
            .columns
            .into_iter()
            .map(|(name, data_type)| ColumnDto { name, data_type })
            .collect(),
        rows: shown.rows,
        total_rows: task.rows_out,
        bytes: task.bytes_out,
        files: shown.files,
    }))
}

/// What to clear besides the task.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearBody {
    /// Also clear every task that needs this one (default: true).
    #[serde(default = "yes")]
    pub downstream: bool,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Cleared {
    pub run_id: i64,
    /// The tasks that will run again, in the run's order.
    pub cleared: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/tasks/{task_id}/clear",
    params(("run_id" = i64, Path, minimum = 1, description = "the run's id"), ("task_id" = String, Path, description = "the task's id")), request_body(content = Option<ClearBody>, content_type = "application/json",
        description = "optional: no body reads as `{}` (downstream tasks cleared too)"),
    responses((status = 200, body = Cleared), (status = 400, body = ErrorDto), (status = 403, body = ErrorDto),
    (status = 404, body = ErrorDto), (status = 409, body = ErrorDto), (status = 413, body = ErrorDto),
    (status = 415, body = ErrorDto)))]
pub(crate) async fn clear(
    caller: Caller,
    State(state): State<AppState>,
    ids: Result<Path<(i64, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Cleared>, ApiError> {
    caller.admin()?;
    let Path((run_id, task_id)) = ids.map_err(path_error)?;
    let body: ClearBody = optional_json(&headers, body)?;
    use amdahl_scheduler::clear::ClearError;
    let cleared = amdahl_scheduler::clear::clear(&state.store, run_id, &[task_id], body.downstream)
        .await
        .map_err(|e| match e {
            ClearError::NoRun(_) | ClearError::NoTask { .. } => ApiError::not_found(e.to_string()),
            ClearError::NotFinished(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            ClearError::Store(e) => ApiError::internal(e),
        })?;
    Ok(Json(Cleared { run_id, cleared }))
}
