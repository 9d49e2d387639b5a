//! Every query of the state store, each written once for both databases.

use super::records::{RunRow, TaskRow, run_record};
use super::*;

/// The select list and join every run query shares, as a literal so queries stay constants.
macro_rules! select_runs {
    ($rest:literal) => {
        concat!(
            "SELECT r.id, r.dag_id, r.dag_version_id, v.hash, r.state, r.params_json, r.logical_date, ",
            "r.max_active_tasks, r.owner, r.heartbeat_at_ms, r.note, r.created_at_ms, r.started_at_ms, ",
            "r.finished_at_ms, r.cancel_requested_at_ms FROM runs r JOIN dag_versions v ON v.id = r.dag_version_id ",
            $rest
        )
    };
}

/// Rows per multi-row statement: 1,000 rows of up to 13 values stay under both databases'
/// limits on bound values (65,535 on PostgreSQL, 32,766 on SQLite).
const INSERT_CHUNK: usize = 1_000;

/// [`Store::finish_attempts`] on PostgreSQL: one statement over arrays, in a transaction that
/// is rolled back (`None`) if the task rows and attempt rows it updated do not pair up.
async fn finish_attempts_postgres(
    pool: &sqlx::PgPool,
    ends: &[FinishAttempt],
) -> Result<Option<Vec<bool>>> {
    let column = |f: fn(&FinishAttempt) -> i64| ends.iter().map(f).collect::<Vec<i64>>();
    let maybe = |f: fn(&FinishAttempt) -> Option<i64>| ends.iter().map(f).collect::<Vec<_>>();
    let text = |f: fn(&FinishAttempt) -> Option<&str>| {
        ends.iter()
            .map(|e| f(e).map(str::to_string))
            .collect::<Vec<Option<String>>>()
    };
    let mut tx = pool.begin().await?;
    let (tasks, attempt_ids): (i64, Vec<i64>) = sqlx::query_as(FINISH_MANY_POSTGRES)
        .bind(column(|e| e.run_id))
        .bind(text(|e| Some(e.task_id.as_str())))
        .bind(column(|e| e.attempt))
        .bind(column(|e| e.attempt_id))
        .bind(text(|e| Some(e.attempt_state.as_str())))
        .bind(text(|e| Some(e.task_state.as_str())))
        .bind(maybe(|e| e.retry_at_ms))
        .bind(text(|e| e.device.as_deref()))
        .bind(text(|e| e.output_path.as_deref()))
        .bind(maybe(|e| e.rows_out))
        .bind(maybe(|e| e.bytes_out))
        .bind(text(|e| e.error.as_deref()))
        .bind(column(|e| e.now_ms))
        .bind(text(|e| e.device_note.as_deref()))
        .bind(maybe(|e| e.io_us))
        .bind(maybe(|e| e.transfer_us))
        .bind(maybe(|e| e.compute_us))
        .fetch_one(&mut *tx)
        .await?;
    if tasks as usize != attempt_ids.len() {
        return Ok(None);
    }
    tx.commit().await?;
    let done: std::collections::HashSet<i64> = attempt_ids.into_iter().collect();
    Ok(Some(
        ends.iter().map(|e| done.contains(&e.attempt_id)).collect(),
    ))
}

const FINISH_MANY_POSTGRES: &str = "WITH e AS ( \
        SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], \
                             $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::text[], \
                             $13::bigint[], $14::text[], $15::bigint[], $16::bigint[], $17::bigint[]) \
            AS e(run_id, task_id, attempt, attempt_id, attempt_state, task_state, retry_at_ms, device, \
                 output_path, rows_out, bytes_out, error, now_ms, device_note, io_us, transfer_us, compute_us)), \
     t AS ( \
        UPDATE task_instances ti SET state = e.task_state, retry_at_ms = e.retry_at_ms, \
            device = COALESCE(e.device, ti.device), lease_owner = NULL, lease_expires_at_ms = NULL, \
            output_path = COALESCE(e.output_path, ti.output_path), rows_out = e.rows_out, \
            bytes_out = e.bytes_out, error = e.error, \
            finished_at_ms = CASE WHEN e.task_state = 'up_for_retry' THEN NULL ELSE e.now_ms END \
        FROM e WHERE ti.run_id = e.run_id AND ti.task_id = e.task_id AND ti.state = 'running' \
            AND ti.attempts = e.attempt \
        RETURNING e.attempt_id), \
     a AS ( \
        UPDATE task_attempts ta SET state = e.attempt_state, device = e.device, \
            device_note = e.device_note, error = e.error, rows_out = e.rows_out, bytes_out = e.bytes_out, finished_at_ms = e.now_ms, \
            io_us = e.io_us, transfer_us = e.transfer_us, compute_us = e.compute_us \
        FROM e WHERE ta.id = e.attempt_id AND ta.state = 'running' \
            AND ta.id IN (SELECT attempt_id FROM t) \
        RETURNING ta.id) \
     SELECT (SELECT COUNT(*) FROM t), COALESCE((SELECT array_agg(id) FROM a), '{}')";

/// [`Store::finish_attempts`] on SQLite: the one-end statements, in one transaction (one
/// writer at a time: the statements are cheap, the commit is what costs).
async fn finish_attempts_sqlite(
    pool: &sqlx::SqlitePool,
    ends: &[FinishAttempt],
) -> Result<Option<Vec<bool>>> {
    let mut tx = pool.begin().await?;
    let mut recorded = Vec::with_capacity(ends.len());
    for f in ends {
        let task_rows = finish_task_query(f)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if task_rows != 1 {
            recorded.push(false);
            continue;
        }
        if finish_attempt_query(f)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            != 1
        {
            return Ok(None);
        }
        recorded.push(true);
    }
    tx.commit().await?;
    Ok(Some(recorded))
}

type Args<DB> = <DB as sqlx::Database>::Arguments;

/// The task half of recording an attempt's end, fenced by the attempt number.
fn finish_task_query<DB: sqlx::Database>(f: &FinishAttempt) -> sqlx::query::Query<'_, DB, Args<DB>>
where
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "UPDATE task_instances SET state = $1, retry_at_ms = $2, device = COALESCE($3, device), \
            lease_owner = NULL, lease_expires_at_ms = NULL, \
            output_path = COALESCE($4, output_path), rows_out = $5, bytes_out = $6, error = $7, \
            finished_at_ms = CASE WHEN $1 = 'up_for_retry' THEN NULL ELSE $8 END \
         WHERE run_id = $9 AND task_id = $10 AND state = 'running' AND attempts = $11",
    )
    .bind(f.task_state.as_str())
    .bind(f.retry_at_ms)
    .bind(f.device.as_deref())
    .bind(f.output_path.as_deref())
    .bind(f.rows_out)
    .bind(f.bytes_out)
    .bind(f.error.as_deref())
    .bind(f.now_ms)
    .bind(f.run_id)
    .bind(f.task_id.as_str())
    .bind(f.attempt)
}

/// The attempt half of recording an attempt's end.
fn finish_attempt_query<DB: sqlx::Database>(
    f: &FinishAttempt,
) -> sqlx::query::Query<'_, DB, Args<DB>>
where
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "UPDATE task_attempts SET state = $1, device = $2, error = $3, rows_out = $4, bytes_out = $5, \
            finished_at_ms = $6, device_note = $7, io_us = $8, transfer_us = $9, compute_us = $10 \
         WHERE id = $11 AND state = 'running'",
    )
    .bind(f.attempt_state.as_str())
    .bind(f.device.as_deref())
    .bind(f.error.as_deref())
    .bind(f.rows_out)
    .bind(f.bytes_out)
    .bind(f.now_ms)
    .bind(f.device_note.as_deref())
    .bind(f.io_us)
    .bind(f.transfer_us)
    .bind(f.compute_us)
    .bind(f.attempt_id)
}

impl Store {
    /// Records a DAG version (idempotent by the file's hash); returns its id.
    pub async fn record_dag_version(
        &self,
        dag_id: &str,
        hash: &str,
        source_path: &str,
        base_dir: &str,
        yaml: &str,
        now_ms: i64,
    ) -> Result<i64> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO dags (dag_id, created_at_ms, updated_at_ms) VALUES ($1, $2, $2) \
                 ON CONFLICT (dag_id) DO NOTHING",
            )
            .bind(dag_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO dag_versions (dag_id, hash, source_path, base_dir, yaml, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dag_id, hash) DO NOTHING",
            )
            .bind(dag_id)
            .bind(hash)
            .bind(source_path)
            .bind(base_dir)
            .bind(yaml)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            let (id,): (i64,) = sqlx::query_as("SELECT id FROM dag_versions WHERE dag_id = $1 AND hash = $2")
                .bind(dag_id)
                .bind(hash)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("UPDATE dags SET latest_version_id = $1, updated_at_ms = $2 WHERE dag_id = $3")
                .bind(id)
                .bind(now_ms)
                .bind(dag_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    /// The newest recorded version of a DAG.
    /// For the cron trigger: the newest scheduled run's logical date and how many runs of the
    /// DAG are unfinished.
    pub async fn schedule_state(&self, dag_id: &str) -> Result<(Option<String>, i64)> {
        let (last, active): (Option<String>, i64) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT (SELECT MAX(logical_date) FROM runs WHERE dag_id = $1 AND trigger_kind = 'schedule'), \
                        (SELECT COUNT(*) FROM runs WHERE dag_id = $1 AND state IN ('queued', 'running'))",
            )
            .bind(dag_id)
            .fetch_one(pool)
            .await?
        });
        Ok((last, active))
    }

    /// Pauses or unpauses a recorded DAG; false if no such DAG is recorded.
    pub async fn set_paused(&self, dag_id: &str, paused: bool, now_ms: i64) -> Result<bool> {
        let changed = on_pool!(self, pool => {
            sqlx::query("UPDATE dags SET paused = $1, updated_at_ms = $2 WHERE dag_id = $3")
                .bind(i64::from(paused))
                .bind(now_ms)
                .bind(dag_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Whether a DAG is paused (unknown DAGs are not).
    pub async fn is_paused(&self, dag_id: &str) -> Result<bool> {
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT paused FROM dags WHERE dag_id = $1")
                .bind(dag_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.is_some_and(|(p,)| p != 0))
    }

    /// A DAG version by id (the one a run pinned).
    pub async fn dag_version(&self, version_id: i64) -> Result<Option<DagVersion>> {
        let row: Option<(i64, String, String, String, String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, dag_id, hash, source_path, base_dir, yaml FROM dag_versions WHERE id = $1",
            )
            .bind(version_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(
            |(id, dag_id, hash, source_path, base_dir, yaml)| DagVersion {
                id,
                dag_id,
                hash,
                source_path,
                base_dir,
                yaml,
            },
        ))
    }

    pub async fn latest_dag_version(&self, dag_id: &str) -> Result<Option<DagVersion>> {
        let row: Option<(i64, String, String, String, String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT v.id, v.dag_id, v.hash, v.source_path, v.base_dir, v.yaml \
                 FROM dags d JOIN dag_versions v ON v.id = d.latest_version_id WHERE d.dag_id = $1",
            )
            .bind(dag_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(
            |(id, dag_id, hash, source_path, base_dir, yaml)| DagVersion {
                id,
                dag_id,
                hash,
                source_path,
                base_dir,
                yaml,
            },
        ))
    }

    pub async fn list_dags(&self) -> Result<Vec<DagSummary>> {
        let rows: Vec<(String, String, String, i64, Option<String>, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT d.dag_id, v.hash, v.source_path, \
                        (SELECT COUNT(*) FROM runs r WHERE r.dag_id = d.dag_id), \
                        (SELECT r.state FROM runs r WHERE r.dag_id = d.dag_id ORDER BY r.id DESC LIMIT 1), d.paused \
                 FROM dags d JOIN dag_versions v ON v.id = d.latest_version_id ORDER BY d.dag_id",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(dag_id, latest_hash, source_path, runs, last, paused)| DagSummary {
                    dag_id,
                    paused: paused != 0,
                    latest_hash,
                    source_path,
                    runs,
                    last_run_state: last.as_deref().and_then(RunState::parse),
                },
            )
            .collect())
    }

    /// Creates a run in `queued` with every task `scheduled`, owned by `new.owner`. A second
    /// scheduled run for the same DAG and logical date is a `Conflict` and changes nothing.
    ///
    /// A backfill's run is created only while the backfill is running, so a run cannot slip in
    /// after `cancel_backfill`: the check is part of the INSERT (SQLite runs one writer at a
    /// time) and, on PostgreSQL, the backfill row is locked first, so a concurrent cancel waits
    /// for this run and then cancels it too.
    pub async fn create_run(&self, new: &NewRun) -> Result<i64> {
        let lock_backfill = matches!(self.pool, Pool::Postgres(_)) && new.backfill_id.is_some();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if lock_backfill {
                sqlx::query("SELECT 1 FROM backfills WHERE id = $1 FOR UPDATE")
                    .bind(new.backfill_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let created: Option<(i64,)> = sqlx::query_as(
                "INSERT INTO runs (dag_id, dag_version_id, state, trigger_kind, params_json, logical_date, \
                                   max_active_tasks, owner, heartbeat_at_ms, created_at_ms, backfill_id) \
                 SELECT $1, $2, 'queued', $8, $3, $4, $5, $6, $7, $7, $9 \
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
            .fetch_optional(&mut *tx)
            .await?;
            let Some((run_id,)) = created else {
                return Err(StoreError::Conflict(format!(
                    "a scheduled or backfill run of {} for {} exists already (or its backfill ended)",
                    new.dag_id, new.logical_date
                )));
            };
            // Many rows per statement: a 10,000-task run is ten statements, not 10,000.
            for (chunk_index, chunk) in new.tasks.chunks(INSERT_CHUNK).enumerate() {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO task_instances (run_id, task_id, position, kind, state, needs_json, priority, \
                                                 retries, retry_delay_ms, timeout_ms, device_pref, pool, in_process) ",
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
                        .push_bind(task.device.clone())
                        .push_bind(task.pool.clone())
                        .push_bind(i64::from(new.owner.is_some()));
                });
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(run_id)
        })
    }

    pub async fn run(&self, run_id: i64) -> Result<Option<RunRecord>> {
        let row: Option<RunRow> = on_pool!(self, pool => {
            sqlx::query_as(select_runs!("WHERE r.id = $1")).bind(run_id).fetch_optional(pool).await?
        });
        row.map(run_record).transpose()
    }

    /// Newest runs first.
    pub async fn list_runs(&self, dag_id: Option<&str>, limit: i64) -> Result<Vec<RunRecord>> {
        self.runs_before(dag_id, None, limit).await
    }

    /// Newest runs first, only those older than the run `before` (a page after `before`).
    pub async fn runs_before(
        &self,
        dag_id: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RunRecord>> {
        let rows: Vec<RunRow> = on_pool!(self, pool => {
            sqlx::query_as(select_runs!(
                "WHERE ($1 IS NULL OR r.dag_id = $1) AND ($2 IS NULL OR r.id < $2) \
                 ORDER BY r.id DESC LIMIT $3"
            ))
            .bind(dag_id)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(run_record).collect()
    }

    /// A run's task instances in DAG order.
    pub async fn tasks(&self, run_id: i64) -> Result<Vec<TaskRecord>> {
        let rows: Vec<TaskRow> = on_pool!(self, pool => {
            sqlx::query_as(
                select_tasks!("WHERE run_id = $1 ORDER BY position"),
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(TaskRow::into_record).collect()
    }

    /// For a run's tasks: how many wait for a scheduling decision (`scheduled` or
    /// `up_for_retry`) and how many are unfinished. One aggregate, no rows to the client.
    pub async fn undecided_tasks(&self, run_id: i64) -> Result<(i64, i64)> {
        let (waiting, unfinished): (Option<i64>, Option<i64>) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT SUM(CASE WHEN state IN ('scheduled', 'up_for_retry') THEN 1 ELSE 0 END), \
                        SUM(CASE WHEN state IN ('success', 'failed', 'upstream_failed', 'skipped', 'cancelled') \
                                 THEN 0 ELSE 1 END) \
                 FROM task_instances WHERE run_id = $1",
            )
            .bind(run_id)
            .fetch_one(pool)
            .await?
        });
        Ok((waiting.unwrap_or(0), unfinished.unwrap_or(0)))
    }

    /// One task instance of a run.
    pub async fn task(&self, run_id: i64, task_id: &str) -> Result<Option<TaskRecord>> {
        let row: Option<TaskRow> = on_pool!(self, pool => {
            sqlx::query_as(
                select_tasks!("WHERE run_id = $1 AND task_id = $2"),
            )
            .bind(run_id)
            .bind(task_id)
            .fetch_optional(pool)
            .await?
        });
        row.map(TaskRow::into_record).transpose()
    }

    /// Records what placement predicted for an attempt.
    pub async fn record_prediction(&self, attempt_id: i64, p: &Prediction) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE task_attempts SET predicted_cpu_us = $1, predicted_gpu_us = $2, \
                 predicted_kind = $3, cpu_factor = $4, gpu_factor = $5 WHERE id = $6",
            )
            .bind(p.cpu_us)
            .bind(p.gpu_us)
            .bind(p.kind.as_deref())
            .bind(p.cpu_factor)
            .bind(p.gpu_factor)
            .bind(attempt_id)
            .execute(pool)
            .await
            .map(|_| ())?
        });
        Ok(())
    }

    /// The latest `limit` successful attempts that placement predicted, newest first, with
    /// the time each took: what the model learns from.
    pub async fn predicted_attempts(&self, limit: i64) -> Result<Vec<PredictedAttempt>> {
        type Row = (
            String,
            Option<String>,
            Option<i64>,
            Option<i64>,
            f64,
            f64,
            i64,
            i64,
        );
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT predicted_kind, device, predicted_cpu_us, predicted_gpu_us, cpu_factor, gpu_factor, \
                 started_at_ms, finished_at_ms FROM task_attempts \
                 WHERE state = 'success' AND predicted_kind IS NOT NULL AND finished_at_ms IS NOT NULL \
                 AND cpu_factor IS NOT NULL AND gpu_factor IS NOT NULL \
                 ORDER BY id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| PredictedAttempt {
                kind: r.0,
                device: r.1,
                cpu_us: r.2,
                gpu_us: r.3,
                cpu_factor: r.4,
                gpu_factor: r.5,
                took_ms: r.7 - r.6,
            })
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

    /// running → cancelled for the task's current attempt (fenced by its number), ending the
    /// attempt too; the worker finds its lease gone and stops the stage.
    pub async fn cancel_running_task(
        &self,
        run_id: i64,
        task_id: &str,
        attempt: i64,
        now_ms: i64,
    ) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let tasks = sqlx::query(
                "UPDATE task_instances SET state = 'cancelled', error = 'run cancelled', lease_owner = NULL, \
                    lease_expires_at_ms = NULL, finished_at_ms = $1 \
                 WHERE run_id = $2 AND task_id = $3 AND state = 'running' AND attempts = $4",
            )
            .bind(now_ms)
            .bind(run_id)
            .bind(task_id)
            .bind(attempt)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if tasks != 1 {
                return Err(StoreError::Conflict(format!(
                    "task {task_id} of run {run_id} is not running attempt {attempt}"
                )));
            }
            sqlx::query(
                "UPDATE task_attempts SET state = 'cancelled', error = 'run cancelled', finished_at_ms = $1 \
                 WHERE run_id = $2 AND task_id = $3 AND attempt = $4 AND state = 'running'",
            )
            .bind(now_ms)
            .bind(run_id)
            .bind(task_id)
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
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
        let affected = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE runs SET state = $1, \
                    started_at_ms = CASE WHEN $1 = 'running' THEN $2 ELSE started_at_ms END, \
                    finished_at_ms = CASE WHEN $1 IN ('success', 'failed', 'cancelled') THEN $2 ELSE finished_at_ms END, \
                    note = COALESCE($3, note) \
                 WHERE id = $4 AND state = $5",
            )
            .bind(to.as_str())
            .bind(now_ms)
            .bind(note)
            .bind(run_id)
            .bind(from.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        if affected == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("run {run_id} is not {from}")))
        }
    }

    /// Moves a task that is not running (`scheduled`, `queued`, `up_for_retry`) to `to`.
    pub async fn set_task_state(
        &self,
        run_id: i64,
        task_id: &str,
        from: TaskState,
        to: TaskState,
        now_ms: i64,
        error: Option<&str>,
    ) -> Result<()> {
        check_task_edge(from, to)?;
        let affected = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE task_instances SET state = $1, error = COALESCE($2, error), retry_at_ms = NULL, \
                    queued_at_ms = CASE WHEN $1 = 'queued' THEN $3 ELSE queued_at_ms END, \
                    finished_at_ms = CASE WHEN $1 IN ('success', 'failed', 'upstream_failed', 'skipped', 'cancelled') \
                                          THEN $3 ELSE finished_at_ms END \
                 WHERE run_id = $4 AND task_id = $5 AND state = $6",
            )
            .bind(to.as_str())
            .bind(error)
            .bind(now_ms)
            .bind(run_id)
            .bind(task_id)
            .bind(from.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        if affected == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "task {task_id} of run {run_id} is not {from}"
            )))
        }
    }

    /// queued → running and a new attempt row, atomically; returns (attempt id, attempt number).
    pub async fn start_attempt(
        &self,
        run_id: i64,
        task_id: &str,
        owner: &str,
        now_ms: i64,
    ) -> Result<(i64, i64)> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<(i64,)> = sqlx::query_as(
                "UPDATE task_instances SET state = 'running', attempts = attempts + 1, started_at_ms = $1, \
                    error = NULL, retry_at_ms = NULL, lease_owner = $4 \
                 WHERE run_id = $2 AND task_id = $3 AND state = 'queued' RETURNING attempts",
            )
            .bind(now_ms)
            .bind(run_id)
            .bind(task_id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((attempt,)) = row else {
                return Err(StoreError::Conflict(format!("task {task_id} of run {run_id} is not queued")));
            };
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO task_attempts (run_id, task_id, attempt, state, owner, started_at_ms) \
                 VALUES ($1, $2, $3, 'running', $4, $5) RETURNING id",
            )
            .bind(run_id)
            .bind(task_id)
            .bind(attempt)
            .bind(owner)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((id, attempt))
        })
    }

    /// Records how an attempt ended and moves its task on, fenced by the attempt number: a
    /// report for an attempt that is no longer the task's current one changes nothing.
    pub async fn finish_attempt(&self, f: &FinishAttempt) -> Result<()> {
        check_task_edge(TaskState::Running, f.task_state)?;
        if !f.attempt_state.is_terminal() {
            return Err(StoreError::IllegalTransition(format!(
                "of an attempt: running -> {}",
                f.attempt_state
            )));
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let task_rows = finish_task_query(f).execute(&mut *tx).await?.rows_affected();
            let attempt_rows = finish_attempt_query(f).execute(&mut *tx).await?.rows_affected();
            if task_rows != 1 || attempt_rows != 1 {
                // Dropping the transaction rolls it back: a stale report changes nothing.
                return Err(StoreError::Conflict(format!(
                    "attempt {} of task {} in run {} is no longer current",
                    f.attempt, f.task_id, f.run_id
                )));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records many attempt ends at once (a worker's group commit), each fenced as in
    /// [`Store::finish_attempt`]. Returns, in order, whether each was recorded: `false` is a
    /// stale report, which changed nothing.
    pub async fn finish_attempts(&self, ends: &[FinishAttempt]) -> Result<Vec<bool>> {
        for f in ends {
            check_task_edge(TaskState::Running, f.task_state)?;
            if !f.attempt_state.is_terminal() {
                return Err(StoreError::IllegalTransition(format!(
                    "of an attempt: running -> {}",
                    f.attempt_state
                )));
            }
        }
        if ends.len() == 1 {
            return Ok(vec![self.finish_attempt(&ends[0]).await.map_or_else(
                |e| match e {
                    StoreError::Conflict(_) => Ok(false),
                    other => Err(other),
                },
                |()| Ok(true),
            )?]);
        }
        let recorded = match &self.pool {
            Pool::Postgres(pool) => finish_attempts_postgres(pool, ends).await?,
            Pool::Sqlite(pool) => finish_attempts_sqlite(pool, ends).await?,
        };
        if let Some(recorded) = recorded {
            return Ok(recorded);
        }
        // A task row and its attempt row disagreed (which fenced writes never leave behind,
        // but a hand-edited database might): record one by one, so only that end is refused.
        let mut recorded = Vec::with_capacity(ends.len());
        for f in ends {
            recorded.push(match self.finish_attempt(f).await {
                Ok(()) => true,
                Err(StoreError::Conflict(_)) => false,
                Err(e) => return Err(e),
            });
        }
        Ok(recorded)
    }

    /// Moves many tasks of one run from `from` to `queued` at once; tasks no longer in `from`
    /// are left alone (someone else moved them first). Not for tasks in a pool, whose slots
    /// [`Store::queue_task`] checks. Returns how many moved.
    pub async fn queue_tasks(
        &self,
        run_id: i64,
        from: TaskState,
        task_ids: &[&str],
        now_ms: i64,
    ) -> Result<u64> {
        check_task_edge(from, TaskState::Queued)?;
        let mut moved = 0;
        for chunk in task_ids.chunks(INSERT_CHUNK) {
            moved += on_pool!(self, pool => {
                let mut update = sqlx::QueryBuilder::new(
                    "UPDATE task_instances SET state = 'queued', retry_at_ms = NULL, queued_at_ms = ",
                );
                update
                    .push_bind(now_ms)
                    .push(" WHERE run_id = ")
                    .push_bind(run_id)
                    .push(" AND state = ")
                    .push_bind(from.as_str())
                    .push(" AND pool IS NULL AND task_id IN (");
                let mut ids = update.separated(", ");
                for id in chunk {
                    ids.push_bind(*id);
                }
                update.push(")");
                update.build().execute(pool).await?.rows_affected()
            });
        }
        Ok(moved)
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

    /// Appends log lines of one attempt: (stream, text, at_ms).
    pub async fn append_logs(
        &self,
        attempt_id: i64,
        lines: &[(String, String, i64)],
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (stream, line, at_ms) in lines {
                sqlx::query("INSERT INTO task_logs (attempt_id, stream, line, at_ms) VALUES ($1, $2, $3, $4)")
                    .bind(attempt_id)
                    .bind(stream)
                    .bind(line)
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Log lines of every attempt of a task, in order.
    pub async fn logs(&self, run_id: i64, task_id: &str) -> Result<Vec<LogRecord>> {
        let rows: Vec<(i64, String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT a.attempt, l.stream, l.line FROM task_logs l JOIN task_attempts a ON a.id = l.attempt_id \
                 WHERE a.run_id = $1 AND a.task_id = $2 ORDER BY l.id",
            )
            .bind(run_id)
            .bind(task_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(attempt, stream, line)| LogRecord {
                attempt,
                stream,
                line,
            })
            .collect())
    }

    /// Unfinished runs the scheduler service drives (no owner process) and may move now: those
    /// of unpaused DAGs, and those someone asked to cancel. Oldest first; `only` picks one.
    pub async fn service_runs(&self, only: Option<i64>) -> Result<Vec<RunRecord>> {
        let rows: Vec<RunRow> = on_pool!(self, pool => {
            sqlx::query_as(select_runs!(
                "WHERE r.state IN ('queued', 'running') AND r.owner IS NULL AND ($1 IS NULL OR r.id = $1) \
                   AND (r.cancel_requested_at_ms IS NOT NULL \
                        OR NOT EXISTS (SELECT 1 FROM dags d WHERE d.dag_id = r.dag_id AND d.paused <> 0)) \
                 ORDER BY r.id"
            ))
            .bind(only)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(run_record).collect()
    }

    /// Runs that are queued or running, with their owner and last heartbeat.
    pub async fn unfinished_runs(&self) -> Result<Vec<(i64, Option<String>, Option<i64>)>> {
        let rows = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, owner, heartbeat_at_ms FROM runs WHERE state IN ('queued', 'running') ORDER BY id")
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Deletes up to `batch` finished runs (success, failed, cancelled) that ended before
    /// `finished_before_ms`, with their task instances, attempts and logs (by cascade).
    /// Unfinished runs are never touched. Returns the ids deleted; call again until empty.
    pub async fn delete_finished_runs(
        &self,
        finished_before_ms: i64,
        batch: i64,
    ) -> Result<Vec<i64>> {
        let ids: Vec<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as(
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
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// How many finished runs ended before `finished_before_ms` (for `db clean --dry-run`).
    pub async fn count_finished_runs(&self, finished_before_ms: i64) -> Result<i64> {
        let (count,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT COUNT(*) FROM runs \
                 WHERE state IN ('success', 'failed', 'cancelled') AND finished_at_ms < $1",
            )
            .bind(finished_before_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(count)
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
                "UPDATE task_attempts SET state = 'lost', error = $1, finished_at_ms = $2 \
                 WHERE run_id = $3 AND state = 'running'",
            )
            .bind(reason)
            .bind(now_ms)
            .bind(run_id)
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

    /// Test support: puts a task row straight into `state`, bypassing the lifecycle (the
    /// triggers only guard updates). Used to check the database's transition rules.
    #[doc(hidden)]
    pub async fn force_task_state_for_test(
        &self,
        run_id: i64,
        task_id: &str,
        state: &str,
    ) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let (position, kind, needs, priority, retries, delay): (i64, String, String, i64, i64, i64) = sqlx::query_as(
                "SELECT position, kind, needs_json, priority, retries, retry_delay_ms FROM task_instances \
                 WHERE run_id = $1 AND task_id = $2",
            )
            .bind(run_id)
            .bind(task_id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM task_instances WHERE run_id = $1 AND task_id = $2")
                .bind(run_id)
                .bind(task_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO task_instances (run_id, task_id, position, kind, state, needs_json, priority, retries, retry_delay_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(run_id)
            .bind(task_id)
            .bind(position)
            .bind(kind)
            .bind(state)
            .bind(needs)
            .bind(priority)
            .bind(retries)
            .bind(delay)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Test support: a raw state update, to check that the database refuses illegal edges.
    #[doc(hidden)]
    pub async fn raw_task_update_for_test(
        &self,
        run_id: i64,
        task_id: &str,
        state: &str,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE task_instances SET state = $1 WHERE run_id = $2 AND task_id = $3")
                .bind(state)
                .bind(run_id)
                .bind(task_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
