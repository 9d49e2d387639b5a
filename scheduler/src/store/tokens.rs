//! API tokens (`amdahl tokens`): the SHA-256 of each token, its role and name. The tokens
//! themselves are never stored.

use super::{Pool, Result, Store};

/// A stored token, without the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    /// `admin` or `viewer`.
    pub role: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    name: String,
    role: String,
    created_at_ms: i64,
    last_used_at_ms: Option<i64>,
    revoked_at_ms: Option<i64>,
}

fn record(row: Row) -> TokenRecord {
    TokenRecord {
        id: row.id,
        name: row.name,
        role: row.role,
        created_at_ms: row.created_at_ms,
        last_used_at_ms: row.last_used_at_ms,
        revoked_at_ms: row.revoked_at_ms,
    }
}

const COLUMNS: &str = "id, name, role, created_at_ms, last_used_at_ms, revoked_at_ms";

impl Store {
    /// Stores a new token's hash; its id.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        token_sha256: &str,
        now_ms: i64,
    ) -> Result<i64> {
        let id: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO api_tokens (name, role, token_sha256, created_at_ms) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(name)
            .bind(role)
            .bind(token_sha256)
            .bind(now_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(id)
    }

    /// The live (not revoked) token with this hash. Its last use is written at most once a
    /// minute, so reading the API does not mean a database write per request.
    pub async fn use_token(&self, token_sha256: &str, now_ms: i64) -> Result<Option<TokenRecord>> {
        let row: Option<Row> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM api_tokens \
                 WHERE token_sha256 = $1 AND revoked_at_ms IS NULL"
            )))
            .bind(token_sha256)
            .fetch_optional(pool)
            .await?
        });
        let Some(token) = row.map(record) else {
            return Ok(None);
        };
        if token.last_used_at_ms.is_none_or(|at| at < now_ms - 60_000) {
            on_pool!(self, pool => {
                sqlx::query("UPDATE api_tokens SET last_used_at_ms = $2 WHERE id = $1")
                    .bind(token.id)
                    .bind(now_ms)
                    .execute(pool)
                    .await
                    .map(|_| ())?
            });
        }
        Ok(Some(token))
    }

    /// Every token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM api_tokens ORDER BY id DESC"
            )))
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(record).collect())
    }

    /// Revokes a token; false when there is no live token with that id.
    pub async fn revoke_token(&self, id: i64, now_ms: i64) -> Result<bool> {
        let changed = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
            )
            .bind(id)
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }
}
