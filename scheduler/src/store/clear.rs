//! Clearing tasks of a finished run so that they run again.

use super::{Pool, Result, Store, StoreError};

impl Store {
    /// Puts `task_ids` of the finished run `run_id` back to `scheduled` and the run back to
    /// `queued`, ownerless (the scheduler service drives it from now on), in one transaction.
    /// Fenced: a run that is not finished, or a task that is not, is a `Conflict` and
    /// nothing changes.
    pub async fn clear_tasks(&self, run_id: i64, task_ids: &[String]) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let run = sqlx::query(
                "UPDATE runs SET state = 'queued', finished_at_ms = NULL, owner = NULL, \
                 heartbeat_at_ms = NULL, cancel_requested_at_ms = NULL, note = NULL, \
                 notify = CASE WHEN notify IS NULL THEN NULL ELSE 'watching' END \
                 WHERE id = $1 AND state IN ('success', 'failed', 'cancelled')",
            )
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            if run.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!(
                    "run {run_id} is not finished; wait for it or cancel it first"
                )));
            }
            for task_id in task_ids {
                let task = sqlx::query(
                    "UPDATE task_instances SET state = 'scheduled', retry_at_ms = NULL, \
                     error = NULL, started_at_ms = NULL, finished_at_ms = NULL, waiting_since_ms = NULL, \
                     queued_at_ms = NULL, lease_owner = NULL, lease_expires_at_ms = NULL \
                     WHERE run_id = $1 AND task_id = $2 AND state IN \
                     ('success', 'failed', 'upstream_failed', 'skipped', 'cancelled')",
                )
                .bind(run_id)
                .bind(task_id)
                .execute(&mut *tx)
                .await?;
                if task.rows_affected() != 1 {
                    return Err(StoreError::Conflict(format!(
                        "task `{task_id}` of run {run_id} is not finished"
                    )));
                }
            }
            // Tasks an `amdahl run` process kept to itself are the workers' now.
            sqlx::query("UPDATE task_instances SET in_process = 0 WHERE run_id = $1")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }
}
