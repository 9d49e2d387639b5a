//! Wake-ups: a write tells whoever waits on it, so services react in milliseconds instead of
//! at their next polling tick.
//!
//! A signal reaches waiters in the same process through a `watch` channel (what `amdahl
//! standalone` uses on SQLite) and, on PostgreSQL, waiters in every process through
//! `NOTIFY`/`LISTEN`. Signals carry no data and may be lost (a dropped listener connection, a
//! process that starts listening late), so every waiter also polls: a signal only shortens
//! the wait, correctness never depends on one arriving.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::{Pool, Result, Store};

/// What a signal says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// Tasks were queued: workers should claim.
    Queued,
    /// A run was created, an attempt ended, a run was cancelled or a DAG unpaused: schedulers
    /// should decide again.
    Progress,
}

impl Topic {
    fn channel(self) -> &'static str {
        match self {
            Topic::Queued => "amdahl_queued",
            Topic::Progress => "amdahl_progress",
        }
    }
}

/// The in-process side of the signals, shared by every clone of a [`Store`].
#[derive(Debug)]
pub(super) struct Signals {
    queued: watch::Sender<u64>,
    progress: watch::Sender<u64>,
}

impl Signals {
    pub(super) fn new() -> Signals {
        Signals {
            queued: watch::Sender::new(0),
            progress: watch::Sender::new(0),
        }
    }

    fn sender(&self, topic: Topic) -> &watch::Sender<u64> {
        match topic {
            Topic::Queued => &self.queued,
            Topic::Progress => &self.progress,
        }
    }
}

/// A waiter's end of one topic.
pub struct Subscription {
    local: watch::Receiver<u64>,
    listener: Option<PgListener>,
}

impl Store {
    /// Tells every waiter on `topic` that something changed. Call it after the change is
    /// committed; a failed `NOTIFY` is not an error (waiters poll anyway).
    pub async fn signal(&self, topic: Topic) {
        self.signals
            .sender(topic)
            .send_modify(|n| *n = n.wrapping_add(1));
        if let Pool::Postgres(pool) = &self.pool {
            let _ = sqlx::query("SELECT pg_notify($1, '')")
                .bind(topic.channel())
                .execute(pool)
                .await;
        }
    }

    /// Starts listening on `topic`. On PostgreSQL this holds one pooled connection for as long
    /// as the subscription lives.
    pub async fn subscribe(&self, topic: Topic) -> Result<Subscription> {
        let mut local = self.signals.sender(topic).subscribe();
        local.mark_unchanged();
        let listener = match &self.pool {
            Pool::Postgres(pool) => {
                let mut listener = PgListener::connect_with(pool).await?;
                listener.listen(topic.channel()).await?;
                Some(listener)
            }
            Pool::Sqlite(_) => None,
        };
        Ok(Subscription { local, listener })
    }
}

impl Store {
    /// [`Store::subscribe`] for a service that has just started: a database that is not
    /// reachable yet (restarting) is waited for, with backoff, instead of ending the service.
    pub async fn subscribe_when_reachable(&self, topic: Topic, who: &str) -> Result<Subscription> {
        let mut backoff = super::Backoff::default();
        loop {
            match self.subscribe(topic).await {
                Err(e) if e.is_transient() => {
                    let wait = backoff.next_wait();
                    eprintln!("{who}: database unavailable ({e}); trying again in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                done => return done,
            }
        }
    }
}

impl Subscription {
    /// Waits for a signal, at most `at_most`; returns whether one came. Signals that arrived
    /// while nobody waited count (one wake-up for all of them), so none is missed between
    /// two waits.
    pub async fn wait(&mut self, at_most: Duration) -> bool {
        if self.drain() {
            return true;
        }
        let local = &mut self.local;
        let listener = &mut self.listener;
        let remote = async {
            match listener {
                // A lost connection is re-made on the next wait; until then, poll.
                Some(listener) => match listener.try_recv().await {
                    Ok(Some(_)) => {}
                    _ => std::future::pending::<()>().await,
                },
                None => std::future::pending::<()>().await,
            }
        };
        let woke = tokio::select! {
            changed = local.changed() => changed.is_ok(),
            () = remote => true,
            () = tokio::time::sleep(at_most) => false,
        };
        self.drain();
        woke
    }

    /// Consumes every signal already delivered; returns whether there was one.
    fn drain(&mut self) -> bool {
        let mut any = self.local.has_changed().unwrap_or(false);
        self.local.mark_unchanged();
        if let Some(listener) = &mut self.listener {
            while listener.next_buffered().is_some() {
                any = true;
            }
        }
        any
    }
}
