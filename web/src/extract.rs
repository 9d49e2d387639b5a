//! What every handler shares: the error body, and turning extractors' rejections and bad
//! page sizes into clear 4xx errors.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ApiError;

/// An error: what went wrong, in one sentence.
#[derive(Serialize, ToSchema)]
pub struct ErrorDto {
    pub error: String,
}

/// A page size from the query parameter `name`: 1 to 1000, `default` when absent.
pub(crate) fn page_limit(name: &str, limit: Option<i64>, default: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=1000).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(format!(
            "`{name}` must be between 1 and 1000, found {limit}"
        )))
    }
}

pub(crate) fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad_request(e.body_text())
}

pub(crate) fn json_error(e: JsonRejection) -> ApiError {
    ApiError::new(
        if e.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::BAD_REQUEST
        },
        e.body_text(),
    )
}
