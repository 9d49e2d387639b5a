//! When things go wrong: GPU fallback, notifications a killed scheduler owed, trigger rules.

use super::*;

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
