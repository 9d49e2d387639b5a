//! Live updates as server-sent events: `GET /api/v1/events` streams the latest runs, and
//! `GET /api/v1/events?run=ID` one run: first the run with every task and attempt, then only
//! what changed.
//!
//! The stream wakes on the store's progress signal (an attempt ended, a run was created or
//! cancelled) and polls every second besides, since signals may be lost; after sending it
//! waits a quarter of a second, so a burst of changes goes out as one event. For a run, each
//! wake-up costs one aggregate over its tasks (counts by state, attempts, latest start and
//! end); only when those or the run moved are the tasks read and compared with what this
//! stream sent, and only the tasks that differ go out, each with all its attempts. A
//! 10,000-task run sends its 2 MB once, then a few hundred bytes per change. A keep-alive
//! comment goes out every 15 seconds. The UI reads the stream with `fetch` (so it can send
//! its token).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use amdahl_scheduler::Topic;
use amdahl_scheduler::store::{StateCount, Subscription};

use crate::auth::Caller;
use crate::runs::{AttemptDto, NotificationDto, RunDto, TaskDto, count_states, find_run};
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/events", get(events))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    run: Option<i64>,
}

/// A `run` event: the run and its counts, with every task and attempt when `full` (the first
/// event), else only the tasks that changed since the last event, each with all its attempts.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunEvent {
    pub run: RunDto,
    pub counts: BTreeMap<String, i64>,
    pub task_count: i64,
    pub full: bool,
    pub tasks: Vec<TaskDto>,
    pub attempts: Vec<AttemptDto>,
    /// Every notification about the run so far (a handful; sent whole).
    pub notifications: Vec<NotificationDto>,
}

/// After an event, how long the stream lets changes gather before looking again.
const GATHER: Duration = Duration::from_millis(250);
/// How long it waits for a signal before looking anyway.
const POLL: Duration = Duration::from_secs(1);

async fn events(
    _: Caller,
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(run_id) = query.run {
        // A run that does not exist is a 404 now, not an empty stream.
        find_run(&state, run_id).await?;
    }
    let subscription = state
        .store
        .subscribe(Topic::Progress)
        .await
        .map_err(ApiError::internal)?;
    let stream = match query.run {
        Some(run_id) => watch(state, subscription, RunWatch::new(run_id)),
        None => watch(state, subscription, RunsWatch::default()),
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Something a stream watches: asked after each wake-up for the event to send, if any.
trait Watch: Send + 'static {
    fn look(
        &mut self,
        state: &AppState,
    ) -> impl Future<Output = Option<(&'static str, String)>> + Send;
}

fn watch<W: Watch>(
    state: AppState,
    subscription: Subscription,
    watched: W,
) -> BoxStream<'static, Result<Event, Infallible>> {
    futures::stream::unfold(
        (state, subscription, watched, true),
        |(state, mut subscription, mut watched, first)| async move {
            if !first {
                tokio::time::sleep(GATHER).await;
            }
            let mut look_now = first;
            loop {
                if !look_now {
                    subscription.wait(POLL).await;
                }
                look_now = false;
                // Nothing new, or the store did not answer this time: wait and look again.
                if let Some((name, data)) = watched.look(&state).await {
                    let event = Event::default().event(name).data(data);
                    return Some((Ok(event), (state, subscription, watched, false)));
                }
            }
        },
    )
    .boxed()
}

/// The latest 50 runs, sent whole whenever they differ from what was sent.
#[derive(Default)]
struct RunsWatch {
    last: Option<String>,
}

impl Watch for RunsWatch {
    async fn look(&mut self, state: &AppState) -> Option<(&'static str, String)> {
        let runs = state.store.list_runs(None, 50).await.ok()?;
        let runs: Vec<RunDto> = runs.into_iter().map(RunDto::from).collect();
        let json = serde_json::to_string(&runs).ok()?;
        if self.last.as_deref() == Some(json.as_str()) {
            return None;
        }
        self.last = Some(json.clone());
        Some(("runs", json))
    }
}

/// One run: what this stream has sent of it, to send only what changed.
struct RunWatch {
    run_id: i64,
    run: Option<String>,
    counts: Vec<StateCount>,
    /// The notifications as last sent.
    notifications: String,
    /// A hash of each task as last sent.
    sent: HashMap<String, u64>,
}

impl RunWatch {
    fn new(run_id: i64) -> RunWatch {
        RunWatch {
            run_id,
            run: None,
            counts: Vec::new(),
            notifications: String::new(),
            sent: HashMap::new(),
        }
    }
}

fn fingerprint(task: &TaskDto) -> u64 {
    let mut hasher = DefaultHasher::new();
    serde_json::to_vec(task)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

impl Watch for RunWatch {
    async fn look(&mut self, state: &AppState) -> Option<(&'static str, String)> {
        let store = &state.store;
        let full = self.run.is_none();
        let run = RunDto::from(store.run(self.run_id).await.ok()??);
        let run_json = serde_json::to_string(&run).ok()?;
        let counts = store.state_counts(self.run_id).await.ok()?;
        let notifications: Vec<NotificationDto> = store
            .notifications(self.run_id)
            .await
            .ok()?
            .into_iter()
            .map(NotificationDto::from)
            .collect();
        let notifications_json = serde_json::to_string(&notifications).ok()?;
        if self.run.as_deref() == Some(run_json.as_str())
            && counts == self.counts
            && notifications_json == self.notifications
        {
            return None;
        }
        let tasks = store.tasks(self.run_id).await.ok()?;
        let mut tasks_out = Vec::new();
        let mut changed = Vec::new();
        let mut sent = HashMap::with_capacity(tasks.len());
        for task in tasks {
            let task = TaskDto::from(task);
            let hash = fingerprint(&task);
            if self.sent.get(&task.task_id) != Some(&hash) {
                changed.push(task.task_id.clone());
                sent.insert(task.task_id.clone(), hash);
                tasks_out.push(task);
            } else {
                sent.insert(task.task_id, hash);
            }
        }
        let attempts = if full {
            store.attempts(self.run_id).await.ok()?
        } else {
            store.attempts_of(self.run_id, &changed).await.ok()?
        };
        let (by_state, task_count) = count_states(&counts);
        let event = RunEvent {
            run,
            counts: by_state,
            task_count,
            full,
            tasks: tasks_out,
            attempts: attempts.into_iter().map(AttemptDto::from).collect(),
            notifications,
        };
        let json = serde_json::to_string(&event).ok()?;
        self.notifications = notifications_json;
        self.run = Some(run_json);
        self.counts = counts;
        self.sent = sent;
        Some(("run", json))
    }
}
