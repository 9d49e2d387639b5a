//! Dynamic mapping (`map:`), on both databases, in process and through a worker: the
//! expansion creates an instance per value (`task[0]`…), each templated with its value; a
//! downstream query reads every instance's output as one table; an empty list skips the
//! task; a list over `max_map` fails it with the count; clearing the task expands it afresh.

use amdahl_dags::{Dag, load_bytes};
use amdahl_runner::Quiet;
use amdahl_scheduler::store::{Store, TaskRecord};
use amdahl_scheduler::{RunState, TaskState};

use super::{TestDb, run_through_a_worker, runner};

const DAG: &str = r#"
dag: regions
params:
  codes: [a, b]
tasks:
  regions:
    sql: "SELECT * FROM (VALUES ('eu', 1), ('us', 2), ('apac', 3)) AS t(region, n)"
  per_region:
    needs: [regions]
    map: { over: "SELECT region FROM regions ORDER BY n", as: region }
    sql: "SELECT '{{ region }}' AS region, n * 10 AS total FROM regions WHERE region = '{{ region }}'"
  totals:
    needs: [per_region]
    sql: "SELECT * FROM per_region WHERE total IN (10, 20, 30)"
  names:
    needs: [per_region]
    sql: "SELECT DISTINCT region FROM per_region"
  per_code:
    map: { over: "{{ params.codes }}", as: code }
    shell: "echo code={{ code }}"
  nothing:
    needs: [regions]
    map: { over: "SELECT region FROM regions WHERE n > 100", as: region }
    sql: "SELECT '{{ region }}' AS region"
  after_nothing:
    needs: [nothing]
    shell: "echo never"
"#;

fn dag(dir: &std::path::Path, yaml: &str) -> Dag {
    load_bytes("mapping.yaml", dir, yaml.as_bytes()).unwrap_or_else(|e| panic!("{}", e.render()))
}

fn find<'a>(tasks: &'a [TaskRecord], id: &str) -> &'a TaskRecord {
    tasks
        .iter()
        .find(|t| t.task_id == id)
        .unwrap_or_else(|| panic!("no task {id} in {:?}", ids(tasks)))
}

fn ids(tasks: &[TaskRecord]) -> Vec<&str> {
    tasks.iter().map(|t| t.task_id.as_str()).collect()
}

async fn assert_expanded(store: &Store, run_id: i64) {
    let tasks = store.tasks(run_id).await.unwrap();
    // Instances sit right after their task, in index order.
    assert_eq!(
        ids(&tasks),
        [
            "regions",
            "per_region",
            "per_region[0]",
            "per_region[1]",
            "per_region[2]",
            "totals",
            "names",
            "per_code",
            "per_code[0]",
            "per_code[1]",
            "nothing",
            "after_nothing",
        ]
    );
    let parent = find(&tasks, "per_region");
    assert_eq!(
        (parent.state, parent.rows_out, parent.map_index),
        (TaskState::Success, Some(3), None)
    );
    for (i, region) in ["eu", "us", "apac"].iter().enumerate() {
        let instance = find(&tasks, &format!("per_region[{i}]"));
        assert_eq!(instance.state, TaskState::Success, "{:?}", instance.error);
        assert_eq!(instance.map_index, Some(i as i64));
        assert_eq!(
            instance.map_value.as_deref(),
            Some(&*format!("\"{region}\""))
        );
        assert_eq!(instance.rows_out, Some(1));
        assert_eq!(instance.needs, ["per_region"]);
    }
    // Downstream tasks waited on every instance and read them as one table.
    let totals = find(&tasks, "totals");
    assert_eq!(
        totals.needs,
        ["per_region[0]", "per_region[1]", "per_region[2]"]
    );
    assert_eq!(
        (totals.state, totals.rows_out),
        (TaskState::Success, Some(3))
    );
    assert_eq!(find(&tasks, "names").rows_out, Some(3));
    // A list param maps too; each instance saw its own value.
    for (i, code) in ["a", "b"].iter().enumerate() {
        let id = format!("per_code[{i}]");
        assert_eq!(find(&tasks, &id).state, TaskState::Success);
        let logs = store.logs(run_id, &id).await.unwrap();
        assert!(
            logs.iter().any(|l| l.line == format!("code={code}")),
            "{id}: {logs:?}"
        );
    }
    let logs = store.logs(run_id, "per_region").await.unwrap();
    assert!(
        logs.iter().any(|l| l.line.contains("mapped over 3 values")),
        "{logs:?}"
    );
    // The grid's paged columns name tasks; a mapped task's cells bring its instances, and a
    // task that maps nothing brings none.
    let page = ["per_region".to_string(), "names".to_string()];
    let mut cells: Vec<(String, String)> = store
        .grid_cells(&[run_id], Some(&page))
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.task_id, c.state))
        .collect();
    cells.sort();
    let success = |id: &str| (id.to_string(), "success".to_string());
    assert_eq!(
        cells,
        [
            success("names"),
            success("per_region"),
            success("per_region[0]"),
            success("per_region[1]"),
            success("per_region[2]"),
        ]
    );
    // An empty list skips the task, and what needs it follows the trigger rule.
    let nothing = find(&tasks, "nothing");
    assert_eq!(nothing.state, TaskState::Skipped);
    assert_eq!(nothing.error.as_deref(), Some("mapped over an empty list"));
    assert_eq!(find(&tasks, "after_nothing").state, TaskState::Skipped);
}

/// In process: the whole DAG, then clearing the mapped task expands it afresh.
pub async fn a_mapped_task_runs_an_instance_per_value(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let dag = dag(dir.path(), DAG);
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Success);
    assert_expanded(&store, run_id).await;
    let published = dir.path().join(format!("runs/{run_id}/per_region"));
    let mut folders: Vec<String> = std::fs::read_dir(&published)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders, ["map=0", "map=1", "map=2"]);

    // Cleared, the task expands again: the old instances (and their outputs) are replaced.
    std::fs::create_dir_all(published.join("map=7")).unwrap();
    let cleared = amdahl_scheduler::clear::clear(&store, run_id, &["per_region".into()], true)
        .await
        .unwrap();
    assert!(cleared.contains(&"per_region".to_string()), "{cleared:?}");
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Success);
    assert_expanded(&store, run_id).await;
    assert!(!published.join("map=7").exists());
    let attempts = store.attempts(run_id).await.unwrap();
    let of = |id: &str| attempts.iter().filter(|a| a.task_id == id).count();
    assert_eq!((of("per_region"), of("per_region[0]")), (2, 1));
}

/// Through a worker, as the scheduler runs it.
pub async fn a_worker_runs_mapped_instances(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let dag = dag(dir.path(), DAG);
    let (run_id, state) = run_through_a_worker(&store, &dag, dir.path()).await;
    assert_eq!(state, RunState::Success);
    assert_expanded(&store, run_id).await;
}

/// More values than `max_map` fail the task with the count (before any instance exists);
/// a `map.over` query with two columns fails with what it returned.
pub async fn a_map_over_too_many_values_fails_with_the_count(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let dag = dag(
        dir.path(),
        r#"
dag: too_many
tasks:
  regions:
    sql: "SELECT * FROM (VALUES ('eu', 1), ('us', 2), ('apac', 3)) AS t(region, n)"
  capped:
    needs: [regions]
    map: { over: "SELECT region FROM regions", as: region, max_map: 2 }
    sql: "SELECT '{{ region }}' AS region"
  after:
    needs: [capped]
    shell: "echo never"
"#,
    );
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Failed);
    let tasks = store.tasks(run_id).await.unwrap();
    assert_eq!(ids(&tasks), ["regions", "capped", "after"]);
    let capped = find(&tasks, "capped");
    assert_eq!(capped.state, TaskState::Failed);
    assert_eq!(
        capped.error.as_deref(),
        Some("`map.over` gave 3 values; at most 2 are allowed (`max_map: 2`)")
    );
    assert_eq!(find(&tasks, "after").state, TaskState::UpstreamFailed);
}
