//! Runs: creating one with its task instances, reading runs, moving a run through its
//! states (fenced by the state it leaves), failing runs whose owner is gone, and deleting
//! old finished ones.

use super::records::RunRow;
use super::{INSERT_CHUNK, NewRun, Pool, Result, RunRecord, Store, StoreError, check_run_edge};
use crate::state::RunState;

macro_rules! set_run_state {
    () => {
        "UPDATE runs SET state = $1, \
            started_at_ms = CASE WHEN $1 = 'running' THEN $2 ELSE started_at_ms END, \
            finished_at_ms = CASE WHEN $1 IN ('success', 'failed', 'cancelled') THEN $2 ELSE finished_at_ms END, \
            note = COALESCE($3, note) \
         WHERE id = $4 AND state = $5"
    };
}

const SET_RUN_STATE: &str = set_run_state!();
const SET_RUN_STATE_RELAXED: &str =
    concat!(set_run_state!(), " AND ", no_flush_wait!(), " = 'off'");

impl Store {
    /// Creates a run in `queued` with every task `scheduled`, owned by `new.owner`. A second
    /// scheduled run for the same DAG and logical date is a `Conflict` and changes nothing.
    ///
    /// A backfill's run is created only while the backfill is running, so a run cannot slip in
    /// after `cancel_backfill`: the check is part of the INSERT (SQLite runs one writer at a
    /// time) and, on PostgreSQL, the backfill row is locked first, so a concurrent cancel waits
    /// for this run and then cancels it too.
    pub async fn create_run(&self, new: &NewRun) -> Result<i64> {
        let lock_backfill = matches!(self.pool, Pool::Postgres(_)) && new.backfill_id.is_some();
        let run_id: i64 = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if lock_backfill {
                sqlx::query("SELECT 1 FROM backfills WHERE id = $1 FOR UPDATE")
                    .bind(new.backfill_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let created: Option<i64> = sqlx::query_scalar(
                "INSERT INTO runs (dag_id, dag_version_id, state, trigger_kind, params_json, logical_date, \
                                   max_active_tasks, owner, heartbeat_at_ms, created_at_ms, backfill_id, notify, \
                                   run_timeout_ms) \
                 SELECT $1, $2, 'queued', $8, $3, $4, $5, $6, $7, $7, $9, $10, $11 \
                 WHERE $9 IS NULL OR EXISTS (SELECT 1 FROM backfills b WHERE b.id = $9 AND b.state = 'running') \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(&new.dag_id)
            .bind(new.dag_version_id)
            .bind(&new.params_json)
            .bind(&new.logical_date)
            .bind(new.max_active_tasks)
            .bind(&new.owner)
            .bind(new.now_ms)
            .bind(new.trigger.as_str())
            .bind(new.backfill_id)
            .bind(new.notify.then_some("watching"))
            .bind(new.run_timeout_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(run_id) = created else {
                return Err(StoreError::Conflict(format!(
                    "a scheduled or backfill run of {} for {} exists already (or its backfill ended)",
                    new.dag_id, new.logical_date
                )));
            };
            // Many rows per statement: a 10,000-task run is ten statements, not 10,000.
            for (chunk_index, chunk) in new.tasks.chunks(INSERT_CHUNK).enumerate() {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO task_instances (run_id, task_id, position, kind, state, needs_json, priority, \
                                                 retries, retry_delay_ms, timeout_ms, device_pref, pool, in_process, \
                                                 trigger_rule, skip_note, max_retry_delay_ms, depends_on_past) ",
                );
                insert.push_values(chunk.iter().enumerate(), |mut row, (i, task)| {
                    let needs = serde_json::to_string(&task.needs).unwrap_or_else(|_| "[]".into());
                    row.push_bind(run_id)
                        .push_bind(task.task_id.clone())
                        .push_bind((chunk_index * INSERT_CHUNK + i) as i64)
                        .push_bind(task.kind.clone())
                        .push("'scheduled'")
                        .push_bind(needs)
                        .push_bind(task.priority)
                        .push_bind(task.retries)
                        .push_bind(task.retry_delay_ms)
                        .push_bind(task.timeout_ms)
                        .push_bind(task.device.to_string())
                        .push_bind(task.pool.clone())
                        .push_bind(i64::from(new.owner.is_some()))
                        .push_bind(task.trigger.name())
                        .push_bind(task.skip_note.clone())
                        .push_bind(task.max_retry_delay_ms)
                        .push_bind(task.depends_on_past);
                });
                insert.build().execute(&mut *tx).await?;
            }
            for m in &new.assets {
                let moved = sqlx::query(super::assets::MOVE_CURSOR)
                    .bind(m.to)
                    .bind(&new.dag_id)
                    .bind(&m.asset)
                    .bind(m.from)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if moved != 1 {
                    // Another scheduler started the run for these events: roll back.
                    return Err(StoreError::Conflict(format!(
                        "the events of `{}` for DAG `{}` started a run already",
                        m.asset, new.dag_id
                    )));
                }
                sqlx::query(super::assets::LINK_CAUSES)
                    .bind(run_id)
                    .bind(&m.asset)
                    .bind(m.from)
                    .bind(m.to)
                    .execute(&mut *tx)
                    .await?;
            }
            if !new.assets.is_empty() {
                sqlx::query("UPDATE runs SET started_by = 'assets' WHERE id = $1")
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            run_id
        });
        self.refresh_task_statistics(new.tasks.len()).await;
        Ok(run_id)
    }

    /// On PostgreSQL, after `added` tasks were inserted: when they are many against what the
    /// planner knows of `task_instances` (more than 10 % of its last count, plus 500), the table
    /// is analysed now rather than at autovacuum's next pass (up to a minute away). Until then,
    /// plans cached on long-lived connections while the table was small (the claim, and the
    /// foreign-key check of every attempt opened) read it whole: on a new database a first
    /// 10,000-task run spent 400 ms per claim of 256 tasks, where the statement's own plan took
    /// 16 ms. A failure only costs speed, so it is ignored.
    async fn refresh_task_statistics(&self, added: usize) {
        // Below the threshold whatever the table holds: no round trip for the usual run.
        const AT_LEAST: usize = 500;
        let Pool::Postgres(pool) = &self.pool else {
            return;
        };
        if added <= AT_LEAST {
            return;
        }
        let known: std::result::Result<f32, sqlx::Error> = sqlx::query_scalar(
            "SELECT reltuples FROM pg_class WHERE oid = 'task_instances'::regclass",
        )
        .fetch_one(pool)
        .await;
        let Ok(known) = known else {
            return;
        };
        if added as f64 > f64::from(known.max(0.0)) * 0.1 + AT_LEAST as f64 {
            let _ = sqlx::query("ANALYZE task_instances").execute(pool).await;
        }
    }

    pub async fn run(&self, run_id: i64) -> Result<Option<RunRecord>> {
        let row: Option<RunRow> = on_pool!(self, pool => {
            sqlx::query_as(select_runs!("WHERE r.id = $1")).bind(run_id).fetch_optional(pool).await?
        });
        row.map(RunRow::into_record).transpose()
    }

    /// Newest runs first.
    pub async fn list_runs(&self, dag_id: Option<&str>, limit: i64) -> Result<Vec<RunRecord>> {
        self.runs_before(dag_id, None, None, limit).await
    }

    /// Newest runs first, only those older than the run `before` (a page after `before`).
    pub async fn runs_before(
        &self,
        dag_id: Option<&str>,
        state: Option<RunState>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RunRecord>> {
        let rows: Vec<RunRow> = on_pool!(self, pool => {
            sqlx::query_as(select_runs!(
                "WHERE ($1 IS NULL OR r.dag_id = $1) AND ($2 IS NULL OR r.id < $2) \
                   AND ($4 IS NULL OR r.state = $4) \
                 ORDER BY r.id DESC LIMIT $3"
            ))
            .bind(dag_id)
            .bind(before)
            .bind(limit)
            .bind(state.map(RunState::as_str))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(RunRow::into_record).collect()
    }

    /// Unfinished runs the scheduler service drives (no owner process) and may move now: those
    /// of unpaused DAGs, and those someone asked to cancel. Oldest first; `only` picks one.
    pub async fn service_runs(&self, only: Option<i64>) -> Result<Vec<RunRecord>> {
        let rows: Vec<RunRow> = on_pool!(self, pool => {
            sqlx::query_as(select_runs!(concat!(
                "WHERE ($1 IS NULL OR r.id = $1) AND ",
                service_run!(),
                " ORDER BY r.id"
            )))
            .bind(only)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(RunRow::into_record).collect()
    }

    /// Runs that are queued or running, with their owner and last heartbeat.
    pub async fn unfinished_runs(&self) -> Result<Vec<(i64, Option<String>, Option<i64>)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            owner: Option<String>,
            heartbeat_at_ms: Option<i64>,
        }
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, owner, heartbeat_at_ms FROM runs WHERE state IN ('queued', 'running') ORDER BY id")
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| (row.id, row.owner, row.heartbeat_at_ms))
            .collect())
    }

    /// Asks whoever drives an unfinished run to cancel it; false if it had already ended.
    pub async fn request_cancel(&self, run_id: i64, now_ms: i64) -> Result<bool> {
        let affected = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE runs SET cancel_requested_at_ms = COALESCE(cancel_requested_at_ms, $1) \
                 WHERE id = $2 AND state IN ('queued', 'running')",
            )
            .bind(now_ms)
            .bind(run_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(affected == 1)
    }

    /// Moves a run from `from` to `to`; fails with `Conflict` if it was not in `from`.
    pub async fn set_run_state(
        &self,
        run_id: i64,
        from: RunState,
        to: RunState,
        now_ms: i64,
        note: Option<&str>,
    ) -> Result<()> {
        check_run_edge(from, to)?;
        // A run's state is decided from its tasks, so this commit does not wait for the disk:
        // lost in a crash of the database server, the next decision makes it again (see
        // RELIABILITY.md, "Which commits wait for the disk").
        let sql = match self.pool {
            Pool::Postgres(_) => SET_RUN_STATE_RELAXED,
            Pool::Sqlite(_) => SET_RUN_STATE,
        };
        macro_rules! update {
            () => {
                sqlx::query(sql)
                    .bind(to.as_str())
                    .bind(now_ms)
                    .bind(note)
                    .bind(run_id)
                    .bind(from.as_str())
            };
        }
        let affected = on_pool!(self, pool => {
            if to == RunState::Success {
                let mut tx = pool.begin().await?;
                let affected = update!().execute(&mut *tx).await?.rows_affected();
                // A DAG waiting on this one (`after:`) gets its event with the success.
                if affected == 1 {
                    sqlx::query(super::assets::RUN_EVENT)
                        .bind(run_id)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                affected
            } else {
                // One statement, one round trip: no transaction around it.
                update!().execute(pool).await?.rows_affected()
            }
        });
        if affected == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("run {run_id} is not {from}")))
        }
    }

    pub async fn heartbeat(&self, run_id: i64, owner: &str, now_ms: i64) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE runs SET heartbeat_at_ms = $1 WHERE id = $2 AND owner = $3")
                .bind(now_ms)
                .bind(run_id)
                .bind(owner)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Fails a run whose owner is gone: running attempts become `lost`, running tasks `failed`,
    /// tasks that had not started `cancelled`, the run `failed` with `reason`. Fenced by owner.
    pub async fn fail_orphaned_run(
        &self,
        run_id: i64,
        owner: Option<&str>,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let run_rows = sqlx::query(
                "UPDATE runs SET state = 'failed', finished_at_ms = $1, note = $2 \
                 WHERE id = $3 AND state IN ('queued', 'running') AND owner IS NOT DISTINCT FROM $4",
            )
            .bind(now_ms)
            .bind(reason)
            .bind(run_id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if run_rows != 1 {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE task_attempts SET state = 'lost', error = $1, finished_at_ms = $2, finished_at_us = $4 \
                 WHERE run_id = $3 AND state = 'running'",
            )
            .bind(reason)
            .bind(now_ms)
            .bind(run_id)
            .bind(super::wall_us())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE task_instances SET state = 'failed', error = $1, finished_at_ms = $2 \
                 WHERE run_id = $3 AND state = 'running'",
            )
            .bind(reason)
            .bind(now_ms)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE task_instances SET state = 'cancelled', finished_at_ms = $1 \
                 WHERE run_id = $2 AND state IN ('scheduled', 'queued', 'up_for_retry')",
            )
            .bind(now_ms)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Deletes up to `batch` finished runs (success, failed, cancelled) that ended before
    /// `finished_before_ms`, with their task instances, attempts and logs (by cascade).
    /// Unfinished runs are never touched. Returns the ids deleted; call again until empty.
    pub async fn delete_finished_runs(
        &self,
        finished_before_ms: i64,
        batch: i64,
    ) -> Result<Vec<i64>> {
        let ids: Vec<i64> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "DELETE FROM runs WHERE id IN ( \
                     SELECT id FROM runs \
                     WHERE state IN ('success', 'failed', 'cancelled') AND finished_at_ms < $1 \
                     ORDER BY id LIMIT $2) \
                 RETURNING id",
            )
            .bind(finished_before_ms)
            .bind(batch)
            .fetch_all(pool)
            .await?
        });
        Ok(ids)
    }

    /// How many finished runs ended before `finished_before_ms` (for `db clean --dry-run`).
    pub async fn count_finished_runs(&self, finished_before_ms: i64) -> Result<i64> {
        let count: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM runs \
                 WHERE state IN ('success', 'failed', 'cancelled') AND finished_at_ms < $1",
            )
            .bind(finished_before_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(count)
    }
}
