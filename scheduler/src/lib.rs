//! The Amdahl scheduler: state, decisions and dispatch.
//!
//! - [`state`]: the run, task and attempt states and their legal transitions.
//! - [`decide`]: the pure scheduling core, `(run snapshot, now) → commands`.
//! - [`store`]: the state store on PostgreSQL or SQLite; the only module that writes SQL.
//! - [`runner`]: the loop that drives a run in this process: store ↔ decide ↔ executors.
//! - [`service`]: the scheduler and worker services, which drive runs through the database.
//! - [`triggers`]: when cron runs are due (intervals, catchup, `max_active_runs`); pure.
//! - [`attempt`]: one attempt of one task, shared by the runner and the worker.
//!
//! The scheduler never runs user code itself: stages go to `amdahl-executors`.

pub mod attempt;
pub mod backfill;
pub mod breakdown;
pub mod clear;
pub mod decide;
pub mod runner;
pub mod service;
pub mod state;
pub mod store;
pub mod triggers;

pub use runner::{LocalRunner, RunError, RunObserver, reap_orphans};
pub use state::{AttemptState, RunState, TaskState};
pub use store::{Store, StoreError, Topic};

/// The time source. Injected so decisions can be tested with a fake clock.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}
