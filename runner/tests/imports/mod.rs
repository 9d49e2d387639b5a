//! DAG files that stop validating: the scheduler records where and why, keeps the last good
//! version scheduled (also after a restart), and clears the error when the file is fixed or
//! removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use amdahl_scheduler::Clock;
use amdahl_scheduler::service::SchedulerService;
use amdahl_scheduler::store::Store;

use super::TestDb;

/// A clock the test moves.
struct At(AtomicI64);

impl Clock for At {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const GOOD: &str =
    "dag: hourly\nschedule: \"@hourly\"\nstart_date: 2026-01-01\ntasks:\n  mark:\n    empty: {}\n";
const BROKEN: &str = "dag: hourly\nschedule: \"@hourly\"\nstart_date: 2026-01-01\ntasks:\n  mark:\n    empty: {}\n    needs: [mrak]\n";

async fn runs(store: &Store) -> usize {
    store
        .runs_before(Some("hourly"), None, None, 100)
        .await
        .unwrap()
        .len()
}

pub async fn a_broken_dag_file_is_reported_and_its_last_good_version_kept(db: &TestDb) {
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hourly.yaml");
    let shown = file.display().to_string();
    std::fs::write(&file, GOOD).unwrap();
    let hour = 3_600_000;
    let start = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:30:00Z")
        .unwrap()
        .timestamp_millis();
    let clock = Arc::new(At(AtomicI64::new(start)));
    let scheduler = |clock: &Arc<At>| {
        SchedulerService::new(
            store.clone(),
            clock.clone(),
            Duration::from_millis(50),
            Some(dir.path().to_path_buf()),
        )
    };
    let first = scheduler(&clock);
    first.tick().await.unwrap();
    assert_eq!(runs(&store).await, 1);
    assert!(store.import_errors().await.unwrap().is_empty());

    // The file breaks (a need that names no task): the error is recorded where it is, and
    // the DAG's last good version keeps running on its schedule.
    std::fs::write(&file, BROKEN).unwrap();
    // A modification time the scheduler can tell apart even on a coarse file system.
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(later)
        .unwrap();
    clock.0.fetch_add(hour, Ordering::SeqCst);
    first.tick().await.unwrap();
    let errors = store.import_errors().await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = &errors[0];
    assert_eq!(
        (
            error.path.as_str(),
            error.dag_id.as_deref(),
            error.line,
            error.column
        ),
        (shown.as_str(), Some("hourly"), 7, 13)
    );
    assert_eq!(error.message, "task `mark` needs unknown task `mrak`");
    assert!(
        error.details.contains("did you mean `mark`?"),
        "{}",
        error.details
    );
    assert_eq!(
        runs(&store).await,
        2,
        "the last good version is still scheduled"
    );

    // A scheduler started now (no memory of the good file) finds the last good version in
    // the store, and the error stays recorded once.
    let second = scheduler(&clock);
    clock.0.fetch_add(hour, Ordering::SeqCst);
    second.tick().await.unwrap();
    assert_eq!(runs(&store).await, 3);
    assert_eq!(store.import_errors().await.unwrap().len(), 1);
    let again = &store.import_errors().await.unwrap()[0];
    assert_eq!(again.first_seen_at_ms, error.first_seen_at_ms);

    // Fixed: the error is gone.
    std::fs::write(&file, GOOD).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(later + Duration::from_secs(5))
        .unwrap();
    second.tick().await.unwrap();
    assert!(store.import_errors().await.unwrap().is_empty());

    // Broken again, then removed: removing the file clears its error too.
    std::fs::write(&file, "dag: [").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(later + Duration::from_secs(10))
        .unwrap();
    second.tick().await.unwrap();
    let errors = store.import_errors().await.unwrap();
    assert_eq!(errors.len(), 1);
    std::fs::remove_file(&file).unwrap();
    second.tick().await.unwrap();
    assert!(store.import_errors().await.unwrap().is_empty());
}
