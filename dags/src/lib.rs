//! The Amdahl DAG model: a YAML file in, a validated [`Dag`] out.
//!
//! The path through this crate: [`yaml`] turns bytes into a tree of located nodes under hard
//! budgets; [`load`] checks that tree against the format and builds a [`Dag`], collecting every
//! problem as a [`Diagnostic`] with file, line and column; [`template`] renders the Jinja in task
//! text for a run; [`schema`] describes the format as JSON Schema for editors.
//!
//! This crate never runs anything and never touches a database. Checks that need to plan SQL
//! live in `amdahl-planner`, which knows what each task produces.
//!
//! ```
//! let dag = amdahl_dags::load_bytes(
//!     "hello.yaml",
//!     std::path::Path::new("."),
//!     b"dag: hello\ntasks:\n  greet:\n    shell: echo hi\n",
//! )
//! .unwrap();
//! assert_eq!(dag.tasks[0].id, "greet");
//! ```

pub mod assets;
pub mod diagnostic;
pub mod discover;
pub mod folder;
pub mod load;
pub mod mapping;
pub mod model;
pub mod notice;
pub mod params;
pub mod schedule;
pub mod schema;
pub mod template;
#[doc(hidden)]
#[cfg(feature = "testing")]
pub mod testing;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use load::{LoadError, load_bytes, load_file};
pub use model::*;
pub use template::RunContext;
