//! Named pools: a pool's slots cap how many tasks that name it are queued or running at once,
//! across every run and DAG. A task naming a pool that does not exist waits, as if the pool
//! had no slots, until someone creates it.
//!
//! The cap is kept where tasks enter `queued`: [`Store::queue_task`] moves a pooled task only
//! if its pool has a free slot, in one statement on SQLite (whose writers are serialised) and
//! under the pool row's lock on PostgreSQL (so two schedulers queueing into the same pool at
//! once cannot both take the last slot).

use std::collections::BTreeMap;

use super::{Pool, Result, Store, StoreError, check_task_edge};
use crate::state::TaskState;

/// A pool and how many of its slots are taken now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRecord {
    pub name: String,
    pub slots: i64,
    pub description: String,
    /// Tasks in the pool that are queued or running.
    pub occupied: i64,
}

const QUEUE_POOLED: &str = "UPDATE task_instances SET state = 'queued', retry_at_ms = NULL, queued_at_ms = $1 \
     WHERE run_id = $2 AND task_id = $3 AND state = $4 \
       AND (SELECT count(*) FROM task_instances o WHERE o.pool = $5 AND o.state IN ('queued', 'running')) \
           < (SELECT slots FROM pools WHERE name = $5)";

impl Store {
    /// Creates a pool or changes its slots and description.
    pub async fn set_pool(
        &self,
        name: &str,
        slots: i64,
        description: &str,
        now_ms: i64,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO pools (name, slots, description, updated_at_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET slots = excluded.slots, \
                     description = excluded.description, updated_at_ms = excluded.updated_at_ms",
            )
            .bind(name)
            .bind(slots)
            .bind(description)
            .bind(now_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Deletes a pool; returns whether it existed. Tasks naming it then wait.
    pub async fn delete_pool(&self, name: &str) -> Result<bool> {
        let affected = on_pool!(self, pool => {
            sqlx::query("DELETE FROM pools WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected == 1)
    }

    /// Every pool with its occupancy, by name.
    pub async fn pools(&self) -> Result<Vec<PoolRecord>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            name: String,
            slots: i64,
            description: String,
            occupied: i64,
        }
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT p.name, p.slots, p.description, \
                    (SELECT count(*) FROM task_instances t \
                     WHERE t.pool = p.name AND t.state IN ('queued', 'running')) AS occupied \
                 FROM pools p ORDER BY p.name",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| PoolRecord {
                name: row.name,
                slots: row.slots,
                description: row.description,
                occupied: row.occupied,
            })
            .collect())
    }

    /// Free slots per pool, for the scheduling core.
    pub async fn pool_free(&self) -> Result<BTreeMap<String, usize>> {
        Ok(self
            .pools()
            .await?
            .into_iter()
            .map(|p| (p.name, (p.slots - p.occupied).max(0) as usize))
            .collect())
    }

    /// Moves a task to `queued`; a task in a pool only while the pool has a free slot.
    /// `Conflict` when the task was not in `from` or its pool is full (or missing).
    pub async fn queue_task(
        &self,
        run_id: i64,
        task_id: &str,
        from: TaskState,
        pool_name: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let Some(pool_name) = pool_name else {
            return self
                .set_task_state(run_id, task_id, from, TaskState::Queued, now_ms, None)
                .await;
        };
        check_task_edge(from, TaskState::Queued)?;
        let affected = match &self.pool {
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT 1 FROM pools WHERE name = $1 FOR UPDATE")
                    .bind(pool_name)
                    .execute(&mut *tx)
                    .await?;
                let affected = sqlx::query(QUEUE_POOLED)
                    .bind(now_ms)
                    .bind(run_id)
                    .bind(task_id)
                    .bind(from.as_str())
                    .bind(pool_name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                affected
            }
            Pool::Sqlite(pool) => sqlx::query(QUEUE_POOLED)
                .bind(now_ms)
                .bind(run_id)
                .bind(task_id)
                .bind(from.as_str())
                .bind(pool_name)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        if affected == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "task {task_id} of run {run_id} is not {from} or pool `{pool_name}` has no free slot"
            )))
        }
    }
}
