//! Wake-ups: a write tells whoever waits on it, so services react in milliseconds instead of
//! at their next polling tick.
//!
//! A signal reaches waiters in the same process through a `watch` channel (what `amdahl
//! standalone` uses on SQLite) and, on PostgreSQL, waiters in every process through
//! `NOTIFY`/`LISTEN`. A process listens on one connection of its own, whatever its number of
//! waiters (a web server's event streams, a scheduler, a worker): the first subscription
//! starts a task that forwards notifications into the `watch` channels, and it skips the
//! process's own, which the channels already had. Processes on one SQLite file have no
//! `NOTIFY`: the first subscription starts a task that reads `PRAGMA data_version` on a
//! connection of its own every few milliseconds (it changes when another connection commits,
//! in this process or another) and wakes every waiter when it did. Signals carry no data and may be lost (a
//! dropped listener connection, a process that starts listening late), so every waiter also
//! polls: a signal only shortens the wait, correctness never depends on one arriving.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tokio::sync::{OnceCell, watch};

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
    const ALL: [Topic; 2] = [Topic::Queued, Topic::Progress];

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

/// How often a process on a SQLite file looks whether another connection committed.
const FILE_LOOK: Duration = Duration::from_millis(5);

/// The connection a process on a SQLite file watches it with.
#[derive(Debug)]
struct FileWatch {
    /// A pool of one connection, opened by the first subscription; it only reads (opened
    /// read-write all the same: a read-only connection to a WAL file needs its `-shm` to exist).
    pool: SqlitePool,
    /// Set once the watch runs.
    watching: OnceCell<()>,
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

    /// The signals of a process on a SQLite file, which watches it with `options` once asked.
    pub(super) fn sqlite_file(options: SqliteConnectOptions) -> Signals {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Signals {
            file: Some(FileWatch {
                pool,
                watching: OnceCell::new(),
            }),
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

    fn wake(&self, topic: Topic) {
        self.sender(topic).send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Closes the listening (or watching) connection; its task ends.
    pub(super) async fn close(&self) {
        if let Some(remote) = &self.remote {
            remote.pool.close().await;
        }
        if let Some(file) = &self.file {
            file.pool.close().await;
        }
    }
}

/// Starts listening on every topic, once per process: the listener is connected and listens
/// before this returns, so no signal sent after it is missed.
async fn listen(signals: &Arc<Signals>) -> Result<()> {
    if let Some(file) = &signals.file {
        file.watching
            .get_or_try_init(|| async {
                let mut connection = file.pool.acquire().await?;
                let seen: i64 = sqlx::query_scalar("PRAGMA data_version")
                    .fetch_one(&mut *connection)
                    .await?;
                tokio::spawn(watch_file(
                    connection,
                    seen,
                    file.pool.clone(),
                    Arc::downgrade(signals),
                ));
                Ok::<(), super::StoreError>(())
            })
            .await?;
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

/// Wakes every waiter when another connection committed to the SQLite file, until the store
/// is closed or gone. A read that fails (the file busy for long) wakes them too: they look.
async fn watch_file(
    mut connection: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    mut seen: i64,
    pool: SqlitePool,
    signals: Weak<Signals>,
) {
    let mut tick = tokio::time::interval(FILE_LOOK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        let version = sqlx::query_scalar::<_, i64>("PRAGMA data_version")
            .fetch_one(&mut *connection)
            .await;
        let Some(signals) = signals.upgrade() else {
            return;
        };
        match version {
            Ok(version) if version == seen => {}
            Ok(version) => {
                seen = version;
                Topic::ALL.into_iter().for_each(|topic| signals.wake(topic));
            }
            Err(_) => Topic::ALL.into_iter().for_each(|topic| signals.wake(topic)),
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
        self.signals.wake(topic);
        if let (super::Pool::Postgres(pool), Some(remote)) = (&self.pool, &self.signals.remote) {
            // A wake-up lost in a server crash is harmless (listeners reconnect and look),
            // so its commit does not wait for the disk (see `Store::relaxed`).
            let _ = sqlx::query(concat!("SELECT pg_notify($1, $2), ", no_flush_wait!()))
                .bind(topic.channel())
                .bind(&remote.token)
                .execute(pool)
                .await;
        }
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

    /// Consumes every signal already delivered; returns whether there was one.
    fn drain(&mut self) -> bool {
        let any = self.local.has_changed().unwrap_or(false);
        self.local.mark_unchanged();
        any
    }
}
