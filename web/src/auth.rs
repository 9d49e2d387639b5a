//! API tokens and roles.
//!
//! A token is `amd_` and 64 hex digits of operating-system randomness; the store keeps only
//! its SHA-256. Every `/api/v1` request carries one as `Authorization: Bearer …`; `viewer`
//! tokens read, `admin` tokens also change things. The UI keeps its token in the tab's session
//! storage and sends the same header: no cookie is ever set, so another site cannot make a
//! browser send an authenticated request (no cross-site request forgery), and a mutating
//! request whose `Origin` is not this server is refused as well.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use sha2::{Digest, Sha256};

use amdahl_scheduler::{Clock, SystemClock};

use crate::{ApiError, AppState};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// A new random token (shown once; store its [`hash`]).
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the system: {e}"))?;
    Ok(format!("amd_{}", hex(&bytes)))
}

/// The SHA-256 of a token, as stored.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request made with a live token: who, and in which role.
#[derive(Clone, Debug)]
pub struct Caller {
    pub token_id: i64,
    pub role: Role,
}

impl Caller {
    /// Refuses unless the caller is an admin.
    pub fn admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this needs an admin token; a viewer token can only read",
            ))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "no token: send `Authorization: Bearer <token>` (make one with `amdahl tokens create`)",
                )
            })?
            .to_str()
            .map_err(|_| ApiError::new(StatusCode::UNAUTHORIZED, "the Authorization header is not text"))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        if parts.method != Method::GET && parts.method != Method::HEAD {
            same_origin(parts)?;
        }
        let found = state
            .store
            .use_token(&hash(token), SystemClock.now_ms())
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown or revoked token"))?;
        let role = Role::parse(&found.role).ok_or_else(|| {
            ApiError::internal(format!("token {} has role `{}`", found.id, found.role))
        })?;
        Ok(Caller {
            token_id: found.id,
            role,
        })
    }
}

/// A browser's cross-site request carries the other site's `Origin`: refuse it.
fn same_origin(parts: &Parts) -> Result<(), ApiError> {
    let Some(origin) = parts.headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or(origin);
    if !host.is_empty() && origin_host == host {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("a request from {origin} cannot change anything here"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("amd_") && a.len() == 4 + 64, "{a}");
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
