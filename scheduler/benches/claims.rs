//! Claim latency against history, on PostgreSQL: what one worker claim (one queued task, as a
//! worker with a free slot asks) costs with 0, 100 000 and 1 000 000 finished attempts in the
//! database (their runs of 1 000 tasks each, their task instances and their attempts: what a
//! year of runs leaves behind), and again right after `amdahl db clean` deleted that history
//! (`Store::delete_finished_runs`, no VACUUM). Every level gets a fresh database; the history
//! is written in bulk by SQL and ANALYZEd; then a run with `AMDAHL_BENCH_CLAIMS` (2 000) queued
//! tasks is claimed one task per call and every call is timed. Prints a markdown table.
//!
//!   AMDAHL_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench -p amdahl-scheduler --bench claims
//!   AMDAHL_BENCH_HISTORY=0,1000000 AMDAHL_BENCH_CLAIMS=5000 …   # other levels
//!
//! The databases are named `amdahl_claims_bench_<N>` and dropped at the end.

use std::time::Instant;

use amdahl_scheduler::Store;
use amdahl_scheduler::store::ClaimRequest;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Runs `statement` (SQL this program wrote) on `db`.
async fn run_sql(db: &PgPool, statement: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
        .execute(db)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

const TASKS_PER_RUN: i64 = 1_000;

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

async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// Finished runs, task instances and attempts: `attempts` of them, `TASKS_PER_RUN` per run.
async fn write_history(db: &PgPool, attempts: i64) {
    let runs = attempts / TASKS_PER_RUN;
    let statements = [
        "INSERT INTO dags (dag_id, created_at_ms, updated_at_ms) VALUES ('history', 0, 0), ('live', 0, 0)".to_string(),
        "INSERT INTO dag_versions (dag_id, hash, source_path, base_dir, yaml, created_at_ms) \
         VALUES ('history', 'h', 'history.yaml', '/', 'dag: history', 0), \
                ('live', 'l', 'live.yaml', '/', 'dag: live', 0)"
            .to_string(),
        format!(
            "INSERT INTO runs (dag_id, dag_version_id, state, trigger_kind, params_json, \
             logical_date, max_active_tasks, created_at_ms, started_at_ms, finished_at_ms) \
             SELECT 'history', 1, 'success', 'schedule', '{{}}', 'day ' || r, 16, r, r, r + 1 \
             FROM generate_series(1, {runs}) r"
        ),
        format!(
            "INSERT INTO task_instances (run_id, task_id, position, kind, state, needs_json, \
             priority, retries, retry_delay_ms, attempts, queued_at_ms, started_at_ms, \
             finished_at_ms, device, rows_out, bytes_out, output_path) \
             SELECT r, 'task_' || t, t, 'sql', 'success', '[]', 0, 1, 1000, 1, r, r, r + 1, \
             'cpu', 1000, 65536, '/data/runs/' || r || '/task_' || t \
             FROM generate_series(1, {runs}) r, generate_series(1, {TASKS_PER_RUN}) t"
        ),
        "INSERT INTO task_attempts (run_id, task_id, attempt, state, owner, started_at_ms, \
         finished_at_ms) SELECT run_id, task_id, 1, 'success', 'worker-1', started_at_ms, \
         finished_at_ms FROM task_instances"
            .to_string(),
        "ANALYZE".to_string(),
    ];
    for statement in statements {
        run_sql(db, statement).await;
    }
}

/// A running run of the `live` DAG with `tasks` queued tasks; returns its id.
async fn queue_live_run(db: &PgPool, tasks: i64) -> i64 {
    let (run,): (i64,) = sqlx::query_as(
        "INSERT INTO runs (dag_id, dag_version_id, state, trigger_kind, params_json, \
         logical_date, max_active_tasks, created_at_ms, started_at_ms) \
         VALUES ('live', 2, 'running', 'manual', '{}', 'now', 100000, 1, 1) RETURNING id",
    )
    .fetch_one(db)
    .await
    .expect("the live run");
    run_sql(
        db,
        format!(
            "INSERT INTO task_instances (run_id, task_id, position, kind, state, needs_json, \
             priority, retries, retry_delay_ms, queued_at_ms) \
             SELECT {run}, 'task_' || t, t, 'sql', 'queued', '[]', 0, 0, 0, t \
             FROM generate_series(1, {tasks}) t"
        ),
    )
    .await;
    run_sql(db, "ANALYZE task_instances".into()).await;
    run
}

/// Bytes of the tables a claim touches, with their indexes.
async fn hot_bytes(db: &PgPool) -> i64 {
    let (bytes,): (i64,) = sqlx::query_as(
        "SELECT (pg_total_relation_size('task_instances') + pg_total_relation_size('task_attempts') \
         + pg_total_relation_size('runs'))::bigint",
    )
    .fetch_one(db)
    .await
    .expect("sizes");
    bytes
}

/// Claims `tasks` tasks one per call: each call's microseconds.
async fn claim_all(store: &Store, tasks: i64) -> Vec<f64> {
    let mut times = Vec::with_capacity(tasks as usize);
    for _ in 0..tasks {
        let started = Instant::now();
        let claimed = store
            .claim_tasks(&ClaimRequest {
                owner: "bench-worker",
                has_gpu: false,
                limit: 1,
                light_limit: 0,
                lease_ms: 600_000,
                now_ms: 2,
            })
            .await
            .expect("claim");
        times.push(started.elapsed().as_secs_f64() * 1e6);
        assert_eq!(claimed.len(), 1, "a queued task was left to claim");
    }
    times
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn row(label: &str, bytes: i64, mut times: Vec<f64>) -> String {
    times.sort_by(f64::total_cmp);
    format!(
        "| {label} | {:.0} MiB | {} | {:.0} µs | {:.0} µs | {:.0} µs |",
        bytes as f64 / (1 << 20) as f64,
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(0.0),
    )
}

#[tokio::main]
async fn main() {
    let Ok(base) = std::env::var("AMDAHL_TEST_POSTGRES_URL") else {
        eprintln!(
            "set AMDAHL_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres) to \
             run this benchmark"
        );
        std::process::exit(2);
    };
    let levels: Vec<i64> = std::env::var("AMDAHL_BENCH_HISTORY")
        .unwrap_or_else(|_| "0,100000,1000000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("AMDAHL_BENCH_HISTORY: numbers"))
        .collect();
    let claims: i64 = std::env::var("AMDAHL_BENCH_CLAIMS")
        .ok()
        .map_or(2_000, |n| n.parse().expect("AMDAHL_BENCH_CLAIMS: a number"));
    let admin = pool(&base).await;
    let mut rows = Vec::new();
    for &attempts in &levels {
        let name = format!("amdahl_claims_bench_{attempts}");
        run_sql(
            &admin,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await;
        run_sql(&admin, format!("CREATE DATABASE {name}")).await;
        let url = with_database(&base, &name);
        let store = Store::connect(&url).await.expect("store");
        store.migrate().await.expect("migrations");
        let db = pool(&url).await;
        let started = Instant::now();
        write_history(&db, attempts).await;
        eprintln!(
            "{attempts} historical attempts written in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        queue_live_run(&db, claims).await;
        let times = claim_all(&store, claims).await;
        rows.push(row(
            &format!("{attempts} attempts"),
            hot_bytes(&db).await,
            times,
        ));
        if attempts > 0 {
            // `amdahl db clean`: every finished run goes, in batches, as the command does it.
            let started = Instant::now();
            let mut deleted = 0;
            loop {
                let ids = store
                    .delete_finished_runs(i64::MAX, 500)
                    .await
                    .expect("clean");
                if ids.is_empty() {
                    break;
                }
                deleted += ids.len();
            }
            eprintln!(
                "db clean deleted {deleted} runs in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            queue_live_run(&db, claims).await;
            let times = claim_all(&store, claims).await;
            rows.push(row(
                &format!("{attempts} attempts, then `db clean`"),
                hot_bytes(&db).await,
                times,
            ));
        }
        db.close().await;
        store.close().await;
        run_sql(
            &admin,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await;
    }
    println!(
        "\nclaim latency on PostgreSQL: one task per claim, {claims} claims per row, \
         {TASKS_PER_RUN} tasks per historical run\n"
    );
    println!("| history | runs + task tables | claims | median | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
}
