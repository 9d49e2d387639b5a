//! Log lines of attempts: appended as a stage prints them, read back per task.

use super::{LogRecord, Pool, Result, Store};

impl Store {
    /// Appends log lines of one attempt: (stream, text, at_ms).
    pub async fn append_logs(
        &self,
        attempt_id: i64,
        lines: &[(String, String, i64)],
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (stream, line, at_ms) in lines {
                sqlx::query("INSERT INTO task_logs (attempt_id, stream, line, at_ms) VALUES ($1, $2, $3, $4)")
                    .bind(attempt_id)
                    .bind(stream)
                    .bind(line)
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Log lines of every attempt of a task, in order.
    pub async fn logs(&self, run_id: i64, task_id: &str) -> Result<Vec<LogRecord>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            attempt: i64,
            stream: String,
            line: String,
        }
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT a.attempt, l.stream, l.line FROM task_logs l JOIN task_attempts a ON a.id = l.attempt_id \
                 WHERE a.run_id = $1 AND a.task_id = $2 ORDER BY l.id",
            )
            .bind(run_id)
            .bind(task_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| LogRecord {
                attempt: row.attempt,
                stream: row.stream,
                line: row.line,
            })
            .collect())
    }

    /// The last `lines` log lines of one attempt of a task, oldest first.
    pub async fn log_tail(
        &self,
        run_id: i64,
        task_id: &str,
        attempt: i64,
        lines: i64,
    ) -> Result<Vec<String>> {
        let mut rows: Vec<(String,)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT l.line FROM task_logs l JOIN task_attempts a ON a.id = l.attempt_id \
                 WHERE a.run_id = $1 AND a.task_id = $2 AND a.attempt = $3 ORDER BY l.id DESC LIMIT $4",
            )
            .bind(run_id)
            .bind(task_id)
            .bind(attempt)
            .bind(lines)
            .fetch_all(pool)
            .await?
        });
        rows.reverse();
        Ok(rows.into_iter().map(|(line,)| line).collect())
    }
}
