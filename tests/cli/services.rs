//! The scheduler, workers and `standalone` as separate processes on one database: sharing
//! runs, killed processes, cron and backfills, pools, cancelling, cleaning old runs.

use super::*;

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
