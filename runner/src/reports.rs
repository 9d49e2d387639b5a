//! A worker's group commit: attempt ends that arrive while one write is in flight are
//! recorded together by the next, so a worker finishing thousands of short tasks a second
//! makes a few statements, not thousands. A lone end (a chain of tasks) is written at once,
//! and where its worker decides the run next it comes back with the run as the end left it
//! (see `Store::finish_and_read`), read in the same statement (PostgreSQL) or transaction
//! (SQLite). On SQLite that transaction also decides the run and claims its next task (a
//! chain's next link, see [`Follow`]), which goes from here straight to the worker's main loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use amdahl_scheduler::store::{
    AfterEnd, Backoff, Claim, FinishAttempt, FollowOn, Store, StoreError,
};

/// Most ends one write records.
const MAX_BATCH: usize = 512;

struct Pending {
    finish: FinishAttempt,
    /// The run is read with the end when this end is written alone.
    read: bool,
    /// And decided, where the store can in the end's transaction.
    follow: Option<Follow>,
    reply: oneshot::Sender<Result<(bool, Option<AfterEnd>), String>>,
}

/// The hand-off a lone end's write may make (see [`FollowOn`]). The task it claims is sent
/// from here to the main loop, not through the attempt awaiting the reply, whose stage may be
/// stopped once the end is recorded: a claim never waits on a future that may be dropped.
pub(crate) struct Follow {
    pub on: FollowOn,
    /// The worker's count of claims on their way to its main loop (see
    /// `Worker::handing_off`): counted before the write can claim, uncounted here if it did
    /// not, and by the main loop once it has started the claimed task.
    pub handing_off: Arc<AtomicUsize>,
    pub follow_ons: mpsc::UnboundedSender<Claim>,
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
    /// `read`, an end written alone may come back with its run as it left it, and with
    /// `follow` with the task its write claimed ([`AfterEnd::claimed`], already sent on).
    pub async fn record(
        &self,
        finish: FinishAttempt,
        read: bool,
        follow: Option<Follow>,
    ) -> Result<(bool, Option<AfterEnd>), StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Batch("the worker is shutting down".into());
        self.sender
            .send(Pending {
                finish,
                read,
                follow,
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
            let follow = pending.follow.as_ref();
            // Counted only while a write that may claim is in flight (not while the database
            // is out of reach between tries).
            let count = |up: bool| {
                if let Some(follow) = follow {
                    if up {
                        follow.handing_off.fetch_add(1, Ordering::SeqCst);
                    } else {
                        follow.handing_off.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            };
            let write = || async {
                count(true);
                let written = store
                    .finish_and_read(&pending.finish, follow.map(|f| &f.on))
                    .await;
                if written.is_err() {
                    count(false);
                }
                written
            };
            let written = retried(write, 1).await;
            if let (Some(follow), Ok((_, after))) = (follow, &written) {
                let claimed = after.as_ref().and_then(|after| after.claimed.clone());
                // Sent to a main loop that stopped, it is reaped when its lease ends.
                if claimed.is_none_or(|claim| follow.follow_ons.send(claim).is_err()) {
                    count(false);
                }
            }
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
