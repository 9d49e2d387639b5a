//! Assets over REST: the list, one asset with its events (and the runs each started), and
//! events posted from outside, which start the runs of DAGs scheduled on the asset.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use amdahl_scheduler::Clock;
use amdahl_scheduler::SystemClock;
use amdahl_scheduler::store::{AssetEvent, AssetSummary};

use crate::auth::Caller;
use crate::extract::{ErrorDto, optional_json, page_limit, path_error};
use crate::{ApiError, AppState};

/// Largest `extra` a posted event may carry, serialised.
pub const MAX_EXTRA_BYTES: usize = 16 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/assets", get(list))
        .route("/api/v1/assets/{name}", get(show))
        .route(
            "/api/v1/assets/{name}/events",
            axum::routing::post(post_event),
        )
}

/// One change of an asset.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AssetEventDto {
    pub id: i64,
    pub asset: String,
    /// `task` (a task that produces it succeeded), `run` (a run of a DAG watched with
    /// `after:` succeeded) or `api` (posted).
    pub source: String,
    pub dag_id: Option<String>,
    pub run_id: Option<i64>,
    pub task_id: Option<String>,
    /// What the poster attached (a JSON object), if anything.
    #[schema(value_type = Option<Object>)]
    pub extra: Option<serde_json::Value>,
    pub created_at_ms: i64,
}

impl From<AssetEvent> for AssetEventDto {
    fn from(e: AssetEvent) -> Self {
        AssetEventDto {
            id: e.id,
            asset: e.asset,
            source: e.source,
            dag_id: e.dag_id,
            run_id: e.run_id,
            task_id: e.task_id.filter(|t| !t.is_empty()),
            extra: e.extra_json.and_then(|j| serde_json::from_str(&j).ok()),
            created_at_ms: e.created_at_ms,
        }
    }
}

/// An asset: what produces it, what waits on it, its newest event.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AssetDto {
    pub name: String,
    pub events: i64,
    pub last_event: Option<AssetEventDto>,
    /// `dag.task` of each task declaring it in `produces:`.
    pub producers: Vec<String>,
    /// DAGs whose `schedule:` waits on it.
    pub consumers: Vec<String>,
}

impl From<AssetSummary> for AssetDto {
    fn from(s: AssetSummary) -> Self {
        AssetDto {
            name: s.asset,
            events: s.events,
            last_event: s.last_event.map(AssetEventDto::from),
            producers: s.producers,
            consumers: s.consumers,
        }
    }
}

/// An event and the runs it started.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct EventWithRunsDto {
    #[serde(flatten)]
    pub event: AssetEventDto,
    pub runs: Vec<i64>,
}

/// One asset with a page of its events, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AssetDetailDto {
    #[serde(flatten)]
    pub asset: AssetDto,
    pub recent: Vec<EventWithRunsDto>,
}

/// A posted event: optional free JSON kept with it.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub extra: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
pub struct EventsQuery {
    before: Option<i64>,
    limit: Option<i64>,
}

/// An asset name from the path (for a read, `dag:ID` too: what `after:` waits on), or a 400
/// saying what names look like.
fn asset_name(
    name: Result<Path<String>, PathRejection>,
    reading: bool,
) -> Result<String, ApiError> {
    let Path(name) = name.map_err(path_error)?;
    // A read looks up any name the document allows (an unknown one is a 404).
    let lookup = reading
        && name.len() <= 200
        && name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':'));
    if lookup || amdahl_dags::assets::is_valid_name(&name) {
        Ok(name)
    } else {
        Err(ApiError::bad_request(format!(
            "`{name}` is not an asset name (letters, digits, `_`, `-`, `.` and `/`, at most 200)"
        )))
    }
}

#[utoipa::path(get, path = "/api/v1/assets",
    params(("after" = Option<String>, Query, max_length = 200, description = "names after this one (a page)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "at most this many, by name (1–1000, default 200)")),
    responses((status = 200, body = [AssetDto]), (status = 400, body = ErrorDto)))]
pub(crate) async fn list(
    _: Caller,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<AssetDto>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit("limit", query.limit, 200)?;
    let after = query.after.unwrap_or_default();
    if after.chars().count() > 200 {
        return Err(ApiError::bad_request("`after` is longer than 200"));
    }
    let found = state
        .store
        .asset_summaries(&after, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(found.into_iter().map(AssetDto::from).collect()))
}

#[utoipa::path(get, path = "/api/v1/assets/{name}",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,199}$", description = "the asset's name (`/` written `%2F`; `dag:ID` for what `after:` waits on)"),
        ("before" = Option<i64>, Query, minimum = 1, description = "events older than this id (a page)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "at most this many events, newest first (1–1000, default 50)")),
    responses((status = 200, body = AssetDetailDto), (status = 400, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub(crate) async fn show(
    _: Caller,
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<AssetDetailDto>, ApiError> {
    let name = asset_name(name, true)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit("limit", query.limit, 50)?;
    let before = match query.before {
        Some(b) if b < 1 => return Err(ApiError::bad_request("`before` must be at least 1")),
        Some(b) => b,
        None => i64::MAX,
    };
    let summary = state
        .store
        .asset_summary(&name)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no asset `{name}`: no DAG declares it and it has no event"
            ))
        })?;
    let recent = state
        .store
        .asset_events(&name, before, limit)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(event, runs)| EventWithRunsDto {
            event: event.into(),
            runs,
        })
        .collect();
    Ok(Json(AssetDetailDto {
        asset: summary.into(),
        recent,
    }))
}

#[utoipa::path(post, path = "/api/v1/assets/{name}/events",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}$", description = "the asset's name (`/` written `%2F`)")),
    request_body(content = Option<EventBody>, description = "optional: `extra`, a JSON object up to 16 KiB, kept with the event"),
    responses(
    (status = 201, body = AssetEventDto), (status = 400, body = ErrorDto),
    (status = 403, body = ErrorDto),
    (status = 404, description = "a name with `/` not written `%2F` reaches no route", body = ErrorDto),
    (status = 413, body = ErrorDto), (status = 415, body = ErrorDto)))]
pub(crate) async fn post_event(
    caller: Caller,
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<AssetEventDto>), ApiError> {
    caller.admin()?;
    let name = asset_name(name, false)?;
    let body: EventBody = optional_json(&headers, body)?;
    let extra = match body.extra {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(map)) => Some(serde_json::Value::Object(map).to_string()),
        Some(other) => {
            let found = match other {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                _ => "a boolean",
            };
            return Err(ApiError::bad_request(format!(
                "`extra` must be a JSON object, found {found}"
            )));
        }
    };
    if extra.as_ref().is_some_and(|e| e.len() > MAX_EXTRA_BYTES) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("`extra` is larger than {MAX_EXTRA_BYTES} bytes"),
        ));
    }
    let event = state
        .store
        .post_asset_event(&name, extra.as_deref(), SystemClock.now_ms())
        .await
        .map_err(ApiError::internal)?;
    state.store.signal(amdahl_scheduler::Topic::Progress).await;
    Ok((StatusCode::CREATED, Json(event.into())))
}
