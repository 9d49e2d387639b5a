//! Datasets and outputs in object storage, workers on two machines handing data over a
//! bucket, Ballista.

use super::*;

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

/// `output:` in S3 is whole or absent, whatever happens to the process writing it. A run
/// publishes version 1; the next run's process is killed (SIGKILL) once its export has begun:
/// the manifest still names version 1 alone, and a DAG reading the prefix as a dataset sees
/// version 1 only. The run after that replaces it: its files and manifest, and the killed
/// attempt's objects (if any got there) are deleted.
fn a_killed_export_leaves_the_previous_output(amdahl: &Amdahl) {
    use amdahl_executors::testing::LocalS3;
    let s3 = LocalS3::start().unwrap();
    s3.create_bucket("lake").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = format!("{{ endpoint: \"{}\", allow_http: true }}", s3.endpoint);
    let export = dir.path().join("export.yaml");
    std::fs::write(
        &export,
        format!(
            "dag: export\nparams: {{ version: 1 }}\ndefaults: {{ retries: 0 }}\ntasks:\n  \
             items: {{ generate: {{ tpch: lineitem, scale_factor: 0.05 }} }}\n  \
             revenue:\n    needs: [items]\n    \
             sql: \"SELECT {{{{ params.version }}}} AS version, l_orderkey, l_extendedprice FROM items\"\n    \
             output: {{ uri: \"s3://lake/revenue/\", options: {options} }}\n"
        ),
    )
    .unwrap();
    let reader = dir.path().join("reader.yaml");
    std::fs::write(
        &reader,
        format!(
            "dag: reader\ndatasets:\n  revenue: {{ uri: \"s3://lake/revenue/\", format: parquet, \
             options: {options} }}\ntasks:\n  versions:\n    \
             sql: \"SELECT version, COUNT(*) AS n FROM revenue GROUP BY version\"\n"
        ),
    )
    .unwrap();
    let (export, reader) = (export.to_str().unwrap(), reader.to_str().unwrap());
    let with_s3 = |args: &[&str]| {
        let mut cmd = amdahl.command(args);
        cmd.envs(s3.env());
        cmd
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let objects = || rt.block_on(s3.list("s3://lake/revenue/")).unwrap();
    let manifest = || {
        let bytes = rt.block_on(s3.get("s3://lake/revenue/_SUCCESS")).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        text.lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // A DAG reading the prefix as a dataset: its run's (version, rows) per version.
    let read = |run: i64| {
        assert_success(&with_s3(&["run", reader]).output().unwrap(), "the reader");
        output_rows(&amdahl.home.path().join(format!("data/runs/{run}/versions")))
    };

    assert_success(
        &with_s3(&["run", export, "--param", "version=1"])
            .output()
            .unwrap(),
        "version 1",
    );
    assert_eq!(manifest(), ["run-1-attempt-1-part-0.parquet"]);
    let seen = read(2);
    assert!(seen.contains("| 1       |"), "{seen}");

    // Version 2, killed once its export has begun (the attempt's staged copy exists).
    let mut child = with_s3(&["run", export, "--param", "version=2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staged = amdahl
        .home
        .path()
        .join("data/runs/3/.revenue.attempt-1.export");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !staged.exists() {
        assert!(
            Instant::now() < deadline,
            "the export never began: {}",
            staged.display()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its export could be killed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        manifest(),
        ["run-1-attempt-1-part-0.parquet"],
        "the killed attempt's manifest was written"
    );
    // Whether the kill came before or during the upload, nothing names the killed attempt's
    // objects, and the reader below does not see them.
    eprintln!("after the kill: {:?}", objects());
    let seen = read(4);
    assert!(
        seen.contains("| 1       |") && !seen.contains("| 2       |"),
        "{seen}"
    );

    // The next run replaces it: its files alone, and what the killed attempt left is gone.
    assert_success(
        &with_s3(&["run", export, "--param", "version=3"])
            .output()
            .unwrap(),
        "version 3",
    );
    assert_eq!(manifest(), ["run-5-attempt-1-part-0.parquet"]);
    assert_eq!(
        objects(),
        [
            "s3://lake/revenue/_SUCCESS".to_string(),
            "s3://lake/revenue/run-5-attempt-1-part-0.parquet".to_string()
        ]
    );
    let seen = read(6);
    assert!(
        seen.contains("| 3       |") && !seen.contains("| 1       |"),
        "{seen}"
    );
}

#[test]
fn sqlite_a_killed_export_leaves_the_previous_output() {
    a_killed_export_leaves_the_previous_output(&Amdahl::sqlite());
}

#[test]
fn postgres_a_killed_export_leaves_the_previous_output() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    a_killed_export_leaves_the_previous_output(&Amdahl::with_database(&db.url));
    rt.block_on(db.drop_database());
}

/// A mapped task's instances publish their outputs in the bucket (`--data-root s3://…`), one
/// prefix each; the task after them reads them as one table, as it does on a local disk.
#[test]
fn mapped_outputs_in_s3_are_read_as_one_table() {
    let s3 = amdahl_executors::testing::LocalS3::start().unwrap();
    s3.create_bucket("lake").unwrap();
    let amdahl = Amdahl::sqlite();
    let example = "dags/examples/mapped_regions.yaml";
    assert_success(&amdahl.run(&["run", example]), "on a local disk");
    let mut cmd = amdahl.command(&["run", example, "--data-root", "s3://lake/amdahl"]);
    cmd.envs(s3.env());
    assert_success(&cmd.output().unwrap(), "with its outputs in S3");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let published = rt.block_on(s3.list("s3://lake/amdahl/runs/2/")).unwrap();
    for instance in 0..4 {
        let manifest = format!("s3://lake/amdahl/runs/2/per_region[{instance}]/attempt-1/_SUCCESS");
        assert!(published.contains(&manifest), "{published:#?}");
    }
    let local = output_rows(&amdahl.home.path().join("data/runs/1/report"));
    assert!(
        local.contains("region") && local.lines().count() > 5,
        "{local}"
    );
    assert_eq!(
        object_rows(&s3, "s3://lake/amdahl/runs/2/report/attempt-1/"),
        local
    );
}
