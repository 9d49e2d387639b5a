//! Mapped task expansion: the store write that ends a mapped task's expansion (`map:` on a
//! task) and creates its instances. On SQLite (a temp file) and on PostgreSQL (a fresh
//! database), `AMDAHL_BENCH_REPEAT` (5) times each: a new run with a mapped task `per_region`
//! and a task `report` that needs it; `per_region` is queued and its attempt started, then only
//! `Store::finish_attempt` with `mapped: Some(values)` (`AMDAHL_BENCH_INSTANCES`, 10 000, JSON
//! texts `"region-0042"`) is timed: the one transaction that ends the attempt, inserts an
//! instance per value (`per_region[0]`…, 1 000 rows per statement) and rewrites `report`'s
//! `needs` to the instances. Each repeat then checks the run's rows and `report`'s needs.
//! Prints a markdown table against the goal (10 000 instances in ≤ 1 s).
//!
//!   AMDAHL_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench -p amdahl-scheduler --bench mapping
//!   AMDAHL_BENCH_INSTANCES=100000 AMDAHL_BENCH_REPEAT=3 …   # other sizes
//!
//! Without `AMDAHL_TEST_POSTGRES_URL` only SQLite is measured. The PostgreSQL database is
//! named `amdahl_mapping_bench` and dropped at the end.

use std::time::Instant;

use amdahl_dags::{DevicePreference, TriggerRule};
use amdahl_scheduler::store::{FinishAttempt, NewRun, NewTask, TriggerKind};
use amdahl_scheduler::{AttemptState, Store, TaskState};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const GOAL_MS: f64 = 1_000.0;
const DATABASE: &str = "amdahl_mapping_bench";

/// Runs `statement` (SQL this program wrote) on `db`.
async fn run_sql(db: &PgPool, statement: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
        .execute(db)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// `base` with its database replaced by `name`.
fn with_database(base: &str, name: &str) -> String {
    let (address, query) = match base.split_once('?') {
        Some((a, q)) => (a, format!("?{q}")),
        None => (base, String::new()),
    };
    let root = address
        .rsplit_once('/')
        .map_or(address, |(root, _)| root)
        .to_string();
    format!("{root}/{name}{query}")
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().map_or(default, |n| {
        n.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: a number"))
    })
}

fn task(id: &str, needs: &[&str]) -> NewTask {
    NewTask {
        task_id: id.to_string(),
        device: DevicePreference::parse("auto").expect("a device preference"),
        kind: "sql".into(),
        needs: needs.iter().map(|n| n.to_string()).collect(),
        priority: 0,
        retries: 1,
        retry_delay_ms: 0,
        max_retry_delay_ms: None,
        timeout_ms: None,
        pool: None,
        trigger: TriggerRule::AllSuccess,
        skip_note: None,
        depends_on_past: false,
    }
}

/// A run of `per_region` (mapped) and `report` (needs it), `per_region`'s attempt started:
/// (run id, attempt id, attempt number).
async fn started_run(store: &Store, version: i64, repeat: usize) -> (i64, i64, i64) {
    let run_id = store
        .create_run(&NewRun {
            dag_id: "regions".into(),
            trigger: TriggerKind::Manual,
            dag_version_id: version,
            params_json: "{}".into(),
            logical_date: format!("2026-01-{:02}T00:00:00Z", repeat + 1),
            max_active_tasks: 16,
            owner: Some("bench".into()),
            backfill_id: None,
            notify: false,
            run_timeout_ms: None,
            now_ms: 1_000,
            assets: Vec::new(),
            tasks: vec![task("per_region", &[]), task("report", &["per_region"])],
        })
        .await
        .expect("the run");
    store
        .set_task_state(
            run_id,
            "per_region",
            TaskState::Scheduled,
            TaskState::Queued,
            2_000,
            None,
        )
        .await
        .expect("per_region queued");
    let (attempt_id, attempt) = store
        .start_attempt(run_id, "per_region", "bench", 3_000)
        .await
        .expect("per_region started");
    (run_id, attempt_id, attempt)
}

/// The expansion's end, with `values` as its mapped values.
fn expansion(run_id: i64, attempt_id: i64, attempt: i64, values: Vec<String>) -> FinishAttempt {
    FinishAttempt {
        run_id,
        task_id: "per_region".into(),
        attempt_id,
        attempt,
        attempt_state: AttemptState::Success,
        task_state: TaskState::Success,
        retry_at_ms: None,
        device: None,
        device_note: None,
        output_path: None,
        rows_out: Some(values.len() as i64),
        bytes_out: None,
        error: None,
        now_ms: 4_000,
        io_us: None,
        transfer_us: None,
        compute_us: None,
        route: None,
        rendered: None,
        plan: None,
        produces: Vec::new(),
        mapped: Some(values),
    }
}

/// The run has the two tasks plus an instance per value, and `report` needs the instances.
async fn check_expanded(store: &Store, run_id: i64, instances: usize) {
    let tasks = store.tasks(run_id).await.expect("tasks");
    assert_eq!(tasks.len(), instances + 2, "task rows of run {run_id}");
    let expected: Vec<String> = (0..instances)
        .map(|i| amdahl_dags::mapping::instance_id("per_region", i))
        .collect();
    let created: Vec<&str> = tasks
        .iter()
        .filter(|t| t.map_index.is_some())
        .map(|t| t.task_id.as_str())
        .collect();
    assert_eq!(created, expected, "the instances, in index order");
    let report = tasks
        .iter()
        .find(|t| t.task_id == "report")
        .expect("report");
    assert_eq!(report.needs, expected, "report's needs");
    let parent = tasks
        .iter()
        .find(|t| t.task_id == "per_region")
        .expect("per_region");
    assert_eq!(parent.state, TaskState::Success);
}

/// Times `repeat` expansions of `instances` values on `store`: milliseconds each.
async fn measure(store: &Store, instances: usize, repeat: usize) -> Vec<f64> {
    let version = store
        .record_dag_version(
            "regions",
            "bench",
            "regions.yaml",
            "/tmp",
            "dag: regions",
            1_000,
        )
        .await
        .expect("the DAG version");
    let mut times = Vec::with_capacity(repeat);
    for r in 0..repeat {
        let (run_id, attempt_id, attempt) = started_run(store, version, r).await;
        let values: Vec<String> = (0..instances)
            .map(|i| format!("\"region-{i:04}\""))
            .collect();
        let end = expansion(run_id, attempt_id, attempt, values);
        let started = Instant::now();
        store.finish_attempt(&end).await.expect("the expansion");
        let ms = started.elapsed().as_secs_f64() * 1e3;
        check_expanded(store, run_id, instances).await;
        eprintln!(
            "{}: run {run_id}: {instances} instances in {ms:.1} ms",
            store.kind()
        );
        times.push(ms);
    }
    times
}

fn row(database: &str, instances: usize, mut times: Vec<f64>) -> String {
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    format!(
        "| {database} | {instances} | {} | {:.0} | {median:.0} | {max:.0} | {} |",
        times.len(),
        times[0],
        if max <= GOAL_MS {
            "yes"
        } else if median <= GOAL_MS {
            "median only"
        } else {
            "no"
        },
    )
}

#[tokio::main]
async fn main() {
    let instances = env_number("AMDAHL_BENCH_INSTANCES", 10_000);
    let repeat = env_number("AMDAHL_BENCH_REPEAT", 5).max(1);
    let mut rows = Vec::new();

    let dir = tempfile::tempdir().expect("a temp folder");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = Store::connect(&url).await.expect("the SQLite store");
    store.migrate().await.expect("migrations");
    rows.push(row(
        "sqlite",
        instances,
        measure(&store, instances, repeat).await,
    ));
    store.close().await;

    let mut left_out = None;
    match std::env::var("AMDAHL_TEST_POSTGRES_URL") {
        Ok(base) => {
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect(&base)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {base}: {e}"));
            let drop = format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)");
            run_sql(&admin, drop.clone()).await;
            run_sql(&admin, format!("CREATE DATABASE {DATABASE}")).await;
            let store = Store::connect(&with_database(&base, DATABASE))
                .await
                .expect("the PostgreSQL store");
            store.migrate().await.expect("migrations");
            rows.push(row(
                "postgres",
                instances,
                measure(&store, instances, repeat).await,
            ));
            store.close().await;
            run_sql(&admin, drop).await;
            admin.close().await;
        }
        Err(_) => {
            left_out = Some(
                "PostgreSQL left out: AMDAHL_TEST_POSTGRES_URL is not set (e.g. \
                 postgres://postgres@127.0.0.1:5432/postgres)",
            );
        }
    }

    println!(
        "\nmapped task expansion: one `finish_attempt` with `mapped: Some(values)` (instances \
         inserted, downstream needs rewritten, one transaction)\n"
    );
    println!(
        "| database | instances | runs | min ms | median ms | max ms | goal (≤ 1000 ms) met? |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for row in rows {
        println!("{row}");
    }
    if let Some(note) = left_out {
        println!("\n{note}");
    }
}
