//! What every handler shares: the error body, and turning extractors' rejections and bad
//! page sizes into clear 4xx errors.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
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

/// An optional JSON body: none at all (or `null`) reads as the empty object `{}` (so `T`'s
/// serde defaults apply); otherwise it must be declared `application/json` (else 415) and be
/// one JSON object that reads as `T` (else 400, saying why). A body over axum's limit is
/// refused with 413.
pub(crate) fn optional_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_value(serde_json::Value::Object(serde_json::Map::new()))
            .map_err(|e| ApiError::bad_request(format!("the body is required: {e}")));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|essence| essence == "application/json" || essence.ends_with("+json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a request body must be JSON, sent with `Content-Type: application/json`",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    // The document allows `null` for an optional body: it means no body.
    let value = if value.is_null() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        value
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object, found {}",
            json_type(&value)
        )));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("the body: {e}")))
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default = "yes")]
        downstream: bool,
    }

    fn yes() -> bool {
        true
    }

    fn read(content_type: Option<&str>, body: &str) -> Result<Body, (StatusCode, String)> {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
        }
        optional_json(&headers, Ok(Bytes::from(body.to_string())))
            .map_err(|e| (e.status, e.message))
    }

    #[test]
    fn no_body_or_null_reads_as_the_empty_object() {
        let defaults = Ok(Body { downstream: true });
        assert_eq!(read(None, ""), defaults);
        assert_eq!(read(Some("text/plain"), " \n"), defaults);
        assert_eq!(read(Some("application/json"), "null"), defaults);
        assert_eq!(
            read(
                Some("application/json; charset=utf-8"),
                r#"{"downstream":false}"#
            ),
            Ok(Body { downstream: false })
        );
    }

    #[test]
    fn what_the_document_refuses_is_refused() {
        let (status, message) = read(Some("text/plain"), "{}").unwrap_err();
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{message}");
        assert_eq!(
            read(Some("application/json"), "[{}]"),
            Err((
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object, found an array".into()
            ))
        );
        let (status, message) = read(Some("application/json"), "{").unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.starts_with("the body is not JSON"), "{message}");
        let (status, message) = read(Some("application/json"), r#"{"x":1}"#).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("unknown field `x`"), "{message}");
    }
}
