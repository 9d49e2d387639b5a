//! The first things a user does: every example runs and can be inspected, bad DAGs and bad
//! command lines are clear errors that change nothing, a closed output pipe is not a panic.

use super::*;

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
    // Where each attempt was sent is recorded beside where it ran.
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("q1_split") && l.contains("split into 4 parts over the CPU")),
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
    let tpch_run_text = tpch_run.to_string();
    // What a task ran, after templating, with the plan of its query.
    let task = amdahl.run(&["tasks", "show", &tpch_run.to_string(), "q1_pricing_summary"]);
    assert_success(&task, "tasks show");
    let task = text(&task.stdout);
    for expected in [
        "state    success",
        "Ran (attempt 1):",
        "l_returnflag",
        "Physical plan:",
        "AggregateExec",
    ] {
        assert!(task.contains(expected), "`{expected}` in:\n{task}");
    }
    // The first rows of its output, with the columns' types and the whole row count.
    let preview = amdahl.run(&[
        "tasks",
        "preview",
        &tpch_run.to_string(),
        "q1_pricing_summary",
        "--limit",
        "2",
    ]);
    assert_success(&preview, "tasks preview");
    let preview = text(&preview.stdout);
    assert!(
        preview.starts_with("l_returnflag (Utf8View)")
            && preview.lines().count() == 4
            && preview.contains("2 of 4 rows, "),
        "{preview}"
    );
    for bad in [
        vec![
            "tasks",
            "preview",
            "1",
            "q1_pricing_summary",
            "--limit",
            "0",
        ],
        vec!["tasks", "preview", &tpch_run_text, "report"],
    ] {
        let out = amdahl.run(&bad);
        assert!(!out.status.success(), "{bad:?}");
    }
    assert!(
        text(
            &amdahl
                .run(&["tasks", "preview", &tpch_run_text, "report"])
                .stderr
        )
        .contains("has published no output"),
    );
    let unknown = amdahl.run(&["tasks", "show", &tpch_run.to_string(), "q1_pricing"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("has no task `q1_pricing`; its tasks:"),
        "{}",
        text(&unknown.stderr)
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
    let cases: [(&[&str], &str); 12] = [
        (
            &["run", "dags/examples/tpch.yaml", "--param", "nonsense"],
            "expected name=value",
        ),
        (
            &["run", "dags/examples/tpch.yaml", "--param", "sf=0"],
            "param `sf` must be at least 0.001, found 0",
        ),
        (
            &["run", "dags/examples/tpch.yaml", "--param", "sf=lots"],
            "param `sf` must be a number, found \"lots\"",
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

/// Data schedules are checked across the folder: validating one file still sees the DAG it
/// runs after; a cycle of DAGs starting each other is refused with the cycle printed and a
/// non-zero exit; an asset nothing produces is a warning, not an error.
#[test]
fn validate_checks_data_schedules_across_the_folder() {
    let amdahl = Amdahl::sqlite();
    let audit = amdahl.run(&["dags", "validate", "dags/tests/folders/assets/audit.yaml"]);
    assert_eq!(audit.status.code(), Some(1));
    let stderr = text(&audit.stderr);
    assert!(
        stderr.contains("`after` names DAG `ingset`, which is not here")
            && stderr.contains("did you mean `ingest`?")
            && stderr.contains("--> dags/tests/folders/assets/audit.yaml:3:27"),
        "{stderr}"
    );
    let cycle = amdahl.run(&["dags", "validate", "dags/tests/folders/assets/ping.yaml"]);
    assert_eq!(cycle.status.code(), Some(1));
    assert!(
        text(&cycle.stderr).contains("DAGs start each other in a cycle: ping → pong → ping"),
        "{}",
        text(&cycle.stderr)
    );
    let report = amdahl.run(&["dags", "validate", "dags/tests/folders/assets/report.yaml"]);
    assert_success(&report, "a warning is not an error");
    assert!(
        text(&report.stderr).contains("warning: no task here produces asset `lake.customer`"),
        "{}",
        text(&report.stderr)
    );
}

/// `amdahl assets`: a run of a producing DAG records an event; `emit` posts one with JSON;
/// `list` and `show` print them; bad names and bad JSON are refused and record nothing.
#[test]
fn asset_commands_record_and_show_events() {
    let amdahl = Amdahl::sqlite();
    let out = amdahl.run(&["run", "dags/examples/orders_ingest.yaml"]);
    assert_success(&out, "run orders_ingest");
    let emitted = amdahl.run(&["assets", "emit", "lake.orders", "--extra", "{\"rows\": 7}"]);
    assert_success(&emitted, "assets emit");
    assert_eq!(text(&emitted.stdout), "event 2 on `lake.orders` recorded\n");
    for (args, says) in [
        (&["assets", "emit", "bad name"][..], "is not an asset name"),
        (
            &["assets", "emit", "dag:orders_ingest"][..],
            "is not an asset name",
        ),
        (
            &["assets", "emit", "lake.orders", "--extra", "{rows"][..],
            "`--extra` must be JSON",
        ),
        (&["assets", "show", "no.such"][..], "no asset `no.such`"),
    ] {
        let out = amdahl.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let list = text(&amdahl.run(&["assets", "list"]).stdout);
    let row = list
        .lines()
        .find(|l| l.starts_with("lake.orders "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains(" 2 ") && row.contains("posted"), "{row}");
    let show = text(&amdahl.run(&["assets", "show", "lake.orders"]).stdout);
    assert!(show.contains("events      2"), "{show}");
    assert!(
        show.contains("orders_ingest.clean_orders (run 1)"),
        "{show}"
    );
    assert!(show.contains("{\"rows\":7}"), "{show}");
}

/// `map:` from the CLI: the example runs an instance per region, `runs show` prints them
/// under their task with their values, and the report reads them all.
#[test]
fn a_mapped_example_runs_and_shows_its_instances() {
    let amdahl = Amdahl::sqlite();
    let out = amdahl.run(&["run", "dags/examples/mapped_regions.yaml"]);
    assert_success(&out, "run mapped_regions");
    let show = text(&amdahl.run(&["runs", "show", "1"]).stdout);
    for line in [
        "per_region",
        "  [0] north",
        "  [3] west",
        "checks",
        "  [1] dates",
        "report",
    ] {
        assert!(
            show.lines().any(|l| l.starts_with(line)),
            "no line starting with {line:?}:\n{show}"
        );
    }
    let report = show
        .lines()
        .find(|l| l.starts_with("report "))
        .unwrap_or_else(|| panic!("{show}"));
    assert!(
        report.contains("success") && report.contains(" 4 "),
        "{report}"
    );
    let instance = text(&amdahl.run(&["tasks", "show", "1", "per_region[2]"]).stdout);
    assert!(instance.contains("east"), "{instance}");
}
