//! Backfill rows: what a backfill covers and whether it is still creating runs.

use super::{Pool, Result, Store, StoreError};
use crate::state::RunState;

/// A backfill to create.
#[derive(Clone, Debug)]
pub struct NewBackfill {
    pub dag_id: String,
    pub dag_version_id: i64,
    /// First and last logical dates covered (RFC 3339, as runs store them).
    pub from_date: String,
    pub to_date: String,
    /// `none`, `failed` or `all`.
    pub reprocess: String,
    pub max_active_runs: i64,
    pub params_json: String,
    pub now_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackfillRecord {
    pub id: i64,
    pub dag_id: String,
    pub dag_version_id: i64,
    pub from_date: String,
    pub to_date: String,
    pub reprocess: String,
    pub max_active_runs: i64,
    pub params_json: String,
    /// `running` while it creates or waits for runs; then `success` or `failed`.
    pub state: String,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// A run of a DAG inside a backfill's range.
#[derive(Clone, Debug, PartialEq)]
pub struct DatedRun {
    pub run_id: i64,
    pub logical_date: String,
    pub state: RunState,
    pub backfill_id: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct BackfillRow {
    id: i64,
    dag_id: String,
    dag_version_id: i64,
    from_date: String,
    to_date: String,
    reprocess: String,
    max_active_runs: i64,
    params_json: String,
    state: String,
    created_at_ms: i64,
    finished_at_ms: Option<i64>,
}

impl BackfillRow {
    fn into_record(self) -> BackfillRecord {
        BackfillRecord {
            id: self.id,
            dag_id: self.dag_id,
            dag_version_id: self.dag_version_id,
            from_date: self.from_date,
            to_date: self.to_date,
            reprocess: self.reprocess,
            max_active_runs: self.max_active_runs,
            params_json: self.params_json,
            state: self.state,
            created_at_ms: self.created_at_ms,
            finished_at_ms: self.finished_at_ms,
        }
    }
}

macro_rules! select_backfills {
    ($rest:literal) => {
        concat!(
            "SELECT id, dag_id, dag_version_id, from_date, to_date, reprocess, max_active_runs, ",
            "params_json, state, created_at_ms, finished_at_ms FROM backfills ",
            $rest
        )
    };
}

impl Store {
    pub async fn create_backfill(&self, new: &NewBackfill) -> Result<i64> {
        let id: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO backfills (dag_id, dag_version_id, from_date, to_date, reprocess, \
                                        max_active_runs, params_json, state, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8) RETURNING id",
            )
            .bind(&new.dag_id)
            .bind(new.dag_version_id)
            .bind(&new.from_date)
            .bind(&new.to_date)
            .bind(&new.reprocess)
            .bind(new.max_active_runs)
            .bind(&new.params_json)
            .bind(new.now_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(id)
    }

    pub async fn backfill(&self, id: i64) -> Result<Option<BackfillRecord>> {
        let row: Option<BackfillRow> = on_pool!(self, pool => {
            sqlx::query_as(select_backfills!("WHERE id = $1")).bind(id).fetch_optional(pool).await?
        });
        Ok(row.map(BackfillRow::into_record))
    }

    /// Backfills still creating or waiting for runs, oldest first.
    pub async fn running_backfills(&self) -> Result<Vec<BackfillRecord>> {
        let rows: Vec<BackfillRow> = on_pool!(self, pool => {
            sqlx::query_as(select_backfills!("WHERE state = 'running' ORDER BY id"))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(BackfillRow::into_record).collect())
    }

    /// Every backfill, newest first.
    pub async fn list_backfills(&self, limit: i64) -> Result<Vec<BackfillRecord>> {
        let rows: Vec<BackfillRow> = on_pool!(self, pool => {
            sqlx::query_as(select_backfills!("ORDER BY id DESC LIMIT $1"))
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(BackfillRow::into_record).collect())
    }

    /// Stops a running backfill: it creates no more runs, and its unfinished runs are asked
    /// to cancel. Returns how many runs were asked; `Conflict` if it was not running.
    pub async fn cancel_backfill(&self, id: i64, now_ms: i64) -> Result<u64> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let stopped = sqlx::query(
                "UPDATE backfills SET state = 'cancelled', finished_at_ms = $1 WHERE id = $2 AND state = 'running'",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if stopped != 1 {
                return Err(StoreError::Conflict(format!("backfill {id} is not running")));
            }
            let runs = sqlx::query(
                "UPDATE runs SET cancel_requested_at_ms = COALESCE(cancel_requested_at_ms, $1) \
                 WHERE backfill_id = $2 AND state IN ('queued', 'running')",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(runs)
        })
    }

    /// running → `state`; `Conflict` if another scheduler finished it first.
    pub async fn finish_backfill(&self, id: i64, state: RunState, now_ms: i64) -> Result<()> {
        let affected = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE backfills SET state = $1, finished_at_ms = $2 WHERE id = $3 AND state = 'running'",
            )
            .bind(state.as_str())
            .bind(now_ms)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if affected == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "backfill {id} is not running"
            )))
        }
    }

    /// Deletes backfills that finished before `finished_before_ms` and have no runs left
    /// (`db clean` deletes the runs first); returns how many went.
    pub async fn delete_finished_backfills(&self, finished_before_ms: i64) -> Result<u64> {
        let deleted = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM backfills WHERE state <> 'running' AND finished_at_ms < $1 \
                   AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.backfill_id = backfills.id)",
            )
            .bind(finished_before_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(deleted)
    }

    /// Runs of `dag_id` whose logical date is in `[from, to]`, oldest first.
    pub async fn dated_runs(&self, dag_id: &str, from: &str, to: &str) -> Result<Vec<DatedRun>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            logical_date: String,
            state: String,
            backfill_id: Option<i64>,
        }
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, logical_date, state, backfill_id FROM runs \
                 WHERE dag_id = $1 AND logical_date >= $2 AND logical_date <= $3 ORDER BY id",
            )
            .bind(dag_id)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|row| {
                Ok(DatedRun {
                    run_id: row.id,
                    logical_date: row.logical_date,
                    state: RunState::parse(&row.state)
                        .ok_or_else(|| StoreError::Corrupt(format!("run state `{}`", row.state)))?,
                    backfill_id: row.backfill_id,
                })
            })
            .collect()
    }
}
