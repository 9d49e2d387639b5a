//! End-to-end tests of the `amdahl` binary as a user runs it: real files, real databases
//! (a fresh SQLite home per test; a fresh PostgreSQL database for the `postgres_` tests),
//! real processes, exit codes and output.

#[path = "../runner/tests/support/mod.rs"]
#[allow(dead_code)] // this binary uses the PostgreSQL half of the helpers
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use amdahl_executors::testing::LocalObjects;
use support::TestDb;

mod browser;
mod crash;

struct Amdahl {
    home: tempfile::TempDir,
    database_url: Option<String>,
}

impl Amdahl {
    fn sqlite() -> Amdahl {
        Amdahl {
            home: tempfile::tempdir().unwrap(),
            database_url: None,
        }
    }

    fn with_database(url: &str) -> Amdahl {
        Amdahl {
            home: tempfile::tempdir().unwrap(),
            database_url: Some(url.to_string()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_amdahl"));
        cmd.args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("AMDAHL_HOME", self.home.path())
            .env_remove("AMDAHL_DATABASE_URL");
        if let Some(url) = &self.database_url {
            cmd.env("AMDAHL_DATABASE_URL", url);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn examples() -> Vec<String> {
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("dags/examples"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .map(|p| format!("dags/examples/{}", p.file_name().unwrap().to_str().unwrap()))
            .collect();
    files.sort();
    assert!(files.len() >= 2);
    files
}

/// The one integer a one-row, one-column Parquet file holds.
fn single_integer(path: &Path) -> i64 {
    use datafusion::arrow::array::Int64Array;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(batches.len(), 1, "{}", path.display());
    let column = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("an Int64 column");
    assert_eq!(column.len(), 1);
    column.value(0)
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Runs every example, then inspects the first run, as the README tells a newcomer to.
fn every_example_runs_and_can_be_inspected(amdahl: &Amdahl) {
    for (i, example) in examples().iter().enumerate() {
        let out = amdahl.run(&["run", example, "--wait"]);
        assert_success(&out, example);
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with("TASK "), "task table printed: {stdout}");
        assert!(
            stdout.contains(&format!("run {} success", i + 1)),
            "{stdout}"
        );
        assert!(!stdout.contains("failed"), "{stdout}");
    }
    let tpch_run = examples()
        .iter()
        .position(|e| e.ends_with("tpch.yaml"))
        .unwrap()
        + 1;
    let show = amdahl.run(&["runs", "show", &tpch_run.to_string()]);
    assert_success(&show, "runs show");
    let shown = text(&show.stdout);
    for expected in [
        "state    success",
        "lineitem",
        "q1_pricing_summary",
        "q6_forecast_revenue",
        "ATTEMPT",
        "60175",
        "Where the time went",
        "(total)",
        "faster devices can speed this run up",
    ] {
        assert!(shown.contains(expected), "`{expected}` in:\n{shown}");
    }
    // The split query says how it was split, and equals the query run whole.
    let sharded_run = examples()
        .iter()
        .position(|e| e.ends_with("sharded.yaml"))
        .unwrap()
        + 1;
    let show = amdahl.run(&["runs", "show", &sharded_run.to_string()]);
    assert_success(&show, "runs show");
    let shown = text(&show.stdout);
    assert!(
        shown.contains("q1_split attempt 1: split `lineitem` into 4 part(s); on the CPU 4 took"),
        "{shown}"
    );
    assert_eq!(
        single_integer(
            &amdahl
                .home
                .path()
                .join(format!("data/runs/{sharded_run}/differing/part-0.parquet"))
        ),
        0
    );
    let logs = amdahl.run(&["tasks", "logs", &tpch_run.to_string(), "report"]);
    assert_success(&logs, "tasks logs");
    assert!(text(&logs.stdout).contains(&format!(
        "run {tpch_run} of tpch at scale factor 0.01 finished"
    )));
    let list = amdahl.run(&["runs", "list"]);
    assert_success(&list, "runs list");
    assert_eq!(text(&list.stdout).lines().count(), 1 + examples().len());
    let dags = amdahl.run(&["dags", "list"]);
    assert!(text(&dags.stdout).contains("csv_sales"));
    // By id: found in the dags folder, with a param override.
    let again = amdahl.run(&["run", "tpch", "--param", "sf=0.002"]);
    assert_success(&again, "run by id");
    let show = amdahl.run(&["runs", "show", &(examples().len() + 1).to_string()]);
    assert!(
        text(&show.stdout).contains(r#"params   {"sf":0.002}"#),
        "{}",
        text(&show.stdout)
    );
}

#[test]
fn sqlite_every_example_runs_and_can_be_inspected() {
    every_example_runs_and_can_be_inspected(&Amdahl::sqlite());
}

#[test]
fn postgres_every_example_runs_and_can_be_inspected() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    every_example_runs_and_can_be_inspected(&Amdahl::with_database(&db.url));
    let migrate = Amdahl::with_database(&db.url).run(&["db", "migrate"]);
    assert_success(&migrate, "db migrate");
    assert!(text(&migrate.stdout).contains("(postgres)"));
    rt.block_on(db.drop_database());
}

#[test]
fn an_invalid_dag_changes_nothing() {
    let amdahl = Amdahl::sqlite();
    let out = amdahl.run(&["run", "dags/tests/cases/unknown_keys.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--> dags/tests/cases/unknown_keys.yaml:5:5"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was run"));
    let runs = amdahl.run(&["runs", "list"]);
    assert_eq!(text(&runs.stdout).trim(), "no runs");
}

#[test]
fn validate_reports_located_errors_and_exits_non_zero() {
    let amdahl = Amdahl::sqlite();
    let ok = amdahl.run(&["dags", "validate", "dags/examples"]);
    assert_success(&ok, "validate examples");
    let bad = amdahl.run(&[
        "dags",
        "validate",
        "dags/tests/cases/cycle.yaml",
        "executors/tests/sql_cases/errors.yaml",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = text(&bad.stderr);
    assert!(
        stderr.contains("tasks form a cycle: a → c → b → a"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--> executors/tests/sql_cases/errors.yaml:10:32"),
        "{stderr}"
    );
    assert!(stderr.contains("problem(s) in 2 of 2 file(s)"));
    let missing = amdahl.run(&["dags", "validate", "no/such/file.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read DAG file"));
}

/// Hostile files end in an error quickly and in little memory, never a crash.
#[test]
fn hostile_yaml_is_refused_within_bounds() {
    let amdahl = Amdahl::sqlite();
    for case in ["alias_bomb", "deep_nesting", "invalid_utf8", "empty"] {
        let path = format!("dags/tests/cases/{case}.yaml");
        let started = Instant::now();
        let out = amdahl.run(&["dags", "validate", &path]);
        assert_eq!(out.status.code(), Some(1), "{case}: {}", text(&out.stderr));
        assert!(text(&out.stderr).starts_with("error: "), "{case}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{case} took {:?}",
            started.elapsed()
        );
    }
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let peak_mib = usage.ru_maxrss / 1024;
    assert!(peak_mib < 300, "validate peaked at {peak_mib} MiB");
}

#[test]
fn bad_command_lines_are_clear_errors() {
    let amdahl = Amdahl::sqlite();
    let cases: [(&[&str], &str); 10] = [
        (
            &["run", "dags/examples/tpch.yaml", "--param", "nonsense"],
            "expected name=value",
        ),
        (
            &["run", "dags/examples/tpch.yaml", "--param", "sff=1"],
            "did you mean `sf`",
        ),
        (&["run", "no_such_dag"], "no DAG `no_such_dag`"),
        (&["runs", "show", "999"], "no run 999"),
        (&["runs", "show", "abc"], "invalid value 'abc'"),
        (&["tasks", "clear", "999", "load"], "no run 999"),
        (
            &["tasks", "clear", "1"],
            "required arguments were not provided",
        ),
        (
            &["tokens", "create", "--role", "root"],
            "invalid value 'root'",
        ),
        (&["web", "--bind", "nowhere"], "invalid value 'nowhere'"),
        (
            &["--database-url", "mysql://x", "runs", "list"],
            "unsupported database URL",
        ),
    ];
    for (args, message) in cases {
        let out = amdahl.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Killing `amdahl run` mid-task leaves no run "running" without an owner: the next command
/// marks it failed, and a new run works.
fn a_killed_run_is_failed_by_the_next_command(amdahl: &Amdahl) {
    let dags = tempfile::tempdir().unwrap();
    let file = dags.path().join("slow.yaml");
    std::fs::write(&file, "dag: slow\ntasks:\n  wait:\n    shell: sleep 60\n  after:\n    needs: [wait]\n    shell: echo done\n").unwrap();
    let file = file.display().to_string();
    let mut child = amdahl
        .command(&["run", &file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = amdahl.run(&["runs", "show", "1"]);
        let shown = text(&out.stdout);
        // The task itself, not only the run, must be running (its attempt is what goes lost).
        if shown
            .lines()
            .any(|l| l.starts_with("wait ") && l.contains("running"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task never started: {shown}{}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    child.wait().unwrap();
    let shown = amdahl.run(&["runs", "show", "1"]);
    let stdout = text(&shown.stdout);
    assert!(stdout.contains("state    failed"), "{stdout}");
    assert!(
        stdout.contains("exited before the run finished"),
        "{stdout}"
    );
    assert!(
        stdout.contains("lost"),
        "the attempt is marked lost: {stdout}"
    );
    assert!(!stdout.contains("running"), "{stdout}");
    let ok_file = dags.path().join("quick.yaml");
    std::fs::write(&ok_file, "dag: quick\ntasks:\n  hi:\n    shell: echo hi\n").unwrap();
    assert_success(
        &amdahl.run(&["run", &ok_file.display().to_string()]),
        "a new run after the crash",
    );
}

#[test]
fn sqlite_a_killed_run_is_failed_by_the_next_command() {
    a_killed_run_is_failed_by_the_next_command(&Amdahl::sqlite());
}

#[test]
fn postgres_a_killed_run_is_failed_by_the_next_command() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    a_killed_run_is_failed_by_the_next_command(&Amdahl::with_database(&db.url));
    rt.block_on(db.drop_database());
}

/// Several commands starting at once on a new SQLite home all succeed (migrations are
/// serialised across processes).
#[test]
fn concurrent_first_starts_on_sqlite_all_succeed() {
    let amdahl = Amdahl::sqlite();
    let children: Vec<_> = (0..6)
        .map(|_| {
            amdahl
                .command(&["runs", "list"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_success(&out, "a concurrent first start");
    }
}

#[test]
fn a_failing_run_exits_non_zero_and_says_why() {
    let amdahl = Amdahl::sqlite();
    let dags = tempfile::tempdir().unwrap();
    let file = dags.path().join("fails.yaml");
    std::fs::write(&file, "dag: fails\ntasks:\n  boom:\n    shell: echo about to fail; exit 4\n  after:\n    needs: [boom]\n    shell: echo never\n").unwrap();
    let out = amdahl.run(&["run", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("command exited with status 4"), "{stdout}");
    assert!(stdout.contains("upstream_failed"), "{stdout}");
    assert!(stdout.contains("run 1 failed"), "{stdout}");
    let logs = text(&amdahl.run(&["tasks", "logs", "1", "boom"]).stdout);
    assert!(logs.contains("about to fail"), "{logs}");
    let unknown = amdahl.run(&["tasks", "logs", "1", "nope"]);
    assert!(text(&unknown.stderr).contains("its tasks: boom, after"));
}

/// `dags` ← `executors` ← `scheduler` ← `web` ← the binary: no crate may depend on one to its
/// right. Reads each crate's `[dependencies]` table.
#[test]
fn workspace_dependencies_point_one_way() {
    // The order ARCHITECTURE.md draws: each crate may depend only on crates before it.
    let order = [
        ("amdahl-placement", "placement"),
        ("amdahl-dags", "dags"),
        ("amdahl-planner", "planner"),
        ("amdahl-scheduler", "scheduler"),
        ("amdahl-executors", "executors"),
        ("amdahl-runner", "runner"),
        ("amdahl-web", "web"),
    ];
    // Normal dependencies (not dev- or build-) of each crate: names of ours and others'.
    let dependencies = |dir: &str| -> Vec<String> {
        let manifest = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(dir)
                .join("Cargo.toml"),
        )
        .unwrap();
        let section = manifest
            .split("\n[dependencies]")
            .nth(1)
            .map(|rest| rest.split("\n[").next().unwrap_or_default())
            .unwrap_or_default();
        section
            .lines()
            .map(|line| line.split(['.', '=', ' ']).next().unwrap_or_default())
            .filter(|name| !name.is_empty() && !name.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let graph: Vec<Vec<String>> = order.iter().map(|(_, dir)| dependencies(dir)).collect();
    for (position, (name, _)) in order.iter().enumerate() {
        for dependency in &graph[position] {
            if let Some(at) = order.iter().position(|(c, _)| c == dependency) {
                assert!(
                    at < position,
                    "{name} depends on {dependency}, which comes after it in ARCHITECTURE.md's order"
                );
            }
        }
    }
    // Everything a crate links, ours and others', following our crates' dependencies.
    let closure = |start: usize| -> std::collections::BTreeSet<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for dependency in &graph[i] {
                if seen.insert(dependency.clone())
                    && let Some(at) = order.iter().position(|(c, _)| c == dependency)
                {
                    stack.push(at);
                }
            }
        }
        seen
    };
    let links = |name: &str| closure(order.iter().position(|(c, _)| *c == name).unwrap());
    // Deciding never executes: the planner and the scheduler link no executor and no CUDA;
    // the web server validates through the planner and never links the executors or cudarc.
    for (crate_name, forbidden) in [
        ("amdahl-planner", "amdahl-executors"),
        ("amdahl-planner", "cudarc"),
        ("amdahl-scheduler", "amdahl-executors"),
        ("amdahl-scheduler", "cudarc"),
        ("amdahl-web", "amdahl-executors"),
        ("amdahl-web", "amdahl-runner"),
        ("amdahl-web", "cudarc"),
    ] {
        assert!(
            !links(crate_name).contains(forbidden),
            "{crate_name} links {forbidden}: {:?}",
            links(crate_name)
        );
    }
    assert!(links("amdahl-web").contains("amdahl-planner"));
    assert!(
        links("amdahl-executors").contains("cudarc"),
        "the test sees cudarc"
    );
}

#[test]
fn db_clean_removes_old_runs_and_their_outputs() {
    let amdahl = Amdahl::sqlite();
    assert_success(
        &amdahl.run(&["run", "dags/examples/csv_sales.yaml"]),
        "a run to clean",
    );
    let outputs = amdahl.home.path().join("data/runs/1");
    assert!(outputs.is_dir());
    let dry = amdahl.run(&["db", "clean", "--older-than", "0s", "--dry-run"]);
    assert_success(&dry, "dry run");
    assert!(
        text(&dry.stdout).contains("would delete 1 finished run(s)"),
        "{}",
        text(&dry.stdout)
    );
    assert!(outputs.is_dir(), "a dry run deletes nothing");
    let kept = amdahl.run(&["db", "clean", "--older-than", "1d"]);
    assert!(text(&kept.stdout).contains("deleted 0 finished run(s)"));
    let clean = amdahl.run(&["db", "clean", "--older-than", "0s"]);
    assert_success(&clean, "clean");
    assert!(text(&clean.stdout).contains("deleted 1 finished run(s)"));
    assert!(!outputs.exists());
    assert_eq!(
        text(&amdahl.run(&["runs", "list"]).stdout).trim(),
        "no runs"
    );
    let bad = amdahl.run(&["db", "clean", "--older-than", "soon"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("not a duration"),
        "{}",
        text(&bad.stderr)
    );
}

/// Service processes that are killed when the test ends, however it ends.
struct Services(Vec<std::process::Child>);

impl Services {
    fn start(amdahl: &Amdahl, commands: &[&[&str]]) -> Services {
        let mut services = Services(Vec::new());
        for args in commands {
            services.add(amdahl, args);
        }
        services
    }

    fn add(&mut self, amdahl: &Amdahl, args: &[&str]) -> u32 {
        let child = amdahl
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.0.push(child);
        pid
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for(amdahl: &Amdahl, run: &str, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let shown = text(&amdahl.run(&["runs", "show", run]).stdout);
        if shown.contains(needle) {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "`{needle}` never showed in run {run}:\n{shown}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `amdahl standalone` executes triggered runs; SIGTERM stops it cleanly.
#[test]
fn sqlite_standalone_executes_triggered_runs() {
    let amdahl = Amdahl::sqlite();
    let no_dags = tempfile::tempdir().unwrap();
    let mut standalone = amdahl
        .command(&[
            "standalone",
            "--slots",
            "2",
            "--dags-folder",
            &no_dags.path().display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for example in examples() {
        let out = amdahl.run(&["trigger", &example, "--wait"]);
        assert_success(&out, &example);
        assert!(
            text(&out.stdout).contains("success"),
            "{}",
            text(&out.stdout)
        );
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(standalone.id() as i32, libc::SIGTERM);
    }
    let status = standalone.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(standalone.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("standalone: shutting down"), "{stderr}");
}

/// Two schedulers and three workers on one PostgreSQL share the work of several runs.
#[test]
fn postgres_schedulers_and_workers_share_runs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    let amdahl = Amdahl::with_database(&db.url);
    assert_success(&amdahl.run(&["db", "migrate"]), "migrate");
    let no_dags = tempfile::tempdir().unwrap();
    let no_dags = no_dags.path().display().to_string();
    let services = Services::start(
        &amdahl,
        &[
            &["scheduler", "--poll", "100ms", "--dags-folder", &no_dags],
            &["scheduler", "--poll", "100ms", "--dags-folder", &no_dags],
            &["worker", "--slots", "2"],
            &["worker", "--slots", "2"],
            &["worker", "--slots", "1"],
        ],
    );
    let mut queued = Vec::new();
    for example in examples().iter().chain(examples().iter()) {
        let out = amdahl.run(&["trigger", example]);
        assert_success(&out, example);
        queued.push(
            text(&out.stdout)
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_string(),
        );
    }
    for run in &queued {
        let shown = wait_for(&amdahl, run, "state    success", Duration::from_secs(90));
        assert!(!shown.contains("failed"), "{shown}");
    }
    drop(services);
    rt.block_on(db.drop_database());
}

/// A worker killed mid-task loses its lease; a scheduler hands the task to another worker.
fn a_killed_workers_task_is_retried_elsewhere(amdahl: &Amdahl) {
    assert_success(&amdahl.run(&["db", "migrate"]), "migrate");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("first-attempt-started");
    let file = dir.path().join("lease.yaml");
    std::fs::write(
        &file,
        format!(
            "dag: lease\ntasks:\n  once:\n    retries: 1\n    retry_delay: 0s\n    shell: \"if [ -e {m} ]; then echo second; else touch {m}; sleep 60; fi\"\n",
            m = marker.display()
        ),
    )
    .unwrap();
    let no_dags = tempfile::tempdir().unwrap();
    let no_dags = no_dags.path().display().to_string();
    let mut services = Services::start(
        amdahl,
        &[&["scheduler", "--poll", "100ms", "--dags-folder", &no_dags]],
    );
    let doomed = services.add(amdahl, &["worker", "--slots", "1", "--lease", "2s"]);
    assert_success(
        &amdahl.run(&["trigger", &file.display().to_string()]),
        "trigger",
    );
    wait_for(amdahl, "1", "running", Duration::from_secs(30));
    while !marker.exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(doomed as i32, libc::SIGKILL);
    }
    services.add(amdahl, &["worker", "--slots", "1", "--lease", "2s"]);
    let shown = wait_for(amdahl, "1", "state    success", Duration::from_secs(30));
    assert!(
        shown.contains("lost"),
        "the first attempt is marked lost:\n{shown}"
    );
    assert!(shown.contains("stopped renewing its lease"), "{shown}");
    let logs = text(&amdahl.run(&["tasks", "logs", "1", "once"]).stdout);
    assert!(logs.contains("--- attempt 2 ---\nsecond"), "{logs}");
}

#[test]
fn sqlite_a_killed_workers_task_is_retried_elsewhere() {
    a_killed_workers_task_is_retried_elsewhere(&Amdahl::sqlite());
}

#[test]
fn postgres_a_killed_workers_task_is_retried_elsewhere() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    a_killed_workers_task_is_retried_elsewhere(&Amdahl::with_database(&db.url));
    rt.block_on(db.drop_database());
}

fn runs_of(amdahl: &Amdahl, dag: &str) -> Vec<String> {
    text(&amdahl.run(&["runs", "list", "--dag", dag]).stdout)
        .lines()
        .filter(|l| l.contains(dag))
        .map(str::to_string)
        .collect()
}

/// The scheduler creates cron runs (catching up, one at a time under `max_active_runs: 1`,
/// never twice), and a paused DAG gets none until it is unpaused.
#[test]
fn sqlite_cron_runs_catch_up_and_pause_stops_them() {
    let amdahl = Amdahl::sqlite();
    let dags = tempfile::tempdir().unwrap();
    let start = (chrono::Utc::now() - chrono::Duration::days(3)).format("%Y-%m-%d");
    std::fs::write(
        dags.path().join("catch_up.yaml"),
        format!(
            "dag: catch_up\nschedule: \"@daily\"\nstart_date: {start}\ncatchup: true\nmax_active_runs: 1\n\
             tasks:\n  hi:\n    shell: echo for {{{{ run.logical_date }}}}\n"
        ),
    )
    .unwrap();
    let latest = dags.path().join("latest.yaml");
    std::fs::write(
        &latest,
        "dag: latest_only\nschedule: \"@hourly\"\nstart_date: 2026-01-01\ntasks:\n  hi:\n    shell: echo hi\n",
    )
    .unwrap();
    assert_success(
        &amdahl.run(&["run", &latest.display().to_string()]),
        "a manual run records the DAG",
    );
    assert_success(&amdahl.run(&["dags", "pause", "latest_only"]), "pause");
    assert!(!amdahl.run(&["dags", "pause", "nope"]).status.success());
    let folder = dags.path().display().to_string();
    let _services = Services::start(
        &amdahl,
        &[&["standalone", "--slots", "2", "--dags-folder", &folder]],
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    while runs_of(&amdahl, "catch_up")
        .iter()
        .filter(|r| r.contains("success"))
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "catch-up runs: {:?}",
            runs_of(&amdahl, "catch_up")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        runs_of(&amdahl, "latest_only").len(),
        1,
        "paused: only the manual run"
    );
    let first = text(&amdahl.run(&["runs", "show", "2"]).stdout);
    assert!(
        first.contains(&format!("logical  {start}T00:00:00Z")),
        "oldest interval first:\n{first}"
    );

    assert_success(&amdahl.run(&["dags", "unpause", "latest_only"]), "unpause");
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs_of(&amdahl, "latest_only").len() < 2 {
        assert!(Instant::now() < deadline, "unpaused DAG got no cron run");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        runs_of(&amdahl, "catch_up").len(),
        3,
        "no interval runs twice"
    );
    assert_eq!(
        runs_of(&amdahl, "latest_only").len(),
        2,
        "only the latest hour, once"
    );
    let listed = text(&amdahl.run(&["dags", "list"]).stdout);
    assert!(listed.contains("PAUSED"), "{listed}");
}

/// Two schedulers and eight workers on PostgreSQL over 1,000 tasks: every task ends with
/// exactly one attempt, and it succeeded.
#[test]
fn postgres_two_schedulers_and_eight_workers_run_each_task_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    let amdahl = Amdahl::with_database(&db.url);
    assert_success(&amdahl.run(&["db", "migrate"]), "migrate");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wide.yaml");
    let mut yaml = String::from("dag: wide\nmax_active_tasks: 1000\ntasks:\n");
    for i in 0..1_000 {
        yaml.push_str(&format!("  t{i:04}: {{ shell: \"true\" }}\n"));
    }
    std::fs::write(&file, yaml).unwrap();
    let no_dags = tempfile::tempdir().unwrap();
    let no_dags = no_dags.path().display().to_string();
    let mut commands: Vec<Vec<&str>> = vec![
        vec!["scheduler", "--poll", "50ms", "--dags-folder", &no_dags],
        vec!["scheduler", "--poll", "50ms", "--dags-folder", &no_dags],
    ];
    for _ in 0..8 {
        commands.push(vec!["worker", "--slots", "2"]);
    }
    let commands: Vec<&[&str]> = commands.iter().map(Vec::as_slice).collect();
    let services = Services::start(&amdahl, &commands);
    let out = amdahl.run(&["trigger", &file.display().to_string(), "--wait"]);
    assert_success(&out, "a 1,000-task run");
    drop(services);
    let shown = text(&amdahl.run(&["runs", "show", "1"]).stdout);
    let (tasks, attempts) = shown.split_once("\nTASK  ").map_or(("", ""), |(_, rest)| {
        rest.split_once("\n\n").unwrap_or((rest, ""))
    });
    let task_rows: Vec<&str> = tasks.lines().skip(1).collect();
    assert_eq!(task_rows.len(), 1_000, "{shown}");
    assert!(
        task_rows
            .iter()
            .all(|r| r.contains(" success ") && r.split_whitespace().nth(3) == Some("1")),
        "every task: success after one attempt"
    );
    // The attempts table ends at the next blank line (the time breakdown follows).
    let attempts = attempts.split("\n\n").next().unwrap_or_default();
    let attempt_rows: Vec<&str> = attempts.lines().skip(1).collect();
    assert_eq!(attempt_rows.len(), 1_000, "one attempt per task");
    assert!(shown.contains("Where the time went"), "{shown}");
    assert!(attempt_rows.iter().all(|r| r.contains(" success ")));
    rt.block_on(db.drop_database());
}

impl Amdahl {
    /// The state store this binary uses, opened directly, to check what the CLI cannot show.
    fn store(&self, rt: &tokio::runtime::Runtime) -> amdahl_scheduler::Store {
        let url = self.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", self.home.path().join("amdahl.db").display())
        });
        rt.block_on(amdahl_scheduler::Store::connect(&url)).unwrap()
    }
}

/// The most of `spans` (start, end) that overlap at any moment.
fn most_at_once(spans: &[(i64, i64)]) -> usize {
    // A start is stamped when the claim begins, before its statement may wait for the
    // database's write lock while the previous task's end commits: a hand-off can look a few
    // milliseconds early. Real overlaps in these tests last the tasks' hundreds of ms.
    const SKEW_MS: i64 = 25;
    let mut events: Vec<(i64, i32)> = spans
        .iter()
        .flat_map(|&(start, end)| [(start, 1), ((end - SKEW_MS).max(start), -1)])
        .collect();
    // Ends before starts at the same millisecond: back-to-back is not overlap.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, change) in events {
        now += change;
        most = most.max(now);
    }
    most as usize
}

/// A backfill creates one run per schedule tick in its range, never more than
/// `--max-active-runs` unfinished at once; `--dry-run` changes nothing; `--reprocess`
/// decides which dates that have runs get another; bad ranges are refused.
fn backfill_fills_a_range_a_few_runs_at_a_time(amdahl: &Amdahl, services: &[&[&str]]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("daily.yaml");
    std::fs::write(
        &file,
        "dag: daily\nschedule: \"@daily\"\nstart_date: 2026-01-01\ntasks:\n  \
         load:\n    shell: sleep 0.3; echo loading {{ run.logical_date }}\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let no_schedule = dir.path().join("adhoc.yaml");
    std::fs::write(
        &no_schedule,
        "dag: adhoc\ntasks:\n  a:\n    shell: \"true\"\n",
    )
    .unwrap();
    assert_success(&amdahl.run(&["db", "migrate"]), "migrate");
    let _services = Services::start(amdahl, services);
    let range = ["--from", "2026-03-01", "--to", "2026-03-05"];

    let dry = amdahl.run(&[&["backfill", &file, "--dry-run"][..], &range[..]].concat());
    assert_success(&dry, "dry run");
    let shown = text(&dry.stdout);
    assert_eq!(shown.matches("T00:00:00Z  run").count(), 5, "{shown}");
    assert!(shown.contains("nothing was changed"), "{shown}");
    assert!(
        runs_of(amdahl, "daily").is_empty(),
        "a dry run creates no runs"
    );

    let out = amdahl.run(
        &[
            &["backfill", &file, "--max-active-runs", "2", "--wait"][..],
            &range[..],
        ]
        .concat(),
    );
    assert_success(&out, "backfill");
    assert!(
        text(&out.stdout).contains("5 of 5 run(s) succeeded"),
        "{}",
        text(&out.stdout)
    );
    let store = amdahl.store(&rt);
    let runs = rt.block_on(store.list_runs(Some("daily"), 100)).unwrap();
    let mut dates: Vec<&str> = runs.iter().map(|r| r.logical_date.as_str()).collect();
    dates.sort();
    assert_eq!(
        dates,
        (1..=5)
            .map(|d| format!("2026-03-0{d}T00:00:00Z"))
            .collect::<Vec<_>>()
    );
    let spans: Vec<(i64, i64)> = runs
        .iter()
        .map(|r| (r.created_at_ms, r.finished_at_ms.unwrap()))
        .collect();
    assert_eq!(
        most_at_once(&spans),
        2,
        "two at a time, slots refilled: {spans:?}"
    );

    let again = amdahl.run(&[&["backfill", &file, "--dry-run"][..], &range[..]].concat());
    assert_eq!(
        text(&again.stdout)
            .matches("skip (a run is success)")
            .count(),
        5,
        "{}",
        text(&again.stdout)
    );
    let rerun = amdahl.run(&[
        "backfill",
        &file,
        "--from",
        "2026-03-04",
        "--to",
        "2026-03-05",
        "--reprocess",
        "all",
        "--wait",
    ]);
    assert_success(&rerun, "reprocess all");
    assert_eq!(runs_of(amdahl, "daily").len(), 7);

    // Cancelling a backfill stops it creating runs and cancels the unfinished ones.
    let long = amdahl.run(&[
        "backfill",
        &file,
        "--from",
        "2026-04-01",
        "--to",
        "2026-04-30",
        "--max-active-runs",
        "1",
    ]);
    assert_success(&long, "a long backfill");
    let id = text(&long.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert_success(
        &amdahl.run(&["backfills", "cancel", &id]),
        "backfills cancel",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs_of(amdahl, "daily")
        .iter()
        .any(|r| r.contains("queued") || r.contains("running"))
    {
        assert!(Instant::now() < deadline, "cancelled runs never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let april = runs_of(amdahl, "daily").len() - 7;
    assert!(april <= 2, "{april} runs after the cancel");
    let listed = text(&amdahl.run(&["backfills", "list"]).stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("cancelled")),
        "{listed}"
    );
    let again = amdahl.run(&["backfills", "cancel", &id]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already ended"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        runs_of(amdahl, "daily").len(),
        7 + april,
        "no run after the cancel"
    );

    for (args, says) in [
        (
            vec![
                "backfill",
                &file,
                "--from",
                "2026-03-05",
                "--to",
                "2026-03-01",
            ],
            "is after",
        ),
        (
            vec![
                "backfill",
                no_schedule.to_str().unwrap(),
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-02",
            ],
            "has no `schedule:`",
        ),
        (
            vec!["backfill", &file, "--from", "March", "--to", "2026-03-02"],
            "is not a date",
        ),
        (
            vec![
                "backfill",
                &file,
                "--from",
                "2999-01-01",
                "--to",
                "2999-01-03",
            ],
            "no interval in the range has ended yet",
        ),
    ] {
        let out = amdahl.run(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        runs_of(amdahl, "daily").len(),
        7 + april,
        "refused backfills change nothing"
    );

    // A range reaching past now is cut where the intervals that have ended stop.
    let today = chrono::Utc::now().date_naive();
    let day = |offset: i64| (today + chrono::Duration::days(offset)).to_string();
    let cut = amdahl.run(&[
        "backfill",
        &file,
        "--from",
        &day(-3),
        "--to",
        &day(2),
        "--dry-run",
    ]);
    assert_success(&cut, "a dry run reaching into the future");
    let (planned, said) = (text(&cut.stdout), text(&cut.stderr));
    assert!(said.contains("the range is cut at"), "{said}");
    assert!(said.contains("have not ended yet"), "{said}");
    for past in [day(-3), day(-2), day(-1)] {
        assert!(planned.contains(&past), "{past} in:\n{planned}");
    }
    for open in [day(0), day(1), day(2)] {
        assert!(!planned.contains(&open), "{open} in:\n{planned}");
    }

    // On a DAG with a `timezone`, `--from`/`--to` days are that zone's days, and the dry run
    // shows each logical date on its wall clock too: Paris midnight is 23:00 UTC the day
    // before in winter, 22:00 after the spring change (29 March 2026).
    let paris = amdahl.run(&[
        "backfill",
        "dags/examples/csv_sales.yaml",
        "--from",
        "2026-03-28",
        "--to",
        "2026-03-30",
        "--dry-run",
    ]);
    assert_success(&paris, "a dry run of a Paris DAG");
    let planned = text(&paris.stdout);
    for (logical, local) in [
        ("2026-03-27T23:00:00Z", "2026-03-28 00:00 CET"),
        ("2026-03-28T23:00:00Z", "2026-03-29 00:00 CET"),
        ("2026-03-29T22:00:00Z", "2026-03-30 00:00 CEST"),
    ] {
        let line = planned
            .lines()
            .find(|l| l.contains(logical))
            .unwrap_or_else(|| panic!("{logical} in:\n{planned}"));
        assert!(line.contains(local), "{line}");
    }
    assert_eq!(planned.matches("CE").count(), 3, "{planned}");
}

#[test]
fn sqlite_backfill_fills_a_range_a_few_runs_at_a_time() {
    let amdahl = Amdahl::sqlite();
    let empty = tempfile::tempdir().unwrap();
    let folder = empty.path().display().to_string();
    backfill_fills_a_range_a_few_runs_at_a_time(
        &amdahl,
        &[&["standalone", "--slots", "4", "--dags-folder", &folder]],
    );
}

#[test]
fn postgres_backfill_fills_a_range_a_few_runs_at_a_time() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    let empty = tempfile::tempdir().unwrap();
    let folder = empty.path().display().to_string();
    backfill_fills_a_range_a_few_runs_at_a_time(
        &Amdahl::with_database(&db.url),
        &[
            &["scheduler", "--dags-folder", &folder],
            &["scheduler", "--dags-folder", &folder],
            &["worker", "--slots", "2"],
            &["worker", "--slots", "2"],
        ],
    );
    rt.block_on(db.drop_database());
}

/// A pool with one slot runs its tasks one at a time, across runs; `amdahl run` refuses a
/// DAG whose pool does not exist instead of waiting forever.
#[test]
fn sqlite_a_pool_with_one_slot_runs_its_tasks_one_at_a_time() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let amdahl = Amdahl::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pooled.yaml");
    std::fs::write(
        &file,
        "dag: pooled\ndefaults:\n  pool: warehouse\ntasks:\n  \
         a: { shell: sleep 0.3 }\n  b: { shell: sleep 0.3 }\n  c: { shell: sleep 0.3 }\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let refused = amdahl.run(&["run", &file]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("pool `warehouse`, which does not exist"),
        "{}",
        text(&refused.stderr)
    );
    assert!(runs_of(&amdahl, "pooled").is_empty());
    assert!(
        !amdahl
            .run(&["pools", "set", "Bad Name", "1"])
            .status
            .success()
    );
    assert!(
        !amdahl
            .run(&["pools", "set", "warehouse", "-1"])
            .status
            .success()
    );
    assert_success(
        &amdahl.run(&["pools", "set", "warehouse", "1"]),
        "pools set",
    );
    let empty = tempfile::tempdir().unwrap();
    let folder = empty.path().display().to_string();
    let _services = Services::start(
        &amdahl,
        &[&["standalone", "--slots", "4", "--dags-folder", &folder]],
    );
    let first = amdahl
        .command(&["trigger", &file, "--wait"])
        .spawn()
        .unwrap();
    assert_success(&amdahl.run(&["trigger", &file, "--wait"]), "second run");
    assert!(first.wait_with_output().unwrap().status.success());
    let store = amdahl.store(&rt);
    let mut spans = Vec::new();
    for run in rt.block_on(store.list_runs(Some("pooled"), 10)).unwrap() {
        for task in rt.block_on(store.tasks(run.id)).unwrap() {
            spans.push((task.started_at_ms.unwrap(), task.finished_at_ms.unwrap()));
        }
    }
    assert_eq!(spans.len(), 6);
    assert_eq!(most_at_once(&spans), 1, "one slot: {spans:?}");
    let listed = text(&amdahl.run(&["pools", "list"]).stdout);
    assert!(listed.contains("warehouse  1      0"), "{listed}");
    assert_success(&amdahl.run(&["pools", "delete", "warehouse"]), "delete");
    assert!(
        !amdahl
            .run(&["pools", "delete", "warehouse"])
            .status
            .success()
    );
}

fn pgrep(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap()
        .status
        .success()
}

/// `amdahl runs cancel` stops a service run: the running stage is killed, waiting tasks never
/// start, the run ends cancelled; a second cancel is refused.
fn cancelling_a_service_run_stops_its_stage(amdahl: &Amdahl, services: &[&[&str]], marker: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.yaml");
    std::fs::write(
        &file,
        format!("dag: slow\ntasks:\n  a:\n    shell: sleep {marker}\n  b:\n    needs: [a]\n    shell: \"true\"\n"),
    )
    .unwrap();
    assert_success(&amdahl.run(&["db", "migrate"]), "migrate");
    let _services = Services::start(amdahl, services);
    let out = amdahl.run(&["trigger", file.to_str().unwrap()]);
    assert_success(&out, "trigger");
    let run = text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    wait_for(amdahl, &run, "running", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pgrep(&format!("sleep {marker}")) {
        assert!(Instant::now() < deadline, "the stage never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_success(&amdahl.run(&["runs", "cancel", &run]), "cancel");
    let shown = wait_for(
        amdahl,
        &run,
        "cancelled by the user",
        Duration::from_secs(30),
    );
    assert!(!shown.contains("success"), "{shown}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while pgrep(&format!("sleep {marker}")) {
        assert!(
            Instant::now() < deadline,
            "the cancelled stage is still running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = amdahl.run(&["runs", "cancel", &run]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already ended"),
        "{}",
        text(&again.stderr)
    );
    assert!(!amdahl.run(&["runs", "cancel", "999"]).status.success());
}

#[test]
fn sqlite_cancelling_a_service_run_stops_its_stage() {
    let empty = tempfile::tempdir().unwrap();
    let folder = empty.path().display().to_string();
    cancelling_a_service_run_stops_its_stage(
        &Amdahl::sqlite(),
        &[&["standalone", "--lease", "3s", "--dags-folder", &folder]],
        "41.25",
    );
}

#[test]
fn postgres_cancelling_a_service_run_stops_its_stage() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    let empty = tempfile::tempdir().unwrap();
    let folder = empty.path().display().to_string();
    cancelling_a_service_run_stops_its_stage(
        &Amdahl::with_database(&db.url),
        &[
            &["scheduler", "--dags-folder", &folder],
            &["worker", "--lease", "3s"],
        ],
        "42.75",
    );
    rt.block_on(db.drop_database());
}

/// `amdahl runs cancel` also reaches a run that an `amdahl run` process drives.
#[test]
fn sqlite_cancelling_an_in_process_run_from_another_terminal() {
    let amdahl = Amdahl::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.yaml");
    std::fs::write(&file, "dag: slow\ntasks:\n  a:\n    shell: sleep 43.5\n").unwrap();
    let runner = amdahl
        .command(&["run", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pgrep("sleep 43.5") {
        assert!(Instant::now() < deadline, "the stage never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_success(&amdahl.run(&["runs", "cancel", "1"]), "cancel");
    let out = runner.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("run 1 cancelled"),
        "{}",
        text(&out.stdout)
    );
    assert!(!pgrep("sleep 43.5"));
}

/// A reader that goes away (`amdahl runs show 1 | head -1`) ends the command quietly, as it
/// would end `ls`, not with a panic about a broken pipe.
#[test]
fn a_closed_output_pipe_is_not_a_panic() {
    let amdahl = Amdahl::sqlite();
    assert_success(&amdahl.run(&["run", "dags/examples/csv_sales.yaml"]), "run");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = amdahl
        .command(&["runs", "show", "1"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(141), "as a shell reports SIGPIPE");
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

/// `empty` tasks (join points) go through the store and the executors like any other, and a
/// task that asks for the GPU on a machine without a usable one runs on the CPU and its log
/// says why. `AMDAHL_GPU=off` makes the machine GPU-less, so the test means the same anywhere.
fn empty_tasks_and_the_gpu_fallback(amdahl: &Amdahl) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fan.yaml");
    std::fs::write(
        &file,
        "dag: fan\ntasks:\n  start: { empty: {} }\n  \
         a: { needs: [start], device: gpu, shell: echo on-a }\n  \
         b: { needs: [start], shell: echo on-b }\n  \
         li: { needs: [start], generate: { tpch: lineitem, scale_factor: 0.001 } }\n  \
         q: { needs: [li], device: gpu, sql: \"SELECT sum(l_quantity) AS s FROM li WHERE l_discount < 0.05\" }\n  \
         rows: { needs: [li], device: gpu, sql: \"SELECT l_orderkey FROM li WHERE l_quantity > 49\" }\n  \
         done:\n    needs: [a, b, q, rows]\n    empty:\n",
    )
    .unwrap();
    let gpu_off = |args: &[&str]| {
        amdahl
            .command(args)
            .env("AMDAHL_GPU", "off")
            .output()
            .unwrap()
    };
    let out = gpu_off(&["run", file.to_str().unwrap(), "--wait"]);
    assert_success(&out, "run fan");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("run 1 success"), "{stdout}");
    let show = text(&amdahl.run(&["runs", "show", "1"]).stdout);
    assert!(
        show.lines()
            .any(|l| l.starts_with("done") && l.contains("success")),
        "{show}"
    );
    let logs = amdahl.run(&["tasks", "logs", "1", "a"]);
    assert_success(&logs, "tasks logs");
    let logs = text(&logs.stdout);
    assert!(
        logs.contains("device: gpu was asked for, but shell stages run only on the CPU"),
        "{logs}"
    );
    assert!(logs.contains("on-a"), "{logs}");
    // A SQL stage the GPU could run: its kernel plan is logged, then why it ran on the CPU.
    let logs = text(&amdahl.run(&["tasks", "logs", "1", "q"]).stdout);
    assert!(
        logs.contains("GPU kernel plan: scan 2 column(s) of 1 file(s) → filter → 1 total(s)"),
        "{logs}"
    );
    let no_gpu = "device: gpu was asked for, but no GPU is usable here (GPUs are switched off \
                  (AMDAHL_GPU=off)); running on the CPU";
    assert!(logs.contains(no_gpu), "{logs}");
    // The attempt records it, and `runs show` says it.
    assert!(show.contains(&format!("q attempt 1: {no_gpu}")), "{show}");
    assert!(
        show.contains(
            "rows attempt 1: device: gpu was asked for, but the plan cannot run on the \
                       GPU (plan: no aggregate"
        ),
        "{show}"
    );
    assert!(
        show.contains(
            "a attempt 1: device: gpu was asked for, but shell stages run only on the CPU"
        ),
        "{show}"
    );

    let devices = gpu_off(&["devices"]);
    assert_success(&devices, "devices");
    assert!(text(&devices.stdout).starts_with("No usable GPU: GPUs are switched off"));
    let worker = gpu_off(&["worker", "--gpu"]);
    assert!(
        !worker.status.success(),
        "a --gpu worker without a GPU starts"
    );
    let stderr = text(&worker.stderr);
    assert!(
        stderr.contains("--gpu: this machine has no usable GPU"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn sqlite_empty_tasks_and_the_gpu_fallback() {
    empty_tasks_and_the_gpu_fallback(&Amdahl::sqlite());
}

#[test]
fn postgres_empty_tasks_and_the_gpu_fallback() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    empty_tasks_and_the_gpu_fallback(&Amdahl::with_database(&db.url));
    rt.block_on(db.drop_database());
}

/// An HTTP server on 127.0.0.1 (a thread) that answers 200 to everything and keeps each
/// request's first line and body.
struct Hook {
    url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Hook {
    fn start() -> Hook {
        Hook::on(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// A server on `port` (one that was closed until now).
    fn at(port: u16) -> Hook {
        Hook::on(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap())
    }

    fn on(listener: std::net::TcpListener) -> Hook {
        use std::io::{BufRead, Read, Write};
        let url = format!("http://{}/alerts", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).ok();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).ok();
                kept.lock().unwrap().push((
                    first.trim().to_string(),
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .ok();
            }
        });
        Hook { url, requests }
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }
}

/// A scheduler killed (SIGKILL) while a run's failure notification is still unsent, its
/// webhook server down: the next scheduler sends it once the server answers, and it is
/// recorded delivered, once.
fn a_killed_schedulers_notification_is_sent_by_the_next(amdahl: &Amdahl) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let dags = tempfile::tempdir().unwrap();
    std::fs::write(
        dags.path().join("paging.yaml"),
        format!(
            "dag: paging\ndefaults: {{ retries: 0 }}\non_failure:\n  - webhook: {{ url: \
             \"http://127.0.0.1:{port}/alerts\" }}\ntasks:\n  boom:\n    shell: \"exit 1\"\n"
        ),
    )
    .unwrap();
    let folder = dags.path().display().to_string();
    assert_success(&amdahl.run(&["db", "migrate"]), "migrate");
    let _worker = Services::start(amdahl, &[&["worker", "--slots", "2"]]);
    let scheduler = Services::start(amdahl, &[&["scheduler", "--dags-folder", &folder]]);
    assert_success(
        &amdahl.run(&[
            "trigger",
            &dags.path().join("paging.yaml").display().to_string(),
        ]),
        "trigger",
    );
    // The run failed and its notification was tried against the closed port at least once.
    let shown = wait_for(amdahl, "1", "cannot connect", Duration::from_secs(60));
    assert!(shown.contains("failed"), "{shown}");
    assert!(!shown.contains("delivered"), "{shown}");
    drop(scheduler);

    let hook = Hook::at(port);
    let _next = Services::start(amdahl, &[&["scheduler", "--dags-folder", &folder]]);
    let shown = wait_for(amdahl, "1", "delivered", Duration::from_secs(60));
    assert!(shown.contains("run failure"), "{shown}");
    // However long it goes on, it was sent once.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hook.requests().len(), 1, "{:?}", hook.requests());
    assert!(hook.requests()[0].0.starts_with("POST /alerts"));
}

#[test]
fn sqlite_a_killed_schedulers_notification_is_sent_by_the_next() {
    a_killed_schedulers_notification_is_sent_by_the_next(&Amdahl::sqlite());
}

#[test]
fn postgres_a_killed_schedulers_notification_is_sent_by_the_next() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    a_killed_schedulers_notification_is_sent_by_the_next(&Amdahl::with_database(&db.url));
    rt.block_on(db.drop_database());
}

/// Trigger rules: when the load of `failure_handling.yaml` breaks, the cleanup (`all_done`)
/// and the page (`one_failed`) run, the report (`all_success`) is upstream_failed, and the
/// run fails all the same; when it does not, the page is skipped and the run succeeds
/// (`big_orders`, guarded by a `when.sql` that holds, runs).
fn trigger_rules_handle_a_failure(amdahl: &Amdahl, services: bool) {
    let example = "dags/examples/failure_handling.yaml";
    let verb = if services { "trigger" } else { "run" };
    let hook = Hook::start();
    let alert = format!("alert_url={}", hook.url);
    let broken = amdahl.run(&[
        verb,
        example,
        "--param",
        "break_load=true",
        "--param",
        &alert,
        "--wait",
    ]);
    assert!(!broken.status.success(), "{}", text(&broken.stdout));
    // The failed run's webhook was posted once (by `amdahl run` itself, or by the scheduler).
    let shown = wait_for(amdahl, "1", "delivered", Duration::from_secs(20));
    assert!(shown.contains("Notifications:"), "{shown}");
    assert!(shown.contains(&format!("POST {}", hook.url)), "{shown}");
    let requests = hook.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].0, "POST /alerts HTTP/1.1");
    let body: serde_json::Value = serde_json::from_str(&requests[0].1).unwrap();
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with("failure_handling run 1 failed: task load: "),
        "{body}"
    );
    assert!(
        body["log"]
            .as_str()
            .unwrap()
            .contains("the warehouse refused the load"),
        "{body}"
    );
    if !services {
        let said = text(&broken.stderr);
        assert!(
            said.contains("notifications: 1 delivered, 0 failed"),
            "{said}"
        );
    }
    let ok = amdahl.run(&[verb, example, "--param", &alert, "--wait"]);
    assert_success(&ok, "the unbroken run");
    // A run that succeeds tells no one (the DAG lists only `on_failure`).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hook.requests().len(), 1);
    let row = |shown: &str, task: &str| -> String {
        shown
            .lines()
            .find(|l| l.split_whitespace().next() == Some(task))
            .unwrap_or_else(|| panic!("no row for `{task}` in:\n{shown}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let shown = text(&amdahl.run(&["runs", "show", "1"]).stdout);
    assert!(shown.contains("state    failed"), "{shown}");
    for (task, state) in [
        ("staged", "success"),
        ("load", "failed"),
        ("cleanup", "success"),
        ("page", "success"),
        ("report", "upstream_failed"),
    ] {
        assert_eq!(row(&shown, task), state, "{task} in:\n{shown}");
    }
    let shown = text(&amdahl.run(&["runs", "show", "2"]).stdout);
    assert!(shown.contains("state    success"), "{shown}");
    for (task, state) in [
        ("load", "success"),
        ("cleanup", "success"),
        ("page", "skipped"),
        ("report", "success"),
        ("big_orders", "success"),
        ("announce", "skipped"),
    ] {
        assert_eq!(row(&shown, task), state, "{task} in:\n{shown}");
    }
    assert!(
        shown.contains("skipped: `when: {{ params.announce }}` is false for this run"),
        "{shown}"
    );
    // The same condition holds for a run with the param set.
    let announced = amdahl.run(&[verb, example, "--param", "announce=true", "--wait"]);
    assert_success(&announced, "the announced run");
    let shown = text(&amdahl.run(&["runs", "show", "3"]).stdout);
    assert_eq!(row(&shown, "announce"), "success", "{shown}");
}

#[test]
fn sqlite_trigger_rules_handle_a_failure() {
    trigger_rules_handle_a_failure(&Amdahl::sqlite(), false);
}

#[test]
fn postgres_trigger_rules_handle_a_failure_through_the_services() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    let amdahl = Amdahl::with_database(&db.url);
    assert_success(&amdahl.run(&["db", "migrate"]), "migrate");
    let no_dags = tempfile::tempdir().unwrap();
    let no_dags = no_dags.path().display().to_string();
    let services = Services::start(
        &amdahl,
        &[
            &["scheduler", "--poll", "100ms", "--dags-folder", &no_dags],
            &["worker", "--slots", "2"],
        ],
    );
    trigger_rules_handle_a_failure(&amdahl, true);
    drop(services);
    rt.block_on(db.drop_database());
}

/// Dense stages are checked before they run: a vector column a table does not have, or a model
/// file that cannot be read, is an error at `dags validate` with the place, exit 1.
#[test]
fn dense_stages_are_validated_before_they_run() {
    let amdahl = Amdahl::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dense.yaml");
    std::fs::write(
        &file,
        "dag: dense\ntasks:\n  docs:\n    generate: { vectors: 10, dim: 4 }\n  \
         near:\n    needs: [docs]\n    knn: { base: docs, queries: docs, column: embedding }\n  \
         scored:\n    needs: [docs]\n    score: { input: docs, model: nowhere.safetensors }\n",
    )
    .unwrap();
    let out = amdahl.run(&["dags", "validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        shown.contains("table `docs` has no column `embedding` (columns: id, vector)"),
        "{shown}"
    );
    assert!(shown.contains("dense.yaml:7:18"), "{shown}");
    assert!(
        shown.contains("nowhere.safetensors: No such file"),
        "{shown}"
    );
    let run = amdahl.run(&["run", file.to_str().unwrap()]);
    assert!(!run.status.success(), "an invalid DAG does not run");
    assert!(text(&amdahl.run(&["runs", "list"]).stdout).lines().count() <= 1);
}

/// `amdahl calibrate` measures this machine and stores its profile; a second call shows the
/// stored one; `explain` then prices against it; `--output` writes it for elsewhere.
fn calibrate_stores_the_profile_explain_uses(amdahl: &Amdahl) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("me.json");
    let out = amdahl.run(&["calibrate", "--quick", "--output", file.to_str().unwrap()]);
    assert_success(&out, "calibrate");
    let shown = text(&out.stdout);
    for expected in [
        "CPU memory bandwidth",
        "CPU scan",
        "CPU gemm",
        "GPU",
        "stored as",
    ] {
        assert!(shown.contains(expected), "`{expected}` in:\n{shown}");
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(written["cpu"]["throughput"]["scan"].as_f64().unwrap() > 0.0);
    let again = amdahl.run(&["calibrate"]);
    assert_success(&again, "calibrate again");
    let shown = text(&again.stdout);
    assert!(
        shown.contains("stored for ") && shown.contains("--recalibrate"),
        "{shown}"
    );
    assert!(
        !text(&again.stderr).contains("measuring"),
        "nothing measured again"
    );
    let explain = amdahl.run(&["explain", "dags/examples/csv_sales.yaml"]);
    assert_success(&explain, "explain with a stored profile");
    let shown = text(&explain.stdout);
    assert!(
        shown.contains("measured ") && shown.contains("`amdahl calibrate`"),
        "{shown}"
    );
    assert!(!shown.contains("built-in reference"), "{shown}");
    let json = amdahl.run(&["calibrate", "--json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        parsed["source"]
            .as_str()
            .unwrap()
            .contains("amdahl calibrate (quick)")
    );
}

#[test]
fn sqlite_calibrate_stores_the_profile_explain_uses() {
    calibrate_stores_the_profile_explain_uses(&Amdahl::sqlite());
}

#[test]
fn postgres_calibrate_stores_the_profile_explain_uses() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    calibrate_stores_the_profile_explain_uses(&Amdahl::with_database(&db.url));
    rt.block_on(db.drop_database());
}

/// `amdahl explain` needs no database: it prices every task on the profile's CPU and GPU and
/// says where each goes and why; bad profiles and params are clear errors.
/// `explain`'s whole output for the examples against the profiles that ship, compared with
/// `tests/explain/*.expected` (`UPDATE_EXPECT=1` rewrites them after an intended change).
#[test]
fn explain_output_matches_the_golden_files() {
    let amdahl = Amdahl::sqlite();
    let cases: &[(&str, &[&str])] = &[
        (
            "tpch_sf10_h100_spec",
            &[
                "dags/examples/tpch.yaml",
                "--param",
                "sf=10",
                "--profile",
                "profiles/h100-spec.json",
            ],
        ),
        (
            "tpch_sf1_h200_measured",
            &[
                "dags/examples/tpch.yaml",
                "--param",
                "sf=1",
                "--profile",
                "profiles/h200-measured.json",
            ],
        ),
        (
            "sharded_sf10_h100_spec",
            &[
                "dags/examples/sharded.yaml",
                "--param",
                "sf=10",
                "--profile",
                "profiles/h100-spec.json",
            ],
        ),
        (
            "vectors_h100_spec",
            &[
                "dags/examples/vectors.yaml",
                "--profile",
                "profiles/h100-spec.json",
            ],
        ),
        ("csv_sales_reference", &["dags/examples/csv_sales.yaml"]),
    ];
    let update = std::env::var("UPDATE_EXPECT").as_deref() == Ok("1");
    let mut failures = Vec::new();
    for (name, args) in cases {
        let mut full = vec!["explain"];
        full.extend_from_slice(args);
        let out = amdahl.run(&full);
        assert_success(&out, name);
        let actual = text(&out.stdout);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/explain")
            .join(format!("{name}.expected"));
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_EXPECT=1)", path.display()));
        if actual != expected {
            failures.push(format!(
                "amdahl {}\n--- expected ({})\n{expected}\n--- actual\n{actual}",
                full.join(" "),
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn explain_says_where_each_task_goes_and_why() {
    let amdahl = Amdahl::sqlite();
    let out = amdahl.run(&[
        "explain",
        "dags/examples/tpch.yaml",
        "--param",
        "sf=10",
        "--profile",
        "profiles/h100-spec.json",
    ]);
    assert_success(&out, "explain tpch");
    let shown = text(&out.stdout);
    let row = |task: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(task))
            .unwrap_or_else(|| panic!("no row for {task}:\n{shown}"))
            .to_string()
    };
    assert!(
        row("lineitem").contains("generate stages run only on the CPU"),
        "{shown}"
    );
    // Each query copies only the lineitem columns its scan keeps (Q1 7 of 16, Q6 4).
    for (query, copy) in [
        ("q1_pricing_summary", "139.24 ms"),
        ("q6_forecast_revenue", "62.42 ms"),
    ] {
        let line = row(query);
        assert!(
            line.contains(" gpu ") && line.contains("faster than the CPU"),
            "{line}"
        );
        assert!(
            line.contains(copy),
            "the copy of lineitem's columns to the GPU: {line}"
        );
    }
    assert!(row("report").contains("shell stages run only on the CPU"));
    assert!(shown.contains("predicted:") && shown.contains("as chosen (minimum cut"));
    // Small data stays on the CPU; a join is not a GPU plan.
    let out = amdahl.run(&[
        "explain",
        "dags/examples/vectors.yaml",
        "--profile",
        "profiles/h100-spec.json",
    ]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("HashJoinExec: reads 2 inputs (joins and unions run on the CPU)"),
        "{shown}"
    );
    // Without a profile: the CPU-only reference.
    let out = amdahl.run(&["explain", "dags/examples/csv_sales.yaml"]);
    assert_success(&out, "explain without a profile");
    let shown = text(&out.stdout);
    assert!(shown.contains("built-in reference (CPU only"), "{shown}");
    assert!(shown.contains("this machine has no usable GPU"), "{shown}");
    // Bad input: clear errors, non-zero exits.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ \"cpu\": 3 }").unwrap();
    let out = amdahl.run(&[
        "explain",
        "dags/examples/tpch.yaml",
        "--profile",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bad.json:1:"),
        "{}",
        text(&out.stderr)
    );
    let out = amdahl.run(&["explain", "dags/examples/tpch.yaml", "--param", "sff=1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown param `sff`; did you mean `sf`?"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("panicked"));
}

/// Every row of a task's output folder, as a table.
fn output_rows(dir: &Path) -> String {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut batches = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        batches.extend(reader.map(Result::unwrap));
    }
    pretty_format_batches(&batches).unwrap().to_string()
}

/// A DAG whose datasets are in a bucket, as a user points one at S3: the endpoint and the
/// credentials in the standard AWS environment, the example's CSV files in a real local
/// S3-compatible server. The run gives what the example over local files gives; `explain`
/// sizes the datasets from the bucket; the secret appears nowhere in what is printed.
#[test]
fn a_dag_reads_its_datasets_from_s3() {
    let s3 = amdahl_executors::testing::LocalS3::start().unwrap();
    s3.create_bucket("sales").unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for file in ["orders.csv", "regions.csv"] {
        let bytes = std::fs::read(root.join("dags/examples/data").join(file)).unwrap();
        rt.block_on(s3.put(&format!("s3://sales/raw/{file}"), bytes))
            .unwrap();
    }
    let example = std::fs::read_to_string(root.join("dags/examples/csv_sales.yaml")).unwrap();
    let remote = example
        .replace("dag: csv_sales", "dag: s3_sales")
        .replace(
            "\"file://data/orders.csv\"",
            "\"s3://sales/raw/orders.csv\"",
        )
        .replace("\"data/regions.csv\"", "s3://sales/raw/regions.csv");
    assert_ne!(remote, example);
    let dir = tempfile::tempdir().unwrap();
    let dag = dir.path().join("s3_sales.yaml");
    std::fs::write(&dag, remote).unwrap();
    let dag = dag.to_str().unwrap();

    let amdahl = Amdahl::sqlite();
    let secret = "s3cr3t-for-the-cli-test";
    let with_s3 = |args: &[&str]| {
        let mut cmd = amdahl.command(args);
        for (key, value) in s3.env() {
            cmd.env(key, value);
        }
        cmd.env("AWS_SECRET_ACCESS_KEY", secret);
        cmd.output().unwrap()
    };
    assert_success(
        &amdahl.run(&[
            "run",
            "dags/examples/csv_sales.yaml",
            "--param",
            "min_amount=100",
        ]),
        "the example over local files",
    );
    let out = with_s3(&["run", dag, "--param", "min_amount=100"]);
    assert_success(&out, "the example over S3");
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(printed.contains("run 2 success"), "{printed}");
    let data = amdahl.home.path().join("data/runs");
    let expected = output_rows(&data.join("1/revenue_by_region"));
    assert!(expected.contains("region_name"), "{expected}");
    assert_eq!(output_rows(&data.join("2/revenue_by_region")), expected);
    let explain = with_s3(&["explain", dag]);
    assert_success(&explain, "explain over S3");
    let logs = with_s3(&["tasks", "logs", "2", "large_orders"]);
    assert_success(&logs, "tasks logs");
    for shown in [&printed, &text(&explain.stdout), &text(&logs.stdout)] {
        assert!(!shown.contains(secret), "{shown}");
    }
    // Outputs in the bucket too (`--data-root`): `amdahl run` publishes each task's output
    // under its run and attempt and reads it back from there.
    let out = with_s3(&[
        "run",
        dag,
        "--param",
        "min_amount=100",
        "--data-root",
        "s3://sales/amdahl",
    ]);
    assert_success(&out, "the example with its outputs in S3");
    let shown = text(&with_s3(&["runs", "show", "3"]).stdout);
    assert!(
        shown.contains("revenue_by_region  s3://sales/amdahl/runs/3/revenue_by_region/attempt-1/"),
        "{shown}"
    );
    assert_eq!(
        object_rows(&s3, "s3://sales/amdahl/runs/3/revenue_by_region/attempt-1/"),
        expected
    );
    assert!(!data.join("3").join("revenue_by_region").exists());
    // A data root that cannot be used stops the command before anything runs.
    for (root, needle) in [
        (
            "s3://no-such-bucket/amdahl",
            "cannot reach s3://no-such-bucket/amdahl",
        ),
        ("ftp://host/amdahl", "unsupported URI scheme `ftp://`"),
    ] {
        let out = with_s3(&["run", dag, "--data-root", root]);
        assert!(!out.status.success(), "{root}");
        let said = text(&out.stderr);
        assert!(said.contains(needle), "{root}: {said}");
        assert!(!said.contains(secret), "{said}");
    }
    let listed = text(&with_s3(&["runs", "list"]).stdout);
    assert!(
        !listed.contains("\n4 "),
        "a refused run was created:\n{listed}"
    );
    // Dense stages read their vectors from local files: with the outputs in the bucket they
    // copy their inputs down first, and give what the same DAG gives on the local disk.
    assert_success(
        &amdahl.run(&["run", "dags/examples/vectors.yaml"]),
        "the vectors example on the local disk",
    );
    let out = with_s3(&[
        "run",
        "dags/examples/vectors.yaml",
        "--data-root",
        "s3://sales/amdahl",
    ]);
    assert_success(&out, "the vectors example with its outputs in S3");
    let logs = text(&with_s3(&["tasks", "logs", "5", "nearest"]).stdout);
    assert!(logs.contains("copied `docs`"), "{logs}");
    assert_eq!(
        object_rows(&s3, "s3://sales/amdahl/runs/5/best_answers/attempt-1/"),
        output_rows(&data.join("4/best_answers"))
    );
    // Without the server's address the bucket cannot be reached: a clear error, non-zero.
    let unreachable = amdahl
        .command(&["run", dag])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    let said = format!("{}{}", text(&unreachable.stdout), text(&unreachable.stderr));
    assert!(said.contains("s3://sales/raw/"), "{said}");
    assert!(!said.contains(secret), "{said}");
}

/// The rows of the Parquet objects under `prefix` in the bucket (the manifest left out), as a
/// table.
fn object_rows(s3: &impl LocalObjects, prefix: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for url in rt.block_on(s3.list(prefix)).unwrap() {
        if let Some(name) = url
            .strip_suffix(".parquet")
            .and_then(|u| u.rsplit('/').next())
        {
            let bytes = rt.block_on(s3.get(&url)).unwrap();
            std::fs::write(dir.path().join(format!("{name}.parquet")), bytes).unwrap();
        }
    }
    output_rows(dir.path())
}

/// Two machines, one PostgreSQL and one bucket: workers with separate local disks hand data
/// to each other through object storage (`--data-root s3://…`). Worker A generates a table
/// and is killed while it holds the next task; its whole disk is then deleted; worker B
/// takes the task over and runs the query over A's output, which it can only have read from
/// the bucket. Outputs are published under `runs/<run>/<task>/attempt-<N>/` with a manifest,
/// and the answer equals the same DAG run on one machine's own disk.
#[test]
fn postgres_workers_on_two_machines_hand_data_through_s3() {
    let s3 = amdahl_executors::testing::LocalS3::start().unwrap();
    workers_on_two_machines_hand_data_through(&s3, "s3");
}

/// The same through Google Cloud Storage (`gs://`, its XML API served by the local S3 server).
#[test]
fn postgres_workers_on_two_machines_hand_data_through_google_cloud_storage() {
    let gcs = amdahl_executors::testing::LocalGcs::start().unwrap();
    workers_on_two_machines_hand_data_through(&gcs, "gs");
}

/// The same through Azure Blob Storage (`az://`, Azurite).
#[test]
fn postgres_workers_on_two_machines_hand_data_through_azure_blob_storage() {
    let azure = amdahl_executors::testing::LocalAzure::start().unwrap();
    workers_on_two_machines_hand_data_through(&azure, "az");
}

fn workers_on_two_machines_hand_data_through(s3: &impl LocalObjects, scheme: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    s3.create_bucket("lake").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("let-the-gate-open");
    let file = dir.path().join("handoff.yaml");
    std::fs::write(
        &file,
        format!(
            "dag: handoff\n\
             tasks:\n  \
               orders:\n    generate: {{ tpch: orders, scale_factor: 0.01 }}\n  \
               gate:\n    needs: [orders]\n    retries: 1\n    retry_delay: 0s\n    \
                 shell: \"echo waiting; while [ ! -e {m} ]; do sleep 0.1; done\"\n  \
               by_status:\n    needs: [orders, gate]\n    \
                 sql: SELECT o_orderstatus, COUNT(*) AS n, SUM(o_totalprice) AS total \
                      FROM orders GROUP BY o_orderstatus ORDER BY o_orderstatus\n",
            m = marker.display()
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let machine_a = Amdahl::with_database(&db.url);
    let machine_b = Amdahl::with_database(&db.url);
    let worker = |machine: &Amdahl| {
        let mut cmd = machine.command(&[
            "worker",
            "--slots",
            "1",
            "--lease",
            "2s",
            "--data-root",
            &format!("{scheme}://lake/amdahl"),
        ]);
        for (key, value) in s3.env() {
            cmd.env(key, value);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.spawn().unwrap()
    };
    assert_success(&machine_a.run(&["db", "migrate"]), "migrate");
    let no_dags = tempfile::tempdir().unwrap();
    let no_dags = no_dags.path().display().to_string();
    let mut services = Services::start(
        &machine_a,
        &[&["scheduler", "--poll", "100ms", "--dags-folder", &no_dags]],
    );
    let worker_a = worker(&machine_a);
    let pid_a = worker_a.id();
    services.0.push(worker_a);
    assert_success(&machine_a.run(&["trigger", &file]), "trigger");
    // A holds the gate (its only slot) once the table is published.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = text(&machine_a.run(&["tasks", "logs", "1", "gate"]).stdout);
        if logs.contains("attempt 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the gate never started:\n{logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(pid_a as i32, libc::SIGKILL);
    }
    let scratch_a = machine_a.home.path().join("data");
    std::fs::remove_dir_all(&scratch_a).unwrap();
    std::fs::write(&marker, "").unwrap();
    services.0.push(worker(&machine_b));
    let shown = wait_for(&machine_b, "1", "state    success", Duration::from_secs(90));
    assert!(shown.contains("lost"), "A's attempt is lost:\n{shown}");

    let published = rt
        .block_on(s3.list(&format!("{scheme}://lake/amdahl/runs/1/")))
        .unwrap();
    for expected in [
        &format!("{scheme}://lake/amdahl/runs/1/orders/attempt-1/_SUCCESS"),
        &format!("{scheme}://lake/amdahl/runs/1/orders/attempt-1/part-0.parquet"),
        &format!("{scheme}://lake/amdahl/runs/1/by_status/attempt-1/_SUCCESS"),
        &format!("{scheme}://lake/amdahl/runs/1/by_status/attempt-1/part-0.parquet"),
    ] {
        assert!(published.contains(&expected.to_string()), "{published:#?}");
    }
    let manifest = rt
        .block_on(s3.get(&format!(
            "{scheme}://lake/amdahl/runs/1/by_status/attempt-1/_SUCCESS"
        )))
        .unwrap();
    assert!(
        text(&manifest).starts_with("part-0.parquet\t"),
        "{}",
        text(&manifest)
    );
    assert!(
        shown.contains(&format!(
            "{scheme}://lake/amdahl/runs/1/by_status/attempt-1/"
        )),
        "the output's place is shown:\n{shown}"
    );
    let logs = text(&machine_b.run(&["tasks", "logs", "1", "by_status"]).stdout);
    assert!(
        logs.contains("uploaded")
            && logs.contains(&format!(
                "{scheme}://lake/amdahl/runs/1/by_status/attempt-1/"
            )),
        "{logs}"
    );
    // Nothing is left on either machine's disk: outputs live in the bucket.
    assert!(!scratch_a.exists());
    let runs_b = machine_b.home.path().join("data/runs/1");
    let left: Vec<_> = std::fs::read_dir(&runs_b)
        .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left on B's disk: {left:?}");

    // The same DAG on one machine's own disk gives the same answer.
    let alone = Amdahl::sqlite();
    std::fs::write(&marker, "").unwrap();
    assert_success(&alone.run(&["run", &file]), "the DAG on one machine");
    let expected = output_rows(&alone.home.path().join("data/runs/1/by_status"));
    assert!(expected.contains("o_orderstatus"), "{expected}");
    assert_eq!(
        object_rows(
            s3,
            &format!("{scheme}://lake/amdahl/runs/1/by_status/attempt-1/")
        ),
        expected
    );

    // `db clean` removes a run's objects with its rows.
    std::thread::sleep(Duration::from_millis(1100));
    let mut clean = machine_b.command(&[
        "db",
        "clean",
        "--older-than",
        "1s",
        "--data-root",
        &format!("{scheme}://lake/amdahl"),
    ]);
    for (key, value) in s3.env() {
        clean.env(key, value);
    }
    assert_success(&clean.output().unwrap(), "db clean");
    let after = rt
        .block_on(s3.list(&format!("{scheme}://lake/amdahl/runs/1/")))
        .unwrap();
    assert!(after.is_empty(), "{after:#?}");
    drop(services);
    rt.block_on(db.drop_database());
}

/// `engine: ballista` from the command line: the TPC-H example with its queries on Ballista's
/// in-process cluster (`--ballista standalone`) and its outputs in a bucket: the queries read
/// the generated table from the bucket and their results are published there, equal to the
/// example's on the local disk. Without a cluster the task fails saying how to name one.
#[cfg(feature = "ballista")]
#[test]
fn a_ballista_task_runs_on_the_standalone_cluster() {
    let s3 = amdahl_executors::testing::LocalS3::start().unwrap();
    s3.create_bucket("lake").unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("dags/examples/tpch.yaml")).unwrap();
    let distributed = example
        .replace("dag: tpch", "dag: tpch_on_ballista")
        .replace("defaults:\n", "defaults:\n  engine: ballista\n")
        .replace("  retries: 1\n", "  retries: 0\n");
    assert_ne!(distributed, example);
    let dir = tempfile::tempdir().unwrap();
    let dag = dir.path().join("tpch_on_ballista.yaml");
    std::fs::write(&dag, distributed).unwrap();
    let dag = dag.to_str().unwrap();

    let amdahl = Amdahl::sqlite();
    assert_success(
        &amdahl.run(&["run", "dags/examples/tpch.yaml"]),
        "the example",
    );
    let with_s3 = |args: &[&str]| {
        let mut cmd = amdahl.command(args);
        for (key, value) in s3.env() {
            cmd.env(key, value);
        }
        cmd.output().unwrap()
    };
    let out = with_s3(&[
        "run",
        dag,
        "--ballista",
        "standalone",
        "--data-root",
        "s3://lake/amdahl",
    ]);
    assert_success(&out, "the example on Ballista");
    let logs = text(&with_s3(&["tasks", "logs", "2", "q1_pricing_summary"]).stdout);
    assert!(
        logs.contains(
            "running the query on the in-process standalone cluster (DistributedQueryExec)"
        ),
        "{logs}"
    );
    let shown = text(&with_s3(&["runs", "show", "2"]).stdout);
    assert!(shown.contains("ran on Ballista, "), "{shown}");
    let data = amdahl.home.path().join("data/runs");
    for task in ["q1_pricing_summary", "q6_forecast_revenue"] {
        assert_eq!(
            object_rows(&s3, &format!("s3://lake/amdahl/runs/2/{task}/attempt-1/")),
            output_rows(&data.join("1").join(task)),
            "{task}"
        );
    }
    // `explain` shows where the queries go, and that placement leaves them there.
    let explain = amdahl.run(&["explain", dag]);
    assert_success(&explain, "explain");
    let shown = text(&explain.stdout);
    assert!(
        shown.lines().any(|l| l.starts_with("q1_pricing_summary")
            && l.contains("ballista")
            && l.contains("priced as this CPU")),
        "{shown}"
    );
    // No cluster named: the query task fails and says how to name one.
    let out = amdahl.run(&["run", dag]);
    assert!(!out.status.success());
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains("knows no Ballista cluster"), "{said}");
    // A malformed address is refused before anything runs.
    let out = amdahl.run(&["run", dag, "--ballista", "scheduler:50050"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("df://HOST:50050"),
        "{}",
        text(&out.stderr)
    );

    // The cluster as a third place for placement: measured, then chosen only when a worker
    // is told it may (--ballista-auto) and the profile prices it faster.
    let out = amdahl.run(&["run", "dags/examples/tpch.yaml", "--ballista-auto"]);
    assert!(!out.status.success(), "--ballista-auto needs --ballista");
    assert!(
        text(&out.stderr).contains("--ballista"),
        "{}",
        text(&out.stderr)
    );
    let out = amdahl.run(&["calibrate", "--ballista", "standalone", "--quick"]);
    assert_success(&out, "calibrate --ballista standalone");
    let shown = text(&out.stdout);
    assert!(shown.contains("cluster fixed cost per query"), "{shown}");
    assert!(
        shown.contains("--ballista standalone --ballista-auto"),
        "{shown}"
    );
    let json = amdahl.run(&["calibrate", "--json"]);
    assert_success(&json, "calibrate --json");
    let mut profile: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(profile["cluster"]["name"], "standalone", "{profile}");
    let explain = amdahl.run(&["explain", "dags/examples/tpch.yaml"]);
    assert_success(&explain, "explain with a cluster");
    let shown = text(&explain.stdout);
    assert!(
        shown.contains("CLUSTER") && shown.contains("cluster: standalone"),
        "{shown}"
    );
    // As measured, the example's small queries stay here (the cluster's fixed cost); a
    // cluster ten thousand times faster with no fixed cost wins them all.
    let cluster = &mut profile["cluster"]["device"];
    cluster["fixed_seconds"] = 0.0.into();
    for rate in cluster["throughput"].as_object_mut().unwrap().values_mut() {
        *rate = (rate.as_f64().unwrap() * 1e4).into();
    }
    cluster["memory_bandwidth"] = 1e15.into();
    profile["cluster"]["result_bandwidth"] = 1e15.into();
    let fast = dir.path().join("fast-cluster.json");
    std::fs::write(&fast, profile.to_string()).unwrap();
    assert_success(
        &amdahl.run(&["calibrate", "--import", fast.to_str().unwrap()]),
        "calibrate --import",
    );
    let run_id = |out: &Output| {
        let said = text(&out.stderr);
        said.lines()
            .find(|l| l.starts_with("run ") && l.contains(" started"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no run id in {said}"))
            .to_string()
    };
    let out = amdahl.run(&[
        "run",
        "dags/examples/tpch.yaml",
        "--ballista",
        "standalone",
        "--ballista-auto",
    ]);
    assert_success(&out, "the example placed with the cluster");
    let placed = run_id(&out);
    let logs = text(
        &amdahl
            .run(&["tasks", "logs", &placed, "q1_pricing_summary"])
            .stdout,
    );
    assert!(
        logs.contains("placement chose the cluster standalone")
            && logs.contains("running the query on the in-process standalone cluster"),
        "{logs}"
    );
    let shown = text(&amdahl.run(&["runs", "show", &placed]).stdout);
    assert!(
        shown
            .lines()
            .any(|l| l.contains("q1_pricing_summary") && l.contains("cluster")),
        "{shown}"
    );
    for task in ["q1_pricing_summary", "q6_forecast_revenue"] {
        assert_eq!(
            output_rows(&data.join(&placed).join(task)),
            output_rows(&data.join("1").join(task)),
            "{task}"
        );
    }
    // The same profile without --ballista-auto: the cluster is no place for this run.
    let out = amdahl.run(&["run", "dags/examples/tpch.yaml", "--ballista", "standalone"]);
    assert_success(&out, "the example without --ballista-auto");
    let logs = text(
        &amdahl
            .run(&["tasks", "logs", &run_id(&out), "q1_pricing_summary"])
            .stdout,
    );
    assert!(!logs.contains("cluster"), "{logs}");
}

/// A deployment's limits hold whatever a DAG says. `--no-shell`: a `shell` task fails saying
/// so, and its command never runs. `--file-root`: a dataset outside the roots is refused, by
/// `../` or by a link inside a root that points outside, as is an `output:` outside them, while
/// a root's own files and the outputs of upstream tasks (the data root) are read as usual; a
/// root that does not exist is refused before anything runs.
#[test]
fn a_deployment_refuses_shell_tasks_and_files_outside_its_roots() {
    let amdahl = Amdahl::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let (allowed, outside) = (dir.path().join("allowed"), dir.path().join("outside"));
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(allowed.join("inside.csv"), "x\n5\n").unwrap();
    std::fs::write(outside.join("secret.csv"), "x\n1\n2\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.csv"), allowed.join("link.csv")).unwrap();

    let marker = dir.path().join("marker");
    let shell = allowed.join("shell.yaml");
    std::fs::write(
        &shell,
        format!(
            "dag: shell_here\ntasks:\n  touch:\n    shell: \"touch {}\"\n",
            marker.display()
        ),
    )
    .unwrap();
    let shell = shell.to_str().unwrap();
    let out = amdahl.run(&["run", shell, "--no-shell"]);
    assert!(!out.status.success(), "a shell task with --no-shell");
    let logs = text(&amdahl.run(&["tasks", "logs", "1", "touch"]).stdout);
    assert!(logs.contains("shell tasks are disabled"), "{logs}");
    assert!(!marker.exists(), "the command ran");
    let out = amdahl
        .command(&["run", shell])
        .env("AMDAHL_NO_SHELL", "true")
        .output()
        .unwrap();
    assert!(!out.status.success(), "AMDAHL_NO_SHELL=true");
    assert!(!marker.exists(), "the command ran");
    assert_success(&amdahl.run(&["run", shell]), "shell allowed");
    assert!(marker.exists());

    let reading = |name: &str, uri: &str| {
        let dag = allowed.join(format!("{name}.yaml"));
        std::fs::write(
            &dag,
            format!(
                "dag: {name}\ndatasets:\n  t: {{ uri: \"{uri}\", format: csv }}\ntasks:\n  \
                 total:\n    sql: SELECT SUM(x) AS s FROM t\n  again:\n    needs: [total]\n    \
                 sql: SELECT s FROM total\n"
            ),
        )
        .unwrap();
        dag.to_str().unwrap().to_string()
    };
    let root = allowed.to_str().unwrap();
    let inside = reading("inside", "inside.csv");
    assert_success(
        &amdahl.run(&["run", &inside, "--file-root", root]),
        "a file in the root, then an upstream output",
    );
    for (name, uri) in [("dotdot", "../outside/secret.csv"), ("linked", "link.csv")] {
        let dag = reading(name, uri);
        let out = amdahl.run(&["run", &dag, "--file-root", root]);
        assert!(!out.status.success(), "{name}");
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        let run = said
            .lines()
            .find(|l| l.starts_with("run ") && l.contains(" started"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("{said}"))
            .to_string();
        let logs = text(&amdahl.run(&["tasks", "logs", &run, "total"]).stdout);
        assert!(
            logs.contains("outside the folders this deployment allows")
                && logs.contains("secret.csv")
                && !logs.contains("planned query"),
            "{name}: {logs}"
        );
        // Without the limit the same DAG reads the file.
        assert_success(&amdahl.run(&["run", &dag]), name);
    }
    // `output:` outside the roots is refused too, before the query runs; inside, it is written.
    let writing = |name: &str, uri: &str| {
        let dag = allowed.join(format!("{name}.yaml"));
        std::fs::write(
            &dag,
            format!(
                "dag: {name}\ndefaults: {{ retries: 0 }}\ntasks:\n  total:\n    \
                 sql: SELECT 1 AS s\n    output: {{ uri: \"{uri}\" }}\n"
            ),
        )
        .unwrap();
        dag.to_str().unwrap().to_string()
    };
    let out = amdahl.run(&[
        "run",
        &writing("write_out", "../outside/out/"),
        "--file-root",
        root,
    ]);
    assert!(!out.status.success(), "an output outside the roots");
    let said = text(&out.stdout);
    assert!(
        said.contains("outside the folders this deployment allows"),
        "{said}"
    );
    assert!(!outside.join("out").exists(), "nothing was written outside");
    assert_success(
        &amdahl.run(&["run", &writing("write_in", "out/"), "--file-root", root]),
        "an output inside the root",
    );
    assert!(allowed.join("out").join("_SUCCESS").exists());
    // The refused runs are the failed ones.
    let failed = text(&amdahl.run(&["runs", "list", "--state", "failed"]).stdout);
    assert!(
        failed.contains("write_out") && failed.contains("dotdot"),
        "{failed}"
    );
    assert!(
        !failed.contains("write_in") && !failed.contains("success"),
        "{failed}"
    );
    assert!(
        !amdahl
            .run(&["runs", "list", "--state", "done"])
            .status
            .success()
    );
    let out = amdahl.run(&["run", &inside, "--file-root", "/no/such/folder"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--file-root /no/such/folder"),
        "{}",
        text(&out.stderr)
    );
}

/// `secrets:` reach a `shell` task as environment variables, read on the worker (from its
/// environment or a file), and their values are stored nowhere: the task's log lines and its
/// error show `***`, and no file of the state store holds them. A secret the worker cannot
/// read fails the task by its name, before the command runs.
#[test]
fn secrets_reach_shell_tasks_and_are_masked_everywhere_they_are_stored() {
    let amdahl = Amdahl::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let (token, password) = ("tok-7c1e5a0b", "pw-9f3k-from-file");
    std::fs::write(dir.path().join("db"), format!("{password}\n")).unwrap();
    let seen = dir.path().join("seen");
    let dag = dir.path().join("secretive.yaml");
    std::fs::write(
        &dag,
        format!(
            "dag: secretive\nsecrets:\n  api_token: {{ env: TEST_API_TOKEN }}\n  \
             db_password: {{ file: db }}\ntasks:\n  call:\n    shell: 'printf \"%s|%s\" \
             \"$API_TOKEN\" \"$DB_PASSWORD\" > {}; echo \"token=$API_TOKEN\"; \
             echo \"password=$DB_PASSWORD\" >&2; echo \"failed with $API_TOKEN\" >&2; exit 3'\n",
            seen.display()
        ),
    )
    .unwrap();
    let dag = dag.to_str().unwrap();
    let out = amdahl
        .command(&["run", dag])
        .env("TEST_API_TOKEN", token)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the command exits 3");
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("{token}|{password}"),
        "the command saw the values"
    );
    let logs = text(&amdahl.run(&["tasks", "logs", "1", "call"]).stdout);
    assert!(
        logs.contains("token=***") && logs.contains("password=***"),
        "{logs}"
    );
    let shown = format!(
        "{}{}{}",
        logs,
        text(&out.stdout),
        text(&amdahl.run(&["runs", "show", "1"]).stdout)
    );
    for value in [token, password] {
        assert!(!shown.contains(value), "{value} shown: {shown}");
    }
    // Nothing under the home folder (the SQLite store, its journal) holds a value.
    let mut files = vec![amdahl.home.path().to_path_buf()];
    let mut checked = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                files.push(entry.unwrap().path());
            }
        } else {
            let bytes = std::fs::read(&path).unwrap();
            for value in [token, password] {
                assert!(
                    !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                    "{value} is in {}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0);

    // Without the variable on the worker: the task fails naming what is missing.
    std::fs::remove_file(&seen).unwrap();
    let out = amdahl.run(&["run", dag]);
    assert!(!out.status.success());
    let logs = text(&amdahl.run(&["tasks", "logs", "2", "call"]).stdout);
    assert!(
        logs.contains("secret `api_token`: the environment variable TEST_API_TOKEN is not set"),
        "{logs}"
    );
    assert!(!seen.exists(), "the command ran without its secret");
}

/// Two schedulers and three workers, a random one killed with SIGKILL again and again while a
/// 200-task DAG runs (see `tests/crash/mod.rs`): nothing is lost, nothing done twice.
#[test]
fn postgres_kill_9_anywhere_loses_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    crash::suite(&db.url, &rt);
    rt.block_on(db.drop_database());
}

/// PostgreSQL crashes and restarts under a running DAG; the services wait it out.
#[test]
fn postgres_a_database_restart_mid_run_is_waited_out() {
    crash::database_restarts();
}
