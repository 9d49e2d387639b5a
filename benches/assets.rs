//! From an asset event posted to the first task of the run it starts: how long a DAG scheduled
//! on an asset waits, through the real processes at their default settings.
//!
//! `cargo bench --bench assets` prints a table for SQLite (`amdahl standalone`) and, when
//! `AMDAHL_TEST_POSTGRES_URL` names a server, for PostgreSQL (`amdahl scheduler` + `amdahl
//! worker`, a fresh database created and dropped). Each of `AMDAHL_BENCH_EVENTS` (default 30)
//! events is posted as the API posts one (recorded, then a wake-up signal), after the previous
//! run finished; the latency is the downstream task's recorded start minus the event's
//! recorded time (one clock: the same machine).

#[path = "../runner/tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use amdahl_scheduler::{Clock, Store, SystemClock, Topic};

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn amdahl(home: &Path, url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amdahl"));
    cmd.args(args)
        .env("AMDAHL_HOME", home)
        .env("AMDAHL_DATABASE_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Latencies (ms) of `events` events, each to the start of the run it started.
async fn measure(url: &str, separate: bool, events: usize) -> Vec<i64> {
    let home = tempfile::tempdir().unwrap();
    let dags = tempfile::tempdir().unwrap();
    std::fs::write(
        dags.path().join("report.yaml"),
        "dag: report\nschedule: { assets: [bench.orders] }\ntasks:\n  build: { empty: {} }\n",
    )
    .unwrap();
    assert!(
        amdahl(home.path(), url, &["db", "migrate"])
            .status()
            .unwrap()
            .success()
    );
    let folder = dags.path().display().to_string();
    let commands: Vec<Vec<&str>> = if separate {
        vec![vec!["scheduler", "--dags-folder", &folder], vec!["worker"]]
    } else {
        vec![vec!["standalone", "--dags-folder", &folder]]
    };
    let _services = Processes(
        commands
            .iter()
            .map(|args| amdahl(home.path(), url, args).spawn().unwrap())
            .collect(),
    );
    let store = Store::connect(url).await.unwrap();
    // The scheduler follows the DAG once it has recorded it and started its cursor.
    for _ in 0..600 {
        if store
            .asset_summary("bench.orders")
            .await
            .unwrap()
            .is_some_and(|s| s.consumers == ["report"])
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut latencies = Vec::with_capacity(events);
    for i in 0..=events {
        let event = store
            .post_asset_event("bench.orders", None, SystemClock.now_ms())
            .await
            .unwrap();
        store.signal(Topic::Progress).await;
        let started = loop {
            let causes = async {
                let runs = store
                    .runs_before(Some("report"), None, None, 1)
                    .await
                    .ok()?;
                let run = runs.first()?;
                let caused = store.run_causes(run.id).await.ok()?;
                if !caused.iter().any(|e| e.id == event.id) {
                    return None;
                }
                let task = store.task(run.id, "build").await.ok()??;
                task.state
                    .is_terminal()
                    .then_some(task.started_at_ms)
                    .flatten()
            };
            if let Some(at) = causes.await {
                break at;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // The first event pays for cold caches: not counted.
        if i > 0 {
            latencies.push(started - event.created_at_ms);
        }
    }
    latencies
}

fn summary(label: &str, mut ms: Vec<i64>) -> String {
    ms.sort_unstable();
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "| {label:<36} | {:>6} | {:>8} ms | {:>6} ms | {:>6} ms |",
        ms.len(),
        at(0.5),
        at(0.9),
        ms[ms.len() - 1]
    )
}

fn main() {
    let events: usize = std::env::var("AMDAHL_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    rows.push(summary(
        "sqlite, standalone",
        rt.block_on(measure(&sqlite, false, events)),
    ));
    if std::env::var("AMDAHL_TEST_POSTGRES_URL").is_ok() {
        if let Some(db) = rt.block_on(support::TestDb::postgres()) {
            rows.push(summary(
                "postgres, scheduler + worker",
                rt.block_on(measure(&db.url, true, events)),
            ));
            rt.block_on(db.drop_database());
        }
    } else {
        eprintln!("AMDAHL_TEST_POSTGRES_URL is not set: PostgreSQL not measured");
    }
    println!("event posted → first task of the run it started");
    println!(
        "| {:<36} | {:>6} | {:>11} | {:>9} | {:>9} |",
        "service", "events", "median", "p90", "max"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(38),
        "-".repeat(8),
        "-".repeat(13),
        "-".repeat(11),
        "-".repeat(11)
    );
    for row in rows {
        println!("{row}");
    }
}
