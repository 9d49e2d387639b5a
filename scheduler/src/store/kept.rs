//! The connection the hot path keeps: a worker's lone attempt end (with the run read back)
//! and the claim of a chain's next link run on one connection that stays out of the pool
//! between them.
//!
//! Why: sqlx checks every connection given back to its pool with a round trip (a `ping`: on
//! PostgreSQL a `Sync` answered by the server process, on SQLite a message to and from the
//! connection's thread), spawned beside the caller's next statement. A chain makes two
//! statements per link, so two extra round trips competed for the CPU with the next link;
//! measured on a two-core machine, PostgreSQL, a chain of 40 `shell` tasks: a link went from
//! 3.22 to 2.71 ms (medians; see BENCHMARKS.md, "The hot path keeps its connection").
//!
//! One connection per store (per process): a caller that finds it in use takes a pool
//! connection as before, so a wide run's many ends and claims do not queue behind it. The
//! connection is taken out of its slot while a statement runs and put back only when the
//! statement succeeded: a failed statement (the server gone, a conflict) or a caller
//! cancelled halfway hands it back to the pool, which checks it as usual and drops it if it
//! is broken.

use sqlx::pool::PoolConnection;

use super::Result;

/// One kept connection per database kind (only the store's own kind is ever filled).
#[derive(Debug, Default)]
pub(super) struct Kept {
    pub(super) postgres: Slot<sqlx::Postgres>,
    pub(super) sqlite: Slot<sqlx::Sqlite>,
}

impl Kept {
    /// Gives the kept connections back (before the pool closes, which waits for them).
    pub(super) async fn release(&self) {
        drop(self.postgres.0.lock().await.take());
        drop(self.sqlite.0.lock().await.take());
    }
}

#[derive(Debug)]
pub(super) struct Slot<DB: sqlx::Database>(tokio::sync::Mutex<Option<PoolConnection<DB>>>);

impl<DB: sqlx::Database> Default for Slot<DB> {
    fn default() -> Self {
        Slot(tokio::sync::Mutex::new(None))
    }
}

impl<DB: sqlx::Database> Slot<DB> {
    /// Runs `work` on the kept connection (opened from `pool` the first time), or on a pool
    /// connection while the kept one is busy.
    pub(super) async fn run<T, E>(
        &self,
        pool: &sqlx::Pool<DB>,
        work: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<sqlx::Error>,
    {
        let Ok(mut slot) = self.0.try_lock() else {
            let mut conn = pool.acquire().await?;
            return work(&mut conn).await;
        };
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => pool.acquire().await?,
        };
        let done = work(&mut conn).await;
        if done.is_ok() {
            *slot = Some(conn);
        }
        done
    }
}
