//! Wake-ups: a write tells whoever waits on it, so services react in milliseconds instead of
//! at their next polling tick.
//!
//! A signal reaches waiters in the same process through a `watch` channel (what `amdahl
//! standalone` uses on SQLite) and, on PostgreSQL, waiters in every process through
//! `NOTIFY`/`LISTEN`. A process listens on one connection of its own, whatever its number of
//! waiters (a web server's event streams, a scheduler, a worker): the first subscription
//! starts a task that forwards notifications into the `watch` channels, and it skips the
//! process's own, which the channels already had. Processes on one SQLite file have no
//! `NOTIFY`: they signal each other through a shared page beside the file (see
//! [`super::wake_file`]), and the first subscription starts a thread that sleeps on it.
//! Signals carry no data and may be lost (a dropped listener connection, a process that
//! starts listening late), so every waiter also polls: a signal only shortens the wait,
//! correctness never depends on one arriving.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{OnceCell, watch};

use super::wake_file::{self, WakeFile};
use super::{Result, Store};

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
    const ALL: [Topic; wake_file::SLOTS] = [Topic::Queued, Topic::Progress];

    /// The topic's place in [`Topic::ALL`], and its slot in the wake file.
    fn index(self) -> usize {
        match self {
            Topic::Queued => 0,
            Topic::Progress => 1,
        }
    }

    fn channel(self) -> &'static str {
        match self {
            Topic::Queued => "amdahl_queued",
            Topic::Progress => "amdahl_progress",
        }
    }
}

/// The signals of a process, shared by every clone of a [`Store`].
#[derive(Debug)]
pub(super) struct Signals {
    queued: watch::Sender<u64>,
    progress: watch::Sender<u64>,
    /// PostgreSQL's side, absent on SQLite.
    remote: Option<Remote>,
    /// A SQLite file's side, absent on PostgreSQL and for an in-memory database.
    file: Option<FileWatch>,
}

/// A SQLite file's wake file and whether this process watches it yet.
#[derive(Debug)]
struct FileWatch {
    file: Arc<WakeFile>,
    /// Set once the watching thread runs.
    watching: std::sync::OnceLock<()>,
}

/// The process's listening connection to PostgreSQL.
#[derive(Debug)]
struct Remote {
    /// A pool of one connection, opened by the first subscription; it is the listener's.
    pool: PgPool,
    /// This process's `NOTIFY` payload, by which its listener knows its own signals.
    token: String,
    /// Set once the listener listens on every topic.
    listening: OnceCell<()>,
}

impl Signals {
    /// The signals of a process on SQLite (or with no other process to hear from).
    pub(super) fn local() -> Signals {
        Signals {
            queued: watch::Sender::new(0),
            progress: watch::Sender::new(0),
            remote: None,
            file: None,
        }
    }

    /// The signals of a process on the SQLite file `database`. Without a wake file (it
    /// cannot be created) other processes' signals are not heard, and waiters rely on their
    /// polls.
    pub(super) fn sqlite_file(database: &std::path::Path) -> Signals {
        let file = match WakeFile::open(database) {
            Ok(file) => Some(FileWatch {
                file: Arc::new(file),
                watching: std::sync::OnceLock::new(),
            }),
            Err(e) => {
                eprintln!(
                    "note: cannot open the wake file beside {}: {e}; other processes' signals are \
                     noticed only by polling",
                    database.display()
                );
                None
            }
        };
        Signals {
            file,
            ..Signals::local()
        }
    }

    /// The signals of a process on PostgreSQL, which listens with `options` once asked to.
    pub(super) fn postgres(options: PgConnectOptions) -> Signals {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Signals {
            remote: Some(Remote {
                pool,
                token: format!("{}:{nanos}", std::process::id()),
                listening: OnceCell::new(),
            }),
            ..Signals::local()
        }
    }

    fn sender(&self, topic: Topic) -> &watch::Sender<u64> {
        match topic {
            Topic::Queued => &self.queued,
            Topic::Progress => &self.progress,
        }
    }

    /// Wakes this process's waiters on `topic`.
    fn wake(&self, topic: Topic) {
        self.sender(topic).send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Closes the listening (or watching) connection; its task ends.
    pub(super) async fn close(&self) {
        if let Some(remote) = &self.remote {
            remote.pool.close().await;
        }
        if let Some(file) = &self.file {
            file.file.stop();
        }
    }
}

/// Starts listening on every topic, once per process: the listener is connected and listens
/// before this returns, so no signal sent after it is missed.
async fn listen(signals: &Arc<Signals>) -> Result<()> {
    if let Some(file) = &signals.file {
        file.watching.get_or_init(|| {
            // Threads can run out; waiters still poll.
            let signals = Arc::downgrade(signals);
            let heard = move |moved: [bool; wake_file::SLOTS]| {
                let Some(signals) = signals.upgrade() else {
                    return false;
                };
                for topic in Topic::ALL {
                    if moved[topic.index()] {
                        signals.wake(topic);
                    }
                }
                true
            };
            if let Err(e) = wake_file::watch(file.file.clone(), heard) {
                eprintln!("note: cannot start watching for other processes' signals: {e}");
            }
        });
    }
    let Some(remote) = &signals.remote else {
        return Ok(());
    };
    remote
        .listening
        .get_or_try_init(|| async {
            let mut listener = PgListener::connect_with(&remote.pool).await?;
            listener
                .listen_all(Topic::ALL.iter().map(|topic| topic.channel()))
                .await?;
            tokio::spawn(forward(
                listener,
                Arc::downgrade(signals),
                remote.token.clone(),
            ));
            Ok::<(), super::StoreError>(())
        })
        .await?;
    Ok(())
}

/// Hands each notification to the waiters of its topic, until the store is closed or gone.
/// After a lost connection (re-made by the next receive) every topic is signalled, since
/// what was sent meanwhile is lost.
async fn forward(mut listener: PgListener, signals: Weak<Signals>, token: String) {
    const LOOK: Duration = Duration::from_secs(5);
    let mut backoff = super::Backoff::default();
    loop {
        let received = tokio::time::timeout(LOOK, listener.try_recv()).await;
        let Some(signals) = signals.upgrade() else {
            return;
        };
        match received {
            // Nothing for a while: only to notice a store that is gone.
            Err(_) => {}
            Ok(Ok(Some(notification))) => {
                backoff.reset();
                if notification.payload() == token {
                    continue;
                }
                if let Some(topic) = Topic::ALL
                    .into_iter()
                    .find(|topic| topic.channel() == notification.channel())
                {
                    signals.wake(topic);
                }
            }
            Ok(Ok(None)) => Topic::ALL.into_iter().for_each(|topic| signals.wake(topic)),
            Ok(Err(sqlx::Error::PoolClosed)) => return,
            Ok(Err(_)) => {
                Topic::ALL.into_iter().for_each(|topic| signals.wake(topic));
                drop(signals);
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

/// A waiter's end of one topic.
pub struct Subscription {
    local: watch::Receiver<u64>,
}

impl Store {
    /// Tells every waiter on `topic` that something changed. Call it after the change is
    /// committed; a failed `NOTIFY` is not an error (waiters poll anyway).
    pub async fn signal(&self, topic: Topic) {
        if let Some(notify) = self.signal_here(topic) {
            notify.await;
        }
    }

    /// [`Store::signal`] that does not wait for PostgreSQL's `NOTIFY`: this process's waiters
    /// and other processes on a SQLite file are told before it returns, the server is told
    /// meanwhile.
    pub fn signal_soon(&self, topic: Topic) {
        if let Some(notify) = self.signal_here(topic) {
            tokio::spawn(notify);
        }
    }

    /// Wakes this process's waiters and other processes on a SQLite file; returns the
    /// `NOTIFY` that tells other processes on PostgreSQL.
    fn signal_here(&self, topic: Topic) -> Option<impl Future<Output = ()> + Send + 'static> {
        self.signals.wake(topic);
        if let Some(file) = &self.signals.file {
            file.file.signal(topic.index());
        }
        let (super::Pool::Postgres(pool), Some(remote)) = (&self.pool, &self.signals.remote) else {
            return None;
        };
        let (pool, token) = (pool.clone(), remote.token.clone());
        Some(async move {
            // A wake-up lost in a server crash is harmless (listeners reconnect and look),
            // so its commit does not wait for the disk (see `Store::relaxed`).
            let _ = sqlx::query(concat!("SELECT pg_notify($1, $2), ", no_flush_wait!()))
                .bind(topic.channel())
                .bind(&token)
                .execute(&pool)
                .await;
        })
    }

    /// Starts listening on `topic`. On PostgreSQL the process's first subscription opens its
    /// listening connection (one for all of them).
    pub async fn subscribe(&self, topic: Topic) -> Result<Subscription> {
        let mut local = self.signals.sender(topic).subscribe();
        local.mark_unchanged();
        listen(&self.signals).await?;
        Ok(Subscription { local })
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
        let woke = tokio::select! {
            changed = self.local.changed() => changed.is_ok(),
            () = tokio::time::sleep(at_most) => false,
        };
        self.drain();
        woke
    }

    /// Consumes every signal already delivered; returns whether there was one. A waiter that
    /// is about to look anyway (a worker about to claim) drains first, so that what it is
    /// about to see does not wake it again.
    pub fn drain(&mut self) -> bool {
        let any = self.local.has_changed().unwrap_or(false);
        self.local.mark_unchanged();
        any
    }
}
