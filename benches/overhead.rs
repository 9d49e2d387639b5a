//! Scheduling overhead through the real processes, with their default settings: on SQLite
//! `amdahl standalone` (one process, in-process wake-ups) and `amdahl scheduler` + `amdahl
//! worker` (two processes, which can only poll each other); on PostgreSQL a scheduler and a
//! worker process (LISTEN/NOTIFY wake-ups).
//!
//! `cargo bench --bench overhead` prints a table for SQLite and, when
//! `AMDAHL_TEST_POSTGRES_URL` names a server, for PostgreSQL (a fresh database is created and
//! dropped):
//! - a chain of 40 no-op tasks: wall time from trigger to success and the overhead per
//!   chained task;
//! - N independent no-op tasks (`AMDAHL_BENCH_WIDE`, default 10,000): completions per second.
//!
//! A no-op task is `empty: {}` (no process); `AMDAHL_BENCH_TASK=shell` makes it
//! `shell: "true"` instead, which forks `sh -c true` (about a millisecond) per task. The
//! worker has `AMDAHL_BENCH_SLOTS` slots (default 16; `default` passes no `--slots`, so the
//! worker takes its default, one per core).

#[path = "../runner/tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The no-op task's kind, as YAML.
fn no_op() -> &'static str {
    match std::env::var("AMDAHL_BENCH_TASK").as_deref() {
        Ok("shell") => "shell: \"true\"",
        _ => "empty: {}",
    }
}

fn write_dag(dir: &Path, name: &str, tasks: usize, chain: bool) -> String {
    let mut yaml = format!("dag: {name}\nmax_active_tasks: {tasks}\ntasks:\n");
    for i in 0..tasks {
        let needs = if chain && i > 0 {
            format!(", needs: [t{}]", i - 1)
        } else {
            String::new()
        };
        yaml.push_str(&format!("  t{i}: {{ {}{needs} }}\n", no_op()));
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// Wall time of `amdahl trigger FILE --wait` against running services.
fn timed_run(home: &Path, url: &str, file: &str) -> Duration {
    let started = Instant::now();
    let status = amdahl(home, url, &["trigger", file, "--wait"])
        .status()
        .unwrap();
    assert!(status.success(), "the benchmark run failed");
    started.elapsed()
}

/// How the service runs: one `standalone` process, or a scheduler and a worker process.
#[derive(Clone, Copy)]
enum Topology {
    Standalone,
    Separate,
}

fn measure(backend: &str, url: &str, wide: usize, topology: Topology) -> Vec<[String; 4]> {
    let home = tempfile::tempdir().unwrap();
    let dags = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    assert!(
        amdahl(home.path(), url, &["db", "migrate"])
            .status()
            .unwrap()
            .success()
    );
    // No-op tasks wait on processes and the database, not on the CPU, so a worker takes
    // more of them at once than there are cores.
    let slots = std::env::var("AMDAHL_BENCH_SLOTS").unwrap_or_else(|_| "16".into());
    let slot_flags: Vec<&str> = match slots.as_str() {
        "default" => vec![],
        slots => vec!["--slots", slots],
    };
    let folder = empty.path().display().to_string();
    let (label, commands): (String, Vec<Vec<&str>>) = match topology {
        Topology::Standalone => (
            format!("{backend}, standalone"),
            vec![[&["standalone", "--dags-folder", &folder][..], &slot_flags].concat()],
        ),
        Topology::Separate => (
            format!("{backend}, scheduler + worker"),
            vec![
                vec!["scheduler", "--dags-folder", &folder],
                [&["worker"][..], &slot_flags].concat(),
            ],
        ),
    };
    let _services = Processes(
        commands
            .iter()
            .map(|args| amdahl(home.path(), url, args).spawn().unwrap())
            .collect(),
    );
    // Warm up: the first run pays for process start-up and empty caches.
    let warm = write_dag(dags.path(), "warm", 2, true);
    timed_run(home.path(), url, &warm);

    let chain = write_dag(dags.path(), "chain", 40, true);
    let chain_time = timed_run(home.path(), url, &chain);
    let (hand_off, in_task) = chain_timings(url);
    let wide_file = write_dag(dags.path(), "wide", wide, false);
    let wide_time = timed_run(home.path(), url, &wide_file);
    let wide_span = run_span(url, "wide");
    vec![
        [
            label.clone(),
            "chain of 40 no-op tasks".into(),
            format!("{:.0} ms total", chain_time.as_secs_f64() * 1e3),
            format!(
                "{:.1} ms per task: hand-off {hand_off:.2} ms + task {in_task:.2} ms (medians)",
                chain_time.as_secs_f64() * 1e3 / 40.0
            ),
        ],
        [
            label,
            format!("{wide} independent no-op tasks"),
            format!("{:.1} s total", wide_time.as_secs_f64()),
            format!(
                "{:.0} completions/s ({:.0}/s from the run's start to its end)",
                wide as f64 / wide_time.as_secs_f64(),
                wide as f64 / wide_span.as_secs_f64()
            ),
        ],
    ]
}

/// Medians over the chain's links, in ms, from the attempts' µs stamps (when their starts and
/// ends were written): the hand-off (a task's end written → the next one's start written: the
/// scheduling overhead) and a task's own time (start → end: forking `sh -c true`).
fn chain_timings(url: &str) -> (f64, f64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = amdahl_scheduler::Store::connect(url).await.unwrap();
        let run = store.list_runs(Some("chain"), 1).await.unwrap().remove(0);
        let mut attempts = store.attempts(run.id).await.unwrap();
        // Task ids are `t0` … `tN`: in chain order by their number.
        attempts.sort_by_key(|a| a.task_id[1..].parse::<u32>().unwrap());
        let stamps: Vec<(i64, i64)> = attempts
            .iter()
            .map(|a| (a.started_at_us.unwrap(), a.finished_at_us.unwrap()))
            .collect();
        let mut gaps: Vec<i64> = stamps.windows(2).map(|w| w[1].0 - w[0].1).collect();
        let mut own: Vec<i64> = stamps.iter().map(|(start, end)| end - start).collect();
        store.close().await;
        (median(&mut gaps) / 1e3, median(&mut own) / 1e3)
    })
}

/// The newest run of `dag`, from its first task's start to its end (stored timestamps).
fn run_span(url: &str, dag: &str) -> Duration {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = amdahl_scheduler::Store::connect(url).await.unwrap();
        let run = store.list_runs(Some(dag), 1).await.unwrap().remove(0);
        let tasks = store.tasks(run.id).await.unwrap();
        let first = tasks.iter().filter_map(|t| t.started_at_ms).min().unwrap();
        let last = run.finished_at_ms.unwrap();
        store.close().await;
        Duration::from_millis((last - first).max(1) as u64)
    })
}

fn median(values: &mut [i64]) -> f64 {
    values.sort_unstable();
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2] as f64
    } else {
        (values[n / 2 - 1] + values[n / 2]) as f64 / 2.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not support.
    let wide: usize = std::env::var("AMDAHL_BENCH_WIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut rows = Vec::new();
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", sqlite_dir.path().join("bench.db").display());
    rows.extend(measure("sqlite", &sqlite_url, wide, Topology::Standalone));
    let sqlite_url = format!("sqlite://{}", sqlite_dir.path().join("bench2.db").display());
    rows.extend(measure("sqlite", &sqlite_url, wide, Topology::Separate));
    if std::env::var("AMDAHL_TEST_POSTGRES_URL").is_ok() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        if let Some(db) = rt.block_on(support::TestDb::postgres()) {
            rows.extend(measure("postgres", &db.url, wide, Topology::Separate));
            rt.block_on(db.drop_database());
        }
    } else {
        eprintln!("AMDAHL_TEST_POSTGRES_URL is not set: PostgreSQL not measured");
    }
    let header = ["service", "workload", "wall time", "result"];
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 4]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |", padded.join(" | "))
    };
    println!("{}", line(header));
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in &rows {
        println!("{}", line([&row[0], &row[1], &row[2], &row[3]]));
    }
}
