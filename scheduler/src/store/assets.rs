//! Assets: events (recorded with a producing task's end or a watched run's success, or posted
//! from outside), which DAGs produce and wait on what, the cursors of waiting DAGs, and the
//! events that started a run.
//!
//! An event is recorded exactly once: with the fenced end of the attempt that produced it (same
//! transaction), unique per asset, run, task and attempt. A run started by assets moves its
//! DAG's cursors forward fenced on their old values in the transaction that creates it, so two
//! schedulers never start two runs for the same events.

use super::{Pool, Result, Store};

/// One change of an asset.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AssetEvent {
    pub id: i64,
    pub asset: String,
    /// `task` (a producing task succeeded), `run` (a run of a DAG watched by `after:`
    /// succeeded) or `api` (posted).
    pub source: String,
    pub dag_id: Option<String>,
    pub run_id: Option<i64>,
    /// The producing task (`''` for a run's event).
    pub task_id: Option<String>,
    /// Free JSON given with a post.
    pub extra_json: Option<String>,
    pub created_at_ms: i64,
}

/// An asset as the assets page lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssetSummary {
    pub asset: String,
    pub events: i64,
    pub last_event: Option<AssetEvent>,
    /// `dag.task` of each task that declares it in `produces:`.
    pub producers: Vec<String>,
    /// The DAGs whose schedule waits on it.
    pub consumers: Vec<String>,
}

/// Where a DAG waiting on a key stands: the newest event it consumed (`None`: never looked)
/// and the newest there is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub asset: String,
    pub cursor: Option<i64>,
    pub newest: Option<i64>,
}

/// A cursor moved by a run started by assets: the events `(from, to]` of `asset` started it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorMove {
    pub asset: String,
    pub from: i64,
    pub to: i64,
}

/// What a DAG declares about an asset (see [`Store::replace_asset_links`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssetLink {
    pub asset: String,
    /// `produces` (with the task) or `consumes` (task `''`).
    pub role: &'static str,
    pub task_id: String,
}

/// The columns `AssetEvent` reads, as a literal so queries stay constants.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT id, asset, source, dag_id, run_id, task_id, extra_json, created_at_ms FROM asset_events ",
            $rest
        )
    };
}

/// A DAG's link to an asset, as a summary shows it: a producer as `dag.task`, a consumer as
/// its DAG.
fn add_link(summary: &mut AssetSummary, dag: String, role: &str, task: String) {
    if role == "produces" {
        summary.producers.push(format!("{dag}.{task}"));
    } else {
        summary.consumers.push(dag);
    }
}

impl Store {
    /// Records an event posted from outside (`POST /api/v1/assets/{name}/events`, `amdahl
    /// assets emit`).
    pub async fn post_asset_event(
        &self,
        asset: &str,
        extra_json: Option<&str>,
        now_ms: i64,
    ) -> Result<AssetEvent> {
        let event = on_pool!(self, pool => {
            sqlx::query_as::<_, AssetEvent>(
                "INSERT INTO asset_events (asset, source, extra_json, created_at_ms) \
                 VALUES ($1, 'api', $2, $3) \
                 RETURNING id, asset, source, dag_id, run_id, task_id, extra_json, created_at_ms",
            )
            .bind(asset)
            .bind(extra_json)
            .bind(now_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(event)
    }

    /// The newest event's id (0 when there is none): a scheduler looks further only when it
    /// changed.
    pub async fn newest_asset_event_id(&self) -> Result<i64> {
        let id: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT MAX(id) FROM asset_events").fetch_one(pool).await?
        });
        Ok(id.unwrap_or(0))
    }

    /// For each key a DAG waits on, its cursor and the newest event.
    pub async fn watched_assets(&self, dag_id: &str, keys: &[String]) -> Result<Vec<Watched>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let (cursor, newest): (Option<i64>, Option<i64>) = on_pool!(self, pool => {
                sqlx::query_as(
                    "SELECT (SELECT event_id FROM asset_cursors WHERE dag_id = $1 AND asset = $2), \
                            (SELECT MAX(id) FROM asset_events WHERE asset = $2)",
                )
                .bind(dag_id)
                .bind(key)
                .fetch_one(pool)
                .await?
            });
            out.push(Watched {
                asset: key.clone(),
                cursor,
                newest,
            });
        }
        Ok(out)
    }

    /// Starts a DAG's cursor on a key, unless it has one, after the newest event recorded
    /// before the DAG's version `hash` was: events from before the DAG waited on the key never
    /// start it, those since then do (however late the scheduler looks).
    pub async fn start_asset_cursor(&self, dag_id: &str, asset: &str, hash: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO asset_cursors (dag_id, asset, event_id) \
                 SELECT $1, $2, COALESCE((SELECT MAX(e.id) FROM asset_events e WHERE e.asset = $2 \
                     AND e.created_at_ms < (SELECT v.created_at_ms FROM dag_versions v \
                                           WHERE v.dag_id = $1 AND v.hash = $3)), 0) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(dag_id)
            .bind(asset)
            .bind(hash)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Makes `links` what DAG `dag_id` declares (its current version's `produces:` and data
    /// schedule), in one transaction.
    pub async fn replace_asset_links(&self, dag_id: &str, links: &[AssetLink]) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM asset_links WHERE dag_id = $1")
                .bind(dag_id)
                .execute(&mut *tx)
                .await?;
            for link in links {
                sqlx::query(
                    "INSERT INTO asset_links (dag_id, asset, role, task_id) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(dag_id)
                .bind(&link.asset)
                .bind(link.role)
                .bind(&link.task_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Assets by name (those declared by a DAG or with an event), with their newest event,
    /// producers and consumers; at most `limit`, after `after` in name order.
    pub async fn asset_summaries(&self, after: &str, limit: i64) -> Result<Vec<AssetSummary>> {
        let names: Vec<String> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT asset FROM (SELECT asset FROM asset_links UNION SELECT DISTINCT asset FROM asset_events) a \
                 WHERE asset > $1 ORDER BY asset LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        let Some(last) = names.last() else {
            return Ok(Vec::new());
        };
        // The page is the names in (after, last], so each of the three reads below is one
        // range query, the same on both databases, however many assets the page holds.
        let counts: Vec<(String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT asset, COUNT(*) FROM asset_events WHERE asset > $1 AND asset <= $2 \
                 GROUP BY asset",
            )
            .bind(after)
            .bind(last)
            .fetch_all(pool)
            .await?
        });
        let newest: Vec<AssetEvent> = on_pool!(self, pool => {
            sqlx::query_as::<_, AssetEvent>(select_events!(
                "WHERE id IN (SELECT MAX(id) FROM asset_events WHERE asset > $1 AND asset <= $2 \
                 GROUP BY asset)"
            ))
            .bind(after)
            .bind(last)
            .fetch_all(pool)
            .await?
        });
        let links: Vec<(String, String, String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT asset, dag_id, role, task_id FROM asset_links \
                 WHERE asset > $1 AND asset <= $2 ORDER BY asset, dag_id, task_id",
            )
            .bind(after)
            .bind(last)
            .fetch_all(pool)
            .await?
        });
        let mut summaries: std::collections::HashMap<String, AssetSummary> = names
            .iter()
            .map(|name| {
                let summary = AssetSummary {
                    asset: name.clone(),
                    events: 0,
                    last_event: None,
                    producers: Vec::new(),
                    consumers: Vec::new(),
                };
                (name.clone(), summary)
            })
            .collect();
        for (asset, events) in counts {
            if let Some(summary) = summaries.get_mut(&asset) {
                summary.events = events;
            }
        }
        for event in newest {
            if let Some(summary) = summaries.get_mut(&event.asset) {
                summary.last_event = Some(event);
            }
        }
        for (asset, dag, role, task) in links {
            if let Some(summary) = summaries.get_mut(&asset) {
                add_link(summary, dag, &role, task);
            }
        }
        // In the order the database sorted the names (its collation, not Rust's).
        Ok(names
            .iter()
            .filter_map(|name| summaries.remove(name))
            .collect())
    }

    /// One asset: its newest event, how many there are, producers and consumers; `None` when
    /// no DAG declares it and it has no event.
    pub async fn asset_summary(&self, asset: &str) -> Result<Option<AssetSummary>> {
        let (events, last_id): (i64, Option<i64>) = on_pool!(self, pool => {
            sqlx::query_as("SELECT COUNT(*), MAX(id) FROM asset_events WHERE asset = $1")
                .bind(asset)
                .fetch_one(pool)
                .await?
        });
        let links: Vec<(String, String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT dag_id, role, task_id FROM asset_links WHERE asset = $1 \
                 ORDER BY dag_id, task_id",
            )
            .bind(asset)
            .fetch_all(pool)
            .await?
        });
        if events == 0 && links.is_empty() {
            return Ok(None);
        }
        let last_event = match last_id {
            Some(id) => self.asset_event(id).await?,
            None => None,
        };
        let mut summary = AssetSummary {
            asset: asset.to_string(),
            events,
            last_event,
            producers: Vec::new(),
            consumers: Vec::new(),
        };
        for (dag, role, task) in links {
            add_link(&mut summary, dag, &role, task);
        }
        Ok(Some(summary))
    }

    pub async fn asset_event(&self, id: i64) -> Result<Option<AssetEvent>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, AssetEvent>(select_events!("WHERE id = $1")).bind(id).fetch_optional(pool).await?
        }))
    }

    /// An asset's events, newest first, older than `before` (a page), each with the runs it
    /// started.
    pub async fn asset_events(
        &self,
        asset: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(AssetEvent, Vec<i64>)>> {
        let events: Vec<AssetEvent> = on_pool!(self, pool => {
            sqlx::query_as::<_, AssetEvent>(select_events!(
                "WHERE asset = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
            ))
                .bind(asset)
                .bind(before)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let runs: Vec<i64> = on_pool!(self, pool => {
                sqlx::query_scalar(
                    "SELECT run_id FROM run_asset_events WHERE event_id = $1 ORDER BY run_id",
                )
                .bind(event.id)
                .fetch_all(pool)
                .await?
            });
            out.push((event, runs));
        }
        Ok(out)
    }

    /// The events that started a run (none for a run not started by assets), at most 100,
    /// oldest first.
    pub async fn run_causes(&self, run_id: i64) -> Result<Vec<AssetEvent>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, AssetEvent>(select_events!(
                "WHERE id IN (SELECT event_id FROM run_asset_events WHERE run_id = $1) ORDER BY id LIMIT 100"
            ))
            .bind(run_id).fetch_all(pool).await?
        }))
    }
}

/// Records one asset of a successful end's `produces:`, once (an end recorded again adds
/// nothing): `$1` asset, `$2` run, `$3` task, `$4` attempt, `$5` now.
pub(super) const PRODUCED_EVENT: &str = "INSERT INTO asset_events (asset, source, dag_id, run_id, task_id, attempt, created_at_ms) \
     SELECT $1, 'task', r.dag_id, $2, $3, $4, $5 FROM runs r WHERE r.id = $2 \
     ON CONFLICT DO NOTHING";

/// Records `dag:ID` for a run that just succeeded, when a DAG waits on it with `after:`
/// (`$1` run, `$2` now, which also tells a cleared run's second success from its first).
pub(super) const RUN_EVENT: &str = "INSERT INTO asset_events (asset, source, dag_id, run_id, task_id, attempt, created_at_ms) \
     SELECT 'dag:' || r.dag_id, 'run', r.dag_id, r.id, '', $2, $2 FROM runs r WHERE r.id = $1 \
     AND EXISTS (SELECT 1 FROM asset_links l WHERE l.asset = 'dag:' || r.dag_id AND l.role = 'consumes') \
     ON CONFLICT DO NOTHING";

/// Moves a waiting DAG's cursor, fenced on its old value: `$1` to, `$2` DAG, `$3` asset,
/// `$4` from.
pub(super) const MOVE_CURSOR: &str =
    "UPDATE asset_cursors SET event_id = $1 WHERE dag_id = $2 AND asset = $3 AND event_id = $4";

/// Links the events `($3, $4]` of asset `$2` to run `$1`, which they started.
pub(super) const LINK_CAUSES: &str = "INSERT INTO run_asset_events (run_id, event_id) \
     SELECT $1, id FROM asset_events WHERE asset = $2 AND id > $3 AND id <= $4";
