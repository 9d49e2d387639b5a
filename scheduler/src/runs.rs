//! Runs as the store holds them: creating a run from a DAG (its version, tasks and logical
//! date), the views [`crate::decide`] reads, owners and their heartbeats, and failing runs whose
//! owner died ([`reap_orphans`]). Shared by the in-process runner, the services and the API;
//! nothing here executes a stage.

use std::collections::BTreeMap;
use std::time::Duration;

use amdahl_dags::Dag;

use crate::Clock;
use crate::decide::{Dispatcher, Past, RunView, TaskView};
use crate::state::TaskState;
use crate::store::{NewRun, NewTask, RunRecord, Store, StoreError, TaskRecord, Topic, TriggerKind};

/// How often a running process proves it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A run whose owner has not beaten for this long is taken to be orphaned.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// Who asked for a run, which decides who drives it.
#[derive(Clone, Debug)]
pub enum RunOrigin {
    /// `amdahl run`: this process (the owner) drives it.
    InProcess(String),
    /// `amdahl trigger`: the scheduler service drives it; logical date = now.
    Manual,
    /// A cron tick: the scheduler service drives it; logical date = the interval's start.
    Scheduled(chrono::DateTime<chrono::Utc>),
    /// New asset events (or a watched DAG's success) per the DAG's data schedule: the
    /// scheduler service drives it; logical date = now. The cursors move in the same
    /// transaction, fenced, so the events start one run.
    Assets(Vec<crate::store::CursorMove>),
    /// One date of a backfill: the scheduler service drives it.
    Backfill {
        backfill_id: i64,
        logical: chrono::DateTime<chrono::Utc>,
    },
}

/// Records the DAG's version and creates a queued run. A scheduled run that exists already
/// (another scheduler was first) is a `Conflict`.
pub async fn create_run(
    store: &Store,
    clock: &dyn Clock,
    dag: &Dag,
    params: &BTreeMap<String, serde_json::Value>,
    origin: RunOrigin,
) -> Result<i64, StoreError> {
    let run_id = create_run_quietly(store, clock, dag, params, origin).await?;
    store.signal(Topic::Progress).await;
    Ok(run_id)
}

/// Creates a run as [`create_run`] does, without telling the scheduler: for a caller that
/// starts the run itself at once ([`crate::service::start_now`]).
pub async fn create_run_quietly(
    store: &Store,
    clock: &dyn Clock,
    dag: &Dag,
    params: &BTreeMap<String, serde_json::Value>,
    origin: RunOrigin,
) -> Result<i64, StoreError> {
    let now = clock.now_ms();
    let mut assets = Vec::new();
    let (owner, trigger, logical_date, backfill_id) = match origin {
        RunOrigin::InProcess(owner) => (Some(owner), TriggerKind::Manual, rfc3339(now), None),
        RunOrigin::Assets(moves) => {
            assets = moves;
            (None, TriggerKind::Manual, rfc3339(now), None)
        }
        RunOrigin::Manual => (None, TriggerKind::Manual, rfc3339(now), None),
        RunOrigin::Scheduled(tick) => (None, TriggerKind::Schedule, logical_text(tick), None),
        RunOrigin::Backfill {
            backfill_id,
            logical,
        } => (
            None,
            TriggerKind::Backfill,
            logical_text(logical),
            Some(backfill_id),
        ),
    };
    // `depends_on_past` compares runs along the schedule; a triggered run has no past.
    let along_schedule = matches!(trigger, TriggerKind::Schedule | TriggerKind::Backfill);
    let version_id = record_version(store, dag, now).await?;
    // `when:` templates are decided now, for this run's params and logical date (a
    // `when: { sql }` when the task starts).
    let context = amdahl_dags::RunContext::new(dag, 0, logical_date.clone(), params.clone());
    let tasks = dag
        .tasks
        .iter()
        .map(|t| NewTask {
            skip_note: t
                .when
                .as_ref()
                .and_then(|when| when.template())
                .and_then(|when| skip_note(when, &context)),
            task_id: t.id.clone(),
            device: t.device,
            kind: t.kind.name().to_string(),
            needs: t.needs.clone(),
            priority: i64::from(t.priority),
            retries: i64::from(t.retries),
            retry_delay_ms: t.retry_delay.as_millis() as i64,
            max_retry_delay_ms: t.retry_backoff.cap().map(|d| d.as_millis() as i64),
            timeout_ms: t.timeout.map(|d| d.as_millis() as i64),
            pool: t.pool.clone(),
            trigger: t.trigger,
            depends_on_past: t.depends_on_past && along_schedule,
        })
        .collect();
    store
        .create_run(&NewRun {
            dag_id: dag.id.clone(),
            trigger,
            dag_version_id: version_id,
            params_json: serde_json::to_string(params).unwrap_or_else(|_| "{}".into()),
            logical_date,
            max_active_tasks: i64::from(dag.max_active_tasks.unwrap_or(16)),
            owner,
            backfill_id,
            notify: dag.notifies(),
            run_timeout_ms: dag.run_timeout.map(|d| d.as_millis() as i64),
            now_ms: now,
            tasks,
            assets,
        })
        .await
}

pub fn find<'a>(tasks: &'a [TaskRecord], task_id: &str) -> Result<&'a TaskRecord, RunError> {
    tasks
        .iter()
        .find(|t| t.task_id == task_id)
        .ok_or_else(|| RunError::Invalid(format!("task `{task_id}` is missing from the run")))
}

pub fn state_of(tasks: &[TaskRecord], task_id: &str) -> TaskState {
    tasks
        .iter()
        .find(|t| t.task_id == task_id)
        .map_or(TaskState::Scheduled, |t| t.state)
}

pub fn task_view(t: &TaskRecord) -> TaskView {
    TaskView {
        task_id: t.task_id.clone(),
        state: t.state,
        needs: t.needs.clone(),
        priority: t.priority as i32,
        // A sensor's pokes that found nothing are not tries.
        attempts: (t.attempts - t.pokes) as u32,
        retries: t.retries as u32,
        retry_delay_ms: t.retry_delay_ms,
        max_retry_delay_ms: t.max_retry_delay_ms,
        retry_at_ms: t.retry_at_ms,
        timeout_ms: t.timeout_ms,
        started_at_ms: t.started_at_ms,
        pool: t.pool.clone(),
        trigger: t.trigger,
        skip: t.skip_note.is_some(),
        past: Past::Ignored,
    }
}

/// For a run with tasks that wait on `depends_on_past`, the states of the previous run's
/// tasks (by logical date, among scheduled and backfilled runs); empty when none waits, so
/// most passes cost no query.
pub async fn past_of(
    store: &Store,
    run: &RunRecord,
    tasks: &[TaskRecord],
) -> Result<BTreeMap<String, TaskState>, StoreError> {
    if tasks
        .iter()
        .any(|t| t.depends_on_past && t.state == TaskState::Scheduled)
    {
        store.previous_task_states(run).await
    } else {
        Ok(BTreeMap::new())
    }
}

/// When a started run passes its `run_timeout` (its start plus the timeout).
pub fn timeout_at_ms(run: &RunRecord) -> Option<i64> {
    run.started_at_ms
        .zip(run.run_timeout_ms)
        .map(|(start, limit)| start.saturating_add(limit))
}

/// Why a run that passed its `run_timeout` failed, and its unfinished tasks with it.
pub fn timeout_reason(run: &RunRecord) -> String {
    let limit = Duration::from_millis(run.run_timeout_ms.unwrap_or_default().max(0) as u64);
    format!(
        "the run timed out after {} (run_timeout)",
        amdahl_dags::model::format_duration(limit)
    )
}

/// Free pool slots, read only when one of `tasks` is in a pool.
pub async fn pool_free_for(
    store: &Store,
    tasks: &[TaskRecord],
) -> Result<BTreeMap<String, usize>, StoreError> {
    if tasks.iter().any(|t| t.pool.is_some()) {
        store.pool_free().await
    } else {
        Ok(BTreeMap::new())
    }
}

/// What [`crate::decide::decide`] reads about a run, with what [`past_of`] and
/// [`pool_free_for`] found; `cancel_requested` may also come from the process driving it.
pub fn view_of(
    run: &RunRecord,
    tasks: &[TaskRecord],
    cancel_requested: bool,
    dispatcher: Dispatcher,
    pool_free: BTreeMap<String, usize>,
    past: &BTreeMap<String, TaskState>,
) -> RunView {
    RunView {
        state: run.state,
        tasks: tasks
            .iter()
            .map(|t| TaskView {
                past: if t.depends_on_past {
                    past.get(&t.task_id)
                        .map_or(Past::Missing, |s| Past::Was(*s))
                } else {
                    Past::Ignored
                },
                ..task_view(t)
            })
            .collect(),
        max_active_tasks: run.max_active_tasks.max(1) as usize,
        cancel_requested: cancel_requested || run.cancel_requested_at_ms.is_some(),
        dispatcher,
        pool_free,
        timeout_at_ms: timeout_at_ms(run),
    }
}

/// Why a task with this `when:` is skipped in a run of `context`: `None` when it holds. One
/// that cannot be decided for the run's params (a param of another type, say) skips the task
/// and says why, rather than running work the condition was meant to guard.
fn skip_note(when: &amdahl_dags::Located, context: &amdahl_dags::RunContext) -> Option<String> {
    match amdahl_dags::template::condition(when, context) {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "skipped: `when: {}` is false for this run",
            when.text.trim()
        )),
        Err(e) => Some(format!(
            "skipped: `when: {}` could not be decided for this run: {}",
            when.text.trim(),
            e.message
        )),
    }
}

/// Records the DAG's source as a version (idempotent by its hash); returns the version id.
pub async fn record_version(store: &Store, dag: &Dag, now_ms: i64) -> Result<i64, StoreError> {
    store
        .record_dag_version(
            &dag.id,
            &dag.source.hash,
            &dag.source.display_path,
            &dag.source.base_dir.display().to_string(),
            &dag.source.text,
            now_ms,
        )
        .await
}

/// How logical dates are stored: RFC 3339, UTC, whole seconds (so text order is time order).
pub fn logical_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// This process's identity as a run owner: `host:pid:start-ms`.
pub fn owner_id(now_ms: i64) -> String {
    format!("{}:{}:{now_ms}", host_name(), std::process::id())
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Fails every unfinished run whose owner is gone: a process on this host that no longer
/// exists, or any owner silent for longer than [`ORPHAN_AFTER`]. Returns the runs it failed.
pub async fn reap_orphans(
    store: &Store,
    clock: &dyn Clock,
    own_owner: &str,
) -> Result<Vec<i64>, StoreError> {
    let now = clock.now_ms();
    let host = host_name();
    let mut reaped = Vec::new();
    for (run_id, owner, heartbeat) in store.unfinished_runs().await? {
        // Runs without an owner belong to the scheduler service, whose workers hold leases.
        let Some(owner) = owner else { continue };
        if owner == own_owner {
            continue;
        }
        let owner = Some(owner);
        let dead_here = owner.as_deref().and_then(|o| {
            let mut parts = o.split(':');
            let owner_host = parts.next()?;
            let pid: i32 = parts.next()?.parse().ok()?;
            (owner_host == host).then(|| !process_alive(pid))
        });
        let silent = heartbeat.is_none_or(|at| now - at > ORPHAN_AFTER.as_millis() as i64);
        let reason = match (dead_here, silent) {
            (Some(true), _) => format!(
                "owner process {} exited before the run finished",
                owner.as_deref().unwrap_or("?")
            ),
            (_, true) => format!(
                "owner {} stopped sending heartbeats",
                owner.as_deref().unwrap_or("(none)")
            ),
            _ => continue,
        };
        if store
            .fail_orphaned_run(run_id, owner.as_deref(), &reason, now)
            .await?
        {
            reaped.push(run_id);
        }
    }
    Ok(reaped)
}
