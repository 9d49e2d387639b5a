//! A DAG's recorded versions: the list (with the runs that used each), one version's YAML,
//! and a unified diff between two of them.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use amdahl_scheduler::store::DagVersion;

use crate::auth::Caller;
use crate::extract::{ErrorDto, page_limit, path_error};
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/dags/{dag_id}/versions", get(versions))
        .route("/api/v1/dags/{dag_id}/versions/{version_id}", get(version))
        .route("/api/v1/dags/{dag_id}/diff", get(diff))
}

/// A recorded version of a DAG file.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct VersionDto {
    pub version_id: i64,
    /// SHA-256 of the file's bytes.
    pub hash: String,
    pub source_path: String,
    pub recorded_at_ms: i64,
    /// Runs that used this version, and the latest of them.
    pub runs: i64,
    pub last_run_id: Option<i64>,
}

/// One version's file, as it was recorded.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct VersionSourceDto {
    pub version_id: i64,
    pub dag_id: String,
    pub hash: String,
    pub source_path: String,
    pub yaml: String,
}

/// Two versions compared.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DiffDto {
    pub from: i64,
    pub to: i64,
    /// A unified diff (`---`, `+++`, `@@` hunks with 3 lines of context); empty when the two
    /// files are equal.
    pub diff: String,
}

#[derive(Deserialize)]
pub struct VersionsQuery {
    limit: Option<i64>,
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: i64,
    to: i64,
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/versions",
    params(("dag_id" = String, Path, pattern = r"^[a-z_][a-z0-9_]*$", max_length = 64, description = "the DAG's id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "at most this many, newest first (1–1000, default 100)")),
    responses((status = 200, body = [VersionDto]), (status = 400, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub(crate) async fn versions(
    _: Caller,
    State(state): State<AppState>,
    dag_id: Result<Path<String>, PathRejection>,
    query: Result<Query<VersionsQuery>, QueryRejection>,
) -> Result<Json<Vec<VersionDto>>, ApiError> {
    let Path(dag_id) = dag_id.map_err(path_error)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit("limit", query.limit, 100)?;
    let found = state
        .store
        .dag_versions_of(&dag_id, limit)
        .await
        .map_err(ApiError::internal)?;
    if found.is_empty() {
        return Err(ApiError::not_found(format!("no DAG `{dag_id}`")));
    }
    Ok(Json(
        found
            .into_iter()
            .map(|v| VersionDto {
                version_id: v.id,
                hash: v.hash,
                source_path: v.source_path,
                recorded_at_ms: v.recorded_at_ms,
                runs: v.runs,
                last_run_id: v.last_run_id,
            })
            .collect(),
    ))
}

/// The version `version_id` of `dag_id`, or a 404 (also for a version of another DAG).
async fn find_version(
    state: &AppState,
    dag_id: &str,
    version_id: i64,
) -> Result<DagVersion, ApiError> {
    state
        .store
        .dag_version(version_id)
        .await
        .map_err(ApiError::internal)?
        .filter(|v| v.dag_id == dag_id)
        .ok_or_else(|| ApiError::not_found(format!("DAG `{dag_id}` has no version {version_id}")))
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/versions/{version_id}",
    params(("dag_id" = String, Path, pattern = r"^[a-z_][a-z0-9_]*$", max_length = 64, description = "the DAG's id"),
        ("version_id" = i64, Path, minimum = 1, description = "the version's id")),
    responses((status = 200, body = VersionSourceDto), (status = 400, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub(crate) async fn version(
    _: Caller,
    State(state): State<AppState>,
    ids: Result<Path<(String, i64)>, PathRejection>,
) -> Result<Json<VersionSourceDto>, ApiError> {
    let Path((dag_id, version_id)) = ids.map_err(path_error)?;
    let v = find_version(&state, &dag_id, version_id).await?;
    Ok(Json(VersionSourceDto {
        version_id: v.id,
        dag_id: v.dag_id,
        hash: v.hash,
        source_path: v.source_path,
        yaml: v.yaml,
    }))
}

#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/diff",
    params(("dag_id" = String, Path, pattern = r"^[a-z_][a-z0-9_]*$", max_length = 64, description = "the DAG's id"),
        ("from" = i64, Query, minimum = 1, description = "the older version's id"),
        ("to" = i64, Query, minimum = 1, description = "the newer version's id")),
    responses((status = 200, body = DiffDto), (status = 400, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub(crate) async fn diff(
    _: Caller,
    State(state): State<AppState>,
    dag_id: Result<Path<String>, PathRejection>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Json<DiffDto>, ApiError> {
    let Path(dag_id) = dag_id.map_err(path_error)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let from = find_version(&state, &dag_id, query.from).await?;
    let to = find_version(&state, &dag_id, query.to).await?;
    Ok(Json(DiffDto {
        from: from.id,
        to: to.id,
        diff: crate::diff::unified(
            &from.yaml,
            &to.yaml,
            &format!("version {} ({})", from.id, from.source_path),
            &format!("version {} ({})", to.id, to.source_path),
        ),
    }))
}
