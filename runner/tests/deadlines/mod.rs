//! `run_timeout` and `depends_on_past`, on both databases: a run past its timeout fails with
//! its unfinished tasks, whether this process drives it or the scheduler service does; a task
//! that depends on its past waits for the previous scheduled run's task to end well.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use amdahl_dags::load_bytes;
use amdahl_runner::Quiet;
use amdahl_scheduler::runs::{RunOrigin, create_run};
use amdahl_scheduler::service::{Moved, advance};
use amdahl_scheduler::{AttemptState, Clock, RunState, TaskState};

use super::{TestDb, runner};

/// A clock the test moves.
struct At(AtomicI64);

impl Clock for At {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// In-process: `amdahl run` stops a task that outlives the run's timeout and fails the rest.
pub async fn a_run_past_its_run_timeout_fails_with_its_tasks(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
dag: bounded
run_timeout: 1s
tasks:
  quick:
    shell: "true"
  slow:
    retries: 3
    shell: "sleep 30"
  after:
    needs: [slow]
    shell: "echo never"
"#;
    let dag = load_bytes("bounded.yaml", dir.path(), yaml.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let started = std::time::Instant::now();
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Failed);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "`sleep 30` was stopped"
    );
    let reason = "the run timed out after 1s (run_timeout)";
    let run = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(run.note.as_deref(), Some(reason));
    let tasks = store.tasks(run_id).await.unwrap();
    let end = |id: &str| {
        let t = tasks.iter().find(|t| t.task_id == id).unwrap();
        (t.state, t.attempts, t.error.clone())
    };
    assert_eq!(end("quick"), (TaskState::Success, 1, None));
    assert_eq!(end("slow"), (TaskState::Failed, 1, Some(reason.into())));
    assert_eq!(end("after"), (TaskState::Failed, 0, Some(reason.into())));
    let attempts = store.attempts(run_id).await.unwrap();
    let slow = attempts.iter().find(|a| a.task_id == "slow").unwrap();
    assert_eq!(slow.state, AttemptState::TimedOut);
}

/// The scheduler service fails a run past its timeout even while every task is running (a
/// pass that would otherwise skip a settled run), fenced against the running attempt.
pub async fn the_service_times_out_a_settled_run(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = "dag: bounded\nrun_timeout: 1m\ntasks:\n  a:\n    shell: \"sleep 30\"\n  b:\n    needs: [a]\n    shell: \"true\"\n";
    let dag = load_bytes("bounded.yaml", dir.path(), yaml.as_bytes()).unwrap();
    let clock = At(AtomicI64::new(1_000_000));
    let params = BTreeMap::new();
    let run_id = create_run(&store, &clock, &dag, &params, RunOrigin::Manual)
        .await
        .unwrap();
    let pass = |skip| {
        let store = store.clone();
        let clock = &clock;
        async move {
            let run = store.run(run_id).await.unwrap().unwrap();
            advance(&store, clock, run, skip, &mut Moved::default())
                .await
                .unwrap();
        }
    };
    pass(true).await;
    let (_, attempt) = store
        .start_attempt(run_id, "a", "worker:1", 1_000_100)
        .await
        .unwrap();
    // Before the timeout nothing changes; just after it, the run and both tasks fail.
    clock.0.store(1_000_000 + 59_999, Ordering::SeqCst);
    pass(true).await;
    assert_eq!(
        store.task(run_id, "a").await.unwrap().unwrap().state,
        TaskState::Running
    );
    clock.0.store(1_000_000 + 60_000, Ordering::SeqCst);
    pass(true).await;
    let reason = "the run timed out after 1m (run_timeout)";
    let run = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(
        (run.state, run.note.as_deref()),
        (RunState::Failed, Some(reason))
    );
    for id in ["a", "b"] {
        let t = store.task(run_id, id).await.unwrap().unwrap();
        assert_eq!(
            (t.state, t.error.as_deref()),
            (TaskState::Failed, Some(reason)),
            "{id}"
        );
    }
    let attempts = store.attempts(run_id).await.unwrap();
    assert_eq!(
        (attempts.len(), attempts[0].attempt, attempts[0].state),
        (1, attempt, AttemptState::TimedOut)
    );
    // The worker's late report is refused: the attempt ended.
    let again = store
        .time_out_running_task(run_id, "a", attempt, 1_070_000, reason)
        .await;
    assert!(again.is_err(), "{again:?}");
}

/// `depends_on_past`: the second scheduled run's task waits until the first run's task
/// succeeded; a triggered run does not wait; a failed past holds the task back.
pub async fn a_task_waits_for_its_past(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = "dag: daily\nschedule: \"@daily\"\ntasks:\n  load:\n    depends_on_past: true\n    shell: \"true\"\n  report:\n    shell: \"true\"\n";
    let dag = load_bytes("daily.yaml", dir.path(), yaml.as_bytes()).unwrap();
    let clock = At(AtomicI64::new(1_000_000));
    let params = BTreeMap::new();
    let day = |d: u32| {
        chrono::NaiveDate::from_ymd_opt(2026, 1, d)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
    };
    let first = create_run(&store, &clock, &dag, &params, RunOrigin::Scheduled(day(1)))
        .await
        .unwrap();
    let second = create_run(&store, &clock, &dag, &params, RunOrigin::Scheduled(day(2)))
        .await
        .unwrap();
    let triggered = create_run(&store, &clock, &dag, &params, RunOrigin::Manual)
        .await
        .unwrap();
    let pass = |run_id: i64| {
        let store = store.clone();
        let clock = &clock;
        async move {
            let run = store.run(run_id).await.unwrap().unwrap();
            advance(&store, clock, run, false, &mut Moved::default())
                .await
                .unwrap();
        }
    };
    let state = |run_id: i64, task: &'static str| {
        let store = store.clone();
        async move { store.task(run_id, task).await.unwrap().unwrap().state }
    };
    for run in [first, second, triggered] {
        pass(run).await;
    }
    // The first has no past; the second waits for it; the triggered run has no past.
    assert_eq!(state(first, "load").await, TaskState::Queued);
    assert_eq!(state(second, "load").await, TaskState::Scheduled);
    assert_eq!(state(second, "report").await, TaskState::Queued);
    assert_eq!(state(triggered, "load").await, TaskState::Queued);

    // The first run's task fails: the second still waits.
    let (attempt_id, attempt) = store
        .start_attempt(first, "load", "worker:1", 1_000_100)
        .await
        .unwrap();
    let fail = amdahl_scheduler::store::FinishAttempt {
        run_id: first,
        task_id: "load".into(),
        attempt_id,
        attempt,
        attempt_state: AttemptState::Failed,
        task_state: TaskState::Failed,
        retry_at_ms: None,
        device: None,
        device_note: None,
        output_path: None,
        rows_out: None,
        bytes_out: None,
        error: Some("exit 1".into()),
        now_ms: 1_000_200,
        io_us: None,
        transfer_us: None,
        compute_us: None,
        route: None,
        rendered: None,
        plan: None,
        produces: Vec::new(),
        mapped: None,
    };
    store.finish_attempt(&fail).await.unwrap();
    let (attempt_id, attempt) = store
        .start_attempt(first, "report", "worker:1", 1_000_100)
        .await
        .unwrap();
    let report = amdahl_scheduler::store::FinishAttempt {
        task_id: "report".into(),
        attempt_id,
        attempt,
        attempt_state: AttemptState::Success,
        task_state: TaskState::Success,
        error: None,
        ..fail.clone()
    };
    store.finish_attempt(&report).await.unwrap();
    pass(first).await;
    assert_eq!(
        store.run(first).await.unwrap().unwrap().state,
        RunState::Failed
    );
    pass(second).await;
    assert_eq!(state(second, "load").await, TaskState::Scheduled);

    // Cleared and rerun to success: the second run's task goes.
    amdahl_scheduler::clear::clear(&store, first, &["load".to_string()], false)
        .await
        .unwrap();
    pass(first).await;
    let (attempt_id, attempt) = store
        .start_attempt(first, "load", "worker:1", 1_000_300)
        .await
        .unwrap();
    let succeed = amdahl_scheduler::store::FinishAttempt {
        attempt_id,
        attempt,
        attempt_state: AttemptState::Success,
        task_state: TaskState::Success,
        error: None,
        now_ms: 1_000_400,
        ..fail
    };
    store.finish_attempt(&succeed).await.unwrap();
    pass(second).await;
    assert_eq!(state(second, "load").await, TaskState::Queued);
}

/// A run still going when its `deadline` passes is recorded once for `on_deadline` (the
/// store accepts the event), and goes on.
pub async fn a_missed_deadline_is_recorded_once(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = "dag: late\ndeadline: { within: 1m, from: queued }\non_deadline:\n  - webhook: { url: \"http://127.0.0.1:9/late\" }\ntasks:\n  a:\n    shell: \"true\"\n";
    let dag = load_bytes("late.yaml", dir.path(), yaml.as_bytes()).unwrap();
    let clock = At(AtomicI64::new(1_000_000));
    let run_id = create_run(&store, &clock, &dag, &BTreeMap::new(), RunOrigin::Manual)
        .await
        .unwrap();
    let record = |now: i64| {
        let store = store.clone();
        let dag = dag.clone();
        async move {
            let run = store.run(run_id).await.unwrap().unwrap();
            amdahl_scheduler::notify::record(&store, &At(AtomicI64::new(now)), &run, &dag, None)
                .await
                .unwrap()
        }
    };
    assert_eq!(record(1_059_999).await, 0);
    assert_eq!(record(1_060_000).await, 1);
    assert_eq!(record(1_090_000).await, 0);
    let notes = store.notifications(run_id).await.unwrap();
    assert_eq!(
        notes
            .iter()
            .map(|n| (n.event.as_str(), n.occurrence, n.level.as_str()))
            .collect::<Vec<_>>(),
        vec![("deadline", 1_060_000, "dag")]
    );
    assert_eq!(
        store.run(run_id).await.unwrap().unwrap().state,
        RunState::Queued
    );
}
