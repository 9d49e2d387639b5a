//! Clearing: tasks of a finished run, and everything downstream of them, run again.
//!
//! As in Airflow, clearing a task also clears the tasks that need it (directly or not), since
//! their outputs were made from the old one; `downstream: false` clears only the tasks named.
//! The run goes back to `queued` without an owner, so the scheduler service (`amdahl
//! scheduler` or `amdahl standalone`) runs it; attempts go on numbering from where they were.

use std::collections::BTreeSet;

use crate::store::{Store, StoreError, TaskRecord, Topic};

#[derive(Debug, thiserror::Error)]
pub enum ClearError {
    #[error("no run {0}")]
    NoRun(i64),
    #[error("run {run} has no task `{task}`")]
    NoTask { run: i64, task: String },
    #[error("run {0} is not finished; wait for it or cancel it first")]
    NotFinished(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The tasks to clear: `chosen`, and with `downstream` every task that needs one of them,
/// in the run's order.
pub fn to_clear(
    tasks: &[TaskRecord],
    chosen: &[String],
    downstream: bool,
) -> Result<Vec<String>, String> {
    let mut set: BTreeSet<&str> = BTreeSet::new();
    for task in chosen {
        if !tasks.iter().any(|t| &t.task_id == task) {
            return Err(task.clone());
        }
        set.insert(task);
    }
    if downstream {
        // Tasks are stored in topological order: one pass reaches everything downstream.
        for task in tasks {
            if task.needs.iter().any(|n| set.contains(n.as_str())) {
                set.insert(&task.task_id);
            }
        }
    }
    Ok(tasks
        .iter()
        .filter(|t| set.contains(t.task_id.as_str()))
        // Tasks that never ran are already waiting.
        .filter(|t| t.state.is_terminal())
        .map(|t| t.task_id.clone())
        .collect())
}

/// Clears `chosen` (and with `downstream` what needs them) in the finished run `run_id`;
/// returns the tasks cleared.
pub async fn clear(
    store: &Store,
    run_id: i64,
    chosen: &[String],
    downstream: bool,
) -> Result<Vec<String>, ClearError> {
    let run = store.run(run_id).await?.ok_or(ClearError::NoRun(run_id))?;
    if !run.state.is_terminal() {
        return Err(ClearError::NotFinished(run_id));
    }
    let tasks = store.tasks(run_id).await?;
    let cleared = to_clear(&tasks, chosen, downstream)
        .map_err(|task| ClearError::NoTask { run: run_id, task })?;
    match store.clear_tasks(run_id, &cleared).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(ClearError::NotFinished(run_id)),
        Err(e) => return Err(e.into()),
    }
    store.signal(Topic::Progress).await;
    Ok(cleared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TaskState;

    fn task(id: &str, needs: &[&str], state: TaskState) -> TaskRecord {
        TaskRecord {
            task_id: id.into(),
            kind: "shell".into(),
            state,
            needs: needs.iter().map(|n| n.to_string()).collect(),
            priority: 0,
            retries: 0,
            retry_delay_ms: 0,
            max_retry_delay_ms: None,
            timeout_ms: None,
            attempts: 1,
            retry_at_ms: None,
            device: None,
            output_path: None,
            rows_out: None,
            bytes_out: None,
            error: None,
            started_at_ms: None,
            finished_at_ms: None,
            pool: None,
            trigger: amdahl_dags::TriggerRule::AllSuccess,
            skip_note: None,
            depends_on_past: false,
            pokes: 0,
            waiting_since_ms: None,
            map_index: None,
            map_value: None,
        }
    }

    #[test]
    fn clearing_takes_everything_downstream_and_nothing_upstream() {
        use TaskState::*;
        let tasks = [
            task("extract", &[], Success),
            task("load", &["extract"], Failed),
            task("report", &["load"], UpstreamFailed),
            task("side", &["extract"], Success),
            task("final", &["report", "side"], UpstreamFailed),
            task("never", &[], Scheduled),
        ];
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            to_clear(&tasks, &ids(&["load"]), true).unwrap(),
            ids(&["load", "report", "final"])
        );
        assert_eq!(
            to_clear(&tasks, &ids(&["load"]), false).unwrap(),
            ids(&["load"])
        );
        assert_eq!(
            to_clear(&tasks, &ids(&["extract"]), true).unwrap(),
            ids(&["extract", "load", "report", "side", "final"])
        );
        assert_eq!(to_clear(&tasks, &ids(&["never"]), true).unwrap(), ids(&[]));
        assert_eq!(to_clear(&tasks, &ids(&["nope"]), true), Err("nope".into()));
    }
}
