//! Counts for monitoring (`/metrics`): runs and tasks per state, attempt time per device.

use super::{Pool, Result, Store};

/// What `/metrics` reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// (state, how many runs).
    pub runs: Vec<(String, i64)>,
    /// (state, how many task instances).
    pub tasks: Vec<(String, i64)>,
    /// (device, finished attempts, their total milliseconds).
    pub device_busy: Vec<(String, i64, i64)>,
}

impl Store {
    /// Runs and tasks per state, and finished attempts' time per device.
    pub async fn counts(&self) -> Result<Counts> {
        let (runs, tasks, device_busy) = on_pool!(self, pool => {
            let runs: Vec<(String, i64)> = sqlx::query_as(
                "SELECT state, COUNT(*) FROM runs GROUP BY state ORDER BY state",
            )
            .fetch_all(pool)
            .await?;
            let tasks: Vec<(String, i64)> = sqlx::query_as(
                "SELECT state, COUNT(*) FROM task_instances GROUP BY state ORDER BY state",
            )
            .fetch_all(pool)
            .await?;
            let busy: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT COALESCE(device, 'none'), COUNT(*), \
                        CAST(COALESCE(SUM(finished_at_ms - started_at_ms), 0) AS BIGINT) \
                 FROM task_attempts WHERE finished_at_ms IS NOT NULL \
                 GROUP BY COALESCE(device, 'none') ORDER BY 1",
            )
            .fetch_all(pool)
            .await?;
            (runs, tasks, busy)
        });
        Ok(Counts {
            runs,
            tasks,
            device_busy,
        })
    }
}
