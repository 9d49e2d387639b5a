//! Task instances of a run: reading them, and moving those that are not running (one at a
//! time or many at once), each update fenced by the state the task leaves.

use super::records::TaskRow;
use super::{
    INSERT_CHUNK, Pool, Result, RunRecord, Store, StoreError, TaskRecord, check_task_edge,
};
use crate::state::TaskState;

impl Store {
    /// A run's task instances in DAG order.
    pub async fn tasks(&self, run_id: i64) -> Result<Vec<TaskRecord>> {
        let rows: Vec<TaskRow> = on_pool!(self, pool => {
            sqlx::query_as(
                select_tasks!("WHERE run_id = $1 ORDER BY position, map_index NULLS FIRST"),
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(TaskRow::into_record).collect()
    }

    /// The task states of the run before `run` along its DAG's schedule: the scheduled or
    /// backfilled run with the latest earlier logical date (the newest such run when a date
    /// was run twice). Empty when there is none.
    pub async fn previous_task_states(
        &self,
        run: &RunRecord,
    ) -> Result<std::collections::BTreeMap<String, TaskState>> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT t.task_id, t.state FROM task_instances t \
                 WHERE t.run_id = (SELECT r.id FROM runs r \
                                   WHERE r.dag_id = $1 AND r.logical_date < $2 AND r.id <> $3 \
                                     AND r.trigger_kind IN ('schedule', 'backfill') \
                                   ORDER BY r.logical_date DESC, r.id DESC LIMIT 1)",
            )
            .bind(&run.dag_id)
            .bind(&run.logical_date)
            .bind(run.id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(task_id, state)| {
                let state = TaskState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("task state `{state}`")))?;
                Ok((task_id, state))
            })
            .collect()
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

    /// For a run's tasks: how many wait for a scheduling decision (`scheduled` or
    /// `up_for_retry`) and how many are unfinished. One aggregate, no rows to the client.
    pub async fn undecided_tasks(&self, run_id: i64) -> Result<(i64, i64)> {
        #[derive(sqlx::FromRow)]
        struct Row {
            waiting: Option<i64>,
            unfinished: Option<i64>,
        }
        let row: Row = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT SUM(CASE WHEN state IN ('scheduled', 'up_for_retry') THEN 1 ELSE 0 END) AS waiting, \
                        SUM(CASE WHEN state IN ('success', 'failed', 'upstream_failed', 'skipped', 'cancelled') \
                                 THEN 0 ELSE 1 END) AS unfinished \
                 FROM task_instances WHERE run_id = $1",
            )
            .bind(run_id)
            .fetch_one(pool)
            .await?
        });
        Ok((row.waiting.unwrap_or(0), row.unfinished.unwrap_or(0)))
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
                update.push(")").push(self.relaxed());
                update.build().execute(pool).await?.rows_affected()
            });
        }
        Ok(moved)
    }

    /// Test support: puts a task row straight into `state`, bypassing the lifecycle (the
    /// triggers only guard updates). Used to check the database's transition rules.
    #[cfg(feature = "testing")]
    pub async fn force_task_state_for_test(
        &self,
        run_id: i64,
        task_id: &str,
        state: &str,
    ) -> Result<()> {
        #[derive(sqlx::FromRow)]
        struct Row {
            position: i64,
            kind: String,
            needs_json: String,
            priority: i64,
            retries: i64,
            retry_delay_ms: i64,
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Row = sqlx::query_as(
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
            .bind(row.position)
            .bind(&row.kind)
            .bind(state)
            .bind(&row.needs_json)
            .bind(row.priority)
            .bind(row.retries)
            .bind(row.retry_delay_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Test support: a raw state update, to check that the database refuses illegal edges.
    #[cfg(feature = "testing")]
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
