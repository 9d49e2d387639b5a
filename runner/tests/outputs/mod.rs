//! `produces_data: true` on shell tasks, on both databases, in process and through a worker:
//! what the command writes into `$AMDAHL_OUTPUT_DIR` (Parquet as it is, CSV converted) is the
//! task's output, read downstream by the task's name; a command that writes nothing usable,
//! or fails, publishes nothing.

use amdahl_dags::load_bytes;
use amdahl_runner::Quiet;
use amdahl_scheduler::store::Store;
use amdahl_scheduler::{RunState, TaskState};

use super::{TestDb, run_through_a_worker, runner};

/// `csv` writes a CSV file; `copied` copies an upstream query's Parquet part; both are read
/// by SQL downstream, and `both` joins them.
const DAG: &str = r#"
dag: commands
tasks:
  csv:
    produces_data: true
    shell: |
      printf 'id,name\n1,one\n2,two\n3,three\n' > "$AMDAHL_OUTPUT_DIR/numbers.csv"
      touch "$AMDAHL_OUTPUT_DIR/_SUCCESS"
  squares:
    sql: "SELECT CAST(v AS BIGINT) AS id, CAST(v * v AS BIGINT) AS square FROM (VALUES (1), (2), (4)) AS t(v)"
  copied:
    needs: [squares]
    produces_data: true
    shell: cp "$AMDAHL_INPUT_SQUARES"/*.parquet "$AMDAHL_OUTPUT_DIR/"
  both:
    needs: [csv, copied]
    sql: "SELECT c.id, c.name, s.square FROM csv c JOIN copied s ON s.id = c.id ORDER BY c.id"
"#;

async fn assert_outputs(store: &Store, run_id: i64) {
    let tasks = store.tasks(run_id).await.unwrap();
    let task = |id: &str| tasks.iter().find(|t| t.task_id == id).unwrap();
    for id in ["csv", "squares", "copied", "both"] {
        assert_eq!(
            task(id).state,
            TaskState::Success,
            "{id}: {:?}",
            task(id).error
        );
    }
    assert_eq!(task("csv").rows_out, Some(3));
    assert_eq!(task("copied").rows_out, Some(3));
    // ids 1 and 2 are in both.
    assert_eq!(task("both").rows_out, Some(2));
    // The CSV became Parquet under the task's name (the marker file went with the CSV).
    let published = std::path::PathBuf::from(task("csv").output_path.as_deref().unwrap());
    let mut names: Vec<String> = std::fs::read_dir(&published)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["part-0.parquet"], "{}", published.display());
    let logs = store.logs(run_id, "csv").await.unwrap();
    assert!(
        logs.iter().any(|l| l
            .line
            .contains("converted the command's CSV to Parquet: 3 rows")),
        "{:?}",
        logs.iter().map(|l| &l.line).collect::<Vec<_>>()
    );
}

/// In process: the outputs flow; then each way of writing nothing usable fails its task with
/// what was found, and publishes nothing.
pub async fn a_command_writes_a_tasks_output(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let dag = load_bytes("commands.yaml", dir.path(), DAG.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Success);
    assert_outputs(&store, run_id).await;

    for (command, expected) in [
        ("true", "wrote no .parquet or .csv file"),
        (
            "echo hi > \"$AMDAHL_OUTPUT_DIR/notes.txt\"",
            "`notes.txt` into $AMDAHL_OUTPUT_DIR, which is neither .parquet nor .csv",
        ),
        (
            "printf 'a\\n1\\n' > \"$AMDAHL_OUTPUT_DIR/a.csv\"; printf 'x' > \"$AMDAHL_OUTPUT_DIR/b.parquet\"",
            "1 Parquet and 1 CSV file(s)",
        ),
        (
            "printf 'not parquet' > \"$AMDAHL_OUTPUT_DIR/broken.parquet\"",
            "cannot read",
        ),
        (
            "printf 'a\\n1\\n' > \"$AMDAHL_OUTPUT_DIR/a.csv\"; exit 3",
            "command exited with status 3",
        ),
    ] {
        let yaml = format!(
            "dag: bad_output\ndefaults: {{ retries: 0 }}\ntasks:\n  write:\n    produces_data: true\n    shell: {}\n  read:\n    needs: [write]\n    sql: SELECT * FROM write\n",
            serde_json::to_string(command).unwrap()
        );
        let dag = load_bytes("bad_output.yaml", dir.path(), yaml.as_bytes())
            .unwrap_or_else(|e| panic!("{}", e.render()));
        let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
        let state = runner
            .drive(&dag, run_id, &Quiet, std::future::pending())
            .await
            .unwrap();
        assert_eq!(state, RunState::Failed, "{command}");
        let write = store.task(run_id, "write").await.unwrap().unwrap();
        assert_eq!(write.state, TaskState::Failed, "{command}");
        assert!(
            write.error.as_deref().is_some_and(|e| e.contains(expected)),
            "{command}: {:?}",
            write.error
        );
        assert_eq!(write.output_path, None, "{command}");
        let published = dir
            .path()
            .join("runs")
            .join(run_id.to_string())
            .join("write");
        assert!(!published.exists(), "{command}: {}", published.display());
        let read = store.task(run_id, "read").await.unwrap().unwrap();
        assert_eq!(read.state, TaskState::UpstreamFailed, "{command}");
    }
}

/// Through the database: a worker runs the commands and the queries over their outputs.
pub async fn a_worker_publishes_a_commands_output(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let dag = load_bytes("commands.yaml", dir.path(), DAG.as_bytes()).unwrap();
    let (run_id, state) = run_through_a_worker(&store, &dag, dir.path()).await;
    assert_eq!(state, RunState::Success);
    assert_outputs(&store, run_id).await;
}

/// Two runs of `dag`, one after the other, in process.
async fn run_twice(
    store: &Store,
    dag: &amdahl_dags::Dag,
    data_root: &std::path::Path,
) -> (i64, i64) {
    let runner = runner(store, data_root);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let run_id = runner.create_run(dag, &dag.params).await.unwrap();
        runner
            .drive(dag, run_id, &Quiet, std::future::pending())
            .await
            .unwrap();
        runs.push(run_id);
    }
    (runs[0], runs[1])
}

/// The names in a folder, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The file names a `_SUCCESS` manifest lists.
fn listed(manifest: &str) -> Vec<String> {
    manifest
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

/// `output:` to local folders: `overwrite` replaces the folder whole, `append` adds each run's
/// files beside the earlier ones, `error_if_exists` fails the second run's task (its run
/// fails, the folder keeps the first run's file); CSV is written as CSV; each folder's
/// `_SUCCESS` names exactly its files; nothing half-written or staged is left beside them.
pub async fn a_tasks_output_is_written_out_whole(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let yaml = format!(
        r#"
dag: exports
defaults: {{ retries: 0 }}
tasks:
  revenue:
    sql: "SELECT 1 AS region, 10.5 AS revenue UNION ALL SELECT 2, 7.25"
    output: {{ uri: "{lake}/revenue/dt={{{{ ds }}}}/" }}
  history:
    needs: [revenue]
    sql: "SELECT region, revenue FROM revenue WHERE region = 1"
    output: {{ uri: "{lake}/history/", mode: append, format: csv }}
  once:
    needs: [revenue]
    sql: "SELECT count(*) AS regions FROM revenue"
    output: {{ uri: "{lake}/once/", mode: error_if_exists }}
"#,
        lake = lake.display()
    );
    let dag = load_bytes("exports.yaml", dir.path(), yaml.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let (first, second) = run_twice(&store, &dag, &dir.path().join("data")).await;
    let ds = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let revenue = lake.join("revenue").join(format!("dt={ds}"));
    let file = |run: i64, ext: &str| format!("run-{run}-attempt-1-part-0.{ext}");

    // Overwritten: only the second run's file, and the manifest names it.
    assert_eq!(
        names(&revenue),
        ["_SUCCESS".into(), file(second, "parquet")]
    );
    let manifest = std::fs::read_to_string(revenue.join("_SUCCESS")).unwrap();
    assert_eq!(listed(&manifest), [file(second, "parquet")]);
    // Appended: both runs' CSV files, each with its header and row.
    let history = lake.join("history");
    assert_eq!(
        names(&history),
        ["_SUCCESS".into(), file(first, "csv"), file(second, "csv")]
    );
    let manifest = std::fs::read_to_string(history.join("_SUCCESS")).unwrap();
    assert_eq!(listed(&manifest), [file(first, "csv"), file(second, "csv")]);
    let csv = std::fs::read_to_string(history.join(file(second, "csv"))).unwrap();
    assert_eq!(csv, "region,revenue\n1,10.5\n");
    // error_if_exists: the second run's task failed, saying why, and changed nothing.
    let once = store.task(second, "once").await.unwrap().unwrap();
    assert_eq!(once.state, TaskState::Failed);
    assert!(
        once.error
            .as_deref()
            .is_some_and(|e| e.contains("already holds files") && e.contains("error_if_exists")),
        "{:?}",
        once.error
    );
    assert_eq!(
        once.output_path, None,
        "a task whose export failed publishes nothing"
    );
    assert_eq!(
        names(&lake.join("once")),
        ["_SUCCESS".into(), file(first, "parquet")]
    );
    assert_eq!(
        store.run(first).await.unwrap().unwrap().state,
        RunState::Success
    );
    assert_eq!(
        store.run(second).await.unwrap().unwrap().state,
        RunState::Failed
    );
    // Nothing staged or set aside is left in the lake.
    for folder in [lake.clone(), lake.join("revenue")] {
        assert!(
            names(&folder).iter().all(|n| !n.starts_with('.')),
            "{}: {:?}",
            folder.display(),
            names(&folder)
        );
    }
    // The log says where the output went.
    let logs = store.logs(first, "revenue").await.unwrap();
    assert!(
        logs.iter().any(|l| l.line.contains("wrote the output to")),
        "{:?}",
        logs.iter().map(|l| &l.line).collect::<Vec<_>>()
    );
}

/// `output:` to object storage (a local S3 server): overwrite leaves only the new run's
/// objects and a manifest naming them; append adds to the manifest; error_if_exists refuses.
pub async fn a_tasks_output_is_written_to_object_storage(db: &TestDb) {
    use amdahl_executors::testing::{LocalObjects, LocalS3};
    let s3 = LocalS3::start().unwrap();
    s3.create_bucket("lake").unwrap();
    for (key, value) in s3.env() {
        // SAFETY: set before any thread of this test reads the environment (nextest runs
        // each test in its own process).
        unsafe { std::env::set_var(key, value) };
    }
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
dag: s3_exports
defaults: {{ retries: 0 }}
tasks:
  revenue:
    sql: "SELECT 1 AS region, 10.5 AS revenue"
    output: {{ uri: "s3://lake/revenue/", options: {{ endpoint: "{endpoint}", allow_http: true }} }}
  history:
    needs: [revenue]
    sql: "SELECT * FROM revenue"
    output: {{ uri: "s3://lake/history/", mode: append, options: {{ endpoint: "{endpoint}", allow_http: true }} }}
  once:
    needs: [revenue]
    sql: "SELECT * FROM revenue"
    output: {{ uri: "s3://lake/once/", mode: error_if_exists, options: {{ endpoint: "{endpoint}", allow_http: true }} }}
"#,
        endpoint = s3.endpoint
    );
    let dag = load_bytes("s3_exports.yaml", dir.path(), yaml.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let (first, second) = run_twice(&store, &dag, &dir.path().join("data")).await;
    let file = |run: i64| format!("run-{run}-attempt-1-part-0.parquet");
    let location = |url: &str| s3.location(url);
    let objects = |url: &'static str| {
        let location = location(url);
        async move {
            amdahl_executors::objects::list_names(&location)
                .await
                .unwrap()
        }
    };
    let manifest = |url: &'static str| {
        let s3 = &s3;
        async move { String::from_utf8(s3.get(url).await.unwrap()).unwrap() }
    };
    assert_eq!(
        objects("s3://lake/revenue/").await,
        ["_SUCCESS".into(), file(second)]
    );
    assert_eq!(
        listed(&manifest("s3://lake/revenue/_SUCCESS").await),
        [file(second)]
    );
    assert_eq!(
        objects("s3://lake/history/").await,
        ["_SUCCESS".into(), file(first), file(second)]
    );
    assert_eq!(
        listed(&manifest("s3://lake/history/_SUCCESS").await),
        [file(first), file(second)]
    );
    let once = store.task(second, "once").await.unwrap().unwrap();
    assert_eq!(once.state, TaskState::Failed);
    assert!(
        once.error
            .as_deref()
            .is_some_and(|e| e.contains("already holds objects")),
        "{:?}",
        once.error
    );
    assert_eq!(
        objects("s3://lake/once/").await,
        ["_SUCCESS".into(), file(first)]
    );
}
