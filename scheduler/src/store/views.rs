//! What the web UI and API read: a run's tasks a page at a time, its tasks by name, per-state
//! counts that change whenever a task moves, the cells of the runs × tasks grid, and attempts
//! of chosen tasks. Each is bounded by a page or a list of names, so a 10,000-task run only
//! travels whole when a caller asks for every page.
//!
//! Lists of names are bound as one value: an array on PostgreSQL (`= ANY($2)`), a JSON array
//! on SQLite (`IN (SELECT value FROM json_each($2))`), so a query's text does not depend on
//! how many names it is given.

use super::records::{TaskRow, place_of};
use super::{AttemptRecord, Pool, Result, Store, StoreError, TaskRecord};
use crate::state::AttemptState;
use amdahl_placement::Place;

/// How many of a run's tasks are in one state, with what moves whenever one of them changes
/// (their attempts, their latest start and end): equal counts mean nothing visible changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateCount {
    pub state: String,
    pub tasks: i64,
    pub attempts: i64,
    pub last_started_ms: Option<i64>,
    pub last_finished_ms: Option<i64>,
}

/// One cell of the grid: a task of a run, its state and where its last attempt ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskCell {
    pub run_id: i64,
    pub task_id: String,
    pub state: String,
    pub device: Option<Place>,
}

macro_rules! select_attempts {
    ($rest:literal) => {
        concat!(
            "SELECT a.id, a.task_id, a.attempt, a.state, a.device, a.error, a.rows_out, a.bytes_out, ",
            "a.started_at_ms, a.finished_at_ms, a.device_note, a.predicted_cpu_us, a.predicted_gpu_us, ",
            "a.io_us, a.transfer_us, a.compute_us, a.route, a.rendered, a.plan, a.started_at_us, a.finished_at_us ",
            "FROM task_attempts a ",
            $rest
        )
    };
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    id: i64,
    task_id: String,
    attempt: i64,
    state: String,
    device: Option<String>,
    error: Option<String>,
    rows_out: Option<i64>,
    bytes_out: Option<i64>,
    started_at_ms: i64,
    finished_at_ms: Option<i64>,
    device_note: Option<String>,
    predicted_cpu_us: Option<i64>,
    predicted_gpu_us: Option<i64>,
    io_us: Option<i64>,
    transfer_us: Option<i64>,
    compute_us: Option<i64>,
    route: Option<String>,
    rendered: Option<String>,
    plan: Option<String>,
    started_at_us: Option<i64>,
    finished_at_us: Option<i64>,
}

impl AttemptRow {
    fn into_record(self) -> Result<AttemptRecord> {
        Ok(AttemptRecord {
            state: AttemptState::parse(&self.state)
                .ok_or_else(|| StoreError::Corrupt(format!("attempt state `{}`", self.state)))?,
            id: self.id,
            task_id: self.task_id,
            attempt: self.attempt,
            device: place_of(self.device)?,
            error: self.error,
            rows_out: self.rows_out,
            bytes_out: self.bytes_out,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            device_note: self.device_note,
            predicted_cpu_us: self.predicted_cpu_us,
            predicted_gpu_us: self.predicted_gpu_us,
            io_us: self.io_us,
            transfer_us: self.transfer_us,
            compute_us: self.compute_us,
            route: self.route,
            rendered: self.rendered,
            plan: self.plan,
            started_at_us: self.started_at_us,
            finished_at_us: self.finished_at_us,
        })
    }
}

fn attempt_records(rows: Vec<AttemptRow>) -> Result<Vec<AttemptRecord>> {
    rows.into_iter().map(AttemptRow::into_record).collect()
}

/// A cell of the grid, as read.
#[derive(sqlx::FromRow)]
struct CellRow {
    run_id: i64,
    task_id: String,
    state: String,
    device: Option<String>,
}

fn json_names(names: &[String]) -> String {
    serde_json::to_string(names).unwrap_or_else(|_| "[]".into())
}

impl Store {
    /// Every attempt of a run, oldest first.
    pub async fn attempts(&self, run_id: i64) -> Result<Vec<AttemptRecord>> {
        let rows: Vec<AttemptRow> = on_pool!(self, pool => {
            sqlx::query_as(select_attempts!("WHERE a.run_id = $1 ORDER BY a.id"))
                .bind(run_id)
                .fetch_all(pool)
                .await?
        });
        attempt_records(rows)
    }

    /// The attempts of the named tasks of a run, oldest first.
    pub async fn attempts_of(&self, run_id: i64, tasks: &[String]) -> Result<Vec<AttemptRecord>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<AttemptRow> = match &self.pool {
            Pool::Postgres(pool) => {
                sqlx::query_as(select_attempts!(
                    "WHERE a.run_id = $1 AND a.task_id = ANY($2) ORDER BY a.id"
                ))
                .bind(run_id)
                .bind(tasks)
                .fetch_all(pool)
                .await?
            }
            Pool::Sqlite(pool) => {
                sqlx::query_as(select_attempts!(
                    "WHERE a.run_id = $1 AND a.task_id IN (SELECT value FROM json_each($2)) ORDER BY a.id"
                ))
                .bind(run_id)
                .bind(json_names(tasks))
                .fetch_all(pool)
                .await?
            }
        };
        attempt_records(rows)
    }

    /// The attempts of the tasks at positions `from..to` of a run (a page of its tasks).
    pub async fn attempts_at(&self, run_id: i64, from: i64, to: i64) -> Result<Vec<AttemptRecord>> {
        let rows: Vec<AttemptRow> = on_pool!(self, pool => {
            sqlx::query_as(select_attempts!(
                "JOIN task_instances t ON t.run_id = a.run_id AND t.task_id = a.task_id \
                 WHERE a.run_id = $1 AND t.position >= $2 AND t.position < $3 ORDER BY a.id"
            ))
            .bind(run_id)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?
        });
        attempt_records(rows)
    }

    /// The tasks of a run at positions `from..from + limit`, in DAG order.
    pub async fn tasks_page(&self, run_id: i64, from: i64, limit: i64) -> Result<Vec<TaskRecord>> {
        let rows: Vec<TaskRow> = on_pool!(self, pool => {
            sqlx::query_as(select_tasks!(
                "WHERE run_id = $1 AND position >= $2 AND position < $3 ORDER BY position, map_index NULLS FIRST"
            ))
            .bind(run_id)
            .bind(from)
            .bind(from.saturating_add(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(TaskRow::into_record).collect()
    }

    /// The named tasks of a run, in the order named (names it does not have are left out).
    /// Sorted here: an `ORDER BY position` would have SQLite walk the run's position index
    /// instead of looking the names up.
    pub async fn tasks_named(&self, run_id: i64, tasks: &[String]) -> Result<Vec<TaskRecord>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<TaskRow> = match &self.pool {
            Pool::Postgres(pool) => {
                sqlx::query_as(select_tasks!("WHERE run_id = $1 AND task_id = ANY($2)"))
                    .bind(run_id)
                    .bind(tasks)
                    .fetch_all(pool)
                    .await?
            }
            Pool::Sqlite(pool) => {
                sqlx::query_as(select_tasks!(
                    "WHERE run_id = $1 AND task_id IN (SELECT value FROM json_each($2))"
                ))
                .bind(run_id)
                .bind(json_names(tasks))
                .fetch_all(pool)
                .await?
            }
        };
        let mut records = rows
            .into_iter()
            .map(TaskRow::into_record)
            .collect::<Result<Vec<_>>>()?;
        let order: std::collections::HashMap<&str, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i))
            .collect();
        records.sort_by_key(|r| order.get(r.task_id.as_str()).copied());
        Ok(records)
    }

    /// A run's tasks counted by state (one aggregate; no task rows leave the database).
    pub async fn state_counts(&self, run_id: i64) -> Result<Vec<StateCount>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            state: String,
            tasks: i64,
            attempt_total: i64,
            last_started_ms: Option<i64>,
            last_finished_ms: Option<i64>,
        }
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT state, COUNT(*) AS tasks, CAST(COALESCE(SUM(attempts), 0) AS BIGINT) AS attempt_total, \
                        MAX(started_at_ms) AS last_started_ms, MAX(finished_at_ms) AS last_finished_ms \
                 FROM task_instances WHERE run_id = $1 GROUP BY state ORDER BY state",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| StateCount {
                state: row.state,
                tasks: row.tasks,
                attempts: row.attempt_total,
                last_started_ms: row.last_started_ms,
                last_finished_ms: row.last_finished_ms,
            })
            .collect())
    }

    /// The grid's cells: the tasks of the given runs, all of them or only the named ones with
    /// their mapped instances (`task[0]`…, which share their task's position). Looked up by
    /// primary key (run, task), then by (run, position) for each named task's instances, so a
    /// page costs its cells, not the runs' size (SQLite plans `IN (SELECT value FROM
    /// json_each(..))` as key lookups; a join with `json_each` it plans as a scan of each run).
    pub async fn grid_cells(
        &self,
        runs: &[i64],
        tasks: Option<&[String]>,
    ) -> Result<Vec<TaskCell>> {
        if runs.is_empty() || tasks.is_some_and(|t| t.is_empty()) {
            return Ok(Vec::new());
        }
        let rows: Vec<CellRow> = match (&self.pool, tasks) {
            (Pool::Postgres(pool), Some(tasks)) => {
                sqlx::query_as(
                    "SELECT run_id, task_id, state, device FROM task_instances \
                     WHERE run_id = ANY($1) AND task_id = ANY($2) \
                     UNION ALL \
                     SELECT i.run_id, i.task_id, i.state, i.device FROM task_instances t \
                     JOIN task_instances i ON i.run_id = t.run_id AND i.position = t.position \
                       AND i.map_index IS NOT NULL \
                     WHERE t.run_id = ANY($1) AND t.task_id = ANY($2) AND t.map_index IS NULL",
                )
                .bind(runs)
                .bind(tasks)
                .fetch_all(pool)
                .await?
            }
            (Pool::Postgres(pool), None) => sqlx::query_as(
                "SELECT run_id, task_id, state, device FROM task_instances WHERE run_id = ANY($1)",
            )
            .bind(runs)
            .fetch_all(pool)
            .await?,
            (Pool::Sqlite(pool), Some(tasks)) => {
                sqlx::query_as(
                    "SELECT run_id, task_id, state, device FROM task_instances \
                     WHERE run_id IN (SELECT value FROM json_each($1)) \
                       AND task_id IN (SELECT value FROM json_each($2)) \
                     UNION ALL \
                     SELECT i.run_id, i.task_id, i.state, i.device FROM task_instances t \
                     JOIN task_instances i ON i.run_id = t.run_id AND i.position = t.position \
                       AND i.map_index IS NOT NULL \
                     WHERE t.run_id IN (SELECT value FROM json_each($1)) \
                       AND t.task_id IN (SELECT value FROM json_each($2)) AND t.map_index IS NULL",
                )
                .bind(serde_json::to_string(runs).unwrap_or_default())
                .bind(json_names(tasks))
                .fetch_all(pool)
                .await?
            }
            (Pool::Sqlite(pool), None) => {
                sqlx::query_as(
                    "SELECT run_id, task_id, state, device FROM task_instances \
                     WHERE run_id IN (SELECT value FROM json_each($1))",
                )
                .bind(serde_json::to_string(runs).unwrap_or_default())
                .fetch_all(pool)
                .await?
            }
        };
        rows.into_iter()
            .map(|row| {
                Ok(TaskCell {
                    run_id: row.run_id,
                    task_id: row.task_id,
                    state: row.state,
                    device: place_of(row.device)?,
                })
            })
            .collect()
    }

    /// The states of each DAG's latest `per_dag` runs, newest first: (DAG id, state). Each
    /// DAG's runs are read newest first by index, `per_dag` of them, however many it has.
    pub async fn recent_run_states(&self, per_dag: i64) -> Result<Vec<(String, String)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            dag_id: String,
            state: String,
        }
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT r.dag_id, r.state FROM dags d JOIN runs r ON r.id IN \
                     (SELECT id FROM runs WHERE dag_id = d.dag_id ORDER BY id DESC LIMIT $1) \
                 ORDER BY r.dag_id, r.id DESC",
            )
            .bind(per_dag)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| (row.dag_id, row.state))
            .collect())
    }
}
