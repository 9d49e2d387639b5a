//! Notifications: `on_failure`, `on_retry` and `on_success` of DAG files, told by the
//! scheduler (never by a worker, which may be the thing that died).
//!
//! Two steps, each safe to repeat and to cut short at any point:
//!
//! 1. [`record`] looks at a watched run (one whose DAG version has notifiers) as the store has
//!    it, works out with the pure [`due`] which events it has had (an attempt that failed and
//!    will be retried, a task that failed for good or succeeded, the run's end) and records one
//!    notification per event and notifier. The store keeps each at most once, so a scheduler
//!    killed between a state change and its notification records it on its next pass, and two
//!    schedulers record it once.
//! 2. [`deliver`] (in `deliver.rs`) claims due notifications, renders them from the pinned DAG
//!    version with the secrets read on the scheduler, sends them, and records the answer;
//!    failures are retried with exponential backoff up to a limit. A notifier that keeps failing
//!    never touches its run.

mod deliver;
mod smtp;

pub use deliver::{Deliverer, DeliverySettings};

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use amdahl_dags::Dag;
use amdahl_dags::model::DeadlineFrom;
use amdahl_dags::notice::{NoticeContext, NoticeDag, NoticeEvent, NoticeRun, NoticeTask, Notifier};

use crate::Clock;
use crate::service::load_pinned;
use crate::state::{AttemptState, RunState};
use crate::store::{AttemptRecord, NewNotification, RunRecord, Store, StoreError, TaskRecord};

/// Log lines a failure's notification carries.
pub const LOG_TAIL_LINES: i64 = 20;

/// Whose notifier list an event uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// The DAG's: the run's end, or any task's retry.
    Dag,
    /// The task's own.
    Task,
}

impl Level {
    pub fn code(self) -> &'static str {
        match self {
            Level::Dag => "dag",
            Level::Task => "task",
        }
    }
}

/// One event a run has had that some notifier wants to hear about.
#[derive(Clone, Debug, PartialEq)]
pub struct Due {
    pub level: Level,
    pub event: NoticeEvent,
    /// Empty for the run's own end.
    pub task_id: String,
    /// The attempt for a task's event, the run's finish time for the run's.
    pub occurrence: i64,
    /// How many notifiers listen.
    pub notifiers: usize,
    /// The attempt the event is about (for a run's failure, the first failed task's last).
    pub attempt: Option<AttemptRecord>,
}

/// The events of a run that the DAG's notifiers want told, from what the store holds. An
/// attempt that failed (or timed out, or was lost with its worker) is a retry when the task had
/// retries left then (the rule of `decide::after_failure`), else the task's failure; an attempt
/// that succeeded is the task's success; a run that finished `success` or `failed` is the run's
/// event (a cancelled run tells no one). A run that had not finished when its `deadline`
/// passed (by `now_ms`) has missed it, once.
pub fn due(
    dag: &Dag,
    run: &RunRecord,
    tasks: &[TaskRecord],
    attempts: &[AttemptRecord],
    now_ms: i64,
) -> Vec<Due> {
    let mut out = Vec::new();
    let retries: BTreeMap<&str, i64> = tasks
        .iter()
        .map(|t| (t.task_id.as_str(), t.retries))
        .collect();
    // A task failed for good with retries left (its run timed out): its last attempt is
    // its failure.
    let ended: BTreeMap<&str, i64> = tasks
        .iter()
        .filter(|t| t.state == crate::state::TaskState::Failed)
        .map(|t| (t.task_id.as_str(), t.attempts))
        .collect();
    // A sensor's pokes that found nothing are attempts too; they are not tries: the retries
    // a failure leaves count the others.
    let mut pokes: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for a in attempts
        .iter()
        .filter(|a| a.state == AttemptState::Rescheduled)
    {
        pokes.entry(a.task_id.as_str()).or_default().push(a.attempt);
    }
    for attempt in attempts {
        let Some(task) = dag.task(&attempt.task_id) else {
            continue;
        };
        let event = match attempt.state {
            AttemptState::Success => NoticeEvent::Success,
            AttemptState::Failed | AttemptState::TimedOut | AttemptState::Lost => {
                let left = retries.get(task.id.as_str()).copied().unwrap_or(0);
                let last = ended.get(task.id.as_str()) == Some(&attempt.attempt);
                let poked = pokes
                    .get(task.id.as_str())
                    .map_or(0, |p| p.iter().filter(|&&n| n < attempt.attempt).count());
                if attempt.attempt - poked as i64 <= left && !last {
                    NoticeEvent::Retry
                } else {
                    NoticeEvent::Failure
                }
            }
            AttemptState::Running | AttemptState::Cancelled | AttemptState::Rescheduled => continue,
        };
        let mut push = |level: Level, notifiers: usize| {
            if notifiers > 0 {
                out.push(Due {
                    level,
                    event,
                    task_id: task.id.clone(),
                    occurrence: attempt.attempt,
                    notifiers,
                    attempt: Some(attempt.clone()),
                });
            }
        };
        push(Level::Task, task.notify.of(event).len());
        if event == NoticeEvent::Retry {
            push(Level::Dag, dag.notify.on_retry.len());
        }
    }
    if let Some(at) = deadline_at(dag, run)
        && at <= now_ms
        && run.finished_at_ms.is_none_or(|finished| finished > at)
        && !dag.notify.on_deadline.is_empty()
    {
        out.push(Due {
            level: Level::Dag,
            event: NoticeEvent::Deadline,
            task_id: String::new(),
            occurrence: at,
            notifiers: dag.notify.on_deadline.len(),
            attempt: None,
        });
    }
    let run_event = match run.state {
        RunState::Success => Some(NoticeEvent::Success),
        RunState::Failed => Some(NoticeEvent::Failure),
        _ => None,
    };
    if let (Some(event), Some(finished)) = (run_event, run.finished_at_ms) {
        let notifiers = dag.notify.of(event).len();
        if notifiers > 0 {
            // A run's failure is about its first failed task (in the DAG's order), if any.
            let failed = (event == NoticeEvent::Failure)
                .then(|| {
                    dag.tasks.iter().find_map(|t| {
                        let record = tasks.iter().find(|r| r.task_id == t.id)?;
                        (record.state == crate::state::TaskState::Failed).then_some(&t.id)
                    })
                })
                .flatten();
            let attempt = failed.and_then(|id| {
                attempts
                    .iter()
                    .filter(|a| &a.task_id == id)
                    .max_by_key(|a| a.attempt)
                    .cloned()
            });
            out.push(Due {
                level: Level::Dag,
                event,
                task_id: String::new(),
                occurrence: finished,
                notifiers,
                attempt,
            });
        }
    }
    out
}

/// When a run should have finished by its DAG's `deadline`; `None` without one, or before
/// the moment it counts from (`from: started` and the run has not started).
///
/// `scheduled` is when the run was due: for a run of a schedule (also a backfill or catch-up)
/// the end of its data interval, the cron tick after its logical date; for a triggered run,
/// whose logical date is when it was made, its creation.
pub fn deadline_at(dag: &Dag, run: &RunRecord) -> Option<i64> {
    let deadline = dag.deadline?;
    let base = match deadline.from {
        DeadlineFrom::Queued => run.created_at_ms,
        DeadlineFrom::Started => run.started_at_ms?,
        DeadlineFrom::Scheduled => {
            let logical = chrono::DateTime::parse_from_rfc3339(&run.logical_date)
                .ok()?
                .with_timezone(&chrono::Utc);
            let tick = dag
                .cron()
                .and_then(|cron| cron.next(&logical, false))
                .map(|t| t.timestamp_millis());
            match tick {
                Some(end) if end <= run.created_at_ms => end,
                _ => run.created_at_ms,
            }
        }
    };
    Some(base.saturating_add(deadline.within.as_millis() as i64))
}

/// The notifiers a due event is told through.
pub fn notifiers<'d>(
    dag: &'d Dag,
    level: Level,
    task_id: &str,
    event: NoticeEvent,
) -> &'d [Notifier] {
    match level {
        Level::Dag => dag.notify.of(event),
        Level::Task => dag.task(task_id).map_or(&[], |t| t.notify.of(event)),
    }
}

/// Where a notifier sends, with every secret masked (what the store keeps and the UI shows).
pub fn target(notifier: &Notifier, ctx: &NoticeContext, dag: &Dag) -> String {
    match notifier {
        Notifier::Webhook(hook) => {
            let masked: BTreeMap<String, String> = dag
                .secrets
                .keys()
                .map(|k| (k.clone(), "***".to_string()))
                .collect();
            let url = amdahl_dags::notice::render(&hook.url.text, ctx, &masked)
                .unwrap_or_else(|_| hook.url.text.clone());
            format!("{} {url}", hook.method)
        }
        Notifier::Email(email) => format!("mail to {}", email.to.join(", ")),
    }
}

/// Records the notifications a watched run is due, and stops watching it once it finished and
/// all of them are recorded. Returns how many were new.
pub async fn record(
    store: &Store,
    clock: &dyn Clock,
    run: &RunRecord,
    dag: &Dag,
    ui_url: Option<&str>,
) -> Result<u64, StoreError> {
    let tasks = store.tasks(run.id).await?;
    let attempts = store.attempts(run.id).await?;
    let dues = due(dag, run, &tasks, &attempts, clock.now_ms());
    let known: HashSet<(String, String, String, i64)> = store
        .notifications(run.id)
        .await?
        .into_iter()
        .map(|n| (n.level, n.task_id, n.event, n.occurrence))
        .collect();
    let params: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&run.params_json).unwrap_or_default();
    let mut new = Vec::new();
    for due in dues {
        let key = (
            due.level.code().to_string(),
            due.task_id.clone(),
            due.event.code().to_string(),
            due.occurrence,
        );
        if known.contains(&key) {
            continue;
        }
        let ctx = context(store, run, &due, &params, ui_url).await?;
        let context_json = serde_json::to_string(&ctx).unwrap_or_else(|_| "{}".into());
        for (i, notifier) in notifiers(dag, due.level, &due.task_id, due.event)
            .iter()
            .enumerate()
        {
            new.push(NewNotification {
                run_id: run.id,
                level: due.level.code().into(),
                task_id: due.task_id.clone(),
                event: due.event.code().into(),
                occurrence: due.occurrence,
                notifier: i as i64,
                kind: notifier.kind().into(),
                target: target(notifier, &ctx, dag),
                context_json: context_json.clone(),
            });
        }
    }
    let added = store.record_notifications(&new, clock.now_ms()).await?;
    if run.state.is_terminal()
        && let Some(finished) = run.finished_at_ms
    {
        store.stop_watching(run.id, finished).await?;
    }
    Ok(added)
}

/// Records what every watched run is due (at most `limit` runs a pass). A run whose DAG
/// version no longer loads is reported and left alone.
pub async fn record_watched(
    store: &Store,
    clock: &dyn Clock,
    ui_url: Option<&str>,
    limit: i64,
) -> Result<u64, StoreError> {
    let mut added = 0;
    let mut dags: BTreeMap<i64, Option<Dag>> = BTreeMap::new();
    for run_id in store.watched_runs(limit).await? {
        let Some(run) = store.run(run_id).await? else {
            continue;
        };
        let dag = match dags.get(&run.dag_version_id) {
            Some(dag) => dag.clone(),
            None => {
                let dag = match load_pinned(store, run.dag_version_id).await {
                    Ok(dag) => Some(dag),
                    Err(e) => {
                        eprintln!("scheduler: notifications of run {run_id}: {e}");
                        None
                    }
                };
                dags.insert(run.dag_version_id, dag.clone());
                dag
            }
        };
        if let Some(dag) = dag {
            added += record(store, clock, &run, &dag, ui_url).await?;
        }
    }
    Ok(added)
}

/// For a process that drove a run itself (`amdahl run`): records the run's notifications and
/// sends them now, retrying within `within`; what is still pending then is left for a
/// scheduler. Returns the run's notifications as they stand.
pub async fn tell_now(
    store: &Store,
    clock: &Arc<dyn Clock>,
    run_id: i64,
    deliverer: &Arc<Deliverer>,
    within: std::time::Duration,
) -> Result<Vec<crate::store::NotificationRecord>, StoreError> {
    let Some(run) = store.run(run_id).await? else {
        return Ok(Vec::new());
    };
    let dag = match load_pinned(store, run.dag_version_id).await {
        Ok(dag) => dag,
        Err(e) => return Err(StoreError::Corrupt(e)),
    };
    let ui_url = deliverer.settings().ui_url.clone();
    record(store, clock.as_ref(), &run, &dag, ui_url.as_deref()).await?;
    let until = tokio::time::Instant::now() + within;
    loop {
        deliverer.deliver_due(store, clock, 64).await?;
        let notes = store.notifications(run_id).await?;
        let pending = notes
            .iter()
            .filter(|n| n.state == crate::store::NotificationState::Pending)
            .map(|n| n.next_at_ms)
            .min();
        let Some(next) = pending else {
            return Ok(notes);
        };
        let wait =
            std::time::Duration::from_millis((next - clock.now_ms()).clamp(20, 1_000) as u64);
        if tokio::time::Instant::now() + wait > until {
            return Ok(notes);
        }
        tokio::time::sleep(wait).await;
    }
}

/// What a due event's templates see.
async fn context(
    store: &Store,
    run: &RunRecord,
    due: &Due,
    params: &BTreeMap<String, serde_json::Value>,
    ui_url: Option<&str>,
) -> Result<NoticeContext, StoreError> {
    let task = match &due.attempt {
        Some(a) => {
            let state = match a.state {
                AttemptState::Success => "success",
                _ if due.event == NoticeEvent::Retry => "up_for_retry",
                _ => "failed",
            };
            let log_tail = if a.state == AttemptState::Success {
                String::new()
            } else {
                store
                    .log_tail(run.id, &a.task_id, a.attempt, LOG_TAIL_LINES)
                    .await?
                    .join("\n")
            };
            NoticeTask {
                id: a.task_id.clone(),
                state: state.into(),
                attempt: a.attempt,
                error: a.error.clone().unwrap_or_default(),
                log_tail,
            }
        }
        None => NoticeTask::default(),
    };
    Ok(NoticeContext {
        event: due.event.code().into(),
        dag: NoticeDag {
            id: run.dag_id.clone(),
        },
        run: NoticeRun {
            id: run.id,
            logical_date: run.logical_date.clone(),
            state: run.state.to_string(),
            url: ui_url
                .map(|base| format!("{}/#/runs/{}", base.trim_end_matches('/'), run.id))
                .unwrap_or_default(),
        },
        task,
        params: params.clone(),
    })
}

#[cfg(test)]
mod tests;
