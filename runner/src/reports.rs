//! A worker's group commit: attempt ends that arrive while one write is in flight are
//! recorded together by the next, so a worker finishing thousands of short tasks a second
//! makes a few statements, not thousands. A lone end (a chain of tasks) is written at once.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use amdahl_scheduler::store::{Backoff, FinishAttempt, Store, StoreError};

/// Most ends one write records.
const MAX_BATCH: usize = 512;

struct Pending {
    finish: FinishAttempt,
    reply: oneshot::Sender<Result<bool, String>>,
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
    /// stale (the attempt is no longer the task's current one) and changed nothing.
    pub async fn record(&self, finish: FinishAttempt) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Batch("the worker is shutting down".into());
        self.sender
            .send(Pending { finish, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?.map_err(StoreError::Batch)
    }
}

async fn write(store: Store, mut receiver: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::new();
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let ends: Vec<FinishAttempt> = batch.iter().map(|p| p.finish.clone()).collect();
        // An end is what the attempt's work comes to: while the database is out of reach it
        // is tried again, not dropped. A retry after a commit whose answer was lost finds the
        // attempt already ended, and the fence makes it change nothing.
        let mut backoff = Backoff::default();
        let written = loop {
            match store.finish_attempts(&ends).await {
                Err(e) if e.is_transient() => {
                    let wait = backoff.next_wait();
                    eprintln!(
                        "worker: recording {} attempt end(s): database unavailable ({e}); trying again in {wait:?}",
                        ends.len()
                    );
                    tokio::time::sleep(wait).await;
                }
                other => break other,
            }
        };
        match written {
            Ok(recorded) => {
                for (pending, ok) in batch.drain(..).zip(recorded) {
                    let _ = pending.reply.send(Ok(ok));
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
