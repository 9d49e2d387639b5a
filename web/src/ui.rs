//! The web UI: one page and its script and style, compiled into the binary (no Node toolchain
//! to build or run it). The page talks to the API with the token it is given at login.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
}

/// Headers every UI file gets: no framing by other sites, no guessing of types, scripts and
/// styles only from here.
const SECURITY: [(header::HeaderName, &str); 3] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
];

async fn index() -> impl IntoResponse {
    (
        SECURITY,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX,
    )
}

async fn script() -> impl IntoResponse {
    (
        SECURITY,
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    (
        SECURITY,
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE,
    )
}
