//! The REST API under `/api/v1`, and its OpenAPI document.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use amdahl_dags::Dag;
use amdahl_scheduler::runs::{RunOrigin, create_run_quietly};
use amdahl_scheduler::{Clock, SystemClock};

use crate::auth::Caller;
use crate::extract::{ErrorDto, optional_json, page_limit, path_error};
use crate::runs::{
    self, AttemptDto, CancelDto, ClearBody, Cleared, LogDto, NotificationDto, RunDetail, RunDto,
    TaskDetail, TaskDto,
};
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/me", get(me))
        .route("/api/v1/dags", get(list_dags))
        .route("/api/v1/import-errors", get(import_errors))
        .route("/api/v1/dags/{dag_id}", get(dag))
        .route("/api/v1/dags/{dag_id}/runs", post(trigger))
        .route("/api/v1/dags/{dag_id}/grid", get(grid))
        .route("/api/v1/dags/{dag_id}/pause", post(pause))
        .route("/api/v1/dags/{dag_id}/unpause", post(unpause))
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
        me,
        list_dags,
        import_errors,
        dag,
        grid,
        trigger,
        pause,
        unpause,
        runs::list_runs,
        runs::run,
        runs::cancel,
        runs::task,
        crate::versions::versions,
        crate::versions::version,
        crate::versions::diff,
        runs::preview,
        runs::logs,
        runs::clear,
        crate::assets::list,
        crate::assets::show,
        crate::assets::post_event
    ),
    modifiers(&Contract),
    components(schemas(
        Me,
        DagDto,
        ImportErrorDto,
        DagDetail,
        ParamDto,
        Grid,
        GridRun,
        GridCell,
        TriggerBody,
        Triggered,
        Paused,
        RunDto,
        crate::versions::VersionDto,
        crate::versions::VersionSourceDto,
        crate::versions::DiffDto,
        runs::PreviewDto,
        runs::ColumnDto,
        RunDetail,
        NotificationDto,
        TaskDetail,
        TaskDto,
        AttemptDto,
        LogDto,
        CancelDto,
        ClearBody,
        Cleared,
        crate::assets::AssetDto,
        crate::assets::AssetEventDto,
        crate::assets::AssetDetailDto,
        crate::assets::EventWithRunsDto,
        crate::assets::EventBody,
        ErrorDto
    ))
)]
pub struct ApiDoc;

/// What every operation shares, written into the document once: the bearer token every
/// request needs, and the 401 answer to a request without a valid one.
struct Contract;

impl utoipa::Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        let unauthorized = ResponseBuilder::new()
            .description("no token, or a token that is unknown or revoked")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorDto")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                operation
                    .responses
                    .responses
                    .entry("401".into())
                    .or_insert_with(|| unauthorized.clone().into());
            }
        }
    }
}

/// The OpenAPI document (no token needed).
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
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

/// A DAG file in a scheduler's DAG folder that does not validate. The DAG it held keeps its
/// last good version scheduled; fixing or removing the file clears the error.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ImportErrorDto {
    pub path: String,
    /// The DAG whose last good version stays scheduled, if the file ever loaded.
    pub dag_id: Option<String>,
    /// Where the first problem is (1-based).
    pub line: i64,
    pub column: i64,
    pub message: String,
    /// How many problems the file has.
    pub problems: i64,
    /// Every problem with its place and the lines around it, as `amdahl dags validate` prints.
    pub details: String,
    pub first_seen_at_ms: i64,
    pub updated_at_ms: i64,
}

#[utoipa::path(get, path = "/api/v1/import-errors", responses(
    (status = 200, body = [ImportErrorDto]), (status = 401, body = ErrorDto)))]
async fn import_errors(
    _: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<ImportErrorDto>>, ApiError> {
    let errors = state
        .store
        .import_errors()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        errors
            .into_iter()
            .map(|e| ImportErrorDto {
                path: e.path,
                dag_id: e.dag_id,
                line: e.line,
                column: e.column,
                message: e.message,
                problems: e.problems,
                details: e.details,
                first_seen_at_ms: e.first_seen_at_ms,
                updated_at_ms: e.updated_at_ms,
            })
            .collect(),
    ))
}

/// A DAG the scheduler knows (it records every file in the DAG folder, and every DAG run).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DagDto {
    pub dag_id: String,
    pub paused: bool,
    pub runs: i64,
    pub last_run_state: Option<String>,
    /// The states of its latest runs, newest first (at most 10).
    pub recent_run_states: Vec<String>,
    pub source_path: String,
    /// The YAML's SHA-256 (first 12 hex digits).
    pub version: String,
    /// Cron expression or `@daily`…, when the DAG runs on a schedule.
    pub schedule: Option<String>,
    /// For a DAG started by data (`schedule: { assets | any | after }`): the rule in words,
    /// e.g. `when lake.orders has a new event`.
    pub waits_on: Option<String>,
    /// The IANA time zone the schedule is read in (`UTC` unless the DAG sets `timezone:`).
    pub timezone: Option<String>,
    /// When the scheduler will create its next scheduled run (ms since the epoch); absent
    /// for unscheduled or paused DAGs.
    pub next_run_at_ms: Option<i64>,
}

const RECENT_RUNS: i64 = 10;

#[utoipa::path(get, path = "/api/v1/dags", responses(
    (status = 200, body = [DagDto]), (status = 401, body = ErrorDto)))]
async fn list_dags(
    _: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<DagDto>>, ApiError> {
    let dags = state.store.list_dags().await.map_err(ApiError::internal)?;
    let mut recent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (dag_id, run_state) in state
        .store
        .recent_run_states(RECENT_RUNS)
        .await
        .map_err(ApiError::internal)?
    {
        recent.entry(dag_id).or_default().push(run_state);
    }
    let now = chrono::Utc::now();
    let mut out = Vec::with_capacity(dags.len());
    for d in dags {
        // Parsed versions are cached by hash: the store is asked only for one not seen yet.
        let parsed = match state.versions.cached(&d.latest_hash) {
            Some(dag) => Some(dag),
            None => match state.store.latest_dag_version(&d.dag_id).await {
                Ok(Some(version)) => state.versions.get(&version),
                _ => None,
            },
        };
        let schedule = parsed.as_ref().and_then(|dag| dag.schedule.clone());
        let waits_on = parsed
            .as_ref()
            .and_then(|dag| dag.data_schedule.as_ref().map(|s| s.describe()));
        let timezone = parsed.as_ref().map(|dag| dag.timezone.name().to_string());
        let next_run_at_ms = match (&parsed, d.paused) {
            (Some(dag), false) => next_run(dag, now),
            _ => None,
        };
        out.push(DagDto {
            recent_run_states: recent.remove(&d.dag_id).unwrap_or_default(),
            dag_id: d.dag_id,
            paused: d.paused,
            runs: d.runs,
            last_run_state: d.last_run_state.map(|s| s.to_string()),
            source_path: d.source_path,
            version: d.latest_hash.chars().take(12).collect(),
            schedule,
            waits_on,
            timezone,
            next_run_at_ms,
        });
    }
    Ok(Json(out))
}

fn next_run(dag: &Dag, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    let cron = dag.cron()?;
    let start = dag.start().unwrap_or(now);
    amdahl_scheduler::triggers::next_run_at(&cron, start, now).map(|t| t.timestamp_millis())
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
    /// What each param declares (the trigger form's fields): its type, description, choices
    /// and bounds; empty fields for a param in the short form.
    pub param_specs: BTreeMap<String, ParamDto>,
    /// Task ids in topological order, with what each needs.
    pub tasks: Vec<TaskShape>,
    pub runs: Vec<RunDto>,
}

/// What a param declares.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ParamDto {
    /// `string`, `number`, `integer`, `boolean`, `array` or `object`; absent: not declared.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub description: Option<String>,
    /// The values allowed (empty: any).
    #[serde(rename = "enum")]
    #[schema(value_type = Vec<Object>)]
    pub choices: Vec<serde_json::Value>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
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

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}", params(("dag_id" = String, Path, pattern = r"^[a-z_][a-z0-9_]*$", max_length = 64, description = "the DAG's id")), responses(
    (status = 200, body = DagDetail), (status = 400, body = ErrorDto), (status = 404, body = ErrorDto)))]
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
    let param_specs = loaded.as_deref().map_or_else(BTreeMap::new, |dag| {
        dag.param_specs
            .iter()
            .map(|(name, spec)| {
                let dto = ParamDto {
                    kind: spec.kind.map(|k| k.name().to_string()),
                    description: spec.description.clone(),
                    choices: spec.choices.clone(),
                    minimum: spec.minimum,
                    maximum: spec.maximum,
                };
                (name.clone(), dto)
            })
            .collect()
    });
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
    let runs: Vec<RunDto> = runs.into_iter().map(RunDto::from).collect();
    Ok(Json(DagDetail {
        dag: DagDto {
            dag_id: summary.dag_id,
            paused: summary.paused,
            runs: summary.runs,
            last_run_state: summary.last_run_state.map(|s| s.to_string()),
            source_path: summary.source_path,
            version: summary.latest_hash.chars().take(12).collect(),
            schedule: schedule.clone(),
            waits_on: loaded
                .as_ref()
                .and_then(|dag| dag.data_schedule.as_ref().map(|s| s.describe())),
            timezone: loaded.as_ref().map(|dag| dag.timezone.name().to_string()),
            recent_run_states: runs
                .iter()
                .take(RECENT_RUNS as usize)
                .map(|r| r.state.to_string())
                .collect(),
            next_run_at_ms: match (&loaded, summary.paused) {
                (Some(dag), false) => next_run(dag, chrono::Utc::now()),
                _ => None,
            },
        },
        description,
        schedule,
        params,
        param_specs,
        tasks,
        runs,
    }))
}

/// A page of the grid: runs (newest first) × a page of the DAG's tasks.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Grid {
    /// This page's columns: the latest version's tasks in DAG order from `tasks_from`; when
    /// every task fits one page, then the tasks only older runs had.
    pub tasks: Vec<String>,
    /// Tasks of the latest version in all.
    pub task_count: i64,
    pub tasks_from: i64,
    /// Pass as `tasks_from` for the next page of columns; absent on the last.
    pub next_tasks_from: Option<i64>,
    pub runs: Vec<GridRun>,
    /// Pass as `before` for the next (older) page of runs; absent on the last page.
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
    /// The task's state; for a mapped task, its instances' state summed up (the first of
    /// failed, upstream_failed, running, queued, up_for_retry, scheduled that one has, else
    /// the task's own).
    pub state: String,
    pub device: Option<String>,
    /// A mapped task: how many of its instances (`task[0]`…) are in each state. Absent
    /// for other tasks (and before the task expanded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<BTreeMap<String, i64>>,
}

/// A mapped task's state as its instances sum it up (see [`GridCell::state`]).
fn summed_state(own: &str, instances: &BTreeMap<String, i64>) -> String {
    const FIRST: [&str; 6] = [
        "failed",
        "upstream_failed",
        "running",
        "queued",
        "up_for_retry",
        "scheduled",
    ];
    FIRST
        .iter()
        .find(|s| instances.contains_key(**s))
        .map_or_else(|| own.to_string(), |s| s.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridQuery {
    limit: Option<i64>,
    before: Option<i64>,
    tasks_from: Option<i64>,
    tasks_limit: Option<i64>,
}

/// Cells a grid page holds when the caller does not say how many columns: a page of 25 runs
/// shows 100 tasks (a screen's width), which stays quick however large the DAG.
const GRID_CELLS: i64 = 2500;

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/grid", params(("dag_id" = String, Path, pattern = r"^[a-z_][a-z0-9_]*$", max_length = 64, description = "the DAG's id"),
    ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "runs per page (1–1000, default 25)"),
    ("before" = Option<i64>, Query, description = "only runs older than this run id"),
    ("tasks_from" = Option<i64>, Query, minimum = 0, description = "position of the first column (default 0)"),
    ("tasks_limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "columns per page (1–1000, default 2,500 cells' worth)")),
    responses((status = 200, body = Grid), (status = 400, body = ErrorDto), (status = 404, body = ErrorDto)))]
async fn grid(
    _: Caller,
    State(state): State<AppState>,
    dag_id: Result<Path<String>, PathRejection>,
    query: Result<Query<GridQuery>, QueryRejection>,
) -> Result<Json<Grid>, ApiError> {
    let Path(dag_id) = dag_id.map_err(path_error)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit("limit", query.limit, 25)?;
    let columns = page_limit(
        "tasks_limit",
        query.tasks_limit,
        (GRID_CELLS / limit).clamp(1, 1000),
    )?;
    let from = query.tasks_from.unwrap_or(0);
    if from < 0 {
        return Err(ApiError::bad_request(format!(
            "`tasks_from` must be 0 or more, not {from}"
        )));
    }
    let version = state
        .store
        .latest_dag_version(&dag_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no DAG `{dag_id}`")))?;
    let all: Vec<String> = state
        .versions
        .get(&version)
        .map(|dag| dag.tasks.iter().map(|t| t.id.clone()).collect())
        .unwrap_or_default();
    let task_count = all.len() as i64;
    let whole = from == 0 && task_count <= columns;
    let mut tasks: Vec<String> = all
        .into_iter()
        .skip(from as usize)
        .take(columns as usize)
        .collect();
    // One more than asked: whether there is a next page.
    let mut runs = state
        .store
        .runs_before(Some(&dag_id), None, query.before, limit + 1)
        .await
        .map_err(ApiError::internal)?;
    let more = runs.len() as i64 > limit;
    runs.truncate(limit as usize);
    let run_ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let cells = state
        .store
        .grid_cells(&run_ids, (!whole).then_some(tasks.as_slice()))
        .await
        .map_err(ApiError::internal)?;
    let mut known: std::collections::HashSet<String> = tasks.iter().cloned().collect();
    let mut by_run: BTreeMap<i64, BTreeMap<String, GridCell>> = BTreeMap::new();
    // A mapped task's instances are counted in its own cell, not given columns.
    let mut instances: BTreeMap<(i64, String), BTreeMap<String, i64>> = BTreeMap::new();
    for cell in cells {
        if let (task, Some(_)) = amdahl_dags::mapping::split_instance(&cell.task_id) {
            *instances
                .entry((cell.run_id, task.to_string()))
                .or_default()
                .entry(cell.state)
                .or_default() += 1;
            continue;
        }
        if known.insert(cell.task_id.clone()) {
            tasks.push(cell.task_id.clone());
        }
        by_run.entry(cell.run_id).or_default().insert(
            cell.task_id,
            GridCell {
                state: cell.state,
                device: cell.device.map(|d| d.code().to_string()),
                instances: None,
            },
        );
    }
    for ((run_id, task), counts) in instances {
        if let Some(cell) = by_run.get_mut(&run_id).and_then(|row| row.get_mut(&task)) {
            cell.state = summed_state(&cell.state, &counts);
            cell.instances = Some(counts);
        }
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
        task_count,
        tasks_from: from,
        next_tasks_from: from.checked_add(columns).filter(|&next| next < task_count),
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

#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/runs", params(("dag_id" = String, Path, pattern = r"^[a-z_][a-z0-9_]*$", max_length = 64, description = "the DAG's id")),
    request_body(content = Option<TriggerBody>, description = "optional: no body runs with the defaults"),
    responses(
    (status = 201, body = Triggered), (status = 400, body = ErrorDto),
    (status = 403, body = ErrorDto), (status = 404, body = ErrorDto),
    (status = 413, body = ErrorDto), (status = 415, body = ErrorDto),
    (status = 422, description = "a param this DAG does not declare, or of the wrong type", body = ErrorDto)))]
async fn trigger(
    caller: Caller,
    State(state): State<AppState>,
    dag_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Triggered>), ApiError> {
    caller.admin()?;
    let Path(dag_id) = dag_id.map_err(path_error)?;
    let body: TriggerBody = optional_json(&headers, body)?;
    let dag = find_dag(&state, &dag_id).await?;
    let overrides: Vec<(String, serde_json::Value)> = body.params.into_iter().collect();
    // Well-formed but not what this DAG declares: 422, as the document says.
    let params = amdahl_dags::params::resolve(&dag, &overrides)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let run_id = create_run_quietly(&state.store, &SystemClock, &dag, &params, RunOrigin::Manual)
        .await
        .map_err(ApiError::internal)?;
    // Its first tasks are queued from here (workers woken), without a round through a
    // scheduler; a run that cannot start now (a paused DAG's) is left to the schedulers,
    // which `start_now` then signals. Pages watching runs hear of the new one either way.
    if amdahl_scheduler::service::start_now(&state.store, &SystemClock, run_id).await {
        state.store.signal(amdahl_scheduler::Topic::Progress).await;
    }
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
    amdahl_scheduler::resolve::resolve_dag_id(&state.store, dag_id, &state.dags_folder)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no DAG `{dag_id}`")))?
        .map_err(invalid)
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Paused {
    pub dag_id: String,
    pub paused: bool,
}

#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/pause", params(("dag_id" = String, Path, pattern = r"^[a-z_][a-z0-9_]*$", max_length = 64, description = "the DAG's id")),
    responses((status = 200, body = Paused), (status = 400, body = ErrorDto),
    (status = 403, body = ErrorDto), (status = 404, body = ErrorDto)))]
async fn pause(
    caller: Caller,
    State(state): State<AppState>,
    dag_id: Result<Path<String>, PathRejection>,
) -> Result<Json<Paused>, ApiError> {
    set_paused(caller, state, dag_id, true).await
}

#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/unpause", params(("dag_id" = String, Path, pattern = r"^[a-z_][a-z0-9_]*$", max_length = 64, description = "the DAG's id")),
    responses((status = 200, body = Paused), (status = 400, body = ErrorDto),
    (status = 403, body = ErrorDto), (status = 404, body = ErrorDto)))]
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
