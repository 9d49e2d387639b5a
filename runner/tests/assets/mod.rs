//! Assets, on both databases: a producing task's success records one event; two schedulers
//! following the same DAG folder start one run per event (or burst of events); `after:` starts
//! a DAG once per successful run of another; a worker that dies after publishing records no
//! event, its retry records exactly one, and its late report adds nothing.

use std::sync::Arc;
use std::time::Duration;

use amdahl_runner::Worker;
use amdahl_scheduler::service::SchedulerService;
use amdahl_scheduler::store::{ClaimRequest, FinishAttempt, ReapLease, Store, StoreError};
use amdahl_scheduler::{AttemptState, Clock, RunState, SystemClock, TaskState};

use super::{TestDb, worker};

const INGEST: &str = "dag: ingest\ntasks:\n  orders:\n    empty: {}\n    produces: lake.orders\n";
const REPORT: &str =
    "dag: report\nschedule: { assets: [lake.orders] }\ntasks:\n  build:\n    empty: {}\n";
const AUDIT: &str =
    "dag: audit\nschedule: { after: { dag: report } }\ntasks:\n  check:\n    empty: {}\n";

fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dags = dir.path().join("dags");
    std::fs::create_dir(&dags).unwrap();
    for (name, text) in [("ingest", INGEST), ("report", REPORT), ("audit", AUDIT)] {
        std::fs::write(dags.join(format!("{name}.yaml")), text).unwrap();
    }
    dir
}

async fn runs_of(store: &Store, dag: &str) -> Vec<amdahl_scheduler::store::RunRecord> {
    store.runs_before(Some(dag), None, None, 100).await.unwrap()
}

/// Ticks both schedulers at once until `done` holds (or 20 s pass).
async fn tick_until<F, Fut>(schedulers: &[SchedulerService; 2], done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        let (a, b) = tokio::join!(schedulers[0].tick(), schedulers[1].tick());
        a.unwrap();
        b.unwrap();
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the schedulers did not get there in 20 s");
}

fn settled(runs: &[amdahl_scheduler::store::RunRecord]) -> bool {
    runs.iter().all(|r| r.state.is_terminal())
}

pub async fn assets_start_one_run_per_event_under_two_schedulers(db: &TestDb) {
    let store = db.store().await;
    let dir = folder();
    let service = || {
        SchedulerService::new(
            store.clone(),
            Arc::new(SystemClock),
            Duration::from_millis(50),
            Some(dir.path().join("dags")),
        )
    };
    let schedulers = [service(), service()];
    let worker: Arc<Worker> = worker(&store, dir.path(), "worker", false, Duration::from_secs(30));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    // The schedulers read the folder: links recorded, cursors started before any event.
    let (a, b) = tokio::join!(schedulers[0].tick(), schedulers[1].tick());
    a.unwrap();
    b.unwrap();
    let orders = store.asset_summary("lake.orders").await.unwrap().unwrap();
    assert_eq!(
        (orders.producers, orders.consumers, orders.events),
        (
            vec!["ingest.orders".to_string()],
            vec!["report".to_string()],
            0
        )
    );

    // The producer runs: one event, which starts one run of `report` (not two: two
    // schedulers), whose success starts one run of `audit`.
    let ingest = amdahl_dags::load_file(&dir.path().join("dags/ingest.yaml")).unwrap();
    let run = amdahl_scheduler::runs::create_run(
        &store,
        &SystemClock,
        &ingest,
        &ingest.params,
        amdahl_scheduler::runs::RunOrigin::Manual,
    )
    .await
    .unwrap();
    tick_until(&schedulers, || async {
        let audits = runs_of(&store, "audit").await;
        !audits.is_empty() && settled(&audits)
    })
    .await;
    assert_eq!(
        store.run(run).await.unwrap().unwrap().state,
        RunState::Success
    );
    let events = store
        .asset_events("lake.orders", i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let (event, started) = &events[0];
    assert_eq!(
        (
            event.source.as_str(),
            event.dag_id.as_deref(),
            event.run_id,
            event.task_id.as_deref()
        ),
        ("task", Some("ingest"), Some(run), Some("orders"))
    );
    let reports = runs_of(&store, "report").await;
    assert_eq!(reports.len(), 1, "one run for one event");
    assert_eq!(started, &vec![reports[0].id]);
    assert_eq!(reports[0].state, RunState::Success);
    let causes = store.run_causes(reports[0].id).await.unwrap();
    assert_eq!(
        causes.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![event.id]
    );
    let audits = runs_of(&store, "audit").await;
    assert_eq!(audits.len(), 1);
    let causes = store.run_causes(audits[0].id).await.unwrap();
    assert_eq!(
        causes
            .iter()
            .map(|e| (e.asset.as_str(), e.run_id))
            .collect::<Vec<_>>(),
        vec![("dag:report", Some(reports[0].id))]
    );

    // Three posts before the schedulers look: one run consumes all three.
    let mut posted = Vec::new();
    for rows in [1, 2, 3] {
        let extra = format!("{{\"rows\": {rows}}}");
        let e = store
            .post_asset_event("lake.orders", Some(&extra), SystemClock.now_ms())
            .await
            .unwrap();
        posted.push(e.id);
    }
    tick_until(&schedulers, || async {
        let reports = runs_of(&store, "report").await;
        reports.len() == 2 && settled(&reports)
    })
    .await;
    // A few more passes: nothing else starts.
    for _ in 0..3 {
        let (a, b) = tokio::join!(schedulers[0].tick(), schedulers[1].tick());
        a.unwrap();
        b.unwrap();
    }
    let reports = runs_of(&store, "report").await;
    assert_eq!(reports.len(), 2, "one run for a burst of events");
    let newest = reports.iter().map(|r| r.id).max().unwrap();
    let causes = store.run_causes(newest).await.unwrap();
    assert_eq!(causes.iter().map(|e| e.id).collect::<Vec<_>>(), posted);
    assert_eq!(causes[2].extra_json.as_deref(), Some("{\"rows\": 3}"));

    // The assets page's list (a few range queries for a page) says what each asset's own
    // summary says, a page at a time.
    let whole = store.asset_summaries("", 100).await.unwrap();
    let names: Vec<&str> = whole.iter().map(|s| s.asset.as_str()).collect();
    assert_eq!(names, ["dag:report", "lake.orders"]);
    for summary in &whole {
        assert_eq!(
            Some(summary),
            store.asset_summary(&summary.asset).await.unwrap().as_ref()
        );
    }
    let orders = whole.iter().find(|s| s.asset == "lake.orders").unwrap();
    assert_eq!(orders.events, 4);
    assert_eq!(
        orders.last_event.as_ref().map(|e| e.id),
        posted.last().copied()
    );
    let first_page = store.asset_summaries("", 1).await.unwrap();
    let next_page = store
        .asset_summaries(&first_page[0].asset, 100)
        .await
        .unwrap();
    assert_eq!([first_page, next_page].concat(), whole);
    let _ = stop.send(());
    let _ = running.await;
}

/// A worker publishes and dies before recording its end: no event. The lease is reaped, the
/// retry succeeds and records the one event; the dead worker's late report is refused and adds
/// nothing, and so does recording the retry's end twice.
pub async fn an_event_is_recorded_once_when_a_worker_dies_after_publishing(db: &TestDb) {
    let store = db.store().await;
    let dir = folder();
    let ingest = amdahl_dags::load_file(&dir.path().join("dags/ingest.yaml")).unwrap();
    let run_id = amdahl_scheduler::runs::create_run(
        &store,
        &SystemClock,
        &ingest,
        &ingest.params,
        amdahl_scheduler::runs::RunOrigin::Manual,
    )
    .await
    .unwrap();
    let now = SystemClock.now_ms();
    let queue = |from| store.set_task_state(run_id, "orders", from, TaskState::Queued, now, None);
    queue(TaskState::Scheduled).await.unwrap();
    let claim = |owner: &'static str, at: i64| {
        let store = store.clone();
        async move {
            store
                .claim_tasks(&ClaimRequest {
                    has_gpu: false,
                    owner,
                    limit: 1,
                    light_limit: 1,
                    lease_ms: 1_000,
                    now_ms: at,
                })
                .await
                .unwrap()
                .remove(0)
        }
    };
    let first = claim("dies", now).await;
    let reaped = store
        .reap_lease(&ReapLease {
            run_id,
            task_id: "orders".into(),
            attempt: first.attempt,
            task_state: TaskState::UpForRetry,
            retry_at_ms: Some(now),
            reason: "lease expired".into(),
            now_ms: now + 2_000,
        })
        .await
        .unwrap();
    assert!(reaped);
    let count = || async {
        store
            .asset_summary("lake.orders")
            .await
            .unwrap()
            .map_or(0, |s| s.events)
    };
    assert_eq!(count().await, 0, "the dead attempt recorded nothing");
    let end = |attempt_id, attempt| FinishAttempt {
        run_id,
        task_id: "orders".into(),
        attempt_id,
        attempt,
        attempt_state: AttemptState::Success,
        task_state: TaskState::Success,
        retry_at_ms: None,
        device: None,
        device_note: None,
        output_path: None,
        rows_out: None,
        bytes_out: None,
        error: None,
        now_ms: now + 3_000,
        io_us: None,
        transfer_us: None,
        compute_us: None,
        route: None,
        rendered: None,
        plan: None,
        produces: vec!["lake.orders".into()],
        mapped: None,
    };
    queue(TaskState::UpForRetry).await.unwrap();
    let second = claim("lives", now + 2_500).await;
    assert_eq!(second.attempt, first.attempt + 1);
    let late = store
        .finish_attempt(&end(first.attempt_id, first.attempt))
        .await;
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    assert_eq!(count().await, 0, "a refused report records no event");
    store
        .finish_attempt(&end(second.attempt_id, second.attempt))
        .await
        .unwrap();
    assert_eq!(count().await, 1);
    // Reported again (a worker retrying its write) or in a batch with a stale one: refused,
    // still one event.
    let again = store
        .finish_attempts(&[
            end(second.attempt_id, second.attempt),
            end(first.attempt_id, first.attempt),
        ])
        .await
        .unwrap();
    assert_eq!(again, vec![false, false]);
    assert_eq!(count().await, 1);
    let events = store
        .asset_events("lake.orders", i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(events[0].0.run_id, Some(run_id));
}
