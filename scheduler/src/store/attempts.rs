//! Attempts: starting one, recording how it ended (one at a time or a worker's batch at
//! once), cancelling a running one, and what placement predicted for it.
//!
//! Every end is fenced by the attempt number: a report for an attempt that is no longer its
//! task's current one changes nothing.

use super::claims::claim_next_in;
use super::records::{RunRow, TaskRow, place_of};
use super::{
    AfterEnd, Claim, FinishAttempt, FollowOn, Pool, PredictedAttempt, Prediction, Result, Store,
    StoreError, TaskRecord, check_task_edge,
};
use crate::state::TaskState;
use amdahl_placement::Place;

/// How [`Store::stop_running_task`] ends a running task and its attempt.
struct Stop<'a> {
    task_state: &'static str,
    attempt_state: &'static str,
    error: &'a str,
}

/// What [`FINISH_MANY_POSTGRES`] fails with when the task rows and the attempt rows it updated
/// do not pair up (which fenced writes never leave behind, but a hand-edited database might):
/// an error (a text that is no array), so that the statement changes nothing even outside a
/// transaction. The text names the counts; the caller knows it by this prefix.
macro_rules! unpaired {
    () => {
        "amdahl: the task and attempt rows of these ends did not pair up:"
    };
}

/// [`Store::finish_attempts`] on PostgreSQL: one statement over arrays, which fails as a whole
/// (`None`) if the task rows and attempt rows it updated do not pair up. A single end takes it
/// too (one statement rather than two). Ends that record asset events take a transaction
/// around it and those events; other ends are the one statement alone, in its own implicit
/// transaction: no `BEGIN` and `COMMIT` round trips. Its commit does not wait for the disk
/// (see [`Store::relaxed`]: a lost end is a retried task).
async fn finish_attempts_postgres(
    pool: &sqlx::PgPool,
    ends: &[FinishAttempt],
) -> Result<Option<Vec<bool>>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        attempt_ids: Vec<i64>,
    }
    let query = bind_ends(sqlx::query_as::<_, Row>(FINISH_MANY_POSTGRES), ends);
    let produces = |e: &FinishAttempt| e.task_state == TaskState::Success && !e.produces.is_empty();
    let done: std::collections::HashSet<i64> = if ends.iter().any(produces) {
        let mut tx = pool.begin().await?;
        let row = match query.fetch_one(&mut *tx).await {
            Err(e) if is_unpaired(&e) => return Ok(None),
            row => row?,
        };
        let done: std::collections::HashSet<i64> = row.attempt_ids.into_iter().collect();
        for f in ends.iter().filter(|e| done.contains(&e.attempt_id)) {
            record_produced!(tx, f);
        }
        tx.commit().await?;
        done
    } else {
        match query.fetch_one(pool).await {
            Err(e) if is_unpaired(&e) => return Ok(None),
            row => row?.attempt_ids.into_iter().collect(),
        }
    };
    Ok(Some(
        ends.iter().map(|e| done.contains(&e.attempt_id)).collect(),
    ))
}

/// Refuses an end that no attempt can make: its task leaves `running` by a legal edge, and
/// the attempt ends.
fn check_end(f: &FinishAttempt) -> Result<()> {
    check_task_edge(TaskState::Running, f.task_state)?;
    if !f.attempt_state.is_terminal() {
        return Err(StoreError::IllegalTransition(format!(
            "of an attempt: running -> {}",
            f.attempt_state
        )));
    }
    Ok(())
}

/// Whether `e` is the [`unpaired!`] failure.
fn is_unpaired(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.message().contains(unpaired!()))
}

/// Binds one end's columns, as scalars, to [`FINISH_AND_READ_POSTGRES`].
fn bind_end<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    e: &'q FinishAttempt,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(e.run_id)
        .bind(e.task_id.as_str())
        .bind(e.attempt)
        .bind(e.attempt_id)
        .bind(e.attempt_state.as_str())
        .bind(e.task_state.as_str())
        .bind(e.retry_at_ms)
        .bind(e.device.map(Place::code))
        .bind(e.output_path.as_deref())
        .bind(e.rows_out)
        .bind(e.bytes_out)
        .bind(e.error.as_deref())
        .bind(e.now_ms)
        .bind(e.device_note.as_deref())
        .bind(e.io_us)
        .bind(e.transfer_us)
        .bind(e.compute_us)
        .bind(e.route.as_deref())
        .bind(e.rendered.as_deref())
        .bind(e.plan.as_deref())
        .bind(super::wall_us())
}

/// Binds the ends' columns, as arrays, to a statement that starts with [`finish_ctes!`] over
/// [`ends_from_arrays!`].
fn bind_ends<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ends: &[FinishAttempt],
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    let column = |f: fn(&FinishAttempt) -> i64| ends.iter().map(f).collect::<Vec<i64>>();
    let maybe = |f: fn(&FinishAttempt) -> Option<i64>| ends.iter().map(f).collect::<Vec<_>>();
    let text = |f: fn(&FinishAttempt) -> Option<&str>| {
        ends.iter()
            .map(|e| f(e).map(str::to_string))
            .collect::<Vec<Option<String>>>()
    };
    query
        .bind(column(|e| e.run_id))
        .bind(text(|e| Some(e.task_id.as_str())))
        .bind(column(|e| e.attempt))
        .bind(column(|e| e.attempt_id))
        .bind(text(|e| Some(e.attempt_state.as_str())))
        .bind(text(|e| Some(e.task_state.as_str())))
        .bind(maybe(|e| e.retry_at_ms))
        .bind(text(|e| e.device.map(Place::code)))
        .bind(text(|e| e.output_path.as_deref()))
        .bind(maybe(|e| e.rows_out))
        .bind(maybe(|e| e.bytes_out))
        .bind(text(|e| e.error.as_deref()))
        .bind(column(|e| e.now_ms))
        .bind(text(|e| e.device_note.as_deref()))
        .bind(maybe(|e| e.io_us))
        .bind(maybe(|e| e.transfer_us))
        .bind(maybe(|e| e.compute_us))
        .bind(text(|e| e.route.as_deref()))
        .bind(text(|e| e.rendered.as_deref()))
        .bind(text(|e| e.plan.as_deref()))
        .bind(super::wall_us())
}

/// The ends as rows (`e`), their task rows updated (`t`, returning `e.attempt_id` and
/// `$returning`) and their attempt rows updated (`a`): the common head of
/// [`FINISH_MANY_POSTGRES`] and [`FINISH_AND_READ_POSTGRES`].
macro_rules! finish_ctes {
    ($ends:expr, $returning:literal) => {
        concat!(
            "WITH e AS (",
            $ends,
            "), \
             t AS ( \
                UPDATE task_instances ti SET state = e.task_state, retry_at_ms = e.retry_at_ms, \
                    device = COALESCE(e.device, ti.device), lease_owner = NULL, lease_expires_at_ms = NULL, \
                    output_path = COALESCE(e.output_path, ti.output_path), rows_out = e.rows_out, \
                    bytes_out = e.bytes_out, error = e.error, \
                    finished_at_ms = CASE WHEN e.task_state = 'up_for_retry' THEN NULL ELSE e.now_ms END, \
                    pokes = ti.pokes + CASE WHEN e.attempt_state = 'rescheduled' THEN 1 ELSE 0 END, \
                    waiting_since_ms = CASE WHEN e.attempt_state = 'rescheduled' \
                        THEN COALESCE(ti.waiting_since_ms, ti.started_at_ms) ELSE ti.waiting_since_ms END \
                FROM e WHERE ti.run_id = e.run_id AND ti.task_id = e.task_id AND ti.state = 'running' \
                    AND ti.attempts = e.attempt \
                    AND ",
            no_flush_wait!(),
            " = 'off' \
                RETURNING e.attempt_id",
            $returning,
            "), \
             a AS ( \
                UPDATE task_attempts ta SET state = e.attempt_state, device = e.device, \
                    device_note = e.device_note, error = e.error, rows_out = e.rows_out, bytes_out = e.bytes_out, finished_at_ms = e.now_ms, \
                    io_us = e.io_us, transfer_us = e.transfer_us, compute_us = e.compute_us, route = e.route, \
                    rendered = e.rendered, plan = e.plan, finished_at_us = $21 \
                FROM e WHERE ta.id = e.attempt_id AND ta.state = 'running' \
                    AND ta.id IN (SELECT attempt_id FROM t) \
                RETURNING ta.id) "
        )
    };
}

/// The ids of the attempts recorded, or the [`unpaired!`] failure (see
/// [`finish_attempts_postgres`]), as the column `attempt_ids`.
macro_rules! recorded_attempt_ids {
    () => {
        concat!(
            "CASE WHEN (SELECT COUNT(*) FROM t) = (SELECT COUNT(*) FROM a) \
                  THEN COALESCE((SELECT array_agg(id) FROM a), '{}') \
                  ELSE CAST('",
            unpaired!(),
            " ' || (SELECT COUNT(*) FROM t) || ' tasks, ' || (SELECT COUNT(*) FROM a) || ' attempts' AS bigint[]) \
             END AS attempt_ids"
        )
    };
}

/// The ends as rows, from arrays of one column each (`$1` to `$20`, see [`bind_ends`]).
macro_rules! ends_from_arrays {
    () => {
        "SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], \
                             $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::text[], \
                             $13::bigint[], $14::text[], $15::bigint[], $16::bigint[], $17::bigint[], $18::text[], \
                             $19::text[], $20::text[]) \
            AS e(run_id, task_id, attempt, attempt_id, attempt_state, task_state, retry_at_ms, device, \
                 output_path, rows_out, bytes_out, error, now_ms, device_note, io_us, transfer_us, compute_us, route, \
                 rendered, plan)"
    };
}

const FINISH_MANY_POSTGRES: &str = concat!(
    finish_ctes!(ends_from_arrays!(), ""),
    "SELECT ",
    recorded_attempt_ids!()
);

/// One end (bound as scalars, see [`bind_end`]) and, in the same statement, its run as a
/// worker's hand-off reads it: the run if a worker decides it (the condition of [`Store::service_runs`]) and every
/// task of the run, the ended one as this statement left it (the statement's own reads see
/// the rows as they were before it), each as JSON.
const FINISH_AND_READ_POSTGRES: &str = concat!(
    finish_ctes!(
        // One end as scalars, the same columns in the same order (see `bind_end`): a
        // statement whose parameters are all scalars gets a generic plan after a few runs,
        // where one over arrays was planned again each time (0.45 ms a time on a 2-core VM).
        "SELECT $1::bigint AS run_id, $2::text AS task_id, $3::bigint AS attempt, $4::bigint AS attempt_id, \
                $5::text AS attempt_state, $6::text AS task_state, $7::bigint AS retry_at_ms, $8::text AS device, \
                $9::text AS output_path, $10::bigint AS rows_out, $11::bigint AS bytes_out, $12::text AS error, \
                $13::bigint AS now_ms, $14::text AS device_note, $15::bigint AS io_us, $16::bigint AS transfer_us, \
                $17::bigint AS compute_us, $18::text AS route, $19::text AS rendered, $20::text AS plan",
        ", ti.*"
    ),
    "SELECT ",
    recorded_attempt_ids!(),
    ", (SELECT json_agg(x ORDER BY x.position, x.map_index NULLS FIRST) FROM ( \
          SELECT position, ",
    task_columns!(),
    " FROM t UNION ALL SELECT position, ",
    task_columns!(),
    " FROM task_instances WHERE run_id = $1 AND task_id <> ALL (SELECT task_id FROM t)) x) AS tasks, \
        (SELECT row_to_json(r) FROM (",
    select_runs!(""),
    "WHERE r.id = $1 AND ",
    service_run!(),
    ") r) AS run"
);

/// A run's tasks (`$1`) on SQLite as one JSON array of [`TaskRow`]s, in the order of
/// [`Store::tasks`] (`depends_on_past`, an integer in SQLite, as a JSON boolean).
const TASKS_AS_JSON_SQLITE: &str = "SELECT json_group_array(json_object( \
        'task_id', task_id, 'kind', kind, 'state', state, 'needs_json', needs_json, \
        'priority', priority, 'retries', retries, 'retry_delay_ms', retry_delay_ms, \
        'timeout_ms', timeout_ms, 'attempts', attempts, 'retry_at_ms', retry_at_ms, \
        'device', device, 'output_path', output_path, 'rows_out', rows_out, \
        'bytes_out', bytes_out, 'error', error, 'started_at_ms', started_at_ms, \
        'finished_at_ms', finished_at_ms, 'pool', pool, 'trigger_rule', trigger_rule, \
        'skip_note', skip_note, 'max_retry_delay_ms', max_retry_delay_ms, \
        'depends_on_past', json(CASE WHEN depends_on_past THEN 'true' ELSE 'false' END), \
        'pokes', pokes, 'waiting_since_ms', waiting_since_ms, 'map_index', map_index, \
        'map_value', map_value) ORDER BY position, map_index NULLS FIRST) \
    FROM task_instances WHERE run_id = $1";

/// [`Store::finish_and_read`] on SQLite: the end as [`Store::finish_attempt`] writes it and,
/// in the same transaction (no other writer between), the run and its tasks read after it,
/// then the task `follow` chooses from them claimed.
async fn finish_and_read_sqlite(
    conn: &mut sqlx::SqliteConnection,
    f: &FinishAttempt,
    follow: Option<&FollowOn>,
) -> Result<(bool, Option<AfterEnd>)> {
    use sqlx::Connection;
    check_end(f)?;
    let mut tx = conn.begin().await?;
    let task_rows = finish_task_query(f)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let attempt_rows = finish_attempt_query(f)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if task_rows != 1 || attempt_rows != 1 {
        // Dropping the transaction rolls it back: a stale report changes nothing.
        return Ok((false, None));
    }
    record_produced!(tx, f);
    expand_mapped!(tx, f);
    let run: Option<RunRow> = sqlx::query_as(select_runs!(concat!(
        "WHERE r.id = $1 AND ",
        service_run!()
    )))
    .bind(f.run_id)
    .fetch_optional(&mut *tx)
    .await?;
    // The tasks as one JSON row: sqlx hands each row over from its SQLite thread on its own.
    let tasks: String = sqlx::query_scalar(TASKS_AS_JSON_SQLITE)
        .bind(f.run_id)
        .fetch_one(&mut *tx)
        .await?;
    let tasks: Vec<TaskRow> = serde_json::from_str(&tasks)
        .map_err(|e| StoreError::Corrupt(format!("a run's tasks as JSON: {e}")))?;
    let run = run.map(RunRow::into_record).transpose()?;
    let tasks: Vec<TaskRecord> = tasks
        .into_iter()
        .map(TaskRow::into_record)
        .collect::<Result<_>>()?;
    let mut claimed = None;
    if let (Some(follow), Some(run)) = (follow, &run)
        && let Some((task_id, now_ms)) = (follow.choose)(run, &tasks)
    {
        let next = follow.next();
        let found = claim_next_in(&mut tx, &next, (f.run_id, &task_id), now_ms).await?;
        claimed = found.map(|(attempt, attempt_id)| Claim {
            run_id: f.run_id,
            task_id,
            attempt_id,
            attempt,
            light: follow.light,
        });
    }
    tx.commit().await?;
    Ok((
        true,
        Some(AfterEnd {
            run,
            tasks,
            claimed,
        }),
    ))
}

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
        record_produced!(tx, f);
        recorded.push(true);
    }
    tx.commit().await?;
    Ok(Some(recorded))
}

type Args<DB> = <DB as sqlx::Database>::Arguments;

/// The refusal of a report for an attempt that is no longer its task's current one.
fn stale(f: &FinishAttempt) -> StoreError {
    StoreError::Conflict(format!(
        "attempt {} of task {} in run {} is no longer current",
        f.attempt, f.task_id, f.run_id
    ))
}

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
            finished_at_ms = CASE WHEN $1 = 'up_for_retry' THEN NULL ELSE $8 END, \
            pokes = pokes + CASE WHEN $12 = 'rescheduled' THEN 1 ELSE 0 END, \
            waiting_since_ms = CASE WHEN $12 = 'rescheduled' \
                THEN COALESCE(waiting_since_ms, started_at_ms) ELSE waiting_since_ms END \
         WHERE run_id = $9 AND task_id = $10 AND state = 'running' AND attempts = $11",
    )
    .bind(f.task_state.as_str())
    .bind(f.retry_at_ms)
    .bind(f.device.map(Place::code))
    .bind(f.output_path.as_deref())
    .bind(f.rows_out)
    .bind(f.bytes_out)
    .bind(f.error.as_deref())
    .bind(f.now_ms)
    .bind(f.run_id)
    .bind(f.task_id.as_str())
    .bind(f.attempt)
    .bind(f.attempt_state.as_str())
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
            finished_at_ms = $6, device_note = $7, io_us = $8, transfer_us = $9, compute_us = $10, \
            route = $11, rendered = $12, plan = $13, finished_at_us = $15 \
         WHERE id = $14 AND state = 'running'",
    )
    .bind(f.attempt_state.as_str())
    .bind(f.device.map(Place::code))
    .bind(f.error.as_deref())
    .bind(f.rows_out)
    .bind(f.bytes_out)
    .bind(f.now_ms)
    .bind(f.device_note.as_deref())
    .bind(f.io_us)
    .bind(f.transfer_us)
    .bind(f.compute_us)
    .bind(f.route.as_deref())
    .bind(f.rendered.as_deref())
    .bind(f.plan.as_deref())
    .bind(f.attempt_id)
    .bind(super::wall_us())
}

impl Store {
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
            let attempt: Option<i64> = sqlx::query_scalar(
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
            let Some(attempt) = attempt else {
                return Err(StoreError::Conflict(format!("task {task_id} of run {run_id} is not queued")));
            };
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO task_attempts (run_id, task_id, attempt, state, owner, started_at_ms, started_at_us) \
                 VALUES ($1, $2, $3, 'running', $4, $5, $6) RETURNING id",
            )
            .bind(run_id)
            .bind(task_id)
            .bind(attempt)
            .bind(owner)
            .bind(now_ms)
            .bind(super::wall_us())
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((id, attempt))
        })
    }

    /// Records how an attempt ended and moves its task on, fenced by the attempt number: a
    /// report for an attempt that is no longer the task's current one changes nothing.
    pub async fn finish_attempt(&self, f: &FinishAttempt) -> Result<()> {
        check_end(f)?;
        if let Pool::Postgres(pool) = &self.pool
            && f.mapped.is_none()
            && let Some([recorded]) = finish_attempts_postgres(pool, std::slice::from_ref(f))
                .await?
                .as_deref()
        {
            return if *recorded { Ok(()) } else { Err(stale(f)) };
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let task_rows = finish_task_query(f).execute(&mut *tx).await?.rows_affected();
            let attempt_rows = finish_attempt_query(f).execute(&mut *tx).await?.rows_affected();
            if task_rows != 1 || attempt_rows != 1 {
                // Dropping the transaction rolls it back: a stale report changes nothing.
                return Err(stale(f));
            }
            record_produced!(tx, f);
            expand_mapped!(tx, f);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records one attempt's end as [`Store::finish_attempt`] does and returns whether it was
    /// recorded (`false`: a stale report, which changed nothing) and, where that costs no
    /// extra round trip, the run as the end left it, for the worker's hand-off to decide
    /// from ([`AfterEnd`]):
    /// - on PostgreSQL one statement ends the attempt and reads the run and its tasks
    ///   ([`FINISH_AND_READ_POSTGRES`]);
    /// - on SQLite the end's transaction reads them after its writes, every end included,
    ///   and with `follow` goes on to decide the run and claim the one task the decision
    ///   readies ([`FollowOn`], [`AfterEnd::claimed`]): one transaction for a chain's whole
    ///   hand-off. PostgreSQL ignores `follow`: deciding between its statements would add
    ///   round trips, not save them.
    ///
    /// `None` (on PostgreSQL an end that records asset events or expands a mapped task; a
    /// stale end): the caller reads the run itself.
    pub async fn finish_and_read(
        &self,
        f: &FinishAttempt,
        follow: Option<&FollowOn>,
    ) -> Result<(bool, Option<AfterEnd>)> {
        if let Pool::Sqlite(pool) = &self.pool {
            return self
                .kept
                .sqlite
                .run(pool, async |conn| {
                    finish_and_read_sqlite(conn, f, follow).await
                })
                .await;
        }
        // Neither an expansion nor asset events (which take a transaction around the end).
        let records_events = f.task_state == TaskState::Success && !f.produces.is_empty();
        let simple = f.mapped.is_none() && !records_events;
        if let (Pool::Postgres(pool), true) = (&self.pool, simple) {
            check_end(f)?;
            #[derive(sqlx::FromRow)]
            struct Row {
                attempt_ids: Vec<i64>,
                tasks: Option<sqlx::types::Json<Vec<TaskRow>>>,
                run: Option<sqlx::types::Json<RunRow>>,
            }
            let query = sqlx::query_as::<_, Row>(FINISH_AND_READ_POSTGRES);
            let row = self
                .kept
                .postgres
                .run(pool, async |conn| bind_end(query, f).fetch_one(conn).await)
                .await;
            match row {
                Err(e) if is_unpaired(&e) => {}
                row => {
                    let row = row?;
                    if row.attempt_ids.is_empty() {
                        return Ok((false, None));
                    }
                    let tasks = row.tasks.map(|t| t.0).unwrap_or_default();
                    return Ok((
                        true,
                        Some(AfterEnd {
                            run: row.run.map(|r| r.0.into_record()).transpose()?,
                            tasks: tasks
                                .into_iter()
                                .map(TaskRow::into_record)
                                .collect::<Result<_>>()?,
                            claimed: None,
                        }),
                    ));
                }
            }
        }
        let recorded = self.finish_attempts(std::slice::from_ref(f)).await?;
        Ok((recorded.first() == Some(&true), None))
    }

    /// Records many attempt ends at once (a worker's group commit), each fenced as in
    /// [`Store::finish_attempt`]. Returns, in order, whether each was recorded: `false` is a
    /// stale report, which changed nothing.
    pub async fn finish_attempts(&self, ends: &[FinishAttempt]) -> Result<Vec<bool>> {
        for f in ends {
            check_end(f)?;
        }
        // One end, or an expansion (which creates many rows, see `expand_mapped!`): recorded
        // one by one.
        if ends.len() == 1 || ends.iter().any(|e| e.mapped.is_some()) {
            let mut recorded = Vec::with_capacity(ends.len());
            for f in ends {
                recorded.push(match self.finish_attempt(f).await {
                    Ok(()) => true,
                    Err(StoreError::Conflict(_)) => false,
                    Err(e) => return Err(e),
                });
            }
            return Ok(recorded);
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

    /// running → cancelled for the task's current attempt (fenced by its number), ending the
    /// attempt too; the worker finds its lease gone and stops the stage.
    pub async fn cancel_running_task(
        &self,
        run_id: i64,
        task_id: &str,
        attempt: i64,
        now_ms: i64,
    ) -> Result<()> {
        let stop = Stop {
            task_state: "cancelled",
            attempt_state: "cancelled",
            error: "run cancelled",
        };
        self.stop_running_task(run_id, task_id, attempt, now_ms, stop)
            .await
    }

    /// running → failed for the task's current attempt, which ends `timed_out` with `error`:
    /// its run passed its `run_timeout`. The worker finds its lease gone and stops the stage.
    pub async fn time_out_running_task(
        &self,
        run_id: i64,
        task_id: &str,
        attempt: i64,
        now_ms: i64,
        error: &str,
    ) -> Result<()> {
        let stop = Stop {
            task_state: "failed",
            attempt_state: "timed_out",
            error,
        };
        self.stop_running_task(run_id, task_id, attempt, now_ms, stop)
            .await
    }

    async fn stop_running_task(
        &self,
        run_id: i64,
        task_id: &str,
        attempt: i64,
        now_ms: i64,
        stop: Stop<'_>,
    ) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let tasks = sqlx::query(
                "UPDATE task_instances SET state = $5, error = $6, lease_owner = NULL, \
                    lease_expires_at_ms = NULL, finished_at_ms = $1 \
                 WHERE run_id = $2 AND task_id = $3 AND state = 'running' AND attempts = $4",
            )
            .bind(now_ms)
            .bind(run_id)
            .bind(task_id)
            .bind(attempt)
            .bind(stop.task_state)
            .bind(stop.error)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if tasks != 1 {
                return Err(StoreError::Conflict(format!(
                    "task {task_id} of run {run_id} is not running attempt {attempt}"
                )));
            }
            sqlx::query(
                "UPDATE task_attempts SET state = $5, error = $6, finished_at_ms = $1, finished_at_us = $7 \
                 WHERE run_id = $2 AND task_id = $3 AND attempt = $4 AND state = 'running'",
            )
            .bind(now_ms)
            .bind(run_id)
            .bind(task_id)
            .bind(attempt)
            .bind(stop.attempt_state)
            .bind(stop.error)
            .bind(super::wall_us())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
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
        #[derive(sqlx::FromRow)]
        struct Row {
            predicted_kind: String,
            device: Option<String>,
            predicted_cpu_us: Option<i64>,
            predicted_gpu_us: Option<i64>,
            cpu_factor: f64,
            gpu_factor: f64,
            started_at_ms: i64,
            finished_at_ms: i64,
        }
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
        rows.into_iter()
            .map(|row| {
                Ok(PredictedAttempt {
                    kind: row.predicted_kind,
                    device: place_of(row.device)?,
                    cpu_us: row.predicted_cpu_us,
                    gpu_us: row.predicted_gpu_us,
                    cpu_factor: row.cpu_factor,
                    gpu_factor: row.gpu_factor,
                    took_ms: row.finished_at_ms - row.started_at_ms,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::TASKS_AS_JSON_SQLITE;

    /// The SQLite hand-off's JSON spells the task columns out again: each column `TaskRow`
    /// reads must be there under its own name, or a new optional column would come back as
    /// `None` from that read alone.
    #[test]
    fn the_sqlite_json_of_tasks_names_every_task_column() {
        for column in task_columns!().split(", ") {
            let pair = if column == "depends_on_past" {
                "'depends_on_past', json(CASE WHEN depends_on_past".to_string()
            } else {
                format!("'{column}', {column}")
            };
            assert!(TASKS_AS_JSON_SQLITE.contains(&pair), "{column} is missing");
        }
        assert_eq!(
            TASKS_AS_JSON_SQLITE.matches("', ").count(),
            task_columns!().split(", ").count()
        );
    }
}
