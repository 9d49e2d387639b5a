//! The Amdahl scheduler: state, decisions and dispatch.
//!
//! - [`state`]: the run, task and attempt states and their legal transitions.
//! - [`decide`]: the pure scheduling core, `(run snapshot, now) → commands`.
//! - [`store`]: the state store on PostgreSQL or SQLite; the only module that writes SQL.
//! - [`resolve`]: finding a DAG by id (DAGs folder, then the store), for the CLI and the API.
//! - [`runs`]: creating runs from DAGs, the views `decide` reads, owners and orphans.
//! - [`service`]: the scheduler service, which drives runs through the database (and
//!   [`service::advance`], which workers call too).
//! - [`triggers`]: when cron runs are due (intervals, catchup, `max_active_runs`); pure.
//!
//! The scheduler never runs user code and does not link the executors: attempts are carried
//! out by `amdahl-runner` (the in-process runner and the worker service).

pub mod assets;
pub mod backfill;
pub mod breakdown;
pub mod clear;
pub mod decide;
pub mod notify;
pub mod resolve;
pub mod runs;
pub mod service;
pub mod state;
pub mod store;
pub mod triggers;

pub use runs::{RunError, reap_orphans};
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
