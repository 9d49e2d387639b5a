//! Kernel plans: the part of a DataFusion physical plan the GPU executes, in a small IR.
//!
//! [`translate`] walks a physical plan of the shape `scan → filter → projection → aggregate`
//! (with DataFusion's partitioning and batching nodes in between, and a sort/limit/rename of
//! the aggregated rows on top) and turns it into a [`KernelPlan`]: the input columns, one
//! filter predicate, the group keys and the aggregates, each an [`Expr`] over the input
//! columns with every intermediate projection substituted in. A plan with any node or
//! expression outside that shape is refused with an [`Unsupported`] that names the node and
//! the reason; such a stage runs on the CPU and its attempt says why.
//!
//! The IR keeps DataFusion's exact types: decimals stay scaled integers with their scale, so
//! the GPU's answer can equal DataFusion's to the last digit. The executors' `gpu::reference`
//! evaluates a kernel plan row by row: it is the reference the GPU kernels are tested against,
//! and it is tested itself against DataFusion.

mod ir;
mod translate;

pub use ir::*;
pub use translate::{translate, translate_partial};

/// Largest `k` the GPU top-k of `knn` keeps (per-thread lists live in registers and shared
/// memory); larger `k` runs on the CPU.
pub const MAX_GPU_K: usize = 32;
