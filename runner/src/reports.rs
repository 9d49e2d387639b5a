//! A worker's group commit: attempt ends that arrive while one write is in flight are
//! recorded together by the next, so a worker finishing thousands of short tasks a second
//! makes a few statements, not thousands. A lone end (a chain of tasks) is written at once,
//! and where its worker decides the run next it comes back with the run as the end left it
//! (see `Store::finish_and_read`), read in the same statement (PostgreSQL) or transaction
//! (SQLite).

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use amdahl_scheduler::store::{AfterEnd, Backoff, FinishAttempt, Store, StoreError};

/// Most ends one write records.
const MAX_BATCH: usize = 512;

struct Pending {
    finish: FinishAttempt,
    /// The run is read with the end when this end is written alone.
    read: bool,
    reply: oneshot::Sender<Result<(bool, Option<AfterEnd>), String>>,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub(crate) struct Reports {
    sender: mpsc::UnboundedSender<Pending>,
}

impl Reports {
    /// Starts the writer; it ends when every `Reports` is dropped.
    pub fn start(store: Store) -> (Reports, JoinHandle<()>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write(store, receiver));
        (Reports { sender }, writer)
    }

    /// Records one attempt's end with whatever else is waiting; `Ok(false)` means it was
    /// stale (the attempt is no longer the task's current one) and changed nothing. With
    /// `read`, an end written alone may come back with its run as it left it.
    pub async fn record(
        &self,
        finish: FinishAttempt,
        read: bool,
    ) -> Result<(bool, Option<AfterEnd>), StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Batch("the worker is shutting down".into());
        self.sender
            .send(Pending {
                finish,
                read,
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?.map_err(StoreError::Batch)
    }
}

async fn write(store: Store, mut receiver: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::new();
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let [alone] = batch.as_slice()
            && alone.read
        {
            let pending = batch.pop().expect("one end");
            let written = retried(|| store.finish_and_read(&pending.finish), 1).await;
            let _ = pending.reply.send(written.map_err(|e| e.to_string()));
            continue;
        }
        let ends: Vec<FinishAttempt> = batch.iter().map(|p| p.finish.clone()).collect();
        let written = retried(|| store.finish_attempts(&ends), ends.len()).await;
        match written {
            Ok(recorded) => {
                for (pending, ok) in batch.drain(..).zip(recorded) {
                    let _ = pending.reply.send(Ok((ok, None)));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Writes `count` ends with `write`. An end is what the attempt's work comes to: while the
/// database is out of reach it is tried again, not dropped. A retry after a commit whose
/// answer was lost finds the attempt already ended, and the fence makes it change nothing.
async fn retried<T, F, W>(write: W, count: usize) -> Result<T, StoreError>
where
    W: Fn() -> F,
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match write().await {
            Err(e) if e.is_transient() => {
                let wait = backoff.next_wait();
                eprintln!(
                    "worker: recording {count} attempt end(s): database unavailable ({e}); trying again in {wait:?}"
                );
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}
