//! Sensors (`wait:`), on both databases: a poke that finds nothing ends its attempt
//! `rescheduled` and gives the worker slot back until the next poke; the wait ends when the
//! file lands or the query says so, fails at its timeout (not retried), or is skipped with
//! `soft_fail`.

use amdahl_dags::{Dag, load_bytes};
use amdahl_runner::Quiet;
use amdahl_scheduler::{AttemptState, RunState, TaskState};

use super::{TestDb, run_through_a_worker, runner};

fn dag(dir: &std::path::Path, yaml: &str) -> Dag {
    load_bytes("sensors.yaml", dir, yaml.as_bytes()).unwrap_or_else(|e| panic!("{}", e.render()))
}

/// Three sensors wait, first in line (priority), on a worker with two slots, for a file that
/// a command creates: the command can only run if waiting sensors hold no slot. Each sensor
/// pokes, finds nothing, is rescheduled, and succeeds once the file is there.
pub async fn sensors_wait_without_holding_a_slot(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    let yaml = format!(
        r#"
dag: landing
tasks:
  landed_a:
    priority: 10
    wait: {{ uri: "{l}/orders.csv", poke: 1s, timeout: 1m }}
  landed_b:
    priority: 10
    wait: {{ uri: "file://{l}/orders.csv", poke: 1s, timeout: 1m }}
  landed_c:
    priority: 10
    wait: {{ uri: "{l}/", poke: 1s, timeout: 1m }}
  lands:
    shell: "sleep 0.3 && mkdir -p {l} && echo id > {l}/orders.csv"
  after:
    needs: [landed_a, landed_b, landed_c]
    sql: "SELECT 1 AS x"
"#,
        l = landing.display()
    );
    let dag = dag(dir.path(), &yaml);
    let (run_id, state) = run_through_a_worker(&store, &dag, dir.path()).await;
    assert_eq!(state, RunState::Success);
    let attempts = store.attempts(run_id).await.unwrap();
    let lands = store.task(run_id, "lands").await.unwrap().unwrap();
    for sensor in ["landed_a", "landed_b", "landed_c"] {
        let task = store.task(run_id, sensor).await.unwrap().unwrap();
        assert_eq!(task.state, TaskState::Success, "{sensor}");
        let mine: Vec<_> = attempts.iter().filter(|a| a.task_id == sensor).collect();
        let (last, pokes) = mine.split_last().unwrap();
        assert_eq!(last.state, AttemptState::Success, "{sensor}");
        assert!(!pokes.is_empty(), "{sensor} found nothing at first");
        assert!(
            pokes.iter().all(|a| a.state == AttemptState::Rescheduled
                && a.device_note
                    .as_deref()
                    .is_some_and(|n| n.contains("is not there yet"))),
            "{sensor}: {pokes:?}"
        );
        assert_eq!(task.pokes, pokes.len() as i64, "{sensor}");
        assert!(task.waiting_since_ms.is_some(), "{sensor}");
        // The command ran while the sensor waited: it started before the wait was over.
        assert!(
            lands.started_at_ms.unwrap() < last.started_at_ms,
            "{sensor} held its slot"
        );
        let logs = store.logs(run_id, sensor).await.unwrap();
        assert!(
            logs.iter().any(|l| l.line.contains("the wait is over")),
            "{logs:?}"
        );
    }
    assert_eq!(
        store.task(run_id, "after").await.unwrap().unwrap().state,
        TaskState::Success
    );
}

/// In process (`amdahl run`): a wait that times out fails its task once (no retry, though
/// it has retries: its pokes are not tries), a `soft_fail` one is skipped and its downstream
/// with it, and a `wait.sql` over an upstream's output ends as soon as it is true.
pub async fn a_wait_times_out_or_is_skipped_or_ends_when_its_query_says(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let never = dir.path().join("never");
    let yaml = format!(
        r#"
dag: timeouts
tasks:
  never:
    retries: 2
    retry_delay: 10s
    wait: {{ uri: "{n}", poke: 1s, timeout: 2s }}
  maybe:
    wait: {{ uri: "{n}", poke: 1s, timeout: 2s, soft_fail: true }}
  after_maybe:
    needs: [maybe]
    shell: "true"
  staged:
    sql: "SELECT * FROM (VALUES (1), (2)) AS t(id)"
  counted:
    needs: [staged]
    wait: {{ sql: "SELECT count(*) = 2 FROM staged", poke: 1s, timeout: 1m }}
"#,
        n = never.display()
    );
    let dag = dag(dir.path(), &yaml);
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Failed, "`never` failed");
    let task = |id: &'static str| {
        let store = store.clone();
        async move { store.task(run_id, id).await.unwrap().unwrap() }
    };
    let never_task = task("never").await;
    assert_eq!(never_task.state, TaskState::Failed);
    let error = never_task.error.unwrap_or_default();
    assert!(
        error.contains("the wait timed out after 2s (wait.timeout)")
            && error.contains("is not there yet"),
        "{error}"
    );
    let attempts = store.attempts(run_id).await.unwrap();
    let mine: Vec<_> = attempts.iter().filter(|a| a.task_id == "never").collect();
    let (last, pokes) = mine.split_last().unwrap();
    assert_eq!(last.state, AttemptState::Failed);
    assert!(pokes.len() >= 2, "poked every second for two: {mine:?}");
    assert!(pokes.iter().all(|a| a.state == AttemptState::Rescheduled));
    let maybe = task("maybe").await;
    assert_eq!(maybe.state, TaskState::Skipped);
    assert!(
        maybe
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("skipped (soft_fail): the wait timed out after 2s")),
        "{:?}",
        maybe.error
    );
    assert_eq!(task("after_maybe").await.state, TaskState::Skipped);
    let counted = task("counted").await;
    assert_eq!(counted.state, TaskState::Success);
    assert_eq!(counted.pokes, 0, "true at its first poke");
}

/// A thousand sensors wait, first in line (priority), on a worker with two CPU slots, for a
/// file that a command creates: the run can only succeed if the command runs while they wait,
/// so it succeeding within the helper's 30 s shows that waiting sensors hold no slot (their
/// pokes take light slots, not CPU slots); a sensor that kept its slot would keep the command
/// from ever starting.
pub async fn a_thousand_waiting_sensors_hold_no_slots(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    let mut yaml = format!(
        r#"
dag: many_sensors
max_active_tasks: 2000
tasks:
  lands:
    shell: "sleep 0.5 && mkdir -p {l} && echo id > {l}/orders.csv"
"#,
        l = landing.display()
    );
    for i in 0..1_000 {
        yaml.push_str(&format!(
            "  landed_{i:04}:\n    priority: 10\n    wait: {{ uri: \"{}/orders.csv\", poke: 1s, timeout: 5m }}\n",
            landing.display()
        ));
    }
    let dag = dag(dir.path(), &yaml);
    let (run_id, state) = run_through_a_worker(&store, &dag, dir.path()).await;
    assert_eq!(state, RunState::Success);
    let tasks = store.tasks(run_id).await.unwrap();
    let sensors: Vec<_> = tasks
        .iter()
        .filter(|t| t.task_id.starts_with("landed_"))
        .collect();
    assert_eq!(sensors.len(), 1_000);
    let waited = sensors.iter().filter(|s| s.pokes > 0).count();
    assert!(
        waited > 0,
        "no sensor found the file missing: nothing waited"
    );
    for sensor in sensors {
        assert_eq!(sensor.state, TaskState::Success, "{}", sensor.task_id);
    }
}
