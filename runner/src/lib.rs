//! Amdahl's runner: carries out attempts that the scheduler's decisions call for.
//!
//! - [`attempt`]: one attempt of one task: the stage built from the DAG, its route decided
//!   once, executed with its log going to the store, its output published, its end recorded.
//! - [`local`]: [`LocalRunner`], the loop that drives a run inside this process
//!   (`amdahl run`): store ↔ `decide` ↔ executors.
//! - [`worker`]: the worker service: claims queued tasks, holds their leases, runs them and
//!   reports each end through [`reports`] (batched, retried, never dropped).
//!
//! Decisions (what runs next, retries, run states) are the scheduler's pure core; where a
//! stage runs is the planner's; how work is done is the executors'. This crate wires the three
//! to the store.

pub mod attempt;
pub mod local;
mod reports;
pub mod worker;

pub use local::{LocalRunner, Quiet, RunObserver};
pub use worker::{HAND_OFF_MAX_TASKS, Worker, WorkerConfig};
