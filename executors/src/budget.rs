//! A stage's claim on the worker's memory budget (`--memory`) for what it holds outside
//! DataFusion's operators: the vectors a dense stage reads, the outputs of a split query's
//! parts until they are combined. Claims come out of the same pool DataFusion's operators
//! use, so everything running at once shares one budget, and a stage that cannot fit fails
//! saying so instead of being killed by the system.

use std::sync::Arc;

use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnv;

use crate::stage::StageError;

/// The budget in words, for messages.
pub fn describe(memory: Option<usize>) -> String {
    memory.map_or_else(
        || "the memory it was given".to_string(),
        |bytes| format!("this worker's memory budget (--memory {} MiB)", bytes >> 20),
    )
}

/// Memory one stage holds, released when dropped.
pub struct Budget {
    reservation: MemoryReservation,
    memory: Option<usize>,
}

impl Budget {
    /// A claim named `holder` on the pool of `env` (unbounded without `--memory`).
    pub fn new(env: &Arc<RuntimeEnv>, memory: Option<usize>, holder: &str) -> Self {
        Budget {
            reservation: MemoryConsumer::new(holder).register(&env.memory_pool),
            memory,
        }
    }

    /// A claim on no budget at all (tools and tests that read outside a worker).
    pub fn unbounded(holder: &str) -> Self {
        let pool = Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default());
        Budget {
            reservation: MemoryConsumer::new(holder).register(&(pool as _)),
            memory: None,
        }
    }

    /// Takes `bytes` more for `what` (e.g. "the `base` vectors (1000000 × 128)"), or fails
    /// naming it, the budget and what to do.
    pub fn claim(&mut self, bytes: usize, what: &str) -> Result<(), StageError> {
        self.reservation.try_grow(bytes).map_err(|e| {
            StageError::OutOfMemory(format!(
                "{what} needs {} MiB, more than {} has left: give the worker more (--memory) \
                 or run the stage on less data. {}",
                bytes.div_ceil(1 << 20),
                describe(self.memory),
                e.find_root()
            ))
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.reservation.size()
    }
}
