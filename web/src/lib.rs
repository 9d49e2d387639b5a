//! Amdahl web: the REST API under `/api/v1` and the web UI, served by `amdahl web`.
//!
//! [`router`] builds the whole application over a [`Store`]: the API ([`api`]: DAGs, runs,
//! tasks, attempts, logs, trigger, cancel, pause; its OpenAPI document at
//! `/api/v1/openapi.json`), live updates as server-sent events ([`events`]), `/healthz` and
//! Prometheus `/metrics` ([`metrics`]), and the UI ([`ui`]: static files compiled into the
//! binary). Every `/api/v1` request needs a token ([`auth`]); reads need any role, changes
//! need `admin`. Errors are JSON `{"error": "…"}` with a 4xx status for the caller's mistakes;
//! a 500 means a bug or a database that cannot be reached.

pub mod api;
pub mod assets;
pub mod auth;
pub mod diff;
pub mod events;
pub mod extract;
pub mod metrics;
pub mod runs;
pub mod ui;
pub mod versions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use amdahl_dags::Dag;
use amdahl_scheduler::Store;
use amdahl_scheduler::store::DagVersion;

/// What every handler reads from.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Where DAG files are looked up by id for a trigger (the store's latest recorded version
    /// is the fallback).
    pub dags_folder: PathBuf,
    /// Recorded DAG versions, parsed once.
    pub versions: Versions,
    /// Whether viewer tokens may read outputs' first rows (`amdahl web --no-preview`: admins
    /// only).
    pub viewer_previews: bool,
}

impl AppState {
    pub fn new(store: Store, dags_folder: PathBuf) -> AppState {
        AppState {
            store,
            dags_folder,
            versions: Versions::default(),
            viewer_previews: true,
        }
    }
}

/// Parsed DAG versions by their YAML's hash (a version never changes), so pages of a large
/// DAG do not parse its YAML again; at most [`Versions::KEEP`] are kept.
#[derive(Clone, Default)]
pub struct Versions(Arc<Mutex<HashMap<String, Arc<Dag>>>>);

impl Versions {
    pub const KEEP: usize = 64;

    /// The version with this hash, if it was parsed already.
    pub fn cached(&self, hash: &str) -> Option<Arc<Dag>> {
        self.lock().get(hash).cloned()
    }

    /// The version parsed, or `None` when its YAML does not load any more.
    pub fn get(&self, version: &DagVersion) -> Option<Arc<Dag>> {
        if let Some(dag) = self.lock().get(&version.hash) {
            return Some(dag.clone());
        }
        let dag = Arc::new(
            amdahl_dags::load_bytes(
                &version.source_path,
                std::path::Path::new(&version.base_dir),
                version.yaml.as_bytes(),
            )
            .ok()?,
        );
        let mut cache = self.lock();
        if cache.len() >= Self::KEEP {
            cache.clear();
        }
        cache.insert(version.hash.clone(), dag.clone());
        Some(dag)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Dag>>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(runs::routes())
        .merge(versions::routes())
        .merge(assets::routes())
        .merge(events::routes())
        .merge(metrics::routes())
        .merge(ui::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Serves the application on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// An error as the API reports it: a status and one sentence.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// Something on our side (the database) failed.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}
