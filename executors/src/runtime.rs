//! A dedicated thread pool for CPU-heavy stage work.
//!
//! DataFusion is async but CPU-bound; running it on the scheduler's runtime would starve the
//! event loop. Stages run on this separate tokio runtime instead, and the caller awaits a
//! handle. Dropping the handle aborts the work, which is how timeouts stop a query.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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
    /// A pool of `threads` worker threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("amdahl-cpu")
            .enable_time()
            .build()?;
        Ok(CpuRuntime {
            inner: Arc::new(RuntimeHolder {
                runtime: Some(runtime),
                threads,
            }),
        })
    }

    /// A pool sized to the machine's cores.
    pub fn for_machine() -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::new(cores)
    }

    pub fn threads(&self) -> usize {
        self.inner.threads
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
