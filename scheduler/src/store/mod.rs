//! The state store: every piece of DAG and run state, in PostgreSQL or SQLite.
//!
//! **Invariant:** only this module writes SQL. Every query is written once, with `$n`
//! placeholders that both databases accept, and runs on whichever pool the URL chose. State
//! changes are fenced: an update names the state it expects to leave (and, for attempts, the
//! attempt number), so a stale writer changes nothing and gets [`StoreError::Conflict`].

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::state::{RunState, TaskState};

/// Runs `$body` with `$pool` bound to the concrete pool, once per database kind.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Postgres($pool) => $body,
            Pool::Sqlite($pool) => $body,
        }
    };
}

/// Inside a transaction `$tx`: the asset events of end `$f` when it is a success with
/// `produces:` (each once, see `assets::PRODUCED_EVENT`).
macro_rules! record_produced {
    ($tx:expr, $f:expr) => {
        if $f.task_state == crate::state::TaskState::Success {
            for asset in &$f.produces {
                sqlx::query(crate::store::assets::PRODUCED_EVENT)
                    .bind(asset.as_str())
                    .bind($f.run_id)
                    .bind($f.task_id.as_str())
                    .bind($f.attempt)
                    .bind($f.now_ms)
                    .execute(&mut *$tx)
                    .await?;
            }
        }
    };
}

/// Inside a transaction `$tx`: when end `$f` is a mapped task's expansion, its instances
/// replace any earlier ones and the tasks downstream of it are pointed at them (see the
/// `mapping` module).
macro_rules! expand_mapped {
    ($tx:expr, $f:expr) => {
        if let Some(values) = &$f.mapped
            && matches!($f.task_state, TaskState::Success | TaskState::Skipped)
        {
            use crate::store::mapping;
            let parent: mapping::Parent = sqlx::query_as(mapping::PARENT)
                .bind($f.run_id)
                .bind($f.task_id.as_str())
                .fetch_one(&mut *$tx)
                .await?;
            sqlx::query(mapping::DELETE_INSTANCES)
                .bind($f.run_id)
                .bind(format!("{}[", $f.task_id))
                .execute(&mut *$tx)
                .await?;
            let ids: Vec<String> = (0..values.len())
                .map(|i| amdahl_dags::mapping::instance_id(&$f.task_id, i))
                .collect();
            let needs = serde_json::to_string(&[&$f.task_id]).unwrap_or_else(|_| "[]".into());
            for (chunk_index, chunk) in values.chunks(crate::store::INSERT_CHUNK).enumerate() {
                let mut insert = sqlx::QueryBuilder::new(mapping::INSERT_INSTANCES);
                insert.push_values(chunk.iter().enumerate(), |mut row, (i, value)| {
                    let index = chunk_index * crate::store::INSERT_CHUNK + i;
                    row.push_bind($f.run_id)
                        .push_bind(ids[index].clone())
                        .push_bind(parent.position)
                        .push_bind(parent.kind.clone())
                        .push("'scheduled'")
                        .push_bind(needs.clone())
                        .push_bind(parent.priority)
                        .push_bind(parent.retries)
                        .push_bind(parent.retry_delay_ms)
                        .push_bind(parent.timeout_ms)
                        .push_bind(parent.device_pref.clone())
                        .push_bind(parent.pool.clone())
                        .push_bind(parent.in_process)
                        .push("'all_success'")
                        .push_bind(parent.max_retry_delay_ms)
                        .push_bind(false)
                        .push_bind(index as i64)
                        .push_bind(value.clone());
                });
                insert.build().execute(&mut *$tx).await?;
            }
            let candidates: Vec<(String, String)> = sqlx::query_as(mapping::MAYBE_DOWNSTREAM)
                .bind($f.run_id)
                .bind(mapping::downstream_pattern(&$f.task_id))
                .fetch_all(&mut *$tx)
                .await?;
            for (task_id, needs_json) in candidates {
                let needs: Vec<String> = serde_json::from_str(&needs_json)
                    .map_err(|e| StoreError::Corrupt(format!("needs_json: {e}")))?;
                if let Some(new) = mapping::rewrite_needs(&needs, &$f.task_id, &ids) {
                    sqlx::query(mapping::SET_NEEDS)
                        .bind(serde_json::to_string(&new).unwrap_or_else(|_| "[]".into()))
                        .bind($f.run_id)
                        .bind(task_id)
                        .execute(&mut *$tx)
                        .await?;
                }
            }
        }
    };
}

/// The columns of `task_instances` that `TaskRow` reads.
macro_rules! task_columns {
    () => {
        concat!(
            "task_id, kind, state, needs_json, priority, retries, retry_delay_ms, timeout_ms, attempts, ",
            "retry_at_ms, device, output_path, rows_out, bytes_out, error, started_at_ms, finished_at_ms, pool, ",
            "trigger_rule, skip_note, max_retry_delay_ms, depends_on_past, pokes, waiting_since_ms, map_index, map_value"
        )
    };
}

/// Task instance rows, with the columns `TaskRow` reads.
macro_rules! select_tasks {
    ($rest:expr) => {
        concat!("SELECT ", task_columns!(), " FROM task_instances ", $rest)
    };
}

/// The select list and join every run query shares, as a literal so queries stay constants.
macro_rules! select_runs {
    ($rest:expr) => {
        concat!(
            "SELECT r.id, r.dag_id, r.dag_version_id, v.hash, r.state, r.params_json, r.logical_date, ",
            "r.max_active_tasks, r.owner, r.heartbeat_at_ms, r.note, r.created_at_ms, r.started_at_ms, ",
            "r.finished_at_ms, r.cancel_requested_at_ms, r.run_timeout_ms FROM runs r JOIN dag_versions v ON v.id = r.dag_version_id ",
            $rest
        )
    };
}

/// The runs that the scheduler service (and a worker's hand-off) decide, as the condition on
/// `runs r`: unfinished, not owned by an `amdahl run` process, and of a DAG that is not
/// paused unless someone asked to cancel the run.
macro_rules! service_run {
    () => {
        "r.state IN ('queued', 'running') AND r.owner IS NULL \
         AND (r.cancel_requested_at_ms IS NOT NULL \
              OR NOT EXISTS (SELECT 1 FROM dags d WHERE d.dag_id = r.dag_id AND d.paused <> 0))"
    };
}

/// The writing process's clock in µs since the Unix epoch, stamped on an attempt when its start
/// and its end are written (`task_attempts.started_at_us` and `finished_at_us`, migration
/// 0028): what lets a benchmark see what happens between one task's end and the next one's
/// start below the millisecond. Not the callers' `now_ms` (their `Clock`, fake in tests):
/// these stamps decide nothing.
pub(crate) fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Rows per multi-row statement: 1,000 rows of up to 16 values stay under both databases'
/// limits on bound values (65,535 on PostgreSQL, 32,766 on SQLite).
const INSERT_CHUNK: usize = 1_000;

/// The call that makes the statement's transaction commit without waiting for the WAL flush
/// on PostgreSQL (`SET LOCAL synchronous_commit = off`), as a literal for `concat!`; where it
/// is used and why that is safe: [`Store::relaxed`].
macro_rules! no_flush_wait {
    () => {
        "set_config('synchronous_commit', 'off', true)"
    };
}

mod assets;
mod attempts;
mod backfills;
mod claims;
mod clear;
mod connect;
mod dags;
mod events;
mod imports;
mod kept;
mod logs;
mod mapping;
mod metrics;
mod notifications;
mod pools;
mod profiles;
mod records;
mod runs;
mod tasks;
mod tokens;
mod views;
mod wake_file;

pub use assets::{AssetEvent, AssetLink, AssetSummary, CursorMove, Watched};
pub use backfills::{BackfillRecord, DatedRun, NewBackfill};
pub use claims::{Claim, ClaimRequest, ExpiredLease, FollowOn, NextClaim, ReapLease, WorkerInfo};
pub use connect::Connections;
pub use events::{Subscription, Topic};
pub use imports::ImportError;
pub use metrics::Counts;
pub use notifications::{Delivery, NewNotification, NotificationRecord, NotificationState};
pub use pools::PoolRecord;
pub use profiles::ProfileRecord;
pub use tokens::TokenRecord;
pub use views::{StateCount, TaskCell};

pub use records::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    BadUrl(String),
    /// A fenced update found the row in another state (someone else moved it first).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The code asked for a lifecycle edge that does not exist; nothing was written.
    #[error("illegal transition {0}")]
    IllegalTransition(String),
    /// A write shared by several callers (a worker's batch of attempt ends) failed; each
    /// caller gets the message.
    #[error("{0}")]
    Batch(String),
}

impl StoreError {
    /// Whether trying again later may succeed: the database went away or is restarting, the
    /// pool could not hand out a connection in time, or the server gave up on a statement
    /// (a deadlock, a serialization failure, a statement or lock timeout, SQLite busy).
    /// Services back off and retry these; anything else is a bug or bad data and stops them.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(error)
            | StoreError::Migrate(sqlx::migrate::MigrateError::Execute(error)) => {
                sqlx_transient(error)
            }
            _ => false,
        }
    }
}

fn sqlx_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| transient_code(&code)),
        _ => false,
    }
}

/// SQLSTATEs (PostgreSQL) and result codes (SQLite) that mean "try again".
fn transient_code(code: &str) -> bool {
    // Connection exceptions, server shutting down or starting, too many connections.
    if code.starts_with("08") || code.starts_with("57P") || code == "53300" {
        return true;
    }
    // Serialization failure, deadlock, statement cancelled (statement_timeout), lock
    // timeout.
    if matches!(code, "40001" | "40P01" | "57014" | "55P03") {
        return true;
    }
    // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
    code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

/// Waits between tries of a store operation that failed transiently: 100 ms, doubling to
/// 5 s, with jitter so that many processes do not come back at the same instant.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(5);

    /// The wait before the next try, and doubles the one after it.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MOST);
        // Up to a quarter more, from the clock's nanoseconds: enough to spread processes.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        wait + wait.mul_f64(f64::from(nanos % 1_000) / 4_000.0)
    }

    /// After a success: the next failure waits the shortest time again.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// An exclusive advisory lock (flock) held until the file is dropped.
async fn lock_file(path: std::path::PathBuf) -> Result<std::fs::File> {
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::BadUrl(format!("cannot open {}: {e}", path.display())))?;
        // SAFETY: flock on a descriptor this function owns; blocks until the lock is free.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(StoreError::BadUrl(format!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(file)
    })
    .await
    .map_err(|e| StoreError::BadUrl(format!("lock task failed: {e}")))?
}

/// Puts a SQLite file in WAL mode, once. Switching the journal mode needs an exclusive lock
/// that SQLite's busy timeout does not wait for, so two processes opening a new file at the
/// same moment would see "database is locked". The switch is made under `<file>.lock`, by one
/// connection, only when the file is not in WAL mode yet; WAL mode is stored in the file, so
/// every later connection (and every pool connection) inherits it without asking. A file
/// whose header already says WAL costs one read of its first bytes: no lock, no connection
/// (about 1 ms of every command on SQLite).
async fn use_wal_once(file: &Path, options: &SqliteConnectOptions) -> Result<()> {
    use sqlx::{ConnectOptions, Connection};
    if is_wal_file(file) {
        return Ok(());
    }
    let mut lock = file.to_path_buf().into_os_string();
    lock.push(".lock");
    let _lock = lock_file(lock.into()).await?;
    let mut conn = options.connect().await?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await?;
    if !mode.eq_ignore_ascii_case("wal") {
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}

/// Whether a SQLite file's header says it is in WAL mode: its file format write and read
/// versions (bytes 18 and 19) are both 2, which SQLite writes when the journal mode becomes
/// WAL and sets back to 1 when it leaves it (see sqlite.org/fileformat.html, "The database
/// header"). A file missing or too short to have a header is not.
fn is_wal_file(file: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(file)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok()
        && header.starts_with(b"SQLite format 3\0")
        && header[18] == 2
        && header[19] == 2
}

fn check_run_edge(from: RunState, to: RunState) -> Result<()> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(StoreError::IllegalTransition(format!(
            "of a run: {from} -> {to}"
        )))
    }
}

fn check_task_edge(from: TaskState, to: TaskState) -> Result<()> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(StoreError::IllegalTransition(format!(
            "of a task: {from} -> {to}"
        )))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Clone, Debug)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A connection pool to the state store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// The SQLite file, whose neighbour `<file>.lock` serialises migrations across processes.
    sqlite_file: Option<std::path::PathBuf>,
    signals: std::sync::Arc<events::Signals>,
    /// The connection the hot path keeps between statements (see [`kept`]).
    kept: std::sync::Arc<kept::Kept>,
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` (the SQLite file and its folder are created)
    /// with [`Connections::SERVICE`].
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, Connections::default()).await
    }

    /// Connects, keeping at most `connections` to PostgreSQL (see [`Connections`]; a server on
    /// this machine is reached without TLS unless the URL asks for it). SQLite, whose writers
    /// take turns on one file, always keeps four.
    pub async fn connect_with(url: &str, connections: Connections) -> Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (pool, options) = connect::postgres(url, connections).await?;
            return Ok(Store {
                pool: Pool::Postgres(pool),
                sqlite_file: None,
                signals: std::sync::Arc::new(events::Signals::postgres(options)),
                kept: Default::default(),
            });
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path_part = rest.trim_start_matches("//");
            let file = path_part.split('?').next().unwrap_or_default();
            if file.is_empty() {
                return Err(StoreError::BadUrl(format!("`{url}` names no SQLite file")));
            }
            if file != ":memory:"
                && let Some(parent) = Path::new(file).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::BadUrl(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::BadUrl(format!("`{url}`: {e}")))?
                .create_if_missing(true)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30));
            if file != ":memory:" {
                use_wal_once(Path::new(file), &options).await?;
            }
            let signals = if file == ":memory:" {
                events::Signals::local()
            } else {
                events::Signals::sqlite_file(Path::new(file))
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            return Ok(Store {
                pool: Pool::Sqlite(pool),
                sqlite_file: (file != ":memory:").then(|| Path::new(file).to_path_buf()),
                signals: std::sync::Arc::new(signals),
                kept: Default::default(),
            });
        }
        Err(StoreError::BadUrl(format!(
            "unsupported database URL `{url}`: use postgres://… or sqlite://…"
        )))
    }

    /// Appended to the `WHERE` of a write whose loss in a *database server* crash costs only
    /// a redo, so that its commit does not wait for the disk: an attempt's end (a lost end
    /// leaves the task running under a lease that its worker gives up or that expires, and
    /// the task is retried, as after a worker crash) and the queueing of ready tasks (decided
    /// again from the run's state). On PostgreSQL `set_config(…, true)` is `SET LOCAL
    /// synchronous_commit = off` for the statement's transaction: the commit returns before
    /// the WAL reaches the disk, and the next durable commit (a claim, a lease renewal, a run
    /// created) flushes it with everything before it. The server's own recovery keeps what
    /// was flushed consistent; nothing is half-written. A claim stays durable: a lost claim
    /// would let a second worker start a task the first still runs. SQLite runs with
    /// `synchronous = NORMAL` (no fsync per commit in WAL mode) for every write already.
    pub(crate) fn relaxed(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => concat!(" AND ", no_flush_wait!(), " = 'off'"),
            Pool::Sqlite(_) => "",
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    /// Applies pending migrations; safe to call on every start.
    /// PostgreSQL serialises concurrent migrators with an advisory lock; SQLite has none, so
    /// two processes starting on a new file at once take an exclusive lock on `<file>.lock`.
    pub async fn migrate(&self) -> Result<()> {
        // Every command opens the store this way: a schema already up to date is one read,
        // not the migrator's lock and half a dozen statements.
        if self.schema_is_current().await {
            return Ok(());
        }
        match &self.pool {
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            Pool::Sqlite(pool) => {
                let _lock = match &self.sqlite_file {
                    Some(file) => {
                        let mut lock = file.clone().into_os_string();
                        lock.push(".lock");
                        Some(lock_file(lock.into()).await?)
                    }
                    None => None,
                };
                SQLITE_MIGRATIONS.run(pool).await?;
            }
        }
        Ok(())
    }

    /// Whether the database holds exactly the migrations this build has, each applied
    /// successfully and unchanged. Anything else (no table yet, a failed or edited migration,
    /// one this build lacks or does not know) is left to the migrator, which applies or
    /// reports it.
    async fn schema_is_current(&self) -> bool {
        let migrator = match self.pool {
            Pool::Postgres(_) => &POSTGRES_MIGRATIONS,
            Pool::Sqlite(_) => &SQLITE_MIGRATIONS,
        };
        let query = "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version";
        let applied: std::result::Result<Vec<(i64, Vec<u8>, bool)>, sqlx::Error> =
            on_pool!(self, pool => sqlx::query_as(query).fetch_all(pool).await);
        let Ok(applied) = applied else {
            return false;
        };
        let mut wanted = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration());
        applied.iter().all(|(version, checksum, success)| {
            *success
                && wanted
                    .next()
                    .is_some_and(|m| m.version == *version && *m.checksum == checksum[..])
        }) && wanted.next().is_none()
    }

    pub async fn close(&self) {
        self.signals.close().await;
        self.kept.release().await;
        on_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod wal_tests {
    use super::*;
    use sqlx::sqlite::SqliteJournalMode;
    use sqlx::{ConnectOptions, Connection};

    async fn journal_mode(file: &Path) -> String {
        let options = SqliteConnectOptions::new().filename(file);
        let mut conn = options.connect().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        mode
    }

    #[tokio::test]
    async fn a_file_in_rollback_mode_is_switched_and_a_wal_file_is_read_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.db");
        assert!(!is_wal_file(&file), "no file yet");
        // A file another program made, in the default rollback mode.
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Delete);
        let mut conn = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        assert!(!is_wal_file(&file), "a rollback-mode file");
        assert_eq!(journal_mode(&file).await, "delete");

        let url = format!("sqlite://{}", file.display());
        let store = Store::connect(&url).await.unwrap();
        store.close().await;
        assert!(is_wal_file(&file), "switched by the first store to open it");
        assert_eq!(journal_mode(&file).await, "wal");
        // Opened again, it is left as it is (the header answers), and still WAL.
        let store = Store::connect(&url).await.unwrap();
        store.close().await;
        assert_eq!(journal_mode(&file).await, "wal");

        // Not a database at all: not WAL (the migrator reports what it is).
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, [2u8; 64]).unwrap();
        assert!(!is_wal_file(&other));
    }
}

#[cfg(test)]
mod transient_tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut backoff = Backoff::default();
        let waits: Vec<Duration> = (0..10).map(|_| backoff.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(100) && waits[0] <= Duration::from_millis(125));
        assert!(waits[1] >= Duration::from_millis(200) && waits[1] <= Duration::from_millis(250));
        assert!(waits[9] >= Duration::from_secs(5) && waits[9] <= Duration::from_millis(6_250));
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_millis(125));
    }

    #[test]
    fn sqlstates_and_sqlite_codes_are_classified() {
        for code in [
            "40001", "40P01", "57014", "55P03", "08006", "57P01", "57P03", "53300", "5", "517", "6",
        ] {
            assert!(transient_code(code), "{code}");
        }
        for code in ["23505", "42601", "42P01", "22P02", "19", "2067", "1"] {
            assert!(!transient_code(code), "{code}");
        }
    }
}
