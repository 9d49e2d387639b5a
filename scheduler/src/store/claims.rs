//! Claims and leases: how workers take queued tasks and prove they still hold them.
//!
//! A claim moves up to `limit` queued tasks that compute and `light_limit` of the light kinds
//! (see [`light_kinds!`]), best first (priority, then queue time), to
//! `running` and opens an attempt for each, in one transaction. On PostgreSQL the candidates
//! are locked with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on each other
//! and never take the same task; SQLite has one writer at a time, which gives the same result.
//! A claim carries a lease that its owner extends; [`Store::expired_leases`] finds the tasks of
//! owners that stopped, and [`Store::reap_lease`] ends such an attempt as `lost`, fenced by the
//! attempt number so a late report from the old owner changes nothing.

use super::{Pool, Result, RunRecord, Store, StoreError, TaskRecord};
use crate::state::TaskState;

/// Who claims, how many, and for how long.
#[derive(Clone, Debug)]
pub struct ClaimRequest<'a> {
    pub owner: &'a str,
    /// Whether the claimer has a GPU; tasks that asked for `device: gpu` wait for one that does.
    pub has_gpu: bool,
    /// At most this many tasks that compute (everything but the light kinds).
    pub limit: i64,
    /// At most this many tasks of the light kinds (`empty`, a sensor's poke).
    pub light_limit: i64,
    pub lease_ms: i64,
    pub now_ms: i64,
}

/// The worker that takes a run's next task itself, into the slot of the task that just ended
/// (see [`Store::claim_next`]).
#[derive(Clone, Debug)]
pub struct NextClaim<'a> {
    pub owner: &'a str,
    pub has_gpu: bool,
    /// The weight of the freed slot: a light one (see [`light_kinds!`]) or a CPU slot.
    pub light: bool,
    pub lease_ms: i64,
}

/// A run's decision after one of its tasks ended, made inside the end's transaction
/// (SQLite, see [`Store::finish_and_read`]): `choose` is given the run and its tasks as the
/// end left them and names the one task the decision readies, with the decision's time, where
/// that is all the decision does; the task is then claimed for `owner` as
/// [`Store::claim_next`] claims it, in the same transaction. `None` leaves the decision to
/// the caller.
pub struct FollowOn {
    pub owner: String,
    pub has_gpu: bool,
    /// The weight of the freed slot (see [`NextClaim::light`]).
    pub light: bool,
    pub lease_ms: i64,
    pub choose: Box<ChooseNext>,
}

/// See [`FollowOn::choose`]: the task to claim and the decision's time (ms).
pub type ChooseNext = dyn Fn(&RunRecord, &[TaskRecord]) -> Option<(String, i64)> + Send + Sync;

impl FollowOn {
    pub fn next(&self) -> NextClaim<'_> {
        NextClaim {
            owner: &self.owner,
            has_gpu: self.has_gpu,
            light: self.light,
            lease_ms: self.lease_ms,
        }
    }
}

impl std::fmt::Debug for FollowOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowOn")
            .field("owner", &self.owner)
            .field("light", &self.light)
            .finish_non_exhaustive()
    }
}

/// What a worker advertises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub host: String,
    pub slots: i64,
    pub gpus: i64,
    pub memory_bytes: i64,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
}

/// A task this owner now runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Claim {
    pub run_id: i64,
    pub task_id: String,
    pub attempt_id: i64,
    pub attempt: i64,
    /// A task of a light kind, which takes a light slot rather than a CPU slot.
    pub light: bool,
}

/// A running task whose lease ran out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredLease {
    pub run_id: i64,
    pub task_id: String,
    pub attempt: i64,
    pub owner: Option<String>,
}

/// Ends an attempt whose owner is gone.
#[derive(Clone, Debug)]
pub struct ReapLease {
    pub run_id: i64,
    pub task_id: String,
    pub attempt: i64,
    /// `up_for_retry` or `failed`, as `decide::after_failure` says.
    pub task_state: TaskState,
    pub retry_at_ms: Option<i64>,
    pub reason: String,
    pub now_ms: i64,
}

/// The kinds of task that use no CPU while they run (an `empty` task does nothing; a sensor
/// pokes a file or a small query and gives its slot back): a worker claims them into its light
/// slots, beyond its CPU slots. Written as SQL; the test `light_kinds_are_the_loaders_names`
/// holds it to the DAG model's `TaskKind::is_light`.
macro_rules! light_kinds {
    () => {
        "('empty', 'wait')"
    };
}

/// The queued tasks a claim takes, best first, of one weight (`IN` or `NOT IN` the light
/// kinds): `$1` for the CPU slots, `$6` for the light ones. Each is served by its own partial
/// index, `task_instances_claimable` or `task_instances_claimable_light` (migration 0026;
/// see `postgres_claim_query_uses_its_index`), whose `WHERE` these conditions repeat word for
/// word, so that neither pick walks past the other kind's queued tasks. Tasks of runs an
/// `amdahl run` process owns are that process's to start, never a worker's.
macro_rules! candidates {
    ($columns:literal, $weight:literal, $limit:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM task_instances WHERE ",
            claimable!($weight),
            " ORDER BY priority DESC, queued_at_ms, run_id, task_id LIMIT ",
            $limit
        )
    };
}

/// The conditions a queued task meets for a claim of one weight (see [`candidates!`]), with
/// `$2` for whether the claimer has a GPU.
macro_rules! claimable {
    ($weight:literal) => {
        concat!(
            "state = 'queued' AND in_process = 0 AND kind ",
            $weight,
            " ",
            light_kinds!(),
            " AND (device_pref <> 'gpu' OR $2)"
        )
    };
}

/// A worker's hand-off claims the chain's next link in the statement that would queue it (see
/// [`Store::claim_next`]): `$3` moves from `scheduled` straight to `running` under the lease,
/// if it is of the slot's weight, runs on this worker (`$2`: it has a GPU), is outside pools
/// and `amdahl run`'s runs, and no queued task this claim could take is as good (a claim
/// takes the best first: higher priority, then earlier queued, and every queued task was
/// queued before this one). `$1` run, `$4` now, `$5` owner, `$6` lease end.
macro_rules! claim_next {
    ($weight:literal) => {
        concat!(
            "UPDATE task_instances SET state = 'running', attempts = attempts + 1, queued_at_ms = $4, \
                started_at_ms = $4, error = NULL, retry_at_ms = NULL, lease_owner = $5, lease_expires_at_ms = $6 \
             WHERE run_id = $1 AND task_id = $3 AND state = 'scheduled' AND pool IS NULL AND in_process = 0 \
               AND kind ",
            $weight,
            " ",
            light_kinds!(),
            " AND (device_pref <> 'gpu' OR $2) \
               AND NOT EXISTS (SELECT 1 FROM task_instances q WHERE ",
            claimable!($weight),
            " AND q.priority >= task_instances.priority) \
             RETURNING attempts"
        )
    };
}

/// [`claim_next!`] and its attempt, in one statement on PostgreSQL (durable, as every claim).
macro_rules! claim_next_postgres {
    ($weight:literal) => {
        concat!(
            "WITH claimed AS (",
            claim_next!($weight),
            ", run_id, task_id), \
             opened AS ( \
                INSERT INTO task_attempts (run_id, task_id, attempt, state, owner, started_at_ms, started_at_us) \
                SELECT run_id, task_id, attempts, 'running', $5, $4, $7 FROM claimed RETURNING attempt, id) \
             SELECT attempt, id FROM opened"
        )
    };
}

/// On PostgreSQL the whole claim is one statement (one round trip): pick, mark running with
/// the lease, and open the attempts. The picked rows are updated by their `ctid` (a TID scan:
/// they are locked, so it cannot move meanwhile), not by a join on the key, which the planner
/// made a hash join over a scan of every task ever run (18 ms for 256 claims among 10,000
/// tasks, growing with the table, against 8 ms).
const CLAIM_POSTGRES: &str = concat!(
    "WITH compute AS (",
    candidates!("ctid", "NOT IN", "$1"),
    " FOR UPDATE SKIP LOCKED), light AS (",
    candidates!("ctid", "IN", "$6"),
    " FOR UPDATE SKIP LOCKED), \
     claimed AS ( \
        UPDATE task_instances t SET state = 'running', attempts = t.attempts + 1, started_at_ms = $3, \
            error = NULL, retry_at_ms = NULL, lease_owner = $4, lease_expires_at_ms = $5 \
        WHERE t.ctid = ANY (ARRAY(SELECT ctid FROM compute UNION ALL SELECT ctid FROM light)) \
        RETURNING t.run_id, t.task_id, t.attempts, t.kind IN ",
    light_kinds!(),
    " AS light), \
     opened AS ( \
        INSERT INTO task_attempts (run_id, task_id, attempt, state, owner, started_at_ms, started_at_us) \
        SELECT run_id, task_id, attempts, 'running', $4, $3, $7 FROM claimed \
        RETURNING run_id, task_id, attempt, id AS attempt_id) \
     SELECT o.run_id, o.task_id, o.attempt, o.attempt_id, c.light \
     FROM opened o JOIN claimed c USING (run_id, task_id)"
);

const CLAIM_SQLITE: &str = concat!(
    "UPDATE task_instances SET state = 'running', attempts = attempts + 1, started_at_ms = $3, \
        error = NULL, retry_at_ms = NULL, lease_owner = $4, lease_expires_at_ms = $5 \
     WHERE (run_id, task_id) IN (SELECT * FROM (",
    candidates!("run_id, task_id", "NOT IN", "$1"),
    ") UNION ALL SELECT * FROM (",
    candidates!("run_id, task_id", "IN", "$6"),
    ")) RETURNING run_id, task_id, attempts, kind IN ",
    light_kinds!(),
    " AS light"
);

/// A claimed task with its new attempt, as the PostgreSQL claim returns it.
#[derive(sqlx::FromRow)]
struct ClaimRow {
    run_id: i64,
    task_id: String,
    attempt: i64,
    attempt_id: i64,
    light: bool,
}

/// A claimed task, as the SQLite claim returns it (its attempt is opened next).
#[derive(sqlx::FromRow)]
struct ClaimedTask {
    run_id: i64,
    task_id: String,
    attempts: i64,
    light: bool,
}

const OPEN_ATTEMPT: &str = "INSERT INTO task_attempts (run_id, task_id, attempt, state, owner, started_at_ms, started_at_us) \
     VALUES ($1, $2, $3, 'running', $4, $5, $6) RETURNING id";

impl Store {
    /// Claims up to `limit` queued tasks for `owner`; see the module docs.
    pub async fn claim_tasks(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>> {
        let expires = request.now_ms.saturating_add(request.lease_ms);
        match &self.pool {
            Pool::Postgres(pool) => {
                let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_POSTGRES)
                    .bind(request.limit)
                    .bind(request.has_gpu)
                    .bind(request.now_ms)
                    .bind(request.owner)
                    .bind(expires)
                    .bind(request.light_limit)
                    .bind(super::wall_us())
                    .fetch_all(pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| Claim {
                        run_id: row.run_id,
                        task_id: row.task_id,
                        attempt_id: row.attempt_id,
                        attempt: row.attempt,
                        light: row.light,
                    })
                    .collect())
            }
            // SQLite has no data-modifying CTEs: claim, then open each attempt, in one
            // transaction (SQLite runs one writer at a time, so nothing is skipped or locked).
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let rows: Vec<ClaimedTask> = sqlx::query_as(CLAIM_SQLITE)
                    .bind(request.limit)
                    .bind(request.has_gpu)
                    .bind(request.now_ms)
                    .bind(request.owner)
                    .bind(expires)
                    .bind(request.light_limit)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut claims = Vec::with_capacity(rows.len());
                let started_us = super::wall_us();
                for row in rows {
                    let attempt_id: i64 = sqlx::query_scalar(OPEN_ATTEMPT)
                        .bind(row.run_id)
                        .bind(&row.task_id)
                        .bind(row.attempts)
                        .bind(request.owner)
                        .bind(request.now_ms)
                        .bind(started_us)
                        .fetch_one(&mut *tx)
                        .await?;
                    claims.push(Claim {
                        run_id: row.run_id,
                        task_id: row.task_id,
                        attempt_id,
                        attempt: row.attempts,
                        light: row.light,
                    });
                }
                tx.commit().await?;
                Ok(claims)
            }
        }
    }

    /// Claims `task_id` of `run_id`, a task just found ready, for the worker that decided so
    /// after one of its tasks ended, into the slot that task frees: `scheduled` straight to
    /// `running` with a new attempt, in one statement on PostgreSQL (a transaction on SQLite),
    /// instead of queueing it and claiming it in two. `None` (nothing changed) unless the task
    /// is still `scheduled`, outside pools, of the slot's weight (`next.light`), runs on this
    /// worker, and no queued task is as good (see [`claim_next!`]); the caller then queues it
    /// as usual.
    pub async fn claim_next(
        &self,
        next: &NextClaim<'_>,
        run_id: i64,
        task_id: &str,
        now_ms: i64,
    ) -> Result<Option<Claim>> {
        let expires = now_ms.saturating_add(next.lease_ms);
        let found: Option<(i64, i64)> = match &self.pool {
            Pool::Postgres(pool) => {
                let sql = if next.light {
                    claim_next_postgres!("IN")
                } else {
                    claim_next_postgres!("NOT IN")
                };
                let query = sqlx::query_as(sql)
                    .bind(run_id)
                    .bind(next.has_gpu)
                    .bind(task_id)
                    .bind(now_ms)
                    .bind(next.owner)
                    .bind(expires)
                    .bind(super::wall_us());
                self.kept
                    .postgres
                    .run(pool, async |conn| query.fetch_optional(conn).await)
                    .await?
            }
            Pool::Sqlite(pool) => {
                self.kept
                    .sqlite
                    .run(pool, async |conn| {
                        claim_next_sqlite(conn, next, (run_id, task_id), now_ms).await
                    })
                    .await?
            }
        };
        Ok(found.map(|(attempt, attempt_id)| Claim {
            run_id,
            task_id: task_id.to_string(),
            attempt_id,
            attempt,
            light: next.light,
        }))
    }
    /// Records (or refreshes) a worker's advertisement.
    pub async fn register_worker(&self, info: &WorkerInfo) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO workers (worker_id, host, slots, gpus, memory_bytes, started_at_ms, heartbeat_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (worker_id) DO UPDATE SET slots = $3, gpus = $4, memory_bytes = $5, heartbeat_at_ms = $7",
            )
            .bind(&info.worker_id)
            .bind(&info.host)
            .bind(info.slots)
            .bind(info.gpus)
            .bind(info.memory_bytes)
            .bind(info.started_at_ms)
            .bind(info.heartbeat_at_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Workers that beat after `since_ms`, newest first.
    pub async fn live_workers(&self, since_ms: i64) -> Result<Vec<WorkerInfo>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            worker_id: String,
            host: String,
            slots: i64,
            gpus: i64,
            memory_bytes: i64,
            started_at_ms: i64,
            heartbeat_at_ms: i64,
        }
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT worker_id, host, slots, gpus, memory_bytes, started_at_ms, heartbeat_at_ms FROM workers \
                 WHERE heartbeat_at_ms > $1 ORDER BY heartbeat_at_ms DESC",
            )
            .bind(since_ms)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| WorkerInfo {
                worker_id: row.worker_id,
                host: row.host,
                slots: row.slots,
                gpus: row.gpus,
                memory_bytes: row.memory_bytes,
                started_at_ms: row.started_at_ms,
                heartbeat_at_ms: row.heartbeat_at_ms,
            })
            .collect())
    }

    /// Extends every lease `owner` holds (except those it gave up); returns the (run, task)
    /// pairs it still holds, so the worker can stop stages whose task was cancelled or reaped.
    pub async fn extend_leases(
        &self,
        owner: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<(i64, String)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            run_id: i64,
            task_id: String,
        }
        let held: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "UPDATE task_instances SET lease_expires_at_ms = $1 WHERE state = 'running' AND lease_owner = $2 \
                   AND lease_expires_at_ms <> 0 RETURNING run_id, task_id",
            )
            .bind(now_ms.saturating_add(lease_ms))
            .bind(owner)
            .fetch_all(pool)
            .await?
        });
        Ok(held
            .into_iter()
            .map(|row| (row.run_id, row.task_id))
            .collect())
    }

    /// Gives up `owner`'s lease on a running task at once: the next reaper pass ends its
    /// attempt as `lost` and retries the task. For a worker that can no longer report the
    /// attempt's end (see the worker's renewal).
    pub async fn give_up_lease(&self, owner: &str, run_id: i64, task_id: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE task_instances SET lease_expires_at_ms = 0 \
                 WHERE run_id = $1 AND task_id = $2 AND lease_owner = $3 AND state = 'running'",
            )
            .bind(run_id)
            .bind(task_id)
            .bind(owner)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Running tasks whose lease expired before `now_ms`.
    pub async fn expired_leases(&self, now_ms: i64) -> Result<Vec<ExpiredLease>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            run_id: i64,
            task_id: String,
            attempts: i64,
            lease_owner: Option<String>,
        }
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT run_id, task_id, attempts, lease_owner FROM task_instances \
                 WHERE state = 'running' AND lease_expires_at_ms < $1 ORDER BY lease_expires_at_ms",
            )
            .bind(now_ms)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| ExpiredLease {
                run_id: row.run_id,
                task_id: row.task_id,
                attempt: row.attempts,
                owner: row.lease_owner,
            })
            .collect())
    }

    /// Ends an expired attempt as `lost` and moves its task on. Returns false (and changes
    /// nothing) if the attempt already ended or its lease was extended meanwhile.
    pub async fn reap_lease(&self, reap: &ReapLease) -> Result<bool> {
        if !matches!(reap.task_state, TaskState::UpForRetry | TaskState::Failed) {
            return Err(StoreError::IllegalTransition(format!(
                "reaping to {}",
                reap.task_state
            )));
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let tasks = sqlx::query(
                "UPDATE task_instances SET state = $1, retry_at_ms = $2, error = $3, lease_owner = NULL, \
                    lease_expires_at_ms = NULL, finished_at_ms = CASE WHEN $1 = 'failed' THEN $4 ELSE NULL END \
                 WHERE run_id = $5 AND task_id = $6 AND state = 'running' AND attempts = $7 \
                   AND lease_expires_at_ms < $4",
            )
            .bind(reap.task_state.as_str())
            .bind(reap.retry_at_ms)
            .bind(&reap.reason)
            .bind(reap.now_ms)
            .bind(reap.run_id)
            .bind(&reap.task_id)
            .bind(reap.attempt)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if tasks != 1 {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE task_attempts SET state = 'lost', error = $1, finished_at_ms = $2, finished_at_us = $6 \
                 WHERE run_id = $3 AND task_id = $4 AND attempt = $5 AND state = 'running'",
            )
            .bind(&reap.reason)
            .bind(reap.now_ms)
            .bind(reap.run_id)
            .bind(&reap.task_id)
            .bind(reap.attempt)
            .bind(super::wall_us())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Test support: the plans PostgreSQL chooses for the claim's two candidate scans, each
    /// after its label (`--- compute`, `--- light`).
    #[cfg(feature = "testing")]
    pub async fn explain_claim_for_test(&self) -> Result<String> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(StoreError::BadUrl(
                "EXPLAIN of the claim is a PostgreSQL check".into(),
            ));
        };
        let mut tx = pool.begin().await?;
        sqlx::query("ANALYZE task_instances")
            .execute(&mut *tx)
            .await?;
        let mut lines: Vec<String> = Vec::new();
        for (label, sql) in [
            (
                "--- compute",
                concat!(
                    "EXPLAIN ",
                    candidates!("ctid", "NOT IN", "$1"),
                    " FOR UPDATE SKIP LOCKED"
                ),
            ),
            (
                "--- light",
                concat!(
                    "EXPLAIN ",
                    candidates!("ctid", "IN", "$1"),
                    " FOR UPDATE SKIP LOCKED"
                ),
            ),
        ] {
            lines.push(label.into());
            let plan: Vec<String> = sqlx::query_scalar(sql)
                .bind(10i64)
                .bind(false)
                .fetch_all(&mut *tx)
                .await?;
            lines.extend(plan);
        }
        tx.commit().await?;
        Ok(lines.join("\n"))
    }
}

/// [`Store::claim_next`] on SQLite, in one transaction on `conn`.
async fn claim_next_sqlite(
    conn: &mut sqlx::SqliteConnection,
    next: &NextClaim<'_>,
    task: (i64, &str),
    now_ms: i64,
) -> Result<Option<(i64, i64)>> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    let found = claim_next_in(&mut tx, next, task, now_ms).await?;
    if found.is_some() {
        tx.commit().await?;
    }
    Ok(found)
}

/// [`Store::claim_next`]'s statements on SQLite, in the caller's transaction: the task
/// (`run_id`, `task_id`) `scheduled` → `running` ([`claim_next!`] for the slot's weight), then
/// its attempt opened. Returns the attempt number and id.
pub(super) async fn claim_next_in(
    tx: &mut sqlx::SqliteConnection,
    next: &NextClaim<'_>,
    (run_id, task_id): (i64, &str),
    now_ms: i64,
) -> Result<Option<(i64, i64)>> {
    let sql = if next.light {
        claim_next!("IN")
    } else {
        claim_next!("NOT IN")
    };
    let expires = now_ms.saturating_add(next.lease_ms);
    let attempt: Option<i64> = sqlx::query_scalar(sql)
        .bind(run_id)
        .bind(next.has_gpu)
        .bind(task_id)
        .bind(now_ms)
        .bind(next.owner)
        .bind(expires)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(attempt) = attempt else {
        return Ok(None);
    };
    let attempt_id: i64 = sqlx::query_scalar(OPEN_ATTEMPT)
        .bind(run_id)
        .bind(task_id)
        .bind(attempt)
        .bind(next.owner)
        .bind(now_ms)
        .bind(super::wall_us())
        .fetch_one(&mut *tx)
        .await?;
    Ok(Some((attempt, attempt_id)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn light_kinds_are_the_loaders_names() {
        let names: Vec<String> = amdahl_dags::TaskKind::LIGHT
            .iter()
            .map(|name| format!("'{name}'"))
            .collect();
        assert_eq!(light_kinds!(), format!("({})", names.join(", ")));
    }

    /// The claim's conditions repeat the partial indexes' `WHERE` (migration 0026) word for
    /// word, which is what lets SQLite (and PostgreSQL) use them.
    #[test]
    fn the_claim_repeats_its_indexes_conditions() {
        for (migration, index) in [
            (
                include_str!("../../../migrations/sqlite/0026_light_claims.sql"),
                "sqlite",
            ),
            (
                include_str!("../../../migrations/postgres/0026_light_claims.sql"),
                "postgres",
            ),
        ] {
            for (weight, sql) in [
                ("NOT IN", candidates!("ctid", "NOT IN", "$1")),
                ("IN", candidates!("ctid", "IN", "$6")),
            ] {
                let condition = format!(
                    "state = 'queued' AND in_process = 0 AND kind {weight} {}",
                    light_kinds!()
                );
                assert!(
                    migration.contains(&format!("WHERE {condition};")),
                    "{index}"
                );
                assert!(sql.contains(&condition), "{sql}");
            }
        }
    }
}
