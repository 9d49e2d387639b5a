//! DAG files that stopped validating: recorded by the scheduler that read them, shown by the
//! API, the UI's DAG list and `amdahl dags list`, deleted when the file is fixed or removed.

use super::{Pool, Result, Store};

/// A DAG file's problems as the scheduler last read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError {
    pub path: String,
    /// The DAG the file held when it last loaded (its last good version stays scheduled).
    pub dag_id: Option<String>,
    /// Where the first problem is (1-based).
    pub line: i64,
    pub column: i64,
    pub message: String,
    /// How many problems the file has.
    pub problems: i64,
    /// Every problem, rendered with its place and snippet.
    pub details: String,
    pub first_seen_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    path: String,
    dag_id: Option<String>,
    line: i64,
    col: i64,
    message: String,
    problems: i64,
    details: String,
    first_seen_at_ms: i64,
    updated_at_ms: i64,
}

impl Store {
    /// Records (or updates) a file's problems; `first_seen_at_ms` stays as first recorded.
    pub async fn set_import_error(&self, e: &ImportError) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO import_errors (path, dag_id, line, col, message, problems, details, \
                 first_seen_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                 ON CONFLICT (path) DO UPDATE SET dag_id = COALESCE(excluded.dag_id, import_errors.dag_id), \
                 line = excluded.line, col = excluded.col, message = excluded.message, \
                 problems = excluded.problems, details = excluded.details, \
                 updated_at_ms = excluded.updated_at_ms",
            )
            .bind(&e.path)
            .bind(&e.dag_id)
            .bind(e.line)
            .bind(e.column)
            .bind(&e.message)
            .bind(e.problems)
            .bind(&e.details)
            .bind(e.updated_at_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Forgets a file's problems (it loads again, or is gone).
    pub async fn clear_import_error(&self, path: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM import_errors WHERE path = $1")
                .bind(path)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Every recorded import error, by path.
    pub async fn import_errors(&self) -> Result<Vec<ImportError>> {
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT path, dag_id, line, col, message, problems, details, first_seen_at_ms, \
                 updated_at_ms FROM import_errors ORDER BY path",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| ImportError {
                path: r.path,
                dag_id: r.dag_id,
                line: r.line,
                column: r.col,
                message: r.message,
                problems: r.problems,
                details: r.details,
                first_seen_at_ms: r.first_seen_at_ms,
                updated_at_ms: r.updated_at_ms,
            })
            .collect())
    }
}
