//! DAGs and their versions: each recorded once per file hash, the newest one a DAG runs,
//! whether a DAG is paused, and what the cron trigger needs to know.

use super::{DagSummary, DagVersion, Pool, Result, Store, VersionSummary};
use crate::state::RunState;

#[derive(sqlx::FromRow)]
struct DagVersionRow {
    id: i64,
    dag_id: String,
    hash: String,
    source_path: String,
    base_dir: String,
    yaml: String,
}

impl DagVersionRow {
    fn into_record(self) -> DagVersion {
        DagVersion {
            id: self.id,
            dag_id: self.dag_id,
            hash: self.hash,
            source_path: self.source_path,
            base_dir: self.base_dir,
            yaml: self.yaml,
        }
    }
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
            // The usual case, a file run again unchanged, is one read and writes nothing (so
            // it waits for no disk flush).
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT v.id FROM dag_versions v JOIN dags d ON d.latest_version_id = v.id \
                 WHERE v.dag_id = $1 AND v.hash = $2",
            )
            .bind(dag_id)
            .bind(hash)
            .fetch_optional(pool)
            .await?;
            if let Some(id) = current {
                return Ok(id);
            }
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
            let id: i64 = sqlx::query_scalar("SELECT id FROM dag_versions WHERE dag_id = $1 AND hash = $2")
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
    pub async fn latest_dag_version(&self, dag_id: &str) -> Result<Option<DagVersion>> {
        let row: Option<DagVersionRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT v.id, v.dag_id, v.hash, v.source_path, v.base_dir, v.yaml \
                 FROM dags d JOIN dag_versions v ON v.id = d.latest_version_id WHERE d.dag_id = $1",
            )
            .bind(dag_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(DagVersionRow::into_record))
    }

    /// The newest version recorded from a file at `path` (the last good version of a file
    /// that no longer loads).
    pub async fn latest_version_at(&self, path: &str) -> Result<Option<DagVersion>> {
        let row: Option<DagVersionRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, dag_id, hash, source_path, base_dir, yaml FROM dag_versions \
                 WHERE source_path = $1 ORDER BY id DESC LIMIT 1",
            )
            .bind(path)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(DagVersionRow::into_record))
    }

    /// A DAG version by id (the one a run pinned).
    pub async fn dag_version(&self, version_id: i64) -> Result<Option<DagVersion>> {
        let row: Option<DagVersionRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, dag_id, hash, source_path, base_dir, yaml FROM dag_versions WHERE id = $1",
            )
            .bind(version_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(DagVersionRow::into_record))
    }

    /// A DAG's recorded versions, newest first (at most `limit`), each with when it was
    /// recorded, how many runs used it and the latest of them.
    pub async fn dag_versions_of(&self, dag_id: &str, limit: i64) -> Result<Vec<VersionSummary>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            hash: String,
            source_path: String,
            created_at_ms: i64,
            runs: i64,
            last_run_id: Option<i64>,
        }
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT v.id, v.hash, v.source_path, v.created_at_ms, \
                    COUNT(r.id) AS runs, MAX(r.id) AS last_run_id \
                 FROM dag_versions v LEFT JOIN runs r ON r.dag_version_id = v.id \
                 WHERE v.dag_id = $1 \
                 GROUP BY v.id, v.hash, v.source_path, v.created_at_ms \
                 ORDER BY v.id DESC LIMIT $2",
            )
            .bind(dag_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| VersionSummary {
                id: r.id,
                hash: r.hash,
                source_path: r.source_path,
                recorded_at_ms: r.created_at_ms,
                runs: r.runs,
                last_run_id: r.last_run_id,
            })
            .collect())
    }

    pub async fn list_dags(&self) -> Result<Vec<DagSummary>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            dag_id: String,
            hash: String,
            source_path: String,
            runs: i64,
            last_run_state: Option<String>,
            paused: i64,
        }
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT d.dag_id, v.hash, v.source_path, \
                        (SELECT COUNT(*) FROM runs r WHERE r.dag_id = d.dag_id) AS runs, \
                        (SELECT r.state FROM runs r WHERE r.dag_id = d.dag_id ORDER BY r.id DESC LIMIT 1) AS last_run_state, \
                        d.paused \
                 FROM dags d JOIN dag_versions v ON v.id = d.latest_version_id ORDER BY d.dag_id",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| DagSummary {
                dag_id: row.dag_id,
                paused: row.paused != 0,
                latest_hash: row.hash,
                source_path: row.source_path,
                runs: row.runs,
                last_run_state: row.last_run_state.as_deref().and_then(RunState::parse),
            })
            .collect())
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
        let paused: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT paused FROM dags WHERE dag_id = $1")
                .bind(dag_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(paused.is_some_and(|p| p != 0))
    }

    /// For the cron trigger: the newest scheduled run's logical date and how many runs of the
    /// DAG are unfinished.
    pub async fn schedule_state(&self, dag_id: &str) -> Result<(Option<String>, i64)> {
        #[derive(sqlx::FromRow)]
        struct Row {
            last_scheduled_date: Option<String>,
            unfinished_runs: i64,
        }
        let row: Row = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT (SELECT MAX(logical_date) FROM runs WHERE dag_id = $1 AND trigger_kind = 'schedule') \
                            AS last_scheduled_date, \
                        (SELECT COUNT(*) FROM runs WHERE dag_id = $1 AND state IN ('queued', 'running')) \
                            AS unfinished_runs",
            )
            .bind(dag_id)
            .fetch_one(pool)
            .await?
        });
        Ok((row.last_scheduled_date, row.unfinished_runs))
    }
}
