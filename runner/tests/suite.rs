//! The scheduler's behavioural suite, run against both databases.
//!
//! Every test here runs twice: `sqlite::…` on a fresh SQLite file and `postgres::…` on a fresh
//! PostgreSQL database (created under `AMDAHL_TEST_POSTGRES_URL`, dropped afterwards). The
//! PostgreSQL half never skips silently: without the variable it fails and says what to set,
//! unless `AMDAHL_TEST_SKIP_POSTGRES=1` asks for it explicitly.

mod assets;
mod conditions;
mod connections;
mod deadlines;
mod hand_off;
mod imports;
mod light;
mod mapping;
mod notifications;
mod outputs;
mod sensors;
mod support;
mod timezones;

use std::sync::Arc;
use std::time::Duration;

use amdahl_dags::load_bytes;
use amdahl_executors::{CpuRuntime, Executors};
use amdahl_placement::Place;
use amdahl_runner::{LocalRunner, Quiet};
use amdahl_scheduler::runs::reap_orphans;
use amdahl_scheduler::store::{
    ClaimRequest, FinishAttempt, NewBackfill, NewRun, NewTask, Prediction, ReapLease, Store,
    StoreError, TriggerKind, WorkerInfo,
};
use amdahl_scheduler::{AttemptState, Clock, RunState, SystemClock, TaskState};

use assets::{
    an_event_is_recorded_once_when_a_worker_dies_after_publishing,
    assets_start_one_run_per_event_under_two_schedulers,
};
use conditions::{a_false_when_sql_skips_its_task, a_worker_skips_a_task_whose_when_sql_is_false};
use deadlines::{
    a_missed_deadline_is_recorded_once, a_run_past_its_run_timeout_fails_with_its_tasks,
    a_task_waits_for_its_past, the_service_times_out_a_settled_run,
};
use hand_off::{
    a_hand_off_claims_the_next_link_only_where_a_claim_would,
    a_kept_connection_is_shared_replaced_and_closed, an_end_comes_back_with_its_run_as_it_left_it,
    an_end_decides_and_claims_the_next_link_in_its_transaction,
};
use imports::a_broken_dag_file_is_reported_and_its_last_good_version_kept;
use light::light_tasks_run_beside_busy_cpu_slots;
use mapping::{
    a_map_over_too_many_values_fails_with_the_count, a_mapped_task_runs_an_instance_per_value,
    a_worker_runs_mapped_instances,
};
use notifications::{
    notifications_are_recorded_once_and_delivered,
    notifications_survive_a_dead_scheduler_and_a_server_down,
};
use outputs::{
    a_command_writes_a_tasks_output, a_tasks_output_is_written_out_whole,
    a_tasks_output_is_written_to_object_storage, a_worker_publishes_a_commands_output,
};
use sensors::{
    a_thousand_waiting_sensors_hold_no_slots,
    a_wait_times_out_or_is_skipped_or_ends_when_its_query_says,
    sensors_wait_without_holding_a_slot,
};
use support::TestDb;
use timezones::{a_local_schedule_runs_at_local_times, a_run_reads_the_partition_of_its_day};

/// A run that the process `owner` drives in-process.
async fn new_run(store: &Store, tasks: &[(&str, &[&str])], owner: &str) -> i64 {
    new_run_on_devices(store, &on_any_device(tasks), Some(owner)).await
}

/// A run the scheduler service drives: workers claim its tasks.
async fn new_service_run(store: &Store, tasks: &[(&str, &[&str])]) -> i64 {
    new_run_on_devices(store, &on_any_device(tasks), None).await
}

fn on_any_device<'a>(tasks: &[(&'a str, &'a [&'a str])]) -> Vec<(&'a str, &'a [&'a str], &'a str)> {
    tasks
        .iter()
        .map(|(id, needs)| (*id, *needs, "auto"))
        .collect()
}

async fn new_run_on_devices(
    store: &Store,
    tasks: &[(&str, &[&str], &str)],
    owner: Option<&str>,
) -> i64 {
    let tasks = tasks
        .iter()
        .map(|(id, needs, device)| new_task(id, needs, device))
        .collect();
    new_run_of(store, tasks, owner).await
}

/// A `shell` task row with one retry, priority 0, outside pools.
fn new_task(id: &str, needs: &[&str], device: &str) -> NewTask {
    NewTask {
        task_id: id.to_string(),
        device: amdahl_dags::DevicePreference::parse(device).expect("a device preference"),
        kind: "shell".into(),
        needs: needs.iter().map(|n| n.to_string()).collect(),
        priority: 0,
        retries: 1,
        retry_delay_ms: 0,
        max_retry_delay_ms: None,
        timeout_ms: None,
        pool: None,
        trigger: amdahl_dags::TriggerRule::AllSuccess,
        skip_note: None,
        depends_on_past: false,
    }
}

/// A run of DAG `demo` with these task rows, queued, owned by `owner` (`None`: a service run).
async fn new_run_of(store: &Store, tasks: Vec<NewTask>, owner: Option<&str>) -> i64 {
    let version = store
        .record_dag_version("demo", "hash1", "demo.yaml", "/tmp", "dag: demo", 1_000)
        .await
        .unwrap();
    store
        .create_run(&NewRun {
            dag_id: "demo".into(),
            trigger: amdahl_scheduler::store::TriggerKind::Manual,
            dag_version_id: version,
            params_json: "{}".into(),
            logical_date: "2026-01-01T00:00:00Z".into(),
            max_active_tasks: 4,
            owner: owner.map(str::to_string),
            backfill_id: None,
            notify: false,
            run_timeout_ms: None,
            now_ms: 1_000,
            assets: Vec::new(),
            tasks,
        })
        .await
        .unwrap()
}

/// Moves `ids` of `run_id` from scheduled to queued, as a scheduler would.
async fn queue(store: &Store, run_id: i64, ids: &[&str]) {
    for id in ids {
        store
            .set_task_state(
                run_id,
                id,
                TaskState::Scheduled,
                TaskState::Queued,
                2_000,
                None,
            )
            .await
            .unwrap();
    }
}

/// A task that asked for a GPU waits for a worker that has one; workers advertise themselves.
async fn gpu_tasks_wait_for_a_gpu_worker(db: &TestDb) {
    let store = db.store().await;
    let run_id = new_run_on_devices(
        &store,
        &[("on_gpu", &[], "gpu"), ("anywhere", &[], "auto")],
        None,
    )
    .await;
    queue(&store, run_id, &["on_gpu", "anywhere"]).await;
    let claim = |has_gpu| {
        let store = store.clone();
        async move {
            store
                .claim_tasks(&ClaimRequest {
                    owner: "w",
                    has_gpu,
                    limit: 10,
                    light_limit: 0,
                    lease_ms: 1_000,
                    now_ms: 3_000,
                })
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.task_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(claim(false).await, vec!["anywhere".to_string()]);
    assert!(claim(false).await.is_empty(), "the GPU task stays queued");
    assert_eq!(claim(true).await, vec!["on_gpu".to_string()]);
    let info = amdahl_scheduler::store::WorkerInfo {
        worker_id: "w".into(),
        host: "h".into(),
        slots: 4,
        gpus: 1,
        memory_bytes: 1 << 30,
        started_at_ms: 1,
        heartbeat_at_ms: 5_000,
    };
    store.register_worker(&info).await.unwrap();
    store
        .register_worker(&amdahl_scheduler::store::WorkerInfo {
            heartbeat_at_ms: 6_000,
            ..info.clone()
        })
        .await
        .unwrap();
    let live = store.live_workers(5_500).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!((live[0].gpus, live[0].heartbeat_at_ms), (1, 6_000));
    assert!(store.live_workers(6_000).await.unwrap().is_empty());
}

/// GPU fault injection: a worker started with a GPU advertises it and takes `device: gpu`
/// tasks; once the GPU is lost (what a lasting CUDA error such as an uncorrectable ECC error
/// does; injected here through the same call) the worker advertises no GPU at its next
/// renewal and leaves `device: gpu` tasks to others, while it goes on taking the rest.
async fn a_worker_whose_gpu_is_lost_stops_advertising_it(db: &TestDb) {
    let store = db.store().await;
    let data = tempfile::tempdir().unwrap();
    let worker = worker(
        &store,
        data.path(),
        "gpu-host",
        true,
        Duration::from_millis(300),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.clone().run(async {
        let _ = stopped.await;
    }));
    let gpus_advertised = || {
        let store = store.clone();
        async move {
            let now = SystemClock.now_ms();
            store
                .live_workers(now - 250)
                .await
                .unwrap()
                .iter()
                .find(|w| w.worker_id == "gpu-host:1:1")
                .map(|w| w.gpus)
        }
    };
    let wait_for_gpus = |want: i64| async move {
        for _ in 0..100 {
            if gpus_advertised().await == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the worker never advertised {want} GPU(s)");
    };
    wait_for_gpus(1).await;

    amdahl_executors::gpu::health::mark_lost(
        "DriverError(CUDA_ERROR_ECC_UNCORRECTABLE, \"uncorrectable ECC error encountered\") (injected)",
    );
    wait_for_gpus(0).await;
    // A GPU task queued now stays queued; a CPU one is taken (its DAG has no such task, so
    // its attempt fails, which is not what this test looks at).
    let run_id = new_run_on_devices(
        &store,
        &[("on_gpu", &[], "gpu"), ("anywhere", &[], "cpu")],
        None,
    )
    .await;
    queue(&store, run_id, &["on_gpu", "anywhere"]).await;
    let state_of = |id: &'static str| {
        let store = store.clone();
        async move { store.task(run_id, id).await.unwrap().unwrap().state }
    };
    for _ in 0..100 {
        if state_of("anywhere").await != TaskState::Queued {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(
        state_of("anywhere").await,
        TaskState::Queued,
        "the CPU task was taken"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        state_of("on_gpu").await,
        TaskState::Queued,
        "the GPU task waits for a GPU"
    );
    assert_eq!(
        gpus_advertised().await,
        Some(0),
        "still alive, without a GPU"
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

async fn migrations_are_idempotent(db: &TestDb) {
    let store = db.store().await;
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    // An up-to-date schema is one read; a database a newer build migrated is still refused,
    // not taken for up to date.
    let newer = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (99999, 'from a newer build', TRUE, $1, 0)";
    if db.url.starts_with("sqlite:") {
        use sqlx::Connection;
        let mut raw = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query(newer)
            .bind(vec![0u8; 48])
            .execute(&mut raw)
            .await
            .unwrap();
    } else {
        use sqlx::Connection;
        let mut raw = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query(newer)
            .bind(vec![0u8; 48])
            .execute(&mut raw)
            .await
            .unwrap();
    }
    let refused = store.migrate().await.unwrap_err().to_string();
    assert!(refused.contains("99999"), "{refused}");
}

async fn versions_are_recorded_once_per_hash(db: &TestDb) {
    let store = db.store().await;
    let a = store
        .record_dag_version("demo", "h1", "d.yaml", "/", "x", 1)
        .await
        .unwrap();
    let b = store
        .record_dag_version("demo", "h1", "d.yaml", "/", "x", 2)
        .await
        .unwrap();
    let c = store
        .record_dag_version("demo", "h2", "d.yaml", "/", "y", 3)
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let latest = store.latest_dag_version("demo").await.unwrap().unwrap();
    assert_eq!((latest.id, latest.yaml.as_str()), (c, "y"));
    let dags = store.list_dags().await.unwrap();
    assert_eq!(dags.len(), 1);
    assert_eq!(dags[0].latest_hash, "h2");
    // The file changed back: its first version is the latest again, not a new one.
    let d = store
        .record_dag_version("demo", "h1", "d.yaml", "/", "x", 4)
        .await
        .unwrap();
    assert_eq!(d, a);
    let latest = store.latest_dag_version("demo").await.unwrap().unwrap();
    assert_eq!((latest.id, latest.yaml.as_str()), (a, "x"));
}

/// The database's transition rules (triggers over the transition tables) must be exactly
/// the code's `TaskState::can_become`.
async fn the_database_enforces_the_task_lifecycle(db: &TestDb) {
    let store = db.store().await;
    let run_id = new_run(&store, &[("t", &[])], "me").await;
    for from in TaskState::ALL {
        for to in TaskState::ALL {
            if from == to {
                continue;
            }
            store
                .force_task_state_for_test(run_id, "t", from.as_str())
                .await
                .unwrap();
            let result = store
                .raw_task_update_for_test(run_id, "t", to.as_str())
                .await;
            assert_eq!(
                result.is_ok(),
                from.can_become(*to),
                "{from} -> {to}: database said {result:?}"
            );
        }
    }
    store
        .force_task_state_for_test(run_id, "t", "scheduled")
        .await
        .unwrap();
    assert!(
        store
            .raw_task_update_for_test(run_id, "t", "bogus")
            .await
            .is_err(),
        "CHECK on state values"
    );
}

async fn run_state_changes_are_fenced(db: &TestDb) {
    let store = db.store().await;
    let run_id = new_run(&store, &[("t", &[])], "me").await;
    store
        .set_run_state(run_id, RunState::Queued, RunState::Running, 2_000, None)
        .await
        .unwrap();
    let again = store
        .set_run_state(run_id, RunState::Queued, RunState::Running, 2_000, None)
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    // An illegal edge is refused by the code before the database is asked (the database's
    // own refusal is `the_database_enforces_the_task_lifecycle`).
    store
        .set_run_state(run_id, RunState::Running, RunState::Success, 3_000, None)
        .await
        .unwrap();
    let reopen = store
        .set_run_state(run_id, RunState::Success, RunState::Running, 4_000, None)
        .await;
    assert!(
        matches!(reopen, Err(StoreError::IllegalTransition(_))),
        "{reopen:?}"
    );
    let run = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(
        (run.state, run.started_at_ms, run.finished_at_ms),
        (RunState::Success, Some(2_000), Some(3_000))
    );
}

async fn a_stale_attempt_report_is_rejected(db: &TestDb) {
    let store = db.store().await;
    let run_id = new_run(&store, &[("t", &[])], "me").await;
    store
        .set_task_state(
            run_id,
            "t",
            TaskState::Scheduled,
            TaskState::Queued,
            1,
            None,
        )
        .await
        .unwrap();
    let (first_id, first) = store.start_attempt(run_id, "t", "me", 10).await.unwrap();
    let fail = |attempt_id, attempt, state| FinishAttempt {
        run_id,
        task_id: "t".into(),
        attempt_id,
        attempt,
        attempt_state: AttemptState::Failed,
        task_state: state,
        retry_at_ms: None,
        device: Some(Place::Cpu),
        device_note: None,
        output_path: None,
        rows_out: None,
        bytes_out: None,
        error: Some("boom".into()),
        now_ms: 20,
        io_us: None,
        transfer_us: None,
        compute_us: None,
        route: None,
        rendered: None,
        plan: None,
        produces: Vec::new(),
        mapped: None,
    };
    store
        .finish_attempt(&fail(first_id, first, TaskState::UpForRetry))
        .await
        .unwrap();
    store
        .set_task_state(
            run_id,
            "t",
            TaskState::UpForRetry,
            TaskState::Queued,
            30,
            None,
        )
        .await
        .unwrap();
    let (second_id, second) = store.start_attempt(run_id, "t", "me", 40).await.unwrap();
    assert_eq!((first, second), (1, 2));
    // The first attempt reports again, late: nothing may change.
    let late = store
        .finish_attempt(&fail(first_id, first, TaskState::Failed))
        .await;
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    let task = &store.tasks(run_id).await.unwrap()[0];
    assert_eq!((task.state, task.attempts), (TaskState::Running, 2));
    let mut ok = fail(second_id, second, TaskState::Success);
    ok.attempt_state = AttemptState::Success;
    ok.error = None;
    store.finish_attempt(&ok).await.unwrap();
    let attempts = store.attempts(run_id).await.unwrap();
    let states: Vec<_> = attempts.iter().map(|a| a.state).collect();
    assert_eq!(states, vec![AttemptState::Failed, AttemptState::Success]);
}

async fn orphaned_runs_are_failed_not_left_running(db: &TestDb) {
    let store = db.store().await;
    // An owner on this host whose process cannot exist (pid beyond pid_max).
    let dead_owner = format!("{}:999999999:1", hostname());
    let run_id = new_run(&store, &[("a", &[]), ("b", &["a"])], &dead_owner).await;
    store
        .set_run_state(run_id, RunState::Queued, RunState::Running, 1_100, None)
        .await
        .unwrap();
    store
        .set_task_state(
            run_id,
            "a",
            TaskState::Scheduled,
            TaskState::Queued,
            1_100,
            None,
        )
        .await
        .unwrap();
    store
        .start_attempt(run_id, "a", &dead_owner, 1_200)
        .await
        .unwrap();
    // A live run of someone else, beating recently, must be left alone.
    let live_run = new_run(&store, &[("x", &[])], "elsewhere:1:1").await;
    store
        .heartbeat(live_run, "elsewhere:1:1", SystemClock.now_ms())
        .await
        .unwrap();

    let reaped = reap_orphans(&store, &SystemClock, "me:1:1").await.unwrap();
    assert_eq!(reaped, vec![run_id]);
    let run = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert!(run.note.unwrap().contains("exited"), "note says why");
    let states: Vec<_> = store
        .tasks(run_id)
        .await
        .unwrap()
        .iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(states, vec![TaskState::Failed, TaskState::Cancelled]);
    assert_eq!(
        store.attempts(run_id).await.unwrap()[0].state,
        AttemptState::Lost
    );
    assert_eq!(
        store.run(live_run).await.unwrap().unwrap().state,
        RunState::Queued
    );
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// A worker `host:1:1` with two slots and a one-thread CPU pool, writing under `data_root`.
fn worker(
    store: &Store,
    data_root: &std::path::Path,
    host: &str,
    has_gpu: bool,
    lease: Duration,
) -> Arc<amdahl_runner::Worker> {
    Arc::new(amdahl_runner::Worker::new(
        amdahl_runner::attempt::AttemptEnv {
            store: store.clone(),
            executors: Executors::new(CpuRuntime::new(1).unwrap()),
            clock: Arc::new(SystemClock),
            profile: None,
        },
        amdahl_executors::storage::DataRoot::local(data_root),
        amdahl_runner::WorkerConfig {
            owner: format!("{host}:1:1"),
            host: host.into(),
            slots: 2,
            light_slots: amdahl_runner::worker::DEFAULT_LIGHT_SLOTS,
            lease,
            has_gpu,
            memory_bytes: 1 << 30,
        },
    ))
}

/// Creates a manual run of `dag` and lets one worker (on `data_root`) carry it out while this
/// process plays the scheduler; returns how the run ended (`Queued` if it did not in 30 s).
async fn run_through_a_worker(
    store: &Store,
    dag: &amdahl_dags::Dag,
    data_root: &std::path::Path,
) -> (i64, RunState) {
    use amdahl_scheduler::runs::{RunOrigin, create_run};
    use amdahl_scheduler::service::{Moved, advance};
    let run_id = create_run(store, &SystemClock, dag, &dag.params, RunOrigin::Manual)
        .await
        .unwrap();
    let worker = worker(store, data_root, "worker", false, Duration::from_secs(30));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let mut state = RunState::Queued;
    for _ in 0..600 {
        let run = store.run(run_id).await.unwrap().unwrap();
        if run.state.is_terminal() {
            state = run.state;
            break;
        }
        advance(store, &SystemClock, run, false, &mut Moved::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    let _ = running.await;
    (run_id, state)
}

/// A small run needs no scheduler: `start_now` (what `amdahl trigger` calls) queues its first
/// task, the worker queues each next task after an end, and the worker that ends the last
/// task ends the run. The two branches end in either order; the first to end leaves the run
/// to the second.
async fn a_small_run_needs_no_scheduler(db: &TestDb) {
    use amdahl_scheduler::runs::{RunOrigin, create_run_quietly};
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
dag: no_scheduler
tasks:
  first:
    shell: "true"
  quick:
    needs: [first]
    shell: "true"
  slow:
    needs: [first]
    shell: "sleep 0.3"
"#;
    let dag = amdahl_dags::load_bytes("no_scheduler.yaml", dir.path(), yaml.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let run_id = create_run_quietly(&store, &SystemClock, &dag, &dag.params, RunOrigin::Manual)
        .await
        .unwrap();
    assert!(amdahl_scheduler::service::start_now(&store, &SystemClock, run_id).await);
    let run = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Running);
    let worker = worker(&store, dir.path(), "worker", false, Duration::from_secs(30));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let mut state = RunState::Running;
    for _ in 0..300 {
        state = store.run(run_id).await.unwrap().unwrap().state;
        if state.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    let _ = running.await;
    assert_eq!(state, RunState::Success);
    for task in store.tasks(run_id).await.unwrap() {
        assert_eq!(task.state, TaskState::Success, "{}", task.task_id);
    }
}

fn runner(store: &Store, data_root: &std::path::Path) -> LocalRunner {
    LocalRunner {
        store: store.clone(),
        executors: Executors::new(CpuRuntime::new(2).unwrap()),
        data_root: amdahl_executors::storage::DataRoot::local(data_root),
        owner: "test:1:1".into(),
        clock: Arc::new(SystemClock),
        profile: None,
    }
}

/// Retries, timeouts that really stop the command, and upstream_failed, end to end.
async fn runs_retry_time_out_and_propagate_failure(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started-twice");
    let yaml = format!(
        r#"
dag: lifecycle
tasks:
  flaky:
    retries: 1
    retry_delay: 100ms
    shell: "if [ -e {m} ]; then echo second try; else touch {m}; echo first try >&2; exit 3; fi"
  slow:
    timeout: 300ms
    shell: "sleep 30; touch {dir}/slow-finished"
  after_slow:
    needs: [slow]
    shell: "echo never"
  after_flaky:
    needs: [flaky]
    shell: "echo downstream of {{{{ run.id }}}}"
"#,
        m = marker.display(),
        dir = dir.path().display()
    );
    let dag = load_bytes("lifecycle.yaml", dir.path(), yaml.as_bytes()).unwrap();
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
        "the timeout stopped `sleep 30`"
    );

    let tasks = store.tasks(run_id).await.unwrap();
    let by_id = |id: &str| tasks.iter().find(|t| t.task_id == id).unwrap().clone();
    assert_eq!(
        (by_id("flaky").state, by_id("flaky").attempts),
        (TaskState::Success, 2)
    );
    assert_eq!(by_id("slow").state, TaskState::Failed);
    assert!(by_id("slow").error.unwrap().contains("timed out"));
    assert_eq!(by_id("after_slow").state, TaskState::UpstreamFailed);
    assert_eq!(by_id("after_flaky").state, TaskState::Success);

    let logs = store.logs(run_id, "flaky").await.unwrap();
    let text: Vec<String> = logs
        .iter()
        .map(|l| format!("{}:{}:{}", l.attempt, l.stream, l.line))
        .collect();
    assert!(text.contains(&"1:stderr:first try".to_string()), "{text:?}");
    assert!(
        text.contains(&"2:stdout:second try".to_string()),
        "{text:?}"
    );
    let downstream = store.logs(run_id, "after_flaky").await.unwrap();
    assert_eq!(downstream[0].line, format!("downstream of {run_id}"));

    // The killed command's process group is gone: its `touch` never runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!dir.path().join("slow-finished").exists());
    let run = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Failed);
}

async fn cancelling_a_run_stops_its_tasks(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = "dag: cancel_me\ntasks:\n  long:\n    shell: sleep 30\n  next:\n    needs: [long]\n    shell: echo no\n";
    let dag = load_bytes("c.yaml", dir.path(), yaml.as_bytes()).unwrap();
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let cancel = tokio::time::sleep(Duration::from_millis(500));
    let state = runner.drive(&dag, run_id, &Quiet, cancel).await.unwrap();
    assert_eq!(state, RunState::Cancelled);
    let states: Vec<_> = store
        .tasks(run_id)
        .await
        .unwrap()
        .iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(states, vec![TaskState::Cancelled, TaskState::Cancelled]);
}

/// SQL over the outputs of upstream tasks, through the real store and executors.
async fn sql_reads_upstream_outputs(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
dag: chain
params: { n: 3 }
tasks:
  nation:
    generate: { tpch: nation }
  per_region:
    needs: [nation]
    sql: SELECT n_regionkey, COUNT(*) AS nations FROM nation GROUP BY n_regionkey HAVING COUNT(*) >= {{ params.n }}
  total:
    needs: [per_region]
    sql: SELECT SUM(nations) AS total FROM per_region
"#;
    let dag = load_bytes("chain.yaml", dir.path(), yaml.as_bytes()).unwrap();
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Success);
    let tasks = store.tasks(run_id).await.unwrap();
    let rows: Vec<_> = tasks
        .iter()
        .map(|t| (t.task_id.as_str(), t.rows_out))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("nation", Some(25)),
            ("per_region", Some(5)),
            ("total", Some(1))
        ]
    );
    assert!(
        tasks
            .iter()
            .all(|t| t.device.map(Place::code) == Some("cpu"))
    );
    // Every attempt says why it ran where it did, with no GPU or profile to consult.
    for attempt in store.attempts(run_id).await.unwrap() {
        let note = attempt.device_note.unwrap_or_default();
        let expected = if attempt.task_id == "nation" {
            "generate stages run on the CPU".to_string()
        } else if amdahl_executors::gpu::usable() {
            "device: auto".to_string()
        } else {
            "no usable GPU on this worker".to_string()
        };
        assert!(note.starts_with(&expected), "{}: {note}", attempt.task_id);
    }
    // Each output is published under the task's name; no attempt folder is left.
    let run_dir = dir.path().join("runs").join(run_id.to_string());
    let mut listed: Vec<String> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["nation", "per_region", "total"]);
    assert_eq!(
        tasks[2].output_path.as_deref(),
        Some(run_dir.join("total").to_str().unwrap())
    );
}

/// A query that fails while it writes leaves no output under the task's name: what it wrote
/// went to its attempt's own folder, which is removed.
async fn a_failed_attempt_publishes_nothing(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
dag: half
tasks:
  nation:
    generate: { tpch: nation }
  broken:
    needs: [nation]
    sql: SELECT n_nationkey, CAST(n_name AS INT) AS not_a_number FROM nation
"#;
    let dag = load_bytes("half.yaml", dir.path(), yaml.as_bytes()).unwrap();
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Failed);
    let broken = store.task(run_id, "broken").await.unwrap().unwrap();
    assert!(
        broken.error.as_deref().unwrap_or_default().contains("Cast"),
        "{:?}",
        broken.error
    );
    assert_eq!(broken.output_path, None);
    let run_dir = dir.path().join("runs").join(run_id.to_string());
    let listed: Vec<String> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, ["nation"]);
}

/// `db clean` removes only finished runs older than the cutoff, with everything under them.
async fn old_finished_runs_are_deleted_with_their_rows(db: &TestDb) {
    let store = db.store().await;
    let finish = |run_id: i64, at: i64| {
        let store = store.clone();
        async move {
            store
                .set_run_state(run_id, RunState::Queued, RunState::Running, at - 1, None)
                .await
                .unwrap();
            store
                .set_run_state(run_id, RunState::Running, RunState::Success, at, None)
                .await
                .unwrap();
        }
    };
    let old = new_run(&store, &[("t", &[])], "me").await;
    store
        .set_task_state(old, "t", TaskState::Scheduled, TaskState::Queued, 1, None)
        .await
        .unwrap();
    let (attempt_id, _) = store.start_attempt(old, "t", "me", 2).await.unwrap();
    store
        .append_logs(attempt_id, &[("stdout".into(), "hello".into(), 3)])
        .await
        .unwrap();
    finish(old, 10_000).await;
    let recent = new_run(&store, &[("t", &[])], "me").await;
    finish(recent, 50_000).await;
    let unfinished = new_run(&store, &[("t", &[])], "me").await;

    // A finished backfill goes once its runs are gone; a running one stays.
    let version = store.run(old).await.unwrap().unwrap().dag_version_id;
    let backfill = |now_ms| NewBackfill {
        dag_id: "demo".into(),
        dag_version_id: version,
        from_date: "2026-01-01T00:00:00Z".into(),
        to_date: "2026-01-02T00:00:00Z".into(),
        reprocess: "none".into(),
        max_active_runs: 1,
        params_json: "{}".into(),
        now_ms,
    };
    let done = store.create_backfill(&backfill(1_000)).await.unwrap();
    store
        .finish_backfill(done, RunState::Success, 10_000)
        .await
        .unwrap();
    let running = store.create_backfill(&backfill(1_000)).await.unwrap();

    assert_eq!(store.count_finished_runs(20_000).await.unwrap(), 1);
    assert_eq!(
        store.delete_finished_runs(20_000, 10).await.unwrap(),
        vec![old]
    );
    assert!(
        store
            .delete_finished_runs(20_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.run(old).await.unwrap().is_none());
    assert!(store.tasks(old).await.unwrap().is_empty());
    assert!(store.attempts(old).await.unwrap().is_empty());
    assert!(store.logs(old, "t").await.unwrap().is_empty());
    assert_eq!(store.delete_finished_backfills(20_000).await.unwrap(), 1);
    assert!(store.backfill(done).await.unwrap().is_none());
    assert!(store.backfill(running).await.unwrap().is_some());
    assert!(store.run(recent).await.unwrap().is_some());
    assert!(store.run(unfinished).await.unwrap().is_some());
    // Far in the future: everything finished goes, the unfinished run stays.
    assert_eq!(
        store.delete_finished_runs(i64::MAX, 1).await.unwrap(),
        vec![recent]
    );
    assert_eq!(
        store.run(unfinished).await.unwrap().unwrap().state,
        RunState::Queued
    );
}

/// A run of `count` independent tasks, all queued.
async fn queued_tasks(store: &Store, count: usize) -> i64 {
    let ids: Vec<String> = (0..count).map(|i| format!("t{i:04}")).collect();
    let tasks: Vec<(&str, &[&str])> = ids.iter().map(|id| (id.as_str(), &[][..])).collect();
    let run_id = new_service_run(store, &tasks).await;
    for (i, id) in ids.iter().enumerate() {
        store
            .set_task_state(
                run_id,
                id,
                TaskState::Scheduled,
                TaskState::Queued,
                2_000 + i as i64,
                None,
            )
            .await
            .unwrap();
    }
    run_id
}

/// Eight claimers racing over 1,000 queued tasks: every task is claimed exactly once.
async fn concurrent_claims_take_each_task_once(db: &TestDb) {
    let store = db.store().await;
    queued_tasks(&store, 1_000).await;
    let mut claimers = Vec::new();
    for worker in 0..8 {
        let store = db.store().await;
        claimers.push(tokio::spawn(async move {
            let owner = format!("worker-{worker}");
            let mut mine = Vec::new();
            loop {
                let request = ClaimRequest {
                    has_gpu: false,
                    owner: &owner,
                    limit: 7,
                    light_limit: 0,
                    lease_ms: 60_000,
                    now_ms: 10_000,
                };
                let claims = store.claim_tasks(&request).await.unwrap();
                if claims.is_empty() {
                    break;
                }
                mine.extend(claims);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let distinct: std::collections::HashSet<_> = all.iter().map(|c| c.task_id.clone()).collect();
    assert_eq!(all.len(), 1_000, "every task claimed");
    assert_eq!(distinct.len(), 1_000, "no task claimed twice");
    assert!(all.iter().all(|c| c.attempt == 1));
}

/// Wide runs are written in batches: tasks inserted many per statement (in DAG order),
/// queued many per statement, and attempt ends recorded many per statement, each still fenced
/// on its own: a stale end in a batch is refused and the rest are recorded.
async fn batched_writes_keep_every_fence(db: &TestDb) {
    let store = db.store().await;
    let ids: Vec<String> = (0..2_500).map(|i| format!("t{i:04}")).collect();
    let tasks: Vec<(&str, &[&str])> = ids.iter().map(|id| (id.as_str(), &[][..])).collect();
    let run_id = new_service_run(&store, &tasks).await;
    let stored: Vec<String> = store
        .tasks(run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(stored, ids, "every task, in the DAG's order");
    assert_eq!(store.undecided_tasks(run_id).await.unwrap(), (2_500, 2_500));

    let mut first: Vec<&str> = ids[..1_500].iter().map(String::as_str).collect();
    first.push("not-a-task");
    let queue = |ids: Vec<&str>| {
        let store = store.clone();
        let ids: Vec<String> = ids.into_iter().map(str::to_string).collect();
        async move {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            store
                .queue_tasks(run_id, TaskState::Scheduled, &ids, 2_000)
                .await
                .unwrap()
        }
    };
    assert_eq!(queue(first.clone()).await, 1_500);
    assert_eq!(queue(first).await, 0, "already queued: fenced");
    assert!(matches!(
        store
            .queue_tasks(run_id, TaskState::Success, &["t0000"], 2_000)
            .await,
        Err(StoreError::IllegalTransition(_))
    ));

    let claims = store
        .claim_tasks(&ClaimRequest {
            owner: "w",
            has_gpu: false,
            limit: 3,
            light_limit: 0,
            lease_ms: 10_000,
            now_ms: 3_000,
        })
        .await
        .unwrap();
    assert_eq!(claims.len(), 3);
    // The first claim's task is cancelled while it runs: its end becomes stale.
    store
        .cancel_running_task(run_id, &claims[0].task_id, claims[0].attempt, 3_500)
        .await
        .unwrap();
    let end = |i: usize, attempt_state, task_state, retry_at_ms| FinishAttempt {
        run_id,
        task_id: claims[i].task_id.clone(),
        attempt_id: claims[i].attempt_id,
        attempt: claims[i].attempt,
        attempt_state,
        task_state,
        retry_at_ms,
        device: Some(Place::Cpu),
        device_note: (i == 1).then(|| "no GPU is usable here".to_string()),
        output_path: None,
        rows_out: Some(i as i64),
        bytes_out: None,
        error: (task_state != TaskState::Success).then(|| "boom".to_string()),
        now_ms: 4_000,
        io_us: None,
        transfer_us: None,
        compute_us: None,
        route: None,
        rendered: None,
        plan: None,
        produces: Vec::new(),
        mapped: None,
    };
    let recorded = store
        .finish_attempts(&[
            end(0, AttemptState::Success, TaskState::Success, None),
            end(1, AttemptState::Success, TaskState::Success, None),
            end(2, AttemptState::Failed, TaskState::UpForRetry, Some(9_000)),
        ])
        .await
        .unwrap();
    assert_eq!(recorded, [false, true, true]);
    let state_of = |records: &[amdahl_scheduler::store::TaskRecord], id: &str| {
        let t = records.iter().find(|t| t.task_id == id).unwrap();
        (t.state, t.retry_at_ms, t.rows_out)
    };
    let after = store.tasks(run_id).await.unwrap();
    assert_eq!(state_of(&after, &claims[0].task_id).0, TaskState::Cancelled);
    assert_eq!(
        state_of(&after, &claims[1].task_id),
        (TaskState::Success, None, Some(1))
    );
    assert_eq!(
        state_of(&after, &claims[2].task_id),
        (TaskState::UpForRetry, Some(9_000), Some(2))
    );
    let attempts = store.attempts(run_id).await.unwrap();
    let attempt = |i: usize| {
        let a = attempts
            .iter()
            .find(|a| a.id == claims[i].attempt_id)
            .unwrap();
        (a.state, a.error.clone(), a.finished_at_ms)
    };
    let note = |i: usize| {
        let a = attempts.iter().find(|a| a.id == claims[i].attempt_id);
        a.unwrap().device_note.clone()
    };
    assert_eq!(note(1).as_deref(), Some("no GPU is usable here"));
    assert_eq!(note(2), None);
    assert_ne!(
        attempt(0).0,
        AttemptState::Success,
        "the stale end changed nothing"
    );
    assert_eq!(attempt(1), (AttemptState::Success, None, Some(4_000)));
    assert_eq!(
        attempt(2),
        (AttemptState::Failed, Some("boom".into()), Some(4_000))
    );
    // 1,000 never queued and one up for retry wait for a decision; two tasks ended.
    assert_eq!(store.undecided_tasks(run_id).await.unwrap(), (1_001, 2_498));

    // An end whose attempt id is not its task's running attempt (an attempt that already
    // ended) would end the task and not the attempt: the batch's statement fails as a whole
    // (outside any transaction on PostgreSQL) and the ends are recorded one by one, so only
    // that end is refused.
    let more = store
        .claim_tasks(&ClaimRequest {
            owner: "w",
            has_gpu: false,
            limit: 2,
            light_limit: 0,
            lease_ms: 10_000,
            now_ms: 5_000,
        })
        .await
        .unwrap();
    assert_eq!(more.len(), 2);
    let end_of = |claim: &amdahl_scheduler::store::Claim, attempt_id| FinishAttempt {
        task_id: claim.task_id.clone(),
        attempt_id,
        attempt: claim.attempt,
        now_ms: 6_000,
        error: None,
        ..end(1, AttemptState::Success, TaskState::Success, None)
    };
    let recorded = store
        .finish_attempts(&[
            end_of(&more[0], claims[1].attempt_id),
            end_of(&more[1], more[1].attempt_id),
        ])
        .await
        .unwrap();
    assert_eq!(recorded, [false, true]);
    // Alone, through the one-end path, it is refused too.
    assert!(matches!(
        store
            .finish_attempt(&end_of(&more[0], claims[1].attempt_id))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let after = store.tasks(run_id).await.unwrap();
    assert_eq!(state_of(&after, &more[0].task_id).0, TaskState::Running);
    assert_eq!(state_of(&after, &more[1].task_id).0, TaskState::Success);
    let attempts = store.attempts(run_id).await.unwrap();
    let state = |id| attempts.iter().find(|a| a.id == id).unwrap().state;
    assert_eq!(state(more[0].attempt_id), AttemptState::Running);
    assert_eq!(
        state(claims[1].attempt_id),
        AttemptState::Success,
        "the ended attempt is left as it was"
    );
}

/// Claims go oldest-queued first; an expired lease is reaped and its owner's late report is
/// refused.
async fn expired_leases_are_reaped_and_late_reports_refused(db: &TestDb) {
    let store = db.store().await;
    let run_id = new_service_run(&store, &[("early", &[]), ("late", &[])]).await;
    store
        .set_task_state(
            run_id,
            "late",
            TaskState::Scheduled,
            TaskState::Queued,
            2_500,
            None,
        )
        .await
        .unwrap();
    store
        .set_task_state(
            run_id,
            "early",
            TaskState::Scheduled,
            TaskState::Queued,
            2_000,
            None,
        )
        .await
        .unwrap();
    let claim = |owner: &'static str, now_ms| {
        let store = store.clone();
        async move {
            store
                .claim_tasks(&ClaimRequest {
                    has_gpu: false,
                    owner,
                    limit: 1,
                    light_limit: 0,
                    lease_ms: 1_000,
                    now_ms,
                })
                .await
                .unwrap()
        }
    };
    let first = claim("a", 3_000).await;
    assert_eq!(
        first[0].task_id, "early",
        "equal priority: the earlier queued wins"
    );
    assert_eq!(
        store.extend_leases("a", 1_000, 3_500).await.unwrap().len(),
        1
    );
    assert!(
        store.expired_leases(4_000).await.unwrap().is_empty(),
        "extended to 4,500"
    );
    let expired = store.expired_leases(5_000).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].task_id.as_str(), expired[0].owner.as_deref()),
        ("early", Some("a"))
    );
    let reap = ReapLease {
        run_id,
        task_id: "early".into(),
        attempt: 1,
        task_state: TaskState::UpForRetry,
        retry_at_ms: Some(5_000),
        reason: "lease expired".into(),
        now_ms: 5_000,
    };
    assert!(store.reap_lease(&reap).await.unwrap());
    assert!(
        !store.reap_lease(&reap).await.unwrap(),
        "reaping twice changes nothing"
    );
    // The old owner reports late: refused.
    let late = store
        .finish_attempt(&FinishAttempt {
            run_id,
            task_id: "early".into(),
            attempt_id: first[0].attempt_id,
            attempt: 1,
            attempt_state: AttemptState::Success,
            task_state: TaskState::Success,
            retry_at_ms: None,
            device: Some(Place::Cpu),
            device_note: None,
            output_path: None,
            rows_out: None,
            bytes_out: None,
            error: None,
            now_ms: 5_100,
            io_us: None,
            transfer_us: None,
            compute_us: None,
            route: None,
            rendered: None,
            plan: None,
            produces: Vec::new(),
            mapped: None,
        })
        .await;
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    store
        .set_task_state(
            run_id,
            "early",
            TaskState::UpForRetry,
            TaskState::Queued,
            6_000,
            None,
        )
        .await
        .unwrap();
    let next = claim("b", 6_500).await;
    assert_eq!(next[0].task_id, "late", "queued before the retry was");
    let retry = claim("b", 6_600).await;
    assert_eq!((retry[0].task_id.as_str(), retry[0].attempt), ("early", 2));
    let attempts: Vec<_> = store
        .attempts(run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.task_id, a.state))
        .collect();
    assert!(attempts.contains(&("early".to_string(), AttemptState::Lost)));
}

/// Machine profiles are kept per host (the last one wins); an attempt keeps what placement
/// predicted and where its time went, through the batched end too; the model learns from
/// successful predicted attempts only.
async fn placement_records_are_kept(db: &TestDb) {
    let store = db.store().await;
    assert_eq!(store.profile("h1").await.unwrap(), None);
    store.save_profile("h1", "{\"a\":1}", 5).await.unwrap();
    store.save_profile("h1", "{\"a\":2}", 7).await.unwrap();
    store.save_profile("h0", "{}", 6).await.unwrap();
    let kept = store.profile("h1").await.unwrap().unwrap();
    assert_eq!(
        (kept.profile.as_str(), kept.measured_at_ms),
        ("{\"a\":2}", 7)
    );
    let hosts: Vec<String> = store
        .profiles()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.host)
        .collect();
    assert_eq!(hosts, ["h0", "h1"]);

    let run_id = new_run(&store, &[("t", &[]), ("u", &[])], "me").await;
    let mut ends = Vec::new();
    for (task, gpu_us) in [("t", Some(300)), ("u", None)] {
        store
            .set_task_state(
                run_id,
                task,
                TaskState::Scheduled,
                TaskState::Queued,
                1,
                None,
            )
            .await
            .unwrap();
        let (attempt_id, attempt) = store.start_attempt(run_id, task, "me", 10).await.unwrap();
        let prediction = Prediction {
            cpu_us: Some(1_000),
            gpu_us,
            kind: Some("scan".into()),
            cpu_factor: 1.5,
            gpu_factor: 1.0,
        };
        store
            .record_prediction(attempt_id, &prediction)
            .await
            .unwrap();
        ends.push(FinishAttempt {
            run_id,
            task_id: task.into(),
            attempt_id,
            attempt,
            attempt_state: if task == "t" {
                AttemptState::Success
            } else {
                AttemptState::Failed
            },
            task_state: if task == "t" {
                TaskState::Success
            } else {
                TaskState::Failed
            },
            retry_at_ms: None,
            device: Some(Place::Gpu),
            device_note: Some("placement chose the GPU".into()),
            output_path: None,
            rows_out: None,
            bytes_out: None,
            error: None,
            now_ms: 12,
            io_us: Some(400),
            transfer_us: Some(500),
            compute_us: Some(600),
            route: Some("gpu".into()),
            rendered: None,
            plan: None,
            produces: Vec::new(),
            mapped: None,
        });
    }
    assert_eq!(store.finish_attempts(&ends).await.unwrap(), [true, true]);
    let attempts = store.attempts(run_id).await.unwrap();
    let t = attempts.iter().find(|a| a.task_id == "t").unwrap();
    assert_eq!(
        (t.predicted_cpu_us, t.predicted_gpu_us),
        (Some(1_000), Some(300))
    );
    assert_eq!(
        (t.io_us, t.transfer_us, t.compute_us),
        (Some(400), Some(500), Some(600))
    );
    // Where it was sent is stored beside where it ran (the batched statement on PostgreSQL).
    assert_eq!(t.route.as_deref(), Some("gpu"));
    // Only the successful attempt teaches the model.
    let learned = store.predicted_attempts(10).await.unwrap();
    assert_eq!(learned.len(), 1);
    assert_eq!(
        (
            learned[0].kind.as_str(),
            learned[0].device.map(Place::code),
            learned[0].took_ms
        ),
        ("scan", Some("gpu"), 2)
    );
    assert_eq!((learned[0].cpu_factor, learned[0].gpu_factor), (1.5, 1.0));
}

/// A failed run, its cause fixed, cleared from the failed task: that task and what needs it
/// run again (attempt 2), what it needs does not, and the run ends in success.
async fn cleared_tasks_run_again(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("fixed");
    let yaml = format!(
        r#"
dag: clearing
tasks:
  extract:
    shell: "echo extracted"
  load:
    needs: [extract]
    shell: "test -e {m} || exit 4"
  report:
    needs: [load]
    shell: "echo reported"
"#,
        m = marker.display()
    );
    let dag = load_bytes("clearing.yaml", dir.path(), yaml.as_bytes()).unwrap();
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Failed);
    // Unknown tasks and runs are refused, and change nothing.
    assert!(matches!(
        amdahl_scheduler::clear::clear(&store, run_id, &["nope".into()], true).await,
        Err(amdahl_scheduler::clear::ClearError::NoTask { .. })
    ));
    assert!(matches!(
        amdahl_scheduler::clear::clear(&store, 4242, &["load".into()], true).await,
        Err(amdahl_scheduler::clear::ClearError::NoRun(4242))
    ));
    assert_eq!(
        store.run(run_id).await.unwrap().unwrap().state,
        RunState::Failed
    );
    std::fs::write(&marker, "").unwrap();
    let cleared = amdahl_scheduler::clear::clear(&store, run_id, &["load".into()], true)
        .await
        .unwrap();
    assert_eq!(cleared, vec!["load".to_string(), "report".to_string()]);
    let run = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(
        (run.state, run.owner, run.finished_at_ms),
        (RunState::Queued, None, None)
    );
    let states: Vec<(String, TaskState)> = store
        .tasks(run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.task_id, t.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("extract".to_string(), TaskState::Success),
            ("load".to_string(), TaskState::Scheduled),
            ("report".to_string(), TaskState::Scheduled),
        ]
    );
    // A run that is not finished cannot be cleared.
    assert!(matches!(
        amdahl_scheduler::clear::clear(&store, run_id, &["load".into()], true).await,
        Err(amdahl_scheduler::clear::ClearError::NotFinished(_))
    ));
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Success);
    let attempts: Vec<(String, i64)> = store
        .attempts(run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.task_id, a.attempt))
        .collect();
    assert_eq!(
        attempts.iter().filter(|(t, _)| t == "extract").count(),
        1,
        "{attempts:?}"
    );
    assert!(attempts.contains(&("load".to_string(), 2)), "{attempts:?}");
    assert!(
        attempts.contains(&("report".to_string(), 1)),
        "{attempts:?}"
    );
}

/// Every read of the store, on rows written here: the store decodes rows by column name, so
/// a column (or alias) a read's row shape does not name fails here, on either database.
async fn every_read_decodes_its_rows(db: &TestDb) {
    let store = db.store().await;
    let date = "2026-01-01T00:00:00Z";
    let version = store
        .record_dag_version("demo", "h1", "demo.yaml", "/tmp", "dag: demo", 1_000)
        .await
        .unwrap();
    let task = |id: &str, needs: &[&str]| NewTask {
        task_id: id.into(),
        device: amdahl_dags::DevicePreference::Auto,
        kind: "shell".into(),
        needs: needs.iter().map(|n| n.to_string()).collect(),
        priority: 0,
        retries: 0,
        retry_delay_ms: 0,
        max_retry_delay_ms: None,
        timeout_ms: None,
        pool: None,
        trigger: amdahl_dags::TriggerRule::AllSuccess,
        skip_note: None,
        depends_on_past: false,
    };
    let run_id = store
        .create_run(&NewRun {
            dag_id: "demo".into(),
            trigger: TriggerKind::Schedule,
            dag_version_id: version,
            params_json: "{}".into(),
            logical_date: date.into(),
            max_active_tasks: 4,
            owner: None,
            backfill_id: None,
            notify: false,
            run_timeout_ms: None,
            now_ms: 1_000,
            assets: Vec::new(),
            tasks: vec![task("a", &[]), task("b", &["a"]), task("c", &[])],
        })
        .await
        .unwrap();

    // DAGs and their versions.
    let dags = store.list_dags().await.unwrap();
    assert_eq!(
        (
            dags[0].dag_id.as_str(),
            dags[0].latest_hash.as_str(),
            dags[0].source_path.as_str(),
            dags[0].runs,
            dags[0].last_run_state,
            dags[0].paused
        ),
        ("demo", "h1", "demo.yaml", 1, Some(RunState::Queued), false)
    );
    let latest = store.latest_dag_version("demo").await.unwrap().unwrap();
    assert_eq!(store.dag_version(version).await.unwrap().unwrap(), latest);
    assert_eq!(
        (latest.id, latest.base_dir.as_str(), latest.yaml.as_str()),
        (version, "/tmp", "dag: demo")
    );
    assert_eq!(
        store.schedule_state("demo").await.unwrap(),
        (Some(date.to_string()), 1)
    );
    store.set_paused("demo", true, 2_000).await.unwrap();
    assert!(store.is_paused("demo").await.unwrap());
    store.set_paused("demo", false, 2_000).await.unwrap();
    assert!(!store.is_paused("demo").await.unwrap());

    // Runs.
    assert_eq!(
        store.unfinished_runs().await.unwrap(),
        [(run_id, None, Some(1_000))]
    );
    let runs = store
        .runs_before(Some("demo"), None, None, 10)
        .await
        .unwrap();
    assert_eq!(store.service_runs(None).await.unwrap(), runs);
    assert_eq!(
        (
            runs[0].id,
            runs[0].version_hash.as_str(),
            runs[0].state,
            runs[0].created_at_ms
        ),
        (run_id, "h1", RunState::Queued, 1_000)
    );
    // Filtered by state: the queued run, and no failed one.
    let queued = store
        .runs_before(None, Some(RunState::Queued), None, 10)
        .await
        .unwrap();
    assert_eq!(queued.iter().map(|r| r.id).collect::<Vec<_>>(), [run_id]);
    assert!(
        store
            .runs_before(Some("demo"), Some(RunState::Failed), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.undecided_tasks(run_id).await.unwrap(), (3, 3));

    // Workers, claims, leases, logs and attempts.
    store
        .queue_tasks(run_id, TaskState::Scheduled, &["a", "c"], 1_500)
        .await
        .unwrap();
    let worker = WorkerInfo {
        worker_id: "w1".into(),
        host: "h".into(),
        slots: 2,
        gpus: 0,
        memory_bytes: 1 << 30,
        started_at_ms: 1_000,
        heartbeat_at_ms: 2_000,
    };
    store.register_worker(&worker).await.unwrap();
    assert_eq!(store.live_workers(1_500).await.unwrap(), [worker]);
    let claims = store
        .claim_tasks(&ClaimRequest {
            owner: "w1",
            has_gpu: false,
            limit: 10,
            light_limit: 0,
            lease_ms: 1_000,
            now_ms: 2_000,
        })
        .await
        .unwrap();
    assert_eq!(claims.len(), 2);
    let mut held = store.extend_leases("w1", 1_000, 2_100).await.unwrap();
    held.sort();
    assert_eq!(held, [(run_id, "a".to_string()), (run_id, "c".to_string())]);
    let expired = store.expired_leases(10_000).await.unwrap();
    assert_eq!(expired.len(), 2);
    assert_eq!(
        (
            expired[0].run_id,
            expired[0].attempt,
            expired[0].owner.as_deref()
        ),
        (run_id, 1, Some("w1"))
    );
    let a = claims.iter().find(|c| c.task_id == "a").unwrap();
    store
        .append_logs(a.attempt_id, &[("stdout".into(), "hello".into(), 2_200)])
        .await
        .unwrap();
    let logs = store.logs(run_id, "a").await.unwrap();
    assert_eq!(
        (
            logs[0].attempt,
            logs[0].stream.as_str(),
            logs[0].line.as_str()
        ),
        (1, "stdout", "hello")
    );
    store
        .finish_attempt(&FinishAttempt {
            run_id,
            task_id: "a".into(),
            attempt_id: a.attempt_id,
            attempt: a.attempt,
            attempt_state: AttemptState::Success,
            task_state: TaskState::Success,
            retry_at_ms: None,
            device: Some(Place::Cpu),
            device_note: None,
            output_path: None,
            rows_out: Some(3),
            bytes_out: Some(30),
            error: None,
            now_ms: 2_500,
            io_us: Some(7),
            transfer_us: None,
            compute_us: None,
            route: Some("split into 2 parts over the CPU".into()),
            rendered: None,
            plan: None,
            produces: Vec::new(),
            mapped: None,
        })
        .await
        .unwrap();
    let attempts = store.attempts_of(run_id, &["a".into()]).await.unwrap();
    assert_eq!(
        attempts[0].route.as_deref(),
        Some("split into 2 parts over the CPU")
    );
    assert_eq!(
        (
            attempts[0].id,
            attempts[0].state,
            attempts[0].device.map(Place::code),
            attempts[0].rows_out,
            attempts[0].started_at_ms,
            attempts[0].finished_at_ms,
            attempts[0].io_us
        ),
        (
            a.attempt_id,
            AttemptState::Success,
            Some("cpu"),
            Some(3),
            2_000,
            Some(2_500),
            Some(7)
        )
    );
    assert_eq!(store.attempts_at(run_id, 0, 3).await.unwrap().len(), 2);
    let page = store.tasks_page(run_id, 1, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
        ["b", "c"]
    );
    let named = store
        .tasks_named(run_id, &["c".into(), "a".into()])
        .await
        .unwrap();
    assert_eq!(
        named
            .iter()
            .map(|t| (t.task_id.as_str(), t.state))
            .collect::<Vec<_>>(),
        [("c", TaskState::Running), ("a", TaskState::Success)]
    );

    // What the web UI and `/metrics` read.
    let counts = store.state_counts(run_id).await.unwrap();
    assert_eq!(
        counts
            .iter()
            .map(|c| (
                c.state.as_str(),
                c.tasks,
                c.attempts,
                c.last_started_ms,
                c.last_finished_ms
            ))
            .collect::<Vec<_>>(),
        [
            ("running", 1, 1, Some(2_000), None),
            ("scheduled", 1, 0, None, None),
            ("success", 1, 1, Some(2_000), Some(2_500)),
        ]
    );
    let mut cells = store.grid_cells(&[run_id], None).await.unwrap();
    cells.sort_by(|x, y| x.task_id.cmp(&y.task_id));
    assert_eq!(
        cells
            .iter()
            .map(|c| (
                c.run_id,
                c.task_id.as_str(),
                c.state.as_str(),
                c.device.map(Place::code)
            ))
            .collect::<Vec<_>>(),
        [
            (run_id, "a", "success", Some("cpu")),
            (run_id, "b", "scheduled", None),
            (run_id, "c", "running", None),
        ]
    );
    let named_cells = store
        .grid_cells(&[run_id], Some(&["b".to_string()]))
        .await
        .unwrap();
    assert_eq!(named_cells, cells[1..2]);
    assert_eq!(
        store.recent_run_states(5).await.unwrap(),
        [("demo".to_string(), "queued".to_string())]
    );
    let totals = store.counts().await.unwrap();
    assert_eq!(totals.runs, [("queued".to_string(), 1)]);
    assert_eq!(
        totals.tasks,
        [
            ("running".to_string(), 1),
            ("scheduled".to_string(), 1),
            ("success".to_string(), 1)
        ]
    );
    assert_eq!(totals.device_busy, [("cpu".to_string(), 1, 500)]);
    assert_eq!(totals.claim_latency_ms, [500, 500]);

    // Pools, tokens and backfills.
    store.set_pool("p", 3, "a pool", 1_000).await.unwrap();
    let pools = store.pools().await.unwrap();
    assert_eq!(
        (
            pools[0].name.as_str(),
            pools[0].slots,
            pools[0].description.as_str(),
            pools[0].occupied
        ),
        ("p", 3, "a pool", 0)
    );
    let token_id = store
        .create_token("ci", "viewer", "abc", 1_000)
        .await
        .unwrap();
    let token = store.use_token("abc", 100_000).await.unwrap().unwrap();
    assert_eq!(
        (
            token.id,
            token.name.as_str(),
            token.role.as_str(),
            token.created_at_ms,
            token.last_used_at_ms
        ),
        (token_id, "ci", "viewer", 1_000, None)
    );
    let tokens = store.tokens().await.unwrap();
    assert_eq!(
        (tokens[0].last_used_at_ms, tokens[0].revoked_at_ms),
        (Some(100_000), None)
    );
    let backfill = store
        .create_backfill(&NewBackfill {
            dag_id: "demo".into(),
            dag_version_id: version,
            from_date: date.into(),
            to_date: "2026-01-02T00:00:00Z".into(),
            reprocess: "none".into(),
            max_active_runs: 2,
            params_json: "{}".into(),
            now_ms: 3_000,
        })
        .await
        .unwrap();
    let listed = store.list_backfills(10).await.unwrap();
    assert_eq!(store.running_backfills().await.unwrap(), listed);
    assert_eq!(
        (
            listed[0].id,
            listed[0].reprocess.as_str(),
            listed[0].max_active_runs,
            listed[0].state.as_str(),
            listed[0].created_at_ms,
            listed[0].finished_at_ms
        ),
        (backfill, "none", 2, "running", 3_000, None)
    );
    let dated = store
        .dated_runs("demo", date, "2026-01-02T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(
        (
            dated[0].run_id,
            dated[0].logical_date.as_str(),
            dated[0].state,
            dated[0].backfill_id
        ),
        (run_id, date, RunState::Queued, None)
    );
}

/// Every attempt records what it ran after templating (the query with its params, the
/// command with secret values masked) and, for a query, its physical plan; in process and
/// through a worker.
async fn attempts_record_what_they_ran(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.txt"), "s3cr3t-value-42\n").unwrap();
    let yaml = r#"
dag: rendered
params: { min: 5 }
secrets: { token: { file: token.txt } }
tasks:
  staged:
    sql: "SELECT id FROM (VALUES (1), (7), (9)) AS t(id) WHERE id >= {{ params.min }}"
  call:
    needs: [staged]
    shell: "echo s3cr3t-value-42 > /dev/null; echo {{ params.min }}"
  nothing:
    empty: {}
"#;
    let dag = load_bytes("rendered.yaml", dir.path(), yaml.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let runner = runner(&store, dir.path());
    let in_process = runner.create_run(&dag, &dag.params).await.unwrap();
    let state = runner
        .drive(&dag, in_process, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Success);
    let (through_a_worker, state) = run_through_a_worker(&store, &dag, dir.path()).await;
    assert_eq!(state, RunState::Success);
    for run_id in [in_process, through_a_worker] {
        let attempts = store.attempts(run_id).await.unwrap();
        let of = |id: &str| attempts.iter().find(|a| a.task_id == id).unwrap();
        assert_eq!(
            of("staged").rendered.as_deref(),
            Some("SELECT id FROM (VALUES (1), (7), (9)) AS t(id) WHERE id >= 5"),
            "run {run_id}"
        );
        let plan = of("staged").plan.clone().unwrap_or_default();
        assert!(plan.contains("FilterExec"), "run {run_id}: {plan}");
        assert_eq!(
            of("call").rendered.as_deref(),
            Some("echo *** > /dev/null; echo 5"),
            "run {run_id}"
        );
        assert_eq!(of("call").plan, None);
        assert_eq!(of("nothing").rendered, None);
    }
}

macro_rules! suite {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::TestDb::sqlite().await;
                    super::$test(&db).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(db) = super::TestDb::postgres().await else { return };
                    super::$test(&db).await;
                    db.drop_database().await;
                }
            )+
        }
    };
}

/// A pool's slots cap its queued and running tasks across runs, even when ten schedulers
/// queue into it at once; a pool that does not exist holds its tasks back.
async fn pools_cap_queued_and_running_tasks_across_runs(db: &TestDb) {
    let store = db.store().await;
    store
        .set_pool("db", 2, "the warehouse", 1_000)
        .await
        .unwrap();
    let version = store
        .record_dag_version("demo", "hash1", "demo.yaml", "/tmp", "dag: demo", 1_000)
        .await
        .unwrap();
    let task = |id: &str, pool: &str| NewTask {
        task_id: id.into(),
        device: amdahl_dags::DevicePreference::Auto,
        kind: "shell".into(),
        needs: vec![],
        priority: 0,
        retries: 0,
        retry_delay_ms: 0,
        max_retry_delay_ms: None,
        timeout_ms: None,
        pool: Some(pool.into()),
        trigger: amdahl_dags::TriggerRule::AllSuccess,
        skip_note: None,
        depends_on_past: false,
    };
    let mut runs = Vec::new();
    for _ in 0..10 {
        let run_id = store
            .create_run(&NewRun {
                dag_id: "demo".into(),
                trigger: amdahl_scheduler::store::TriggerKind::Manual,
                dag_version_id: version,
                params_json: "{}".into(),
                logical_date: "2026-01-01T00:00:00Z".into(),
                max_active_tasks: 4,
                owner: None,
                backfill_id: None,
                notify: false,
                run_timeout_ms: None,
                now_ms: 1_000,
                assets: Vec::new(),
                tasks: vec![task("load", "db"), task("elsewhere", "missing")],
            })
            .await
            .unwrap();
        runs.push(run_id);
    }
    let mut queuers = Vec::new();
    for &run_id in &runs {
        let store = db.store().await;
        queuers.push(tokio::spawn(async move {
            store
                .queue_task(run_id, "load", TaskState::Scheduled, Some("db"), 2_000)
                .await
        }));
    }
    let mut queued = Vec::new();
    for (queuer, run_id) in queuers.into_iter().zip(&runs) {
        match queuer.await.unwrap() {
            Ok(()) => queued.push(*run_id),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(queued.len(), 2, "exactly the pool's slots were handed out");
    let pools = store.pools().await.unwrap();
    assert_eq!((pools[0].name.as_str(), pools[0].occupied), ("db", 2));
    assert_eq!(store.pool_free().await.unwrap()["db"], 0);
    let missing = store
        .queue_task(
            runs[0],
            "elsewhere",
            TaskState::Scheduled,
            Some("missing"),
            2_000,
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::Conflict(_))),
        "{missing:?}"
    );

    // A slot frees when its task ends; the next task takes it.
    store
        .set_task_state(
            queued[0],
            "load",
            TaskState::Queued,
            TaskState::Cancelled,
            3_000,
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.pool_free().await.unwrap()["db"], 1);
    let waiting = *runs.iter().find(|r| !queued.contains(r)).unwrap();
    store
        .queue_task(waiting, "load", TaskState::Scheduled, Some("db"), 4_000)
        .await
        .unwrap();
    // More slots take effect at once; deleting the pool holds its tasks back again.
    store.set_pool("db", 5, "bigger", 5_000).await.unwrap();
    assert_eq!(store.pool_free().await.unwrap()["db"], 3);
    assert!(store.delete_pool("db").await.unwrap());
    assert!(!store.delete_pool("db").await.unwrap());
    let other = *runs
        .iter()
        .find(|r| !queued.contains(r) && **r != waiting)
        .unwrap();
    let gone = store
        .queue_task(other, "load", TaskState::Scheduled, Some("db"), 6_000)
        .await;
    assert!(matches!(gone, Err(StoreError::Conflict(_))), "{gone:?}");
}

/// A queued task of a run that an `amdahl run` process drives is that process's to start:
/// workers never claim it.
async fn workers_leave_in_process_runs_alone(db: &TestDb) {
    let store = db.store().await;
    let owned = new_run(&store, &[("mine", &[])], "me").await;
    store
        .set_task_state(
            owned,
            "mine",
            TaskState::Scheduled,
            TaskState::Queued,
            2_000,
            None,
        )
        .await
        .unwrap();
    let request = ClaimRequest {
        has_gpu: true,
        owner: "worker",
        limit: 10,
        light_limit: 0,
        lease_ms: 60_000,
        now_ms: 3_000,
    };
    assert!(store.claim_tasks(&request).await.unwrap().is_empty());
    let service = new_service_run(&store, &[("theirs", &[])]).await;
    store
        .set_task_state(
            service,
            "theirs",
            TaskState::Scheduled,
            TaskState::Queued,
            2_000,
            None,
        )
        .await
        .unwrap();
    let claims = store.claim_tasks(&request).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(
        (claims[0].run_id, claims[0].task_id.as_str()),
        (service, "theirs")
    );
}

suite!(
    migrations_are_idempotent,
    a_small_run_needs_no_scheduler,
    versions_are_recorded_once_per_hash,
    the_database_enforces_the_task_lifecycle,
    run_state_changes_are_fenced,
    a_stale_attempt_report_is_rejected,
    orphaned_runs_are_failed_not_left_running,
    runs_retry_time_out_and_propagate_failure,
    cancelling_a_run_stops_its_tasks,
    sql_reads_upstream_outputs,
    a_failed_attempt_publishes_nothing,
    old_finished_runs_are_deleted_with_their_rows,
    concurrent_claims_take_each_task_once,
    expired_leases_are_reaped_and_late_reports_refused,
    gpu_tasks_wait_for_a_gpu_worker,
    pools_cap_queued_and_running_tasks_across_runs,
    workers_leave_in_process_runs_alone,
    batched_writes_keep_every_fence,
    placement_records_are_kept,
    cleared_tasks_run_again,
    a_worker_whose_gpu_is_lost_stops_advertising_it,
    every_read_decodes_its_rows,
    notifications_are_recorded_once_and_delivered,
    notifications_survive_a_dead_scheduler_and_a_server_down,
    a_broken_dag_file_is_reported_and_its_last_good_version_kept,
    a_run_past_its_run_timeout_fails_with_its_tasks,
    the_service_times_out_a_settled_run,
    a_task_waits_for_its_past,
    a_missed_deadline_is_recorded_once,
    a_false_when_sql_skips_its_task,
    a_worker_skips_a_task_whose_when_sql_is_false,
    a_local_schedule_runs_at_local_times,
    a_run_reads_the_partition_of_its_day,
    a_command_writes_a_tasks_output,
    a_worker_publishes_a_commands_output,
    a_tasks_output_is_written_out_whole,
    a_tasks_output_is_written_to_object_storage,
    sensors_wait_without_holding_a_slot,
    attempts_record_what_they_ran,
    a_wait_times_out_or_is_skipped_or_ends_when_its_query_says,
    assets_start_one_run_per_event_under_two_schedulers,
    an_event_is_recorded_once_when_a_worker_dies_after_publishing,
    a_mapped_task_runs_an_instance_per_value,
    a_worker_runs_mapped_instances,
    a_map_over_too_many_values_fails_with_the_count,
    light_tasks_run_beside_busy_cpu_slots,
    a_thousand_waiting_sensors_hold_no_slots,
    a_hand_off_claims_the_next_link_only_where_a_claim_would,
    an_end_comes_back_with_its_run_as_it_left_it,
    an_end_decides_and_claims_the_next_link_in_its_transaction,
    a_kept_connection_is_shared_replaced_and_closed,
);

/// PostgreSQL's planner takes the claim's candidates from the partial indexes, one per weight,
/// not a scan of every task ever run: 20 queued among 20,000 that wait or finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claim_query_uses_its_index() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.store().await;
    let ids: Vec<String> = (0..20_000).map(|i| format!("t{i:05}")).collect();
    let tasks: Vec<(&str, &[&str])> = ids.iter().map(|id| (id.as_str(), &[][..])).collect();
    let run_id = new_service_run(&store, &tasks).await;
    for id in ids.iter().step_by(1_000) {
        store
            .set_task_state(
                run_id,
                id,
                TaskState::Scheduled,
                TaskState::Queued,
                2_000,
                None,
            )
            .await
            .unwrap();
    }
    let plan = store.explain_claim_for_test().await.unwrap();
    let (compute, light) = plan.split_once("--- light").unwrap();
    assert!(compute.contains("task_instances_claimable "), "{plan}");
    assert!(light.contains("task_instances_claimable_light "), "{plan}");
    db.drop_database().await;
}

/// A first big run on a new database has the task table analysed when it is created, so
/// that plans cached while the table was empty (the claim's, the attempts' foreign-key check)
/// are made again for its real size instead of reading it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_big_run_refreshes_the_planners_statistics() {
    use sqlx::Connection;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.store().await;
    let reltuples = || async {
        let mut connection = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let known: f32 = sqlx::query_scalar(
            "SELECT reltuples FROM pg_class WHERE oid = 'task_instances'::regclass",
        )
        .fetch_one(&mut connection)
        .await
        .unwrap();
        connection.close().await.ok();
        known
    };
    new_service_run(&store, &[("only", &[][..])]).await;
    assert!(reltuples().await < 1.0, "a one-task run analyses nothing");
    let ids: Vec<String> = (0..2_000).map(|i| format!("t{i:04}")).collect();
    let tasks: Vec<(&str, &[&str])> = ids.iter().map(|id| (id.as_str(), &[][..])).collect();
    new_service_run(&store, &tasks).await;
    assert!(reltuples().await >= 2_000.0, "{}", reltuples().await);
    db.drop_database().await;
}

/// What the services wait out and what stops them, told apart on errors a real PostgreSQL
/// gives: a deadlock, a statement timeout and a refused connection are transient; bad SQL and
/// a broken constraint are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_transient_errors_are_told_apart() {
    use sqlx::Connection;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let transient = |e: sqlx::Error| StoreError::Database(e).is_transient();
    let mut a = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut b = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE pair (id INT PRIMARY KEY, v INT); INSERT INTO pair VALUES (1, 0), (2, 0)",
    )
    .execute(&mut a)
    .await
    .unwrap();

    // A deadlock: each transaction holds the row the other wants next.
    sqlx::raw_sql("BEGIN; UPDATE pair SET v = 1 WHERE id = 1")
        .execute(&mut a)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; UPDATE pair SET v = 1 WHERE id = 2")
        .execute(&mut b)
        .await
        .unwrap();
    let (first, second) = tokio::join!(
        sqlx::raw_sql("UPDATE pair SET v = 2 WHERE id = 2").execute(&mut a),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            sqlx::raw_sql("UPDATE pair SET v = 2 WHERE id = 1")
                .execute(&mut b)
                .await
        }
    );
    let deadlock = match (first, second) {
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
        other => panic!("expected exactly one side to deadlock: {other:?}"),
    };
    assert_eq!(
        deadlock
            .as_database_error()
            .and_then(|d| d.code())
            .as_deref(),
        Some("40P01"),
        "{deadlock}"
    );
    assert!(transient(deadlock));
    sqlx::raw_sql("ROLLBACK").execute(&mut a).await.unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut b).await.unwrap();

    // A statement timeout.
    let timeout = sqlx::raw_sql("SET statement_timeout = '50ms'; SELECT pg_sleep(2)")
        .execute(&mut a)
        .await
        .unwrap_err();
    assert!(transient(timeout));

    // A server that is not there (a closed port on this machine).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = sqlx::PgConnection::connect(&format!("postgres://postgres@127.0.0.1:{port}/x"))
        .await
        .unwrap_err();
    assert!(transient(refused));

    // Bugs and bad data are not waited out.
    let syntax = sqlx::raw_sql("SELEC 1").execute(&mut b).await.unwrap_err();
    assert!(!transient(syntax));
    let duplicate = sqlx::raw_sql("INSERT INTO pair VALUES (1, 0)")
        .execute(&mut b)
        .await
        .unwrap_err();
    assert!(!transient(duplicate));
    assert!(!StoreError::Conflict("moved".into()).is_transient());
    a.close().await.ok();
    b.close().await.ok();
    db.drop_database().await;
}
