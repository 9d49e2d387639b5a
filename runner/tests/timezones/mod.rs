//! `timezone:` on both databases: the scheduler service creates a local-time schedule's runs
//! at that zone's wall-clock times, once per day across both daylight-saving changes, from a
//! `start_date` that is a local day.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use amdahl_scheduler::Clock;
use amdahl_scheduler::service::SchedulerService;
use chrono::TimeZone;

use super::TestDb;

/// A clock the test sets.
struct At(AtomicI64);

impl Clock for At {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn utc(month: u32, day: u32, hour: u32, minute: u32) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .with_ymd_and_hms(2026, month, day, hour, minute, 0)
        .unwrap()
}

/// 02:30 daily in Paris, caught up from a local start date: on the spring-forward day
/// (2026-03-29, 02:00 → 03:00) the run is due at 03:00 CEST, on the fall-back day
/// (2026-10-25, 03:00 → 02:00) at the first 02:30 only; each day has exactly one run.
pub async fn a_local_schedule_runs_at_local_times(db: &TestDb) {
    let store = db.store().await;
    let folder = tempfile::tempdir().unwrap();
    let dag = |id: &str, start: &str| {
        format!(
            "dag: {id}\nschedule: \"30 2 * * *\"\ntimezone: Europe/Paris\nstart_date: {start}\n\
             catchup: true\ntasks:\n  load:\n    empty: {{}}\n"
        )
    };
    std::fs::write(
        folder.path().join("spring.yaml"),
        dag("spring", "2026-03-27"),
    )
    .unwrap();
    std::fs::write(
        folder.path().join("autumn.yaml"),
        dag("autumn", "2026-10-23"),
    )
    .unwrap();
    let clock = Arc::new(At(AtomicI64::new(0)));
    let service = SchedulerService::new(
        store.clone(),
        clock.clone(),
        Duration::from_millis(50),
        Some(folder.path().to_path_buf()),
    );
    let dates = |dag: &'static str| {
        let store = store.clone();
        async move {
            let mut dates: Vec<String> = store
                .list_runs(Some(dag), 100)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.logical_date)
                .collect();
            dates.sort();
            dates
        }
    };
    let text = amdahl_scheduler::runs::logical_text;

    // Midday on 31 March (UTC): the intervals of the 27th to the 30th have ended. Midnight
    // of 27 March in Paris is 23:00 UTC on the 26th, so the 27th's 02:30 (01:30 UTC) is the
    // first tick; the 29th's is at 03:00 CEST, 01:00 UTC.
    clock
        .0
        .store(utc(3, 31, 12, 0).timestamp_millis(), Ordering::SeqCst);
    service.tick().await.unwrap();
    service.tick().await.unwrap();
    assert_eq!(
        dates("spring").await,
        vec![
            text(utc(3, 27, 1, 30)),
            text(utc(3, 28, 1, 30)),
            text(utc(3, 29, 1, 0)),
            text(utc(3, 30, 0, 30)),
        ]
    );

    // After the autumn change: one run on the 25th, at the first 02:30 (CEST, 00:30 UTC);
    // the next day's is at 02:30 CET, 01:30 UTC.
    clock
        .0
        .store(utc(10, 27, 12, 0).timestamp_millis(), Ordering::SeqCst);
    service.tick().await.unwrap();
    assert_eq!(
        dates("autumn").await,
        vec![
            text(utc(10, 23, 0, 30)),
            text(utc(10, 24, 0, 30)),
            text(utc(10, 25, 0, 30)),
            text(utc(10, 26, 1, 30)),
        ]
    );
    // Nothing is due twice however often the scheduler looks.
    service.tick().await.unwrap();
    assert_eq!(dates("autumn").await.len(), 4);
}

/// A Paris daily run reads its own day's partition: its dataset's `uri` is rendered with the
/// run's `ds` (the logical date's day in Paris, not in UTC) and its templates see the
/// interval; a triggered run of the same DAG reads the partition its params name.
pub async fn a_run_reads_the_partition_of_its_day(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    for (day, amounts) in [("2026-03-28", "1\n2\n"), ("2026-03-29", "10\n20\n30\n")] {
        let folder = dir.path().join(format!("data/day={day}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("part.csv"), format!("amount\n{amounts}")).unwrap();
    }
    let yaml = r#"
dag: partitions
schedule: "@daily"
timezone: Europe/Paris
params: { day: "" }
datasets:
  orders: { uri: "data/day={{ params.day or ds }}/", format: csv }
tasks:
  total:
    sql: |
      SELECT '{{ ds }}' AS ds, '{{ data_interval_start }}' AS from_ts,
             '{{ data_interval_end }}' AS to_ts, SUM(amount) AS total FROM orders
"#;
    let dag = amdahl_dags::load_bytes("partitions.yaml", dir.path(), yaml.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let runner = super::runner(&store, dir.path());
    let read = |run_id: i64| {
        let store = store.clone();
        let runner = &runner;
        let dag = &dag;
        async move {
            let state = runner
                .drive(dag, run_id, &amdahl_runner::Quiet, std::future::pending())
                .await
                .unwrap();
            let task = store.task(run_id, "total").await.unwrap().unwrap();
            assert_eq!(
                state,
                amdahl_scheduler::RunState::Success,
                "{:?}",
                task.error
            );
            let ctx = datafusion::prelude::SessionContext::new();
            ctx.register_parquet(
                "out",
                task.output_path.unwrap(),
                datafusion::prelude::ParquetReadOptions::default(),
            )
            .await
            .unwrap();
            let batches = ctx
                .sql("SELECT ds, from_ts, to_ts, CAST(total AS BIGINT) FROM out")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string()
        }
    };
    // Paris's 29 March began at 23:00 UTC on the 28th; its interval ends at 22:00 UTC (CEST).
    let scheduled = amdahl_scheduler::runs::create_run(
        &store,
        &amdahl_scheduler::SystemClock,
        &dag,
        &dag.params,
        amdahl_scheduler::runs::RunOrigin::Scheduled(utc(3, 28, 23, 0)),
    )
    .await
    .unwrap();
    let table = read(scheduled).await;
    assert!(
        table.contains("| 2026-03-29 | 2026-03-28T23:00:00Z | 2026-03-29T22:00:00Z | 60 "),
        "{table}"
    );
    let params =
        std::collections::BTreeMap::from([("day".to_string(), serde_json::json!("2026-03-28"))]);
    let triggered = runner.create_run(&dag, &params).await.unwrap();
    let table = read(triggered).await;
    assert!(table.contains(" 3 "), "the 28th's partition: {table}");
}
