//! The REST API under `/api/v1`, and its OpenAPI document.

use std::collections::BTreeMap;
use std::path::Path as FsPath;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use amdahl_dags::Dag;
use amdahl_scheduler::runner::{RunOrigin, create_run};
use amdahl_scheduler::store::{AttemptRecord, RunRecord, TaskRecord};
use amdahl_scheduler::{Clock, SystemClock};

use crate::auth::Caller;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/me", get(me))
        .route("/api/v1/dags", get(list_dags))
        .route("/api/v1/dags/{dag_id}", get(dag))
        .route("/api/v1/dags/{dag_id}/runs", post(trigger))
        .route("/api/v1/dags/{dag_id}/grid", get(grid))
        .route("/api/v1/dags/{dag_id}/pause", post(pause))
        .route("/api/v1/dags/{dag_id}/unpause", post(unpause))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{run_id}", get(run))
        .route("/api/v1/runs/{run_id}/cancel", post(cancel))
        .route("/api/v1/runs/{run_id}/tasks/{task_id}/logs", get(logs))
        .route("/api/v1/runs/{run_id}/tasks/{task_id}/clear", post(clear))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Amdahl",
        description = "Runs, tasks and placement decisions of an Amdahl installation. Every \
                       request needs `Authorization: Bearer <token>` (`amdahl tokens create`); \
                       changes need an admin token."
    ),
    paths(
        me, list_dags, dag, grid, trigger, pause, unpause, list_runs, run, cancel, logs, clear
    ),
    components(schemas(
        Me,
        DagDto,
        DagDetail,
        Grid,
        GridRun,
        GridCell,
        TriggerBody,
        Triggered,
        Paused,
        RunDto,
        RunDetail,
        TaskDto,
        AttemptDto,
        LogDto,
        CancelDto,
        ClearBody,
        Cleared,
        ErrorDto
    ))
)]
pub struct ApiDoc;

/// The OpenAPI document (no token needed).
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// An error: what went wrong, in one sentence.
#[derive(Serialize, ToSchema)]
pub struct ErrorDto {
    pub error: String,
}

/// Who the token belongs to.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub token_id: i64,
    /// `admin` or `viewer`.
    pub role: String,
}

#[utoipa::path(get, path = "/api/v1/me", responses(
    (status = 200, body = Me), (status = 401, body = ErrorDto)))]
async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        token_id: caller.token_id,
        role: caller.role.name().into(),
    })
}

/// A DAG the scheduler knows (it records every file in the DAG folder, and every DAG run).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DagDto {
    pub dag_id: String,
    pub paused: bool,
    pub runs: i64,
    pub last_run_state: Option<String>,
    pub source_path: String,
    /// The YAML's SHA-256 (first 12 hex digits).
    pub version: String,
    /// Cron expression or `@daily`…, when the DAG runs on a schedule.
    pub schedule: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/dags", responses(
    (status = 200, body = [DagDto]), (status = 401, body = ErrorDto)))]
async fn list_dags(
    _: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<DagDto>>, ApiError> {
    let dags = state.store.list_dags().await.map_err(ApiError::internal)?;
    let mut out = Vec::with_capacity(dags.len());
    for d in dags {
        let schedule = match state.store.latest_dag_version(&d.dag_id).await {
            Ok(Some(version)) => state
                .versions
                .get(&version)
                .and_then(|dag| dag.schedule.clone()),
            _ => None,
        };
        out.push(DagDto {
            dag_id: d.dag_id,
            paused: d.paused,
            runs: d.runs,
            last_run_state: d.last_run_state.map(|s| s.to_string()),
            source_path: d.source_path,
            version: d.latest_hash.chars().take(12).collect(),
            schedule,
        });
    }
    Ok(Json(out))
}

/// A DAG, its tasks and its latest runs.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DagDetail {
    pub dag: DagDto,
    pub description: Option<String>,
    pub schedule: Option<String>,
    /// The params and their defaults.
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Task ids in topological order, with what each needs.
    pub tasks: Vec<TaskShape>,
    pub runs: Vec<RunDto>,
}

/// A task of a DAG: its id, kind and dependencies.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TaskShape {
    pub task_id: String,
    pub kind: String,
    pub needs: Vec<String>,
    pub device: String,
    pub shards: u32,
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}", params(("dag_id" = String, Path)), responses(
    (status = 200, body = DagDetail), (status = 404, body = ErrorDto)))]
async fn dag(
    _: Caller,
    State(state): State<AppState>,
    dag_id: Result<Path<String>, PathRejection>,
) -> Result<Json<DagDetail>, ApiError> {
    let Path(dag_id) = dag_id.map_err(path_error)?;
    let dags = state.store.list_dags().await.map_err(ApiError::internal)?;
    let summary = dags
        .into_iter()
        .find(|d| d.dag_id == dag_id)
        .ok_or_else(|| ApiError::not_found(format!("no DAG `{dag_id}`")))?;
    let version = state
        .store
        .latest_dag_version(&dag_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no recorded version of DAG `{dag_id}`")))?;
    let loaded = state.versions.get(&version);
    let runs = state
        .store
        .list_runs(Some(&dag_id), 25)
        .await
        .map_err(ApiError::internal)?;
    let (description, schedule, params, tasks) = match loaded.as_deref() {
        Some(dag) => (
            dag.description.clone(),
            dag.schedule.clone(),
            dag.params.clone(),
            dag.tasks
                .iter()
                .map(|t| TaskShape {
                    task_id: t.id.clone(),
                    kind: t.kind.name().into(),
                    needs: t.needs.clone(),
                    device: t.device.to_string(),
                    shards: t.shards,
                })
                .collect(),
        ),
        None => (None, None, BTreeMap::new(), Vec::new()),
    };
    Ok(Json(DagDetail {
        dag: DagDto {
            dag_id: summary.dag_id,
            paused: summary.paused,
            runs: summary.runs,
            last_run_state: summary.last_run_state.map(|s| s.to_string()),
            source_path: summary.source_path,
            version: summary.latest_hash.chars().take(12).collect(),
            schedule: schedule.clone(),
        },
        description,
        schedule,
        params,
        tasks,
        runs: runs.into_iter().map(RunDto::from).collect(),
    }))
}

/// A page of the grid: runs (newest first) × the DAG's tasks.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Grid {
    /// The columns: the latest version's tasks in DAG order, then tasks only older runs had.
    pub tasks: Vec<String>,
    pub runs: Vec<GridRun>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct GridRun {
    pub run_id: i64,
    pub state: String,
    pub logical_date: String,
    /// One per column of `tasks`; `null` where the run has no such task.
    pub cells: Vec<Option<GridCell>>,
}

#[derive(Serialize, Deserialize, ToSchema, Clone)]
pub struct GridCell {
    pub state: String,
    pub device: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridQuery {
    limit: Option<i64>,
    before: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/grid", params(("dag_id" = String, Path),
    ("limit" = Option<i64>, Query, description = "runs per page (1–1000, default 25)"),
    ("before" = Option<i64>, Query, description = "only runs older than this run id")),
    responses((status = 200, body = Grid), (status = 400, body = ErrorDto), (status = 404, body = ErrorDto)))]
async fn grid(
    _: Caller,
    State(state): State<AppState>,
    dag_id: Result<Path<String>, PathRejection>,
    query: Result<Query<GridQuery>, QueryRejection>,
) -> Result<Json<Grid>, ApiError> {
    let Path(dag_id) = dag_id.map_err(path_error)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit(query.limit, 25)?;
    let version = state
        .store
        .latest_dag_version(&dag_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no DAG `{dag_id}`")))?;
    let mut tasks: Vec<String> = state
        .versions
        .get(&version)
        .map(|dag| dag.tasks.iter().map(|t| t.id.clone()).collect())
        .unwrap_or_default();
    // One more than asked: whether there is a next page.
    let mut runs = state
        .store
        .runs_before(Some(&dag_id), query.before, limit + 1)
        .await
        .map_err(ApiError::internal)?;
    let more = runs.len() as i64 > limit;
    runs.truncate(limit as usize);
    let cells = match (runs.last(), runs.first()) {
        (Some(oldest), Some(newest)) => state
            .store
            .task_states(&dag_id, oldest.id, newest.id)
            .await
            .map_err(ApiError::internal)?,
        _ => Vec::new(),
    };
    let mut known: std::collections::HashSet<String> = tasks.iter().cloned().collect();
    let mut by_run: BTreeMap<i64, BTreeMap<String, GridCell>> = BTreeMap::new();
    for (run_id, task_id, state, device) in cells {
        if known.insert(task_id.clone()) {
            tasks.push(task_id.clone());
        }
        by_run
            .entry(run_id)
            .or_default()
            .insert(task_id, GridCell { state, device });
    }
    let next_before = if more {
        runs.last().map(|r| r.id)
    } else {
        None
    };
    let runs = runs
        .into_iter()
        .map(|run| {
            let row = by_run.remove(&run.id).unwrap_or_default();
            GridRun {
                run_id: run.id,
                state: run.state.to_string(),
                logical_date: run.logical_date,
                cells: tasks.iter().map(|t| row.get(t).cloned()).collect(),
            }
        })
        .collect();
    Ok(Json(Grid {
        tasks,
        runs,
        next_before,
    }))
}

/// Params for a new run (defaults for those not given).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Triggered {
    pub run_id: i64,
    /// A paused DAG's run waits until the DAG is unpaused.
    pub paused: bool,
}

#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/runs", params(("dag_id" = String, Path)),
    request_body = TriggerBody, responses(
    (status = 201, body = Triggered), (status = 400, body = ErrorDto),
    (status = 403, body = ErrorDto), (status = 404, body = ErrorDto)))]
async fn trigger(
    caller: Caller,
    State(state): State<AppState>,
    dag_id: Result<Path<String>, PathRejection>,
    body: Result<Json<TriggerBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Triggered>), ApiError> {
    caller.admin()?;
    let Path(dag_id) = dag_id.map_err(path_error)?;
    let Json(body) = body.map_err(json_error)?;
    let dag = find_dag(&state, &dag_id).await?;
    let overrides: Vec<(String, serde_json::Value)> = body.params.into_iter().collect();
    let params = amdahl_dags::params::resolve(&dag, &overrides).map_err(ApiError::bad_request)?;
    let run_id = create_run(&state.store, &SystemClock, &dag, &params, RunOrigin::Manual)
        .await
        .map_err(ApiError::internal)?;
    state.store.signal(amdahl_scheduler::Topic::Progress).await;
    let paused = state
        .store
        .is_paused(&dag.id)
        .await
        .map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(Triggered { run_id, paused })))
}

/// The DAG to run: the file in the DAG folder with this id, else the latest version the
/// store recorded; checked like `amdahl dags validate` (its SQL planned too).
async fn find_dag(state: &AppState, dag_id: &str) -> Result<Dag, ApiError> {
    if !amdahl_dags::is_valid_id(dag_id) {
        return Err(ApiError::bad_request(format!(
            "`{dag_id}` is not a valid DAG id"
        )));
    }
    let invalid = |rendered: String| {
        ApiError::bad_request(format!(
            "DAG `{dag_id}` is invalid; nothing was queued:\n{rendered}"
        ))
    };
    let mut found = None;
    if state.dags_folder.is_dir() {
        for file in amdahl_dags::discover::dag_files(std::slice::from_ref(&state.dags_folder)) {
            if let Ok(dag) = amdahl_dags::load_file(&file)
                && dag.id == dag_id
            {
                found = Some(dag);
                break;
            }
        }
    }
    let dag = match found {
        Some(dag) => dag,
        None => {
            let version = state
                .store
                .latest_dag_version(dag_id)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::not_found(format!("no DAG `{dag_id}`")))?;
            amdahl_dags::load_bytes(
                &version.source_path,
                FsPath::new(&version.base_dir),
                version.yaml.as_bytes(),
            )
            .map_err(|e| invalid(e.render()))?
        }
    };
    let diagnostics = amdahl_executors::check::check_sql(&dag).await;
    if !diagnostics.is_empty() {
        return Err(invalid(diagnostics.render(&dag.source.text)));
    }
    Ok(dag)
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Paused {
    pub dag_id: String,
    pub paused: bool,
}

#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/pause", params(("dag_id" = String, Path)),
    responses((status = 200, body = Paused), (status = 403, body = ErrorDto), (status = 404, body = ErrorDto)))]
async fn pause(
    caller: Caller,
    State(state): State<AppState>,
    dag_id: Result<Path<String>, PathRejection>,
) -> Result<Json<Paused>, ApiError> {
    set_paused(caller, state, dag_id, true).await
}

#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/unpause", params(("dag_id" = String, Path)),
    responses((status = 200, body = Paused), (status = 403, body = ErrorDto), (status = 404, body = ErrorDto)))]
async fn unpause(
    caller: Caller,
    State(state): State<AppState>,
    dag_id: Result<Path<String>, PathRejection>,
) -> Result<Json<Paused>, ApiError> {
    set_paused(caller, state, dag_id, false).await
}

async fn set_paused(
    caller: Caller,
    state: AppState,
    dag_id: Result<Path<String>, PathRejection>,
    paused: bool,
) -> Result<Json<Paused>, ApiError> {
    caller.admin()?;
    let Path(dag_id) = dag_id.map_err(path_error)?;
    let changed = state
        .store
        .set_paused(&dag_id, paused, SystemClock.now_ms())
        .await
        .map_err(ApiError::internal)?;
    if !changed {
        return Err(ApiError::not_found(format!("no DAG `{dag_id}`")));
    }
    state.store.signal(amdahl_scheduler::Topic::Progress).await;
    Ok(Json(Paused { dag_id, paused }))
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
}

impl From<RunRecord> for RunDto {
    fn from(r: RunRecord) -> RunDto {
        RunDto {
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
    limit: Option<i64>,
    before: Option<i64>,
}

/// A page size from the query: 1 to 1000, `default` when absent.
fn page_limit(limit: Option<i64>, default: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=1000).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and 1000, found {limit}"
        )))
    }
}

#[utoipa::path(get, path = "/api/v1/runs", params(
    ("dag" = Option<String>, Query, description = "only this DAG's runs"),
    ("limit" = Option<i64>, Query, description = "at most this many, newest first (1–1000, default 100)"),
    ("before" = Option<i64>, Query, description = "only runs older than this run id (the next page)")),
    responses((status = 200, body = [RunDto]), (status = 400, body = ErrorDto)))]
async fn list_runs(
    _: Caller,
    State(state): State<AppState>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<Vec<RunDto>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit(query.limit, 100)?;
    let runs = state
        .store
        .runs_before(query.dag.as_deref(), query.before, limit)
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
}

impl From<TaskRecord> for TaskDto {
    fn from(t: TaskRecord) -> TaskDto {
        TaskDto {
            task_id: t.task_id,
            kind: t.kind,
            state: t.state.to_string(),
            needs: t.needs,
            attempts: t.attempts,
            device: t.device,
            rows_out: t.rows_out,
            bytes_out: t.bytes_out,
            error: t.error,
            started_at_ms: t.started_at_ms,
            finished_at_ms: t.finished_at_ms,
            pool: t.pool,
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
            device: a.device,
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

/// A run with its tasks and every attempt.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    pub run: RunDto,
    pub tasks: Vec<TaskDto>,
    pub attempts: Vec<AttemptDto>,
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}", params(("run_id" = i64, Path)), responses(
    (status = 200, body = RunDetail), (status = 400, body = ErrorDto), (status = 404, body = ErrorDto)))]
async fn run(
    _: Caller,
    State(state): State<AppState>,
    run_id: Result<Path<i64>, PathRejection>,
) -> Result<Json<RunDetail>, ApiError> {
    let Path(run_id) = run_id.map_err(path_error)?;
    Ok(Json(run_detail(&state, run_id).await?))
}

/// A run, its tasks and attempts (for the API and the live events).
pub async fn run_detail(state: &AppState, run_id: i64) -> Result<RunDetail, ApiError> {
    let run = state
        .store
        .run(run_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no run {run_id}")))?;
    let tasks = state
        .store
        .tasks(run_id)
        .await
        .map_err(ApiError::internal)?;
    let attempts = state
        .store
        .attempts(run_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(RunDetail {
        run: run.into(),
        tasks: tasks.into_iter().map(TaskDto::from).collect(),
        attempts: attempts.into_iter().map(AttemptDto::from).collect(),
    })
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CancelDto {
    pub run_id: i64,
    /// False when the run had already finished.
    pub cancel_requested: bool,
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/cancel", params(("run_id" = i64, Path)), responses(
    (status = 200, body = CancelDto), (status = 403, body = ErrorDto), (status = 404, body = ErrorDto)))]
async fn cancel(
    caller: Caller,
    State(state): State<AppState>,
    run_id: Result<Path<i64>, PathRejection>,
) -> Result<Json<CancelDto>, ApiError> {
    caller.admin()?;
    let Path(run_id) = run_id.map_err(path_error)?;
    if state
        .store
        .run(run_id)
        .await
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no run {run_id}")));
    }
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
    params(("run_id" = i64, Path), ("task_id" = String, Path)), responses(
    (status = 200, body = [LogDto]), (status = 404, body = ErrorDto)))]
async fn logs(
    _: Caller,
    State(state): State<AppState>,
    ids: Result<Path<(i64, String)>, PathRejection>,
) -> Result<Json<Vec<LogDto>>, ApiError> {
    let Path((run_id, task_id)) = ids.map_err(path_error)?;
    if state
        .store
        .task(run_id, &task_id)
        .await
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(ApiError::not_found(format!(
            "no task `{task_id}` in run {run_id}"
        )));
    }
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

/// What to clear besides the task.
#[derive(Deserialize, ToSchema, Default)]
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
    params(("run_id" = i64, Path), ("task_id" = String, Path)), request_body = ClearBody,
    responses((status = 200, body = Cleared), (status = 403, body = ErrorDto),
    (status = 404, body = ErrorDto), (status = 409, body = ErrorDto)))]
async fn clear(
    caller: Caller,
    State(state): State<AppState>,
    ids: Result<Path<(i64, String)>, PathRejection>,
    body: Result<Json<ClearBody>, JsonRejection>,
) -> Result<Json<Cleared>, ApiError> {
    caller.admin()?;
    let Path((run_id, task_id)) = ids.map_err(path_error)?;
    let Json(body) = body.map_err(json_error)?;
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

fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad_request(e.body_text())
}

fn json_error(e: JsonRejection) -> ApiError {
    ApiError::new(
        if e.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::BAD_REQUEST
        },
        e.body_text(),
    )
}
