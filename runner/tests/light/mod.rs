//! Light slots, on both databases: tasks that use no CPU (`empty`, a sensor's poke) run
//! beyond a worker's CPU slots.

use amdahl_dags::load_bytes;
use amdahl_scheduler::{RunState, TaskState};

use super::{TestDb, run_through_a_worker};

/// Two commands take both CPU slots of the test worker first (priority); ten `empty` tasks
/// and a sensor, queued with them, run in light slots meanwhile and end before either command
/// does. With light tasks held to the CPU slots they would wait for a command to end.
pub async fn light_tasks_run_beside_busy_cpu_slots(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("landed.csv"), "id\n1\n").unwrap();
    let mut yaml = format!(
        r#"
dag: light
max_active_tasks: 20
tasks:
  busy_a:
    priority: 10
    shell: "sleep 2"
  busy_b:
    priority: 10
    shell: "sleep 2"
  landed:
    wait: {{ uri: "{}/landed.csv", poke: 1s, timeout: 1m }}
"#,
        dir.path().display()
    );
    for i in 0..10 {
        yaml.push_str(&format!("  nothing_{i}:\n    empty: {{}}\n"));
    }
    let dag = load_bytes("light.yaml", dir.path(), yaml.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let (run_id, state) = run_through_a_worker(&store, &dag, dir.path()).await;
    assert_eq!(state, RunState::Success);
    let tasks = store.tasks(run_id).await.unwrap();
    let ended = |id: &str| {
        let task = tasks.iter().find(|t| t.task_id == id).unwrap();
        assert_eq!(task.state, TaskState::Success, "{id}");
        task.finished_at_ms.unwrap()
    };
    let first_command = ended("busy_a").min(ended("busy_b"));
    for light in tasks.iter().filter(|t| !t.task_id.starts_with("busy")) {
        assert!(
            ended(&light.task_id) < first_command,
            "{} ended at {}, after a command ended at {first_command}",
            light.task_id,
            ended(&light.task_id)
        );
    }
}
