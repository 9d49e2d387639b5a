//! Amdahl's planner: everything decided about a DAG's stages before one runs, and nothing that
//! runs them.
//!
//! - [`check`]: a DAG's SQL planned at validate time against the schemas its inputs will have.
//! - [`estimate`]: a DAG (or a run so far) as a placement graph: sizes, kinds of work, GPU support.
//! - [`place`]: where one `device: auto` task runs, priced over the whole DAG.
//! - [`route`]: where one attempt runs, decided once from what the task asked for, placement's
//!   decision and whether this process has a usable GPU ([`route::Routed`]).
//! - [`kernel`]: the kernel plan IR and its translation from DataFusion physical plans.
//! - [`session`], [`objects`]: how inputs are seen (DataFusion settings, tables, object stores),
//!   the same for planning and for executing.
//! - [`schemas`], [`model`]: the outputs of the non-SQL task kinds, known without running them.
//!
//! The planner never executes a stage, never touches the state store and never calls CUDA: it
//! links neither the executors nor cudarc, so the web server can validate DAGs through it.

pub mod check;
pub mod estimate;
pub mod kernel;
pub mod model;
pub mod objects;
pub mod place;
pub mod preview;
pub mod route;
pub mod schemas;
pub mod session;

pub use kernel::{KernelPlan, Unsupported};
pub use session::TableInput;
