//! `when: { sql }`, on both databases, in process and through a worker: the query runs over
//! the task's inputs when its attempt starts; false, NULL or no row skips the task (its attempt
//! succeeds and says why), and downstream tasks follow their trigger rules; more than one row
//! fails the attempt.

use amdahl_dags::{Dag, load_bytes};
use amdahl_runner::Quiet;
use amdahl_scheduler::store::Store;
use amdahl_scheduler::{AttemptState, RunState, TaskState};

use super::{TestDb, run_through_a_worker, runner};

const DAG: &str = r#"
dag: guarded
tasks:
  staged:
    sql: "SELECT * FROM (VALUES (1), (2)) AS t(id)"
  big:
    needs: [staged]
    when: { sql: "SELECT count(*) > 5 FROM staged" }
    sql: "SELECT * FROM staged"
  small:
    needs: [staged]
    when:
      sql: "SELECT count(*) = 2 FROM staged"
    shell: "true"
  unknown:
    needs: [staged]
    when: { sql: "SELECT CAST(NULL AS BOOLEAN)" }
    shell: "true"
  none:
    needs: [staged]
    when: { sql: "SELECT id > 0 FROM staged WHERE id > 10" }
    shell: "true"
  after_big:
    needs: [big]
    shell: "true"
  report:
    needs: [big, small]
    trigger: none_failed
    sql: "SELECT count(*) AS rows_in_big FROM big"
"#;

fn dag(dir: &std::path::Path, extra: &str) -> Dag {
    let yaml = format!("{DAG}{extra}");
    load_bytes("guarded.yaml", dir, yaml.as_bytes()).unwrap_or_else(|e| panic!("{}", e.render()))
}

/// What every run of [`DAG`] ends with, whoever drove it.
async fn assert_guarded(store: &Store, run_id: i64) {
    let tasks = store.tasks(run_id).await.unwrap();
    let state = |id: &str| tasks.iter().find(|t| t.task_id == id).unwrap().state;
    for (id, want) in [
        ("staged", TaskState::Success),
        ("big", TaskState::Skipped),
        ("small", TaskState::Success),
        ("unknown", TaskState::Skipped),
        ("none", TaskState::Skipped),
        // all_success with a skipped upstream: skipped, as in Airflow.
        ("after_big", TaskState::Skipped),
        ("report", TaskState::Success),
    ] {
        assert_eq!(state(id), want, "{id}");
    }
    let attempts = store.attempts(run_id).await.unwrap();
    let big = attempts.iter().find(|a| a.task_id == "big").unwrap();
    assert_eq!(big.state, AttemptState::Success);
    assert!(
        big.device_note
            .as_deref()
            .is_some_and(|n| n.contains("`when.sql` was false")),
        "{:?}",
        big.device_note
    );
    assert!(
        !attempts.iter().any(|a| a.task_id == "after_big"),
        "a task after a skipped one never started"
    );
    // A skipped SQL task leaves an empty table with its query's columns, which the task
    // that runs after it anyway reads; the reason is the task's, as for a rule's skip.
    let big = store.task(run_id, "big").await.unwrap().unwrap();
    assert!(big.output_path.is_some(), "the empty table is published");
    assert_eq!(big.rows_out, Some(0));
    assert!(
        big.error
            .as_deref()
            .is_some_and(|e| e.contains("`when.sql` was false")),
        "{:?}",
        big.error
    );
    let report = store.task(run_id, "report").await.unwrap().unwrap();
    assert_eq!(report.rows_out, Some(1), "count(*) over the empty table");
    let logs = store.logs(run_id, "big").await.unwrap();
    assert!(
        logs.iter().any(|l| l.line.contains("`when.sql` was false")),
        "{:?}",
        logs.iter().map(|l| &l.line).collect::<Vec<_>>()
    );
    let logs = store.logs(run_id, "small").await.unwrap();
    assert!(logs.iter().any(|l| l.line.contains("`when.sql` was true")));
}

/// In process (`amdahl run`): false, NULL and no row skip; more than one row fails the task.
pub async fn a_false_when_sql_skips_its_task(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let dag = dag(
        dir.path(),
        "  many:\n    needs: [staged]\n    when: { sql: \"SELECT id > 0 FROM staged\" }\n    shell: \"true\"\n",
    );
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Failed, "`many` failed");
    assert_guarded(&store, run_id).await;
    let many = store.task(run_id, "many").await.unwrap().unwrap();
    assert_eq!(many.state, TaskState::Failed);
    assert!(
        many.error
            .as_deref()
            .is_some_and(|e| e.contains("`when.sql` must return at most one row; it returned 2")),
        "{:?}",
        many.error
    );
}

/// Through the database: a worker claims the tasks, decides the condition and reports the
/// skip; the run succeeds (a skipped task is not a failure).
pub async fn a_worker_skips_a_task_whose_when_sql_is_false(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let dag = dag(dir.path(), "");
    let (run_id, state) = run_through_a_worker(&store, &dag, dir.path()).await;
    assert_eq!(state, RunState::Success);
    assert_guarded(&store, run_id).await;
}
