//! A dedicated thread pool for CPU-heavy stage work.
//!
//! DataFusion is async but CPU-bound; running it on the scheduler's runtime would starve the
//! event loop. Stages run on this separate tokio runtime instead, and the caller awaits a
//! handle. Dropping the handle aborts the work, which is how timeouts stop a query.
//!
//! The pool also holds DataFusion's runtime environment, shared by every query it runs: with
//! a memory budget (`--memory`), one pool of that size that the queries running at once share
//! fairly; operators that can spill (sorts, aggregates, joins' build sides) write to temporary
//! files when their share runs out, and a query that still cannot fit fails with DataFusion's
//! resources-exhausted error (see [`crate::sql`] for the message a user sees).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// The CPU pool. Cheap to clone; the threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct CpuRuntime {
    inner: Arc<RuntimeHolder>,
}

struct RuntimeHolder {
    runtime: Option<Runtime>,
    threads: usize,
    env: Arc<RuntimeEnv>,
    memory: Option<usize>,
}

impl Drop for RuntimeHolder {
    fn drop(&mut self) {
        // Dropping a runtime from inside another runtime panics; shutting it down in the
        // background is allowed anywhere.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl CpuRuntime {
    /// A pool of `threads` worker threads (at least one), its queries' memory unbounded.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        Self::with_memory(threads, None)
    }

    /// A pool of `threads` worker threads whose queries share `memory` bytes at most
    /// (spilling to the system's temporary folder), or unbounded memory.
    pub fn with_memory(threads: usize, memory: Option<usize>) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let mut env = RuntimeEnvBuilder::new();
        if let Some(bytes) = memory {
            // Tracking names the largest consumers in the error when the budget runs out.
            let top = std::num::NonZeroUsize::new(3).expect("3 is not zero");
            env = env.with_memory_pool(Arc::new(TrackConsumersPool::new(
                FairSpillPool::new(bytes),
                top,
            )));
        }
        let env = env.build_arc().map_err(std::io::Error::other)?;
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("amdahl-cpu")
            // Time for DataFusion's spilling and timeouts; I/O for object storage clients.
            .enable_time()
            .enable_io()
            .build()?;
        Ok(CpuRuntime {
            inner: Arc::new(RuntimeHolder {
                runtime: Some(runtime),
                threads,
                env,
                memory,
            }),
        })
    }

    /// A pool sized to the machine's cores, with an optional memory budget.
    pub fn for_machine(memory: Option<usize>) -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_memory(cores, memory)
    }

    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// DataFusion's runtime environment for queries on this pool (its memory pool, spill
    /// files, object stores).
    pub fn datafusion_env(&self) -> Arc<RuntimeEnv> {
        self.inner.env.clone()
    }

    /// The memory budget its queries share, if any.
    pub fn memory(&self) -> Option<usize> {
        self.inner.memory
    }

    /// Runs `future` on the pool. Dropping the returned handle aborts it.
    pub fn spawn<F>(&self, future: F) -> AbortOnDrop<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self
            .inner
            .runtime
            .as_ref()
            .expect("runtime lives until drop");
        AbortOnDrop(runtime.spawn(future))
    }

    /// Runs blocking `work` on the pool's blocking threads.
    pub fn spawn_blocking<F, R>(&self, work: F) -> AbortOnDrop<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let runtime = self
            .inner
            .runtime
            .as_ref()
            .expect("runtime lives until drop");
        AbortOnDrop(runtime.spawn_blocking(work))
    }
}

/// A join handle that aborts its task when dropped.
pub struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// What a query runs with: its partitions and DataFusion's environment (memory pool, spill
/// files) shared by every query of the pool.
pub struct QueryPool {
    pub partitions: usize,
    pub env: Arc<RuntimeEnv>,
    /// The budget `env`'s pool holds (`--memory`), for messages.
    pub memory: Option<usize>,
}
