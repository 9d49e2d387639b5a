//! The crash suite: a DAG of 200 tasks run by two schedulers and three workers on one
//! PostgreSQL while a random one of them is killed with SIGKILL at random moments and started
//! again. At the end every run must be terminal (and, with the retries the DAG allows,
//! successful), no task may have two successful attempts, every successful data task's output
//! must hold exactly the rows it should, and no lease may be held by a dead process.
//!
//! `AMDAHL_CRASH_KILLS` sets the number of kills (12 by default, as CI runs it; 100 for the
//! full form, `scripts/crash-suite`), `AMDAHL_CRASH_SEED` replays a sequence of kills.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{Amdahl, assert_success, text};

mod postgres;
use postgres::PrivatePostgres;

/// Kills per run of the suite unless `AMDAHL_CRASH_KILLS` says otherwise.
const DEFAULT_KILLS: usize = 12;
/// How long a worker's lease lasts: short, so a killed worker's tasks come back quickly.
const LEASE: &str = "2s";

/// Root tasks: each makes `ROOT_ROWS * (i + 1)` rows.
const ROOTS: usize = 40;
const ROOT_ROWS: u64 = 500;
/// Tasks that combine two roots; tasks that count a middle task; shell tasks that sleep.
const MIDDLES: usize = 100;
const COUNTS: usize = 40;
const SLEEPERS: usize = 20;

/// A small, seeded generator (xorshift64*): the kills are random but replayable.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The DAG and, for each data task, the rows its output must hold.
fn crash_dag() -> (String, HashMap<String, u64>) {
    let mut yaml = String::from(
        "dag: crash\n\
         description: 200 tasks for the crash suite\n\
         max_active_tasks: 16\n\
         defaults:\n  retries: 8\n  retry_delay: 0s\n  timeout: 2m\n\
         tasks:\n",
    );
    let mut rows = HashMap::new();
    for i in 0..ROOTS {
        let n = ROOT_ROWS * (i as u64 + 1);
        yaml.push_str(&format!(
            "  r{i:03}:\n    sql: SELECT value AS n, value % 7 AS k FROM generate_series(1, {n})\n"
        ));
        rows.insert(format!("r{i:03}"), n);
    }
    for i in 0..MIDDLES {
        let (a, b) = (i % ROOTS, (i * 7 + 3) % ROOTS);
        let b = if a == b { (b + 1) % ROOTS } else { b };
        yaml.push_str(&format!(
            "  m{i:03}:\n    needs: [r{a:03}, r{b:03}]\n    sql: SELECT n, k FROM r{a:03} UNION ALL SELECT n, k FROM r{b:03}\n"
        ));
        rows.insert(
            format!("m{i:03}"),
            rows[&format!("r{a:03}")] + rows[&format!("r{b:03}")],
        );
    }
    for i in 0..COUNTS {
        let m = (i * 5) % MIDDLES;
        yaml.push_str(&format!(
            "  c{i:03}:\n    needs: [m{m:03}]\n    sql: SELECT k, count(*) AS rows_of_k FROM m{m:03} GROUP BY k\n"
        ));
        rows.insert(format!("c{i:03}"), 7);
    }
    for i in 0..SLEEPERS {
        let c = (i * 3) % COUNTS;
        yaml.push_str(&format!(
            "  s{i:03}:\n    needs: [c{c:03}]\n    shell: sleep 0.{}\n",
            1 + i % 5
        ));
    }
    (yaml, rows)
}

/// One service process, restartable with the same arguments; its stderr goes to a file.
struct Service {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Child,
}

impl Service {
    fn spawn(amdahl: &Amdahl, name: &str, args: &[String], logs: &Path) -> Service {
        let log = logs.join(format!("{name}.log"));
        let child = Self::start(amdahl, args, &log);
        Service {
            name: name.to_string(),
            args: args.to_vec(),
            log,
            child,
        }
    }

    fn start(amdahl: &Amdahl, args: &[String], log: &Path) -> Child {
        let stderr = File::options().create(true).append(true).open(log).unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        amdahl
            .command(&args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    fn kill_and_restart(&mut self, amdahl: &Amdahl, pause: Duration) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
        std::fs::write(
            self.log.with_extension("kills"),
            format!(
                "{}killed\n",
                std::fs::read_to_string(self.log.with_extension("kills")).unwrap_or_default()
            ),
        )
        .unwrap();
        std::thread::sleep(pause);
        self.child = Self::start(amdahl, &self.args, &self.log);
    }

    fn tail(&self) -> String {
        let all = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `schedulers` schedulers and `workers` two-slot workers holding leases of `lease`, their
/// logs in `dir/logs`.
fn fleet(
    amdahl: &Amdahl,
    dir: &Path,
    schedulers: usize,
    workers: usize,
    lease: &str,
) -> Vec<Service> {
    let no_dags = dir.join("no-dags");
    std::fs::create_dir(&no_dags).unwrap();
    let no_dags = no_dags.display().to_string();
    let logs = dir.join("logs");
    std::fs::create_dir(&logs).unwrap();
    let strings = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let mut services = Vec::new();
    for i in 0..schedulers {
        services.push(Service::spawn(
            amdahl,
            &format!("scheduler{i}"),
            &strings(&["scheduler", "--poll", "200ms", "--dags-folder", &no_dags]),
            &logs,
        ));
    }
    for i in 0..workers {
        services.push(Service::spawn(
            amdahl,
            &format!("worker{i}"),
            &strings(&["worker", "--slots", "2", "--lease", lease]),
            &logs,
        ));
    }
    services
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a whole number")),
    )
}

/// Runs the suite against the PostgreSQL database at `url`.
pub fn suite(url: &str, rt: &tokio::runtime::Runtime) {
    let kills = env_number("AMDAHL_CRASH_KILLS").map_or(DEFAULT_KILLS, |k| k as usize);
    let seed = env_number("AMDAHL_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    eprintln!("crash suite: {kills} kills, AMDAHL_CRASH_SEED={seed}");
    let mut random = Random(seed);
    let amdahl = Amdahl::with_database(url);
    assert_success(&amdahl.run(&["db", "migrate"]), "migrate");
    let dir = tempfile::tempdir().unwrap();
    let (yaml, expected_rows) = crash_dag();
    let file = dir.path().join("crash.yaml");
    std::fs::write(&file, yaml).unwrap();
    let file = file.display().to_string();
    assert_success(
        &amdahl.run(&["dags", "validate", &file]),
        "validate the crash DAG",
    );
    let mut services = fleet(&amdahl, dir.path(), 2, 3, LEASE);

    let started = Instant::now();
    let trigger = |amdahl: &Amdahl| -> String {
        let out = amdahl.run(&["trigger", &file]);
        assert_success(&out, "trigger");
        text(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let state_of = |run: &str| -> String {
        let shown = text(&amdahl.run(&["runs", "show", run]).stdout);
        shown
            .lines()
            .find_map(|l| l.strip_prefix("state"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut runs = vec![trigger(&amdahl)];
    let (mut scheduler_kills, mut worker_kills) = (0, 0);
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(100 + random.below(1_400)));
        let victim = random.below(services.len() as u64) as usize;
        let pause = Duration::from_millis(random.below(500));
        services[victim].kill_and_restart(&amdahl, pause);
        if services[victim].name.starts_with("scheduler") {
            scheduler_kills += 1;
        } else {
            worker_kills += 1;
        }
        // Keep a run going for the kills to land in.
        if matches!(
            state_of(runs.last().unwrap()).as_str(),
            "success" | "failed" | "cancelled"
        ) {
            runs.push(trigger(&amdahl));
        }
    }
    let killing = started.elapsed();

    // Everything settles with every process alive.
    let deadline = Instant::now() + Duration::from_secs(300);
    for run in &runs {
        loop {
            let state = state_of(run);
            if matches!(state.as_str(), "success" | "failed" | "cancelled") {
                break;
            }
            if Instant::now() > deadline {
                let tails: Vec<String> = services
                    .iter()
                    .map(|s| format!("--- {} ---\n{}", s.name, s.tail()))
                    .collect();
                panic!(
                    "run {run} is still {state} five minutes after the last kill \
                     (AMDAHL_CRASH_SEED={seed}):\n{}\n{}",
                    text(&amdahl.run(&["runs", "show", run]).stdout),
                    tails.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let settled = started.elapsed();
    let alive: Vec<u32> = services.iter().map(|s| s.child.id()).collect();
    let figures = rt.block_on(check_invariants(url, &expected_rows, &alive, seed));
    drop(services);
    eprintln!(
        "\ncrash suite (AMDAHL_CRASH_SEED={seed})\n\
         | kills | of schedulers | of workers | runs | tasks | attempts | lost | killing | settled |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {kills} | {scheduler_kills} | {worker_kills} | {} | {} | {} | {} | {:.1} s | {:.1} s |",
        runs.len(),
        figures.tasks,
        figures.attempts,
        figures.lost,
        killing.as_secs_f64(),
        settled.as_secs_f64(),
    );
}

struct Figures {
    tasks: i64,
    attempts: i64,
    lost: i64,
}

/// The four invariants, read straight from the state store and the data root.
async fn check_invariants(
    url: &str,
    expected_rows: &HashMap<String, u64>,
    alive: &[u32],
    seed: u64,
) -> Figures {
    use sqlx::Row;
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let context = format!("(AMDAHL_CRASH_SEED={seed})");

    // 1. Every run is terminal, and with eight retries per task every run succeeded.
    let runs = sqlx::query("SELECT id, state, note FROM runs ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    for run in &runs {
        let (id, state): (i64, String) = (run.get("id"), run.get("state"));
        if state != "success" {
            let failed = sqlx::query(
                "SELECT task_id, state, error FROM task_instances WHERE run_id = $1 AND state <> 'success'",
            )
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
            let failed: Vec<String> = failed
                .iter()
                .map(|t| {
                    format!(
                        "{} {} {}",
                        t.get::<String, _>("task_id"),
                        t.get::<String, _>("state"),
                        t.get::<Option<String>, _>("error").unwrap_or_default()
                    )
                })
                .collect();
            panic!("run {id} ended {state} {context}:\n{}", failed.join("\n"));
        }
    }

    // 2. No task has two successful attempts; every successful task has exactly one.
    let doubles = sqlx::query(
        "SELECT run_id, task_id, count(*) AS n FROM task_attempts WHERE state = 'success' \
         GROUP BY run_id, task_id HAVING count(*) <> 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        doubles.is_empty(),
        "tasks with more than one successful attempt {context}: {:?}",
        doubles
            .iter()
            .map(|r| format!(
                "run {} task {}: {}",
                r.get::<i64, _>("run_id"),
                r.get::<String, _>("task_id"),
                r.get::<i64, _>("n")
            ))
            .collect::<Vec<_>>()
    );
    let unattested: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_instances ti WHERE ti.state = 'success' AND NOT EXISTS \
         (SELECT 1 FROM task_attempts a WHERE a.run_id = ti.run_id AND a.task_id = ti.task_id \
          AND a.attempt = ti.attempts AND a.state = 'success')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        unattested, 0,
        "successful tasks whose current attempt did not succeed {context}"
    );

    // 3. Every successful data task's output exists and holds exactly its rows.
    let outputs = sqlx::query(
        "SELECT run_id, task_id, output_path, rows_out FROM task_instances \
         WHERE state = 'success' AND kind = 'sql' ORDER BY run_id, task_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        outputs.len(),
        runs.len() * (ROOTS + MIDDLES + COUNTS),
        "every data task of every run succeeded {context}"
    );
    for row in &outputs {
        let task: String = row.get("task_id");
        let run: i64 = row.get("run_id");
        let path: Option<String> = row.get("output_path");
        let path = path.unwrap_or_else(|| panic!("run {run} task {task} has no output {context}"));
        let rows_out: Option<i64> = row.get("rows_out");
        let expected = expected_rows[&task];
        let read = parquet_rows(Path::new(&path))
            .unwrap_or_else(|e| panic!("run {run} task {task}: output {path}: {e} {context}"));
        assert_eq!(
            (read, rows_out),
            (expected, Some(expected as i64)),
            "run {run} task {task}: rows read from {path} and recorded {context}"
        );
    }

    // 4. No lease is held by a dead process, and no finished task holds one at all.
    let leases = sqlx::query(
        "SELECT run_id, task_id, state, lease_owner FROM task_instances WHERE lease_owner IS NOT NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for lease in &leases {
        let owner: String = lease.get("lease_owner");
        let state: String = lease.get("state");
        // Owners are `host:pid:start-ms`.
        let pid: u32 = owner
            .split(':')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("lease owner `{owner}` is not host:pid:start"));
        assert!(
            state == "running" && alive.contains(&pid),
            "run {} task {} ({state}) holds a lease of {owner}, which is not a live worker {context}",
            lease.get::<i64, _>("run_id"),
            lease.get::<String, _>("task_id"),
        );
    }

    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let figures = Figures {
        tasks: count("SELECT count(*) FROM task_instances").await,
        attempts: count("SELECT count(*) FROM task_attempts").await,
        lost: count("SELECT count(*) FROM task_attempts WHERE state = 'lost'").await,
    };
    pool.close().await;
    figures
}

/// Rows in the Parquet files of an output folder; anything else there is an error (a
/// half-written file would not parse).
fn parquet_rows(dir: &Path) -> Result<u64, String> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let mut rows = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let reader =
            SerializedFileReader::new(file).map_err(|e| format!("{}: {e}", path.display()))?;
        rows += reader.metadata().file_metadata().num_rows() as u64;
    }
    Ok(rows)
}

/// PostgreSQL crashes twice under a running DAG (immediate stops: every connection cut, no
/// checkpoint), once for a second and once for longer than a worker's lease and the pool's
/// connection timeout. The schedulers and workers wait it out with backoff, none of them
/// exits, and the run completes with every task done once.
pub fn database_restarts() {
    if std::env::var("AMDAHL_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("SKIPPED: PostgreSQL test (AMDAHL_TEST_SKIP_POSTGRES=1)");
        return;
    }
    let server = PrivatePostgres::start();
    let amdahl = Amdahl::with_database(&server.url());
    assert_success(&amdahl.run(&["db", "migrate"]), "migrate");
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from(
        "dag: restart\nmax_active_tasks: 4\ndefaults:\n  retries: 3\n  retry_delay: 0s\ntasks:\n",
    );
    for i in 0..10 {
        yaml.push_str(&format!(
            "  r{i}:\n    sql: SELECT value AS n FROM generate_series(1, {})\n",
            1_000 * (i + 1)
        ));
        yaml.push_str(&format!(
            "  m{i}:\n    needs: [r{i}]\n    sql: SELECT n FROM r{i} WHERE n % 2 = 0\n"
        ));
        for j in 0..3 {
            yaml.push_str(&format!(
                "  s{i}_{j}:\n    needs: [m{i}]\n    shell: sleep 0.5\n"
            ));
        }
    }
    let file = dir.path().join("restart.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut services = fleet(&amdahl, dir.path(), 2, 2, "6s");
    let logs = dir.path().join("logs");
    let out = amdahl.run(&["trigger", &file.display().to_string()]);
    assert_success(&out, "trigger");
    // Crash once a few tasks are done, so that others are running.
    let deadline = Instant::now() + Duration::from_secs(60);
    while text(&amdahl.run(&["runs", "show", "1"]).stdout)
        .matches(" success ")
        .count()
        < 4
    {
        assert!(Instant::now() < deadline, "the run never got going");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.crash();
    std::thread::sleep(Duration::from_secs(1));
    server.up();
    std::thread::sleep(Duration::from_secs(2));
    server.crash();
    // Longer than the lease (6 s) and the pool's wait for a connection (10 s).
    std::thread::sleep(Duration::from_secs(13));
    server.up();

    let deadline = Instant::now() + Duration::from_secs(120);
    let shown = loop {
        let shown = text(&amdahl.run(&["runs", "show", "1"]).stdout);
        if shown.contains("state    success") || shown.contains("state    failed") {
            break shown;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish after the restarts:\n{shown}\n{}",
            services
                .iter()
                .map(|s| format!("--- {} ---\n{}", s.name, s.tail()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for service in &mut services {
        assert!(
            service.child.try_wait().unwrap().is_none(),
            "{} exited when the database went away:\n{}",
            service.name,
            service.tail()
        );
    }
    let log_of = |name: &str| std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap();
    assert!(shown.contains("state    success"), "{shown}");
    let schedulers = log_of("scheduler0") + &log_of("scheduler1");
    assert!(
        schedulers.contains("database unavailable")
            && schedulers.contains("the database answers again"),
        "the schedulers saw the database go and come back:\n{schedulers}"
    );
    let workers = log_of("worker0") + &log_of("worker1");
    assert!(
        workers.contains("database unavailable"),
        "the workers saw the database go:\n{workers}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
        let per_task: Vec<(String, i64)> = sqlx::query_as(
            "SELECT ti.task_id, count(a.id) FILTER (WHERE a.state = 'success') \
             FROM task_instances ti LEFT JOIN task_attempts a USING (run_id, task_id) \
             GROUP BY ti.task_id ORDER BY ti.task_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let lost: i64 =
            sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE state = 'lost'")
                .fetch_one(&pool)
                .await
                .unwrap();
        eprintln!(
            "database restarts: 2 crashes survived; {} and {} \"database unavailable\" lines from \
             the schedulers and workers; {lost} attempts lost and retried",
            schedulers.matches("database unavailable").count(),
            workers.matches("database unavailable").count(),
        );
        assert_eq!(per_task.len(), 50);
        assert!(
            per_task.iter().all(|(_, n)| *n == 1),
            "one successful attempt per task: {per_task:?}"
        );
        pool.close().await;
    });
    drop(services);
}
