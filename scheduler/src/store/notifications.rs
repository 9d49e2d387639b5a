//! The notifications outbox: recorded once per event and notifier, claimed and settled by the
//! scheduler that delivers them (see `crate::notify`).

use super::{Pool, Result, Store, StoreError};

/// A notification to record (ignored if the same one is recorded already).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    pub run_id: i64,
    /// `dag` (a notifier the DAG lists) or `task` (one the task lists).
    pub level: String,
    /// Empty for an event of the run itself.
    pub task_id: String,
    /// `failure`, `retry` or `success`.
    pub event: String,
    /// The attempt for a task's event, the run's finish time for a run's.
    pub occurrence: i64,
    /// Its place in the event's notifier list.
    pub notifier: i64,
    /// `webhook` or `email`.
    pub kind: String,
    /// Where it goes, secrets masked.
    pub target: String,
    pub context_json: String,
}

/// Where a notification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationState {
    /// Not delivered yet; tried again at `next_at_ms`.
    Pending,
    Delivered,
    /// Given up on after its last attempt.
    Failed,
}

impl NotificationState {
    pub fn code(self) -> &'static str {
        match self {
            NotificationState::Pending => "pending",
            NotificationState::Delivered => "delivered",
            NotificationState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<NotificationState> {
        match text {
            "pending" => Ok(NotificationState::Pending),
            "delivered" => Ok(NotificationState::Delivered),
            "failed" => Ok(NotificationState::Failed),
            other => Err(StoreError::Corrupt(format!(
                "unknown notification state `{other}`"
            ))),
        }
    }
}

impl std::fmt::Display for NotificationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A recorded notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRecord {
    pub id: i64,
    pub run_id: i64,
    pub level: String,
    pub task_id: String,
    pub event: String,
    pub occurrence: i64,
    pub notifier: i64,
    pub kind: String,
    pub target: String,
    pub context_json: String,
    pub state: NotificationState,
    pub attempts: i64,
    pub next_at_ms: i64,
    pub response_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// How one delivery attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered {
        response_code: Option<i64>,
    },
    /// Try again at `next_at_ms`.
    Retry {
        response_code: Option<i64>,
        error: String,
        next_at_ms: i64,
    },
    /// Give up.
    Failed {
        response_code: Option<i64>,
        error: String,
    },
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    run_id: i64,
    level: String,
    task_id: String,
    event: String,
    occurrence: i64,
    notifier: i64,
    kind: String,
    target: String,
    context_json: String,
    state: String,
    attempts: i64,
    next_at_ms: i64,
    response_code: Option<i64>,
    last_error: Option<String>,
    created_at_ms: i64,
    finished_at_ms: Option<i64>,
}

impl Row {
    fn into_record(self) -> Result<NotificationRecord> {
        Ok(NotificationRecord {
            id: self.id,
            run_id: self.run_id,
            level: self.level,
            task_id: self.task_id,
            event: self.event,
            occurrence: self.occurrence,
            notifier: self.notifier,
            kind: self.kind,
            target: self.target,
            context_json: self.context_json,
            state: NotificationState::parse(&self.state)?,
            attempts: self.attempts,
            next_at_ms: self.next_at_ms,
            response_code: self.response_code,
            last_error: self.last_error,
            created_at_ms: self.created_at_ms,
            finished_at_ms: self.finished_at_ms,
        })
    }
}

/// Notification rows, with the columns `Row` reads.
macro_rules! select_notifications {
    ($rest:literal) => {
        concat!(
            "SELECT id, run_id, level, task_id, event, occurrence, notifier, kind, target, context_json, ",
            "state, attempts, next_at_ms, response_code, last_error, created_at_ms, finished_at_ms ",
            "FROM notifications ",
            $rest
        )
    };
}

impl Store {
    /// Runs whose notifications may not all be recorded yet (their DAG version has notifiers,
    /// and they are unfinished or finished since they were last looked at), oldest first.
    pub async fn watched_runs(&self, limit: i64) -> Result<Vec<i64>> {
        let ids: Vec<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id FROM runs WHERE notify = 'watching' ORDER BY id LIMIT $1")
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// Records notifications, each at most once (one recorded before is left as it is), due
    /// at once. Returns how many were new.
    pub async fn record_notifications(
        &self,
        notes: &[NewNotification],
        now_ms: i64,
    ) -> Result<u64> {
        if notes.is_empty() {
            return Ok(0);
        }
        let mut added = 0;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for n in notes {
                added += sqlx::query(
                    "INSERT INTO notifications (run_id, level, task_id, event, occurrence, notifier, kind, \
                     target, context_json, state, attempts, next_at_ms, created_at_ms) \
                     VALUES ($1, $10, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $9) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(n.run_id)
                .bind(&n.task_id)
                .bind(&n.event)
                .bind(n.occurrence)
                .bind(n.notifier)
                .bind(&n.kind)
                .bind(&n.target)
                .bind(&n.context_json)
                .bind(now_ms)
                .bind(&n.level)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
        });
        Ok(added)
    }

    /// Stops watching a run whose notifications are all recorded: it must still be finished
    /// at `finished_at_ms` (a run cleared meanwhile stays watched).
    pub async fn stop_watching(&self, run_id: i64, finished_at_ms: i64) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE runs SET notify = 'done' WHERE id = $1 AND notify = 'watching' \
                 AND finished_at_ms = $2 AND state IN ('success', 'failed', 'cancelled')",
            )
            .bind(run_id)
            .bind(finished_at_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Pending notifications due by `now_ms`, oldest first.
    pub async fn due_notifications(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRecord>> {
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(select_notifications!(
                "WHERE state = 'pending' AND next_at_ms <= $1 ORDER BY next_at_ms, id LIMIT $2"
            ))
            .bind(now_ms)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Row::into_record).collect()
    }

    /// Takes a due notification for one delivery attempt: counts the attempt and hides it
    /// until `until_ms`, so another scheduler does not send it meanwhile, and a scheduler that
    /// dies while sending leaves it to be sent again then. False: someone else took it.
    pub async fn claim_notification(&self, id: i64, attempts: i64, until_ms: i64) -> Result<bool> {
        let done = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE notifications SET attempts = attempts + 1, next_at_ms = $3 \
                 WHERE id = $1 AND attempts = $2 AND state = 'pending'",
            )
            .bind(id)
            .bind(attempts)
            .bind(until_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Records how the attempt claimed as `attempts` ended. A stale report (the notification
    /// was claimed again since) changes nothing.
    pub async fn settle_notification(
        &self,
        id: i64,
        attempts: i64,
        delivery: &Delivery,
        now_ms: i64,
    ) -> Result<()> {
        let (state, code, error, next_at, finished) = match delivery {
            Delivery::Delivered { response_code } => {
                ("delivered", *response_code, None, now_ms, Some(now_ms))
            }
            Delivery::Retry {
                response_code,
                error,
                next_at_ms,
            } => ("pending", *response_code, Some(error), *next_at_ms, None),
            Delivery::Failed {
                response_code,
                error,
            } => ("failed", *response_code, Some(error), now_ms, Some(now_ms)),
        };
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE notifications SET state = $3, response_code = $4, last_error = $5, \
                 next_at_ms = $6, finished_at_ms = $7 \
                 WHERE id = $1 AND attempts = $2 AND state = 'pending'",
            )
            .bind(id)
            .bind(attempts)
            .bind(state)
            .bind(code)
            .bind(error)
            .bind(next_at)
            .bind(finished)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// A run's notifications, in the order they were recorded.
    pub async fn notifications(&self, run_id: i64) -> Result<Vec<NotificationRecord>> {
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(select_notifications!("WHERE run_id = $1 ORDER BY id"))
            .bind(run_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Row::into_record).collect()
    }
}
