//! A worker's hand-off claims a chain's next link in the statement that would have queued it
//! (`Store::claim_next`), on both databases: only into a slot of the link's weight, only
//! where it runs on this worker, outside pools, and never ahead of a queued task as good. On
//! SQLite the end's own transaction may make that claim (`FollowOn`).

use amdahl_placement::Place;
use amdahl_scheduler::service::lone_ready;
use amdahl_scheduler::store::{
    Claim, ClaimRequest, FinishAttempt, FollowOn, NewTask, NextClaim, Store,
};
use amdahl_scheduler::{AttemptState, RunState, TaskState};

use super::{TestDb, new_run_of, new_task};

/// One task of the test run: id, kind, priority, device, pool.
type Spec<'a> = (&'a str, &'a str, i64, &'a str, Option<&'a str>);

/// A service run (of DAG `demo`) with these tasks, none needing another.
async fn service_run(store: &Store, tasks: &[Spec<'_>]) -> i64 {
    let tasks = tasks
        .iter()
        .map(|(id, kind, priority, device, pool)| NewTask {
            kind: kind.to_string(),
            priority: *priority,
            retries: 0,
            pool: pool.map(str::to_string),
            ..new_task(id, &[], device)
        })
        .collect();
    new_run_of(store, tasks, None).await
}

/// Starts run `run_id`, queues `tasks` and claims them all for worker `w1`.
async fn claim_all(store: &Store, run_id: i64, tasks: &[&str]) -> Vec<Claim> {
    store
        .set_run_state(run_id, RunState::Queued, RunState::Running, 1_500, None)
        .await
        .unwrap();
    store
        .queue_tasks(run_id, TaskState::Scheduled, tasks, 2_000)
        .await
        .unwrap();
    let claims = store
        .claim_tasks(&ClaimRequest {
            owner: "w1",
            has_gpu: false,
            limit: tasks.len() as i64,
            light_limit: 0,
            lease_ms: 60_000,
            now_ms: 3_000,
        })
        .await
        .unwrap();
    assert_eq!(claims.len(), tasks.len());
    claims
}

/// The successful end of `task`'s claimed attempt at `now_ms`, with `rows_out: Some(7)`.
fn success(claims: &[Claim], task: &str, now_ms: i64) -> FinishAttempt {
    let claim = claims.iter().find(|c| c.task_id == task).unwrap();
    FinishAttempt {
        run_id: claim.run_id,
        task_id: claim.task_id.clone(),
        attempt_id: claim.attempt_id,
        attempt: claim.attempt,
        attempt_state: AttemptState::Success,
        task_state: TaskState::Success,
        retry_at_ms: None,
        device: Some(Place::Cpu),
        device_note: None,
        output_path: None,
        rows_out: Some(7),
        bytes_out: None,
        error: None,
        now_ms,
        io_us: None,
        transfer_us: None,
        compute_us: None,
        route: None,
        rendered: None,
        plan: None,
        produces: Vec::new(),
        mapped: None,
    }
}

pub async fn a_hand_off_claims_the_next_link_only_where_a_claim_would(db: &TestDb) {
    let store = db.store().await;
    store
        .set_pool("db", 4, "the warehouse", 1_000)
        .await
        .unwrap();
    let run_id = service_run(
        &store,
        &[
            ("next", "shell", 5, "auto", None),
            ("rival", "shell", 5, "auto", None),
            ("low", "shell", 1, "auto", None),
            ("nothing", "empty", 5, "auto", None),
            ("on_gpu", "shell", 5, "gpu", None),
            ("pooled", "shell", 5, "auto", Some("db")),
        ],
    )
    .await;
    let cpu = NextClaim {
        owner: "w1",
        has_gpu: false,
        light: false,
        lease_ms: 60_000,
    };
    let light = NextClaim {
        light: true,
        ..cpu.clone()
    };
    let claim = |next: &NextClaim<'static>, task: &'static str, now: i64| {
        let (store, next) = (store.clone(), next.clone());
        async move { store.claim_next(&next, run_id, task, now).await.unwrap() }
    };
    let state = |task: &'static str| {
        let store = store.clone();
        async move { store.task(run_id, task).await.unwrap().unwrap().state }
    };

    // A queued task as good as the link (same weight, same priority, queued earlier) is
    // claimed first: the link is left to be queued behind it.
    store
        .queue_tasks(run_id, TaskState::Scheduled, &["rival"], 2_000)
        .await
        .unwrap();
    assert_eq!(claim(&cpu, "next", 3_000).await, None);
    assert_eq!(state("next").await, TaskState::Scheduled);
    // A light slot is another weight: the queued command does not stand in its way, and a
    // command does not fit in it.
    let light_claim = claim(&light, "nothing", 3_000).await.expect("claimed");
    assert!(light_claim.light);
    assert_eq!(light_claim.attempt, 1);
    assert_eq!(claim(&light, "next", 3_000).await, None);

    // Once the rival is taken, the link is claimed: running under the lease, attempt 1, its
    // attempt opened, queued and started at the same instant.
    let taken = store
        .claim_tasks(&ClaimRequest {
            owner: "w2",
            has_gpu: false,
            limit: 1,
            light_limit: 0,
            lease_ms: 60_000,
            now_ms: 3_500,
        })
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].task_id, "rival");
    // A lower-priority queued task does not stand in the way either.
    store
        .queue_tasks(run_id, TaskState::Scheduled, &["low"], 3_600)
        .await
        .unwrap();
    let next = claim(&cpu, "next", 4_000).await.expect("claimed");
    assert_eq!(
        (next.task_id.as_str(), next.attempt, next.light),
        ("next", 1, false)
    );
    let task = store.task(run_id, "next").await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::Running);
    assert_eq!(task.attempts, 1);
    assert_eq!(task.started_at_ms, Some(4_000));
    let attempts = store.attempts(run_id).await.unwrap();
    let opened = attempts.iter().find(|a| a.id == next.attempt_id).unwrap();
    assert_eq!((opened.task_id.as_str(), opened.attempt), ("next", 1));
    assert_eq!(opened.started_at_ms, 4_000);
    assert!(opened.started_at_us.is_some(), "the start's µs stamp");
    // The lease is this worker's: its renewal holds the task.
    let held = store.extend_leases("w1", 60_000, 5_000).await.unwrap();
    assert!(held.contains(&(run_id, "next".to_string())), "{held:?}");
    // Claimed once: the same claim again finds the task no longer scheduled.
    assert_eq!(claim(&cpu, "next", 4_000).await, None);

    // A task that asked for a GPU waits for a worker with one.
    assert_eq!(claim(&cpu, "on_gpu", 4_000).await, None);
    let with_gpu = NextClaim {
        has_gpu: true,
        ..cpu.clone()
    };
    assert!(claim(&with_gpu, "on_gpu", 4_000).await.is_some());
    // A task in a pool is queued through the pool's count, never claimed this way.
    assert_eq!(claim(&cpu, "pooled", 4_000).await, None);
    assert_eq!(state("pooled").await, TaskState::Scheduled);
}

/// An end comes back with its run as it left it, for the hand-off to decide from, where that
/// costs no extra round trip (PostgreSQL: the end's own statement reads the run); on SQLite,
/// and for a stale end, the caller is told to read it. A paused DAG's run is not one a
/// worker decides: it comes back without the run.
pub async fn an_end_comes_back_with_its_run_as_it_left_it(db: &TestDb) {
    let store = db.store().await;
    // The third task carries every optional column, so that the run read with the end (as
    // JSON on both databases) is seen to equal a plain read column for column.
    let third = NewTask {
        retry_delay_ms: 2_500,
        max_retry_delay_ms: Some(60_000),
        timeout_ms: Some(90_000),
        skip_note: Some("its `when:` was false".into()),
        depends_on_past: true,
        trigger: amdahl_dags::TriggerRule::AllDone,
        ..new_task("third", &["first"], "gpu")
    };
    let tasks = vec![
        new_task("first", &[], "auto"),
        new_task("second", &[], "auto"),
        third,
    ];
    let run_id = new_run_of(&store, tasks, None).await;
    let claims = claim_all(&store, run_id, &["first", "second"]).await;
    let end = |task: &str, now_ms| success(&claims, task, now_ms);
    let (recorded, after) = store
        .finish_and_read(&end("first", 4_000), None)
        .await
        .unwrap();
    assert!(recorded);
    // What the run reads now, end included.
    let (run_now, tasks_now) = (
        store.service_runs(Some(run_id)).await.unwrap(),
        store.tasks(run_id).await.unwrap(),
    );
    assert_eq!(tasks_now[0].state, TaskState::Success);
    assert_eq!(tasks_now[0].finished_at_ms, Some(4_000));
    // Both databases read it with the end (PostgreSQL in its statement, SQLite in its
    // transaction).
    let after = after.unwrap_or_else(|| panic!("{}: the end came back alone", store.kind()));
    assert_eq!(after.tasks, tasks_now, "the tasks as a read after the end");
    assert_eq!(after.run.as_ref(), run_now.first());
    assert_eq!(after.run.unwrap().state, RunState::Running);
    // The start and the end carry µs stamps of when they were written, in that order.
    let attempts = store.attempts(run_id).await.unwrap();
    let first = attempts.iter().find(|a| a.task_id == "first").unwrap();
    let (started, finished) = (first.started_at_us.unwrap(), first.finished_at_us.unwrap());
    assert!(started <= finished, "{started} > {finished}");
    assert!(finished - started < 60_000_000, "{started} .. {finished}");
    // The same end again is stale: refused, nothing read, nothing changed.
    let (recorded, after) = store
        .finish_and_read(&end("first", 9_000), None)
        .await
        .unwrap();
    assert!(!recorded);
    assert!(after.is_none());
    assert_eq!(store.tasks(run_id).await.unwrap(), tasks_now);

    // Paused, the DAG's run is left alone: the end is recorded, the run not returned.
    store.set_paused("demo", true, 5_000).await.unwrap();
    let (recorded, after) = store
        .finish_and_read(&end("second", 5_000), None)
        .await
        .unwrap();
    assert!(recorded);
    let after = after.unwrap_or_else(|| panic!("{}: the end came back alone", store.kind()));
    assert_eq!(after.run, None);
    let second = after.tasks.iter().find(|t| t.task_id == "second").unwrap();
    assert_eq!(
        (second.state, second.rows_out),
        (TaskState::Success, Some(7))
    );
    assert_eq!(after.tasks.len(), 3);
}

/// The hot path keeps one connection between statements (a lone end, the next link's claim):
/// a kept connection that the server dropped fails its statement once and is replaced, two
/// ends at once both get through (the second on a pool connection), and the store still
/// closes (the pool waits for every connection, the kept one included).
pub async fn a_kept_connection_is_shared_replaced_and_closed(db: &TestDb) {
    let store = db.store().await;
    let names = ["a", "b", "c", "d", "e"];
    let tasks = names.iter().map(|id| new_task(id, &[], "auto")).collect();
    let run_id = new_run_of(&store, tasks, None).await;
    let claims = claim_all(&store, run_id, &names).await;
    let end = |task: &str| success(&claims, task, 4_000);
    // The first end opens the kept connection: the only one to have written an end.
    assert!(store.finish_and_read(&end("a"), None).await.unwrap().0);
    if store.kind() == "postgres" {
        // The server drops the kept connection (the one whose last statement was an end).
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        let dropped: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND query LIKE '%::text AS attempt_state%'",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert!(!dropped.is_empty(), "no connection had written an end");
        // Its next statement fails, and changes nothing; the one after gets a new connection.
        let mut failures = 0;
        loop {
            match store.finish_and_read(&end("c"), None).await {
                Ok((recorded, _)) => {
                    assert!(recorded);
                    break;
                }
                Err(e) => {
                    assert!(e.is_transient(), "{e}");
                    failures += 1;
                    assert!(failures == 1, "the store kept a broken connection: {e}");
                }
            }
        }
        assert_eq!(failures, 1, "the dropped connection was not the kept one");
    } else {
        assert!(store.finish_and_read(&end("c"), None).await.unwrap().0);
    }
    // Two at once: one takes the kept connection, the other a pool connection.
    let (end_b, end_d) = (end("b"), end("d"));
    let (b, d) = tokio::join!(
        store.finish_and_read(&end_b, None),
        store.finish_and_read(&end_d, None)
    );
    assert!(b.unwrap().0 && d.unwrap().0);
    let states: Vec<TaskState> = store
        .tasks(run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(
        states,
        [
            TaskState::Success,
            TaskState::Success,
            TaskState::Success,
            TaskState::Success,
            TaskState::Running
        ]
    );
    tokio::time::timeout(std::time::Duration::from_secs(20), store.close())
        .await
        .expect("the store closed with a connection kept");
}

/// On SQLite an end's transaction goes on to decide the run and claim the one task the
/// decision readies (`FollowOn`, with the service's own `lone_ready` choosing): a chain's
/// whole hand-off in one transaction. Where the decision does more (a fan-out readies two
/// tasks), or the chosen task is not claimable, nothing is claimed and the caller decides.
/// PostgreSQL leaves the decision to the caller.
pub async fn an_end_decides_and_claims_the_next_link_in_its_transaction(db: &TestDb) {
    let store = db.store().await;
    let follow = |light: bool| FollowOn {
        owner: "w1".into(),
        has_gpu: false,
        light,
        lease_ms: 60_000,
        choose: Box::new(|run, tasks| lone_ready(run, tasks, 5_000).map(|t| (t, 5_000))),
    };
    let tasks = vec![
        new_task("first", &[], "auto"),
        new_task("second", &["first"], "auto"),
        new_task("third", &["second"], "auto"),
    ];
    let run_id = new_run_of(&store, tasks, None).await;
    let claims = claim_all(&store, run_id, &["first"]).await;
    let end = success(&claims, "first", 4_000);
    let (recorded, after) = store
        .finish_and_read(&end, Some(&follow(false)))
        .await
        .unwrap();
    assert!(recorded);
    let after = after.unwrap();
    let second = store.task(run_id, "second").await.unwrap().unwrap();
    if store.kind() == "postgres" {
        assert!(after.claimed.is_none());
        assert_eq!(second.state, TaskState::Scheduled);
        return;
    }
    let claimed = after.claimed.expect("the next link, claimed with the end");
    assert_eq!(
        (claimed.task_id.as_str(), claimed.attempt, claimed.light),
        ("second", 1, false)
    );
    // The tasks as the end left them; the claim came after.
    let before = after.tasks.iter().find(|t| t.task_id == "second").unwrap();
    assert_eq!(before.state, TaskState::Scheduled);
    assert_eq!(
        (second.state, second.attempts, second.started_at_ms),
        (TaskState::Running, 1, Some(5_000))
    );
    let attempts = store.attempts(run_id).await.unwrap();
    let opened = attempts.iter().find(|a| a.task_id == "second").unwrap();
    assert_eq!(
        (
            opened.id,
            opened.attempt,
            opened.state,
            opened.started_at_ms
        ),
        (claimed.attempt_id, 1, AttemptState::Running, 5_000)
    );
    // Under w1's lease.
    let held = store.extend_leases("w1", 60_000, 5_500).await.unwrap();
    assert!(held.contains(&(run_id, "second".to_string())), "{held:?}");
    // Its end goes through as any claim's: the chain goes on to `third`.
    let claims = vec![claimed];
    let (recorded, after) = store
        .finish_and_read(&success(&claims, "second", 6_000), Some(&follow(false)))
        .await
        .unwrap();
    assert!(recorded);
    assert_eq!(after.unwrap().claimed.unwrap().task_id, "third");

    // A run whose first task ends into a slot of weight `light`: what the end claimed.
    let end_first = async |tasks: Vec<NewTask>, light: bool| {
        let first = tasks[0].task_id.clone();
        let run_id = new_run_of(&store, tasks, None).await;
        let claims = claim_all(&store, run_id, &[first.as_str()]).await;
        let end = success(&claims, &first, 4_000);
        let (recorded, after) = store
            .finish_and_read(&end, Some(&follow(light)))
            .await
            .unwrap();
        assert!(recorded);
        (run_id, after.unwrap().claimed)
    };
    // A fan-out readies two tasks: nothing claimed, both left for the caller to queue.
    let fan_out = vec![
        new_task("root", &[], "auto"),
        new_task("left", &["root"], "auto"),
        new_task("right", &["root"], "auto"),
    ];
    assert!(end_first(fan_out, false).await.1.is_none());
    // A run with a pooled task: the decision would read the pools' free slots, so it is left
    // to the caller.
    let pooled = vec![
        new_task("p0", &[], "auto"),
        NewTask {
            pool: Some("db".into()),
            ..new_task("p1", &["p0"], "auto")
        },
        new_task("p2", &["p0"], "auto"),
    ];
    assert!(end_first(pooled, false).await.1.is_none());
    // A chain whose next link does not fit the freed slot (a light one): the end is
    // recorded, nothing claimed, the link still `scheduled`.
    let chain = vec![new_task("a", &[], "auto"), new_task("b", &["a"], "auto")];
    let (run_id, claimed) = end_first(chain, true).await;
    assert!(claimed.is_none());
    for (task, state) in [("a", TaskState::Success), ("b", TaskState::Scheduled)] {
        let found = store.task(run_id, task).await.unwrap().unwrap();
        assert_eq!(found.state, state, "{task}");
    }
}
