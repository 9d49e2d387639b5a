//! Live updates as server-sent events: `GET /api/v1/events` streams the latest runs, and
//! `GET /api/v1/events?run=ID` one run with its tasks and attempts, each time they change.
//!
//! A snapshot is sent at once, then again whenever it differs from the last one sent; the
//! stream wakes on the store's progress signal (an attempt ended, a run was created or
//! cancelled) and polls every second besides, since signals may be lost. A keep-alive comment
//! goes out every 15 seconds. The UI reads the stream with `fetch` (so it can send its token).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use serde::Deserialize;

use amdahl_scheduler::Topic;

use crate::api::{RunDto, run_detail};
use crate::auth::Caller;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/events", get(events))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    run: Option<i64>,
}

async fn events(
    _: Caller,
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(run_id) = query.run {
        // A run that does not exist is a 404 now, not an empty stream.
        run_detail(&state, run_id).await?;
    }
    let subscription = state
        .store
        .subscribe(Topic::Progress)
        .await
        .map_err(ApiError::internal)?;
    let stream = futures::stream::unfold(
        (state, subscription, None::<String>, true),
        move |(state, mut subscription, last, mut first)| async move {
            loop {
                if !first {
                    subscription.wait(Duration::from_secs(1)).await;
                }
                first = false;
                let (name, snapshot) = match query.run {
                    Some(run_id) => (
                        "run",
                        run_detail(&state, run_id)
                            .await
                            .ok()
                            .and_then(|d| serde_json::to_string(&d).ok()),
                    ),
                    None => (
                        "runs",
                        state.store.list_runs(None, 50).await.ok().and_then(|runs| {
                            let runs: Vec<RunDto> = runs.into_iter().map(RunDto::from).collect();
                            serde_json::to_string(&runs).ok()
                        }),
                    ),
                };
                match snapshot {
                    Some(json) if last.as_deref() != Some(json.as_str()) => {
                        let event = Event::default().event(name).data(json.clone());
                        return Some((Ok(event), (state, subscription, Some(json), false)));
                    }
                    // Unchanged, or the store did not answer this time: wait and look again.
                    _ => continue,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
