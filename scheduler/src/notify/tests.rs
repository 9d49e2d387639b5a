//! Which events a run's notifiers are told, from states alone.

use super::*;
use crate::state::TaskState;
use amdahl_dags::TriggerRule;

const DAG: &str = r#"
dag: nightly
on_failure:
  - webhook: { url: "https://hooks.example.com/run-failed" }
on_retry:
  - webhook: { url: "https://hooks.example.com/retry" }
tasks:
  extract:
    shell: ./extract.sh
    retries: 1
    on_failure:
      - webhook: { url: "https://hooks.example.com/extract-failed" }
      - email: { to: oncall@example.com }
    on_success:
      - webhook: { url: "https://hooks.example.com/extract-ok" }
  load:
    needs: [extract]
    shell: ./load.sh
"#;

fn dag() -> Dag {
    amdahl_dags::load_bytes("nightly.yaml", std::path::Path::new("."), DAG.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()))
}

fn run(state: RunState, finished: Option<i64>) -> RunRecord {
    RunRecord {
        id: 9,
        dag_id: "nightly".into(),
        dag_version_id: 1,
        version_hash: "h".into(),
        state,
        params_json: "{}".into(),
        logical_date: "2026-01-01T00:00:00Z".into(),
        max_active_tasks: 4,
        owner: None,
        heartbeat_at_ms: None,
        note: None,
        created_at_ms: 0,
        started_at_ms: Some(1),
        finished_at_ms: finished,
        cancel_requested_at_ms: None,
        run_timeout_ms: None,
    }
}

fn task(id: &str, state: TaskState, retries: i64) -> TaskRecord {
    TaskRecord {
        task_id: id.into(),
        kind: "shell".into(),
        state,
        needs: Vec::new(),
        priority: 0,
        retries,
        retry_delay_ms: 0,
        max_retry_delay_ms: None,
        timeout_ms: None,
        attempts: 0,
        retry_at_ms: None,
        device: None,
        output_path: None,
        rows_out: None,
        bytes_out: None,
        error: None,
        started_at_ms: None,
        finished_at_ms: None,
        pool: None,
        trigger: TriggerRule::AllSuccess,
        skip_note: None,
        depends_on_past: false,
        pokes: 0,
        waiting_since_ms: None,
        map_index: None,
        map_value: None,
    }
}

fn attempt(task_id: &str, number: i64, state: AttemptState) -> AttemptRecord {
    AttemptRecord {
        id: number,
        task_id: task_id.into(),
        attempt: number,
        state,
        device: None,
        device_note: None,
        error: (state != AttemptState::Success).then(|| "exit status 1".into()),
        rows_out: None,
        bytes_out: None,
        started_at_ms: 1,
        finished_at_ms: Some(2),
        predicted_cpu_us: None,
        predicted_gpu_us: None,
        io_us: None,
        transfer_us: None,
        compute_us: None,
        route: None,
        rendered: None,
        plan: None,
        started_at_us: None,
        finished_at_us: None,
    }
}

/// (level, event, task, occurrence, notifiers) of each due event.
fn summary(dues: &[Due]) -> Vec<(&'static str, &'static str, String, i64, usize)> {
    dues.iter()
        .map(|d| {
            (
                d.level.code(),
                d.event.code(),
                d.task_id.clone(),
                d.occurrence,
                d.notifiers,
            )
        })
        .collect()
}

#[test]
fn a_retried_then_failed_task_and_its_failed_run() {
    let dag = dag();
    let tasks = [
        task("extract", TaskState::Failed, 1),
        task("load", TaskState::UpstreamFailed, 0),
    ];
    let attempts = [
        attempt("extract", 1, AttemptState::Failed),
        attempt("extract", 2, AttemptState::TimedOut),
    ];
    let dues = due(
        &dag,
        &run(RunState::Failed, Some(500)),
        &tasks,
        &attempts,
        0,
    );
    assert_eq!(
        summary(&dues),
        vec![
            // Attempt 1 had a retry left: the DAG's on_retry (the task lists none).
            ("dag", "retry", "extract".into(), 1, 1),
            // Attempt 2 was the last: the task's two on_failure notifiers.
            ("task", "failure", "extract".into(), 2, 2),
            // The run's end, about its first failed task.
            ("dag", "failure", String::new(), 500, 1),
        ]
    );
    let run_failure = &dues[2];
    assert_eq!(
        run_failure
            .attempt
            .as_ref()
            .map(|a| (a.task_id.as_str(), a.attempt)),
        Some(("extract", 2))
    );
}

#[test]
fn successes_are_told_only_where_someone_listens() {
    let dag = dag();
    let tasks = [
        task("extract", TaskState::Success, 1),
        task("load", TaskState::Success, 0),
    ];
    let attempts = [
        attempt("extract", 1, AttemptState::Success),
        attempt("load", 1, AttemptState::Success),
    ];
    // The DAG has no on_success, `load` none either: only extract's success.
    let dues = due(
        &dag,
        &run(RunState::Success, Some(700)),
        &tasks,
        &attempts,
        0,
    );
    assert_eq!(
        summary(&dues),
        vec![("task", "success", "extract".into(), 1, 1)]
    );
}

#[test]
fn running_cancelled_and_lost_attempts() {
    let dag = dag();
    let tasks = [
        task("extract", TaskState::Running, 1),
        task("load", TaskState::Scheduled, 0),
    ];
    // A lost worker counts as a failed attempt; a running or cancelled one tells no one,
    // and neither does a run that is not over or was cancelled.
    let attempts = [
        attempt("extract", 1, AttemptState::Lost),
        attempt("extract", 2, AttemptState::Running),
        attempt("load", 1, AttemptState::Cancelled),
    ];
    let dues = due(&dag, &run(RunState::Running, None), &tasks, &attempts, 0);
    assert_eq!(
        summary(&dues),
        vec![("dag", "retry", "extract".into(), 1, 1)]
    );
    let dues = due(
        &dag,
        &run(RunState::Cancelled, Some(9)),
        &tasks,
        &attempts,
        0,
    );
    assert_eq!(
        summary(&dues),
        vec![("dag", "retry", "extract".into(), 1, 1)]
    );
}

#[test]
fn backoff_doubles_up_to_its_cap_with_bounded_jitter() {
    let settings = DeliverySettings {
        backoff: std::time::Duration::from_secs(2),
        max_backoff: std::time::Duration::from_secs(60),
        ..DeliverySettings::default()
    };
    for seed in [0, 1, 17, 123_456_789] {
        let waits: Vec<u128> = (1..=8)
            .map(|n| settings.backoff_after(n, seed).as_millis())
            .collect();
        let bases = [2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000];
        for (wait, base) in waits.iter().zip(bases) {
            assert!(
                *wait >= base && *wait <= base + base / 5,
                "{waits:?} (seed {seed})"
            );
        }
    }
}

/// `deadline:` is missed once, when a run had not finished by then; `scheduled` counts from
/// the end of a scheduled run's interval, or a triggered run's creation.
#[test]
fn a_missed_deadline_is_due_once_it_passed() {
    let yaml = r#"
dag: late
schedule: "@daily"
deadline: { within: 2h }
on_deadline:
  - webhook: { url: "https://hooks.example.com/late" }
tasks:
  a:
    shell: "true"
"#;
    let dag = amdahl_dags::load_bytes("late.yaml", std::path::Path::new("."), yaml.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    const HOUR: i64 = 3_600_000;
    let day_end = chrono::DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    // A scheduled run of 2026-01-01, created a minute after its interval ended.
    let scheduled = RunRecord {
        created_at_ms: day_end + 60_000,
        ..run(RunState::Running, None)
    };
    assert_eq!(deadline_at(&dag, &scheduled), Some(day_end + 2 * HOUR));
    let deadlines = |run: &RunRecord, now: i64| {
        due(&dag, run, &[], &[], now)
            .into_iter()
            .filter(|d| d.event == NoticeEvent::Deadline)
            .map(|d| d.occurrence)
            .collect::<Vec<_>>()
    };
    assert!(deadlines(&scheduled, day_end + 2 * HOUR - 1).is_empty());
    assert_eq!(
        deadlines(&scheduled, day_end + 2 * HOUR),
        vec![day_end + 2 * HOUR]
    );
    // Finished in time: never due; finished late: due even if looked at later.
    let on_time = RunRecord {
        state: RunState::Success,
        finished_at_ms: Some(day_end + HOUR),
        ..scheduled.clone()
    };
    assert!(deadlines(&on_time, day_end + 5 * HOUR).is_empty());
    let late = RunRecord {
        state: RunState::Success,
        finished_at_ms: Some(day_end + 3 * HOUR),
        ..scheduled.clone()
    };
    assert_eq!(
        deadlines(&late, day_end + 5 * HOUR),
        vec![day_end + 2 * HOUR]
    );
    // A triggered run (its logical date is its creation) counts from its creation.
    let triggered = RunRecord {
        logical_date: "2026-03-01T10:00:00Z".into(),
        created_at_ms: chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .timestamp_millis(),
        ..scheduled.clone()
    };
    assert_eq!(
        deadline_at(&dag, &triggered),
        Some(triggered.created_at_ms + 2 * HOUR)
    );
}
