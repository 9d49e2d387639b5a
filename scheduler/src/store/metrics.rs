//! Counts for monitoring (`/metrics`): runs and tasks per state, attempt time per device, and
//! how long queued tasks waited for a worker.

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
    /// Milliseconds from queued to claimed of the latest attempts (at most 1,000), sorted.
    pub claim_latency_ms: Vec<i64>,
}

/// How many rows are in one state.
#[derive(sqlx::FromRow)]
struct StateTotal {
    state: String,
    total: i64,
}

impl StateTotal {
    fn pair(self) -> (String, i64) {
        (self.state, self.total)
    }
}

/// Finished attempts on one device and their total time.
#[derive(sqlx::FromRow)]
struct DeviceBusy {
    device_or_none: String,
    attempts: i64,
    busy_ms: i64,
}

impl Store {
    /// Runs and tasks per state, and finished attempts' time per device.
    pub async fn counts(&self) -> Result<Counts> {
        let (runs, tasks, device_busy, latency) = on_pool!(self, pool => {
            let runs: Vec<StateTotal> = sqlx::query_as(
                "SELECT state, COUNT(*) AS total FROM runs GROUP BY state ORDER BY state",
            )
            .fetch_all(pool)
            .await?;
            let tasks: Vec<StateTotal> = sqlx::query_as(
                "SELECT state, COUNT(*) AS total FROM task_instances GROUP BY state ORDER BY state",
            )
            .fetch_all(pool)
            .await?;
            let busy: Vec<DeviceBusy> = sqlx::query_as(
                "SELECT COALESCE(device, 'none') AS device_or_none, COUNT(*) AS attempts, \
                        CAST(COALESCE(SUM(finished_at_ms - started_at_ms), 0) AS BIGINT) AS busy_ms \
                 FROM task_attempts WHERE finished_at_ms IS NOT NULL \
                 GROUP BY COALESCE(device, 'none') ORDER BY 1",
            )
            .fetch_all(pool)
            .await?;
            // A task's queue time belongs to its latest attempt (requeueing overwrites it).
            let latency: Vec<i64> = sqlx::query_scalar(
                "SELECT a.started_at_ms - t.queued_at_ms FROM task_attempts a \
                 JOIN task_instances t ON t.run_id = a.run_id AND t.task_id = a.task_id \
                 WHERE t.queued_at_ms IS NOT NULL AND a.attempt = t.attempts \
                   AND a.started_at_ms >= t.queued_at_ms \
                 ORDER BY a.id DESC LIMIT 1000",
            )
            .fetch_all(pool)
            .await?;
            (runs, tasks, busy, latency)
        });
        let mut claim_latency_ms = latency;
        claim_latency_ms.sort_unstable();
        Ok(Counts {
            runs: runs.into_iter().map(StateTotal::pair).collect(),
            tasks: tasks.into_iter().map(StateTotal::pair).collect(),
            device_busy: device_busy
                .into_iter()
                .map(|row| (row.device_or_none, row.attempts, row.busy_ms))
                .collect(),
            claim_latency_ms,
        })
    }
}
