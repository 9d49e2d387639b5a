//! How the API holds up at scale: a DAG of 10,000 tasks (25 runs) and a DAG with 10,000 runs, each
//! endpoint the UI uses timed over many requests (p50, p99, max, response size), optionally
//! while every core is kept busy (as workers running stages would).
//!
//! ```sh
//! cargo bench -p amdahl-web --bench scale                 # SQLite, idle machine
//! AMDAHL_BENCH_BUSY=1 cargo bench -p amdahl-web --bench scale
//! AMDAHL_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench cargo bench -p amdahl-web --bench scale
//! ```
//!
//! The requests go through the whole router (auth, handlers, the store, JSON) in process; the
//! network and the browser's drawing are not in these figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

use amdahl_scheduler::runs::{RunOrigin, create_run};
use amdahl_scheduler::{Clock, Store, SystemClock};
use amdahl_web::auth::{hash, new_token};
use amdahl_web::{AppState, router};

fn wide_dag(tasks: usize) -> String {
    let mut yaml = String::from("dag: wide\ntasks:\n");
    for i in 0..tasks {
        yaml.push_str(&format!("  t{i}:\n    empty: {{}}\n"));
        if i >= 10 {
            yaml.push_str(&format!("    needs: [t{}]\n", i % 10));
        }
    }
    yaml
}

/// Runs of the 10,000-task DAG: a full page of its grid.
const WIDE_RUNS: usize = 25;

const MANY: &str = "dag: many\ntasks:\n  a:\n    empty: {}\n  b:\n    needs: [a]\n    empty: {}\n  c:\n    needs: [b]\n    empty: {}\n";

async fn populate(store: &Store, dir: &std::path::Path) -> (i64, i64) {
    let write = |name: &str, text: &str| {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        amdahl_dags::load_file(&path).unwrap()
    };
    let wide = write("wide", &wide_dag(10_000));
    let many = write("many", MANY);
    let started = Instant::now();
    let params = Default::default();
    let mut wide_run = 0;
    for _ in 0..WIDE_RUNS {
        wide_run = create_run(store, &SystemClock, &wide, &params, RunOrigin::Manual)
            .await
            .unwrap();
    }
    let mut many_run = 0;
    for _ in 0..10_000 {
        many_run = create_run(store, &SystemClock, &many, &params, RunOrigin::Manual)
            .await
            .unwrap();
    }
    eprintln!(
        "populated: {WIDE_RUNS} runs of 10,000 tasks and 10,000 runs of 3 tasks in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (wide_run, many_run)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("AMDAHL_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("state.db").display()));
    let busy = std::env::var("AMDAHL_BENCH_BUSY").as_deref() == Ok("1");
    let requests: usize = std::env::var("AMDAHL_BENCH_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    rt.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let (wide_run, many_run) = populate(&store, dir.path()).await;
        let token = new_token().unwrap();
        store
            .create_token("bench", "viewer", &hash(&token), SystemClock.now_ms())
            .await
            .unwrap();
        let app = router(AppState::new(store.clone(), dir.path().to_path_buf()));
        let stop = Arc::new(AtomicBool::new(false));
        let burners: Vec<_> = if busy {
            (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
                .map(|_| {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut x = 1u64;
                        while !stop.load(Ordering::Relaxed) {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        }
                        x
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let endpoints = [
            ("DAG list", "/api/v1/dags".to_string()),
            ("10,000-task DAG (graph)", "/api/v1/dags/wide".to_string()),
            (
                "10,000-task run, first page (500 tasks)",
                format!("/api/v1/runs/{wide_run}"),
            ),
            (
                "10,000-task run, last page",
                format!("/api/v1/runs/{wide_run}?tasks_from=9500"),
            ),
            (
                "one task of a 10,000-task run",
                format!("/api/v1/runs/{wide_run}/tasks/t9999"),
            ),
            (
                "10,000-task grid page (25 runs × 100 tasks)",
                "/api/v1/dags/wide/grid".to_string(),
            ),
            (
                "10,000-task grid, last tasks",
                "/api/v1/dags/wide/grid?tasks_from=9900".to_string(),
            ),
            ("10,000-run DAG page", "/api/v1/dags/many".to_string()),
            ("10,000-run grid page", "/api/v1/dags/many/grid".to_string()),
            (
                "10,000-run grid, 100 pages back",
                format!("/api/v1/dags/many/grid?before={}", many_run - 2500),
            ),
            ("runs list (100)", "/api/v1/runs?limit=100".to_string()),
            ("one run of 3 tasks", format!("/api/v1/runs/{many_run}")),
        ];
        println!(
            "store: {}; {} requests per endpoint; cores busy: {}",
            store.kind(),
            requests,
            if busy { "all" } else { "none" }
        );
        println!(
            "| endpoint | p50 ms | p99 ms | max ms | response bytes |\n|---|---:|---:|---:|---:|"
        );
        for (name, path) in endpoints {
            let mut times = Vec::with_capacity(requests);
            let mut bytes = 0;
            for _ in 0..requests {
                let request = Request::builder()
                    .uri(&path)
                    .header("Authorization", format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap();
                let started = Instant::now();
                let response = app.clone().oneshot(request).await.unwrap();
                assert!(
                    response.status().is_success(),
                    "{path}: {}",
                    response.status()
                );
                bytes = response
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .len();
                times.push(started.elapsed());
            }
            times.sort();
            println!(
                "| {name} | {} | {} | {} | {bytes} |",
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.99)),
                ms(*times.last().unwrap())
            );
        }
        stop.store(true, Ordering::Relaxed);
        for burner in burners {
            let _ = burner.join();
        }
    });
}
