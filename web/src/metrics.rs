//! `/healthz` and Prometheus `/metrics` (no token: for load balancers and scrapers).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use amdahl_scheduler::{Clock, SystemClock};

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

/// `ok` when the state store answers.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.list_runs(None, 1).await {
        Ok(_) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the state store does not answer: {e}\n"),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let counts = match state.store.counts().await {
        Ok(counts) => counts,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("the state store does not answer: {e}\n"),
            );
        }
    };
    let workers = state
        .store
        .live_workers(SystemClock.now_ms() - 60_000)
        .await
        .map(|w| w.len())
        .unwrap_or(0);
    let mut out = String::new();
    out.push_str("# HELP amdahl_runs Runs by state.\n# TYPE amdahl_runs gauge\n");
    for (state, n) in &counts.runs {
        out.push_str(&format!("amdahl_runs{{state=\"{state}\"}} {n}\n"));
    }
    out.push_str("# HELP amdahl_tasks Task instances by state.\n# TYPE amdahl_tasks gauge\n");
    for (state, n) in &counts.tasks {
        out.push_str(&format!("amdahl_tasks{{state=\"{state}\"}} {n}\n"));
    }
    let queued = counts
        .tasks
        .iter()
        .find(|(s, _)| s == "queued")
        .map_or(0, |(_, n)| *n);
    out.push_str(
        "# HELP amdahl_queue_depth Tasks queued and not yet claimed.\n\
         # TYPE amdahl_queue_depth gauge\n",
    );
    out.push_str(&format!("amdahl_queue_depth {queued}\n"));
    out.push_str(
        "# HELP amdahl_workers Workers seen in the last minute.\n# TYPE amdahl_workers gauge\n",
    );
    out.push_str(&format!("amdahl_workers {workers}\n"));
    out.push_str(
        "# HELP amdahl_device_busy_seconds_total Time finished attempts spent, by device.\n\
         # TYPE amdahl_device_busy_seconds_total counter\n",
    );
    for (device, _, ms) in &counts.device_busy {
        out.push_str(&format!(
            "amdahl_device_busy_seconds_total{{device=\"{device}\"}} {:.3}\n",
            *ms as f64 / 1e3
        ));
    }
    out.push_str(
        "# HELP amdahl_attempts_total Finished attempts, by device.\n\
         # TYPE amdahl_attempts_total counter\n",
    );
    for (device, n, _) in &counts.device_busy {
        out.push_str(&format!(
            "amdahl_attempts_total{{device=\"{device}\"}} {n}\n"
        ));
    }
    let latency = &counts.claim_latency_ms;
    out.push_str(
        "# HELP amdahl_claim_latency_seconds From queued to claimed by a worker, over the latest \
         attempts (at most 1,000).\n# TYPE amdahl_claim_latency_seconds summary\n",
    );
    for q in [0.5, 0.9, 0.99] {
        if let Some(ms) = latency.get(((latency.len() as f64 - 1.0) * q).round() as usize) {
            out.push_str(&format!(
                "amdahl_claim_latency_seconds{{quantile=\"{q}\"}} {:.3}\n",
                *ms as f64 / 1e3
            ));
        }
    }
    out.push_str(&format!(
        "amdahl_claim_latency_seconds_sum {:.3}\namdahl_claim_latency_seconds_count {}\n",
        latency.iter().sum::<i64>() as f64 / 1e3,
        latency.len()
    ));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
