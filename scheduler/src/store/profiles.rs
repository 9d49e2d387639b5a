//! Machine profiles measured by `amdahl calibrate`, one per host, kept as JSON (the placement
//! crate owns their shape; the store only keeps them).

use super::{Pool, Result, Store};

/// A stored profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileRecord {
    pub host: String,
    /// The profile as JSON.
    pub profile: String,
    pub measured_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    host: String,
    profile: String,
    measured_at_ms: i64,
}

fn record(row: Row) -> ProfileRecord {
    ProfileRecord {
        host: row.host,
        profile: row.profile,
        measured_at_ms: row.measured_at_ms,
    }
}

impl Store {
    /// Stores `host`'s profile, replacing the one it had.
    pub async fn save_profile(&self, host: &str, profile: &str, measured_at_ms: i64) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO machine_profiles (host, profile, measured_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (host) DO UPDATE SET profile = excluded.profile, \
                 measured_at_ms = excluded.measured_at_ms",
            )
            .bind(host)
            .bind(profile)
            .bind(measured_at_ms)
            .execute(pool)
            .await
            .map(|_| ())?
        });
        Ok(())
    }

    /// `host`'s stored profile, if it has one.
    pub async fn profile(&self, host: &str) -> Result<Option<ProfileRecord>> {
        let row: Option<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT host, profile, measured_at_ms FROM machine_profiles WHERE host = $1",
            )
            .bind(host)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(record))
    }

    /// Every stored profile, by host.
    pub async fn profiles(&self) -> Result<Vec<ProfileRecord>> {
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as("SELECT host, profile, measured_at_ms FROM machine_profiles ORDER BY host")
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(record).collect())
    }
}
