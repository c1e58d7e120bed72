//! What every MicroFlack HTTP route shares: JSON errors, the exact 401 of
//! the original, request bodies and query values read without axum's
//! plain-text rejections, and the current time.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::HashMap;

/// The body of every authentication failure, as the original sends it.
pub const AUTH_REQUIRED: &str = "authentication required";
/// The `WWW-Authenticate` header of every authentication failure: the
/// `Bearer` realm, so that browsers show no login dialog.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"Authentication Required\"";

/// What a route answers: a response, or an [`ApiError`]. (A type alias, so
/// that the error's own response — the exact 401 included — is sent as is.)
pub type Api<T> = Result<T, ApiError>;

/// An error answered as JSON: `{"error": <short text>, "message": <detail>}`,
/// except the 401, which is exactly `{"error": "authentication required"}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 401 with the `WWW-Authenticate` header.
    #[error("authentication required")]
    Unauthorized,
    /// 403: the resource belongs to someone else.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 503: a service this request needs cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A request the web layer refused (a body over the size limit: 413),
    /// with its status.
    #[error("{message}")]
    Rejected {
        /// The HTTP status.
        status: StatusCode,
        /// What was wrong.
        message: String,
    },
    /// 500; the detail is logged, never sent.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 500 for an error the client cannot fix; logged with its detail.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        ApiError::Internal(error.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::internal(format!("database: {error}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, message) = match &self {
            ApiError::Unauthorized => return unauthorized(),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad request", m.as_str()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.as_str()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not found", m.as_str()),
            ApiError::Rejected { status, message } => (
                *status,
                status.canonical_reason().unwrap_or("bad request"),
                message.as_str(),
            ),
            ApiError::Unavailable(m) => {
                tracing::warn!(error = %m, "a service this request needs is unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service unavailable",
                    "try again later",
                )
            }
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal server error",
                    "internal server error",
                )
            }
        };
        (status, Json(json!({ "error": error, "message": message }))).into_response()
    }
}

/// The original's 401: `{"error": "authentication required"}` and
/// `WWW-Authenticate: Bearer realm="Authentication Required"`.
pub fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": AUTH_REQUIRED })),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(WWW_AUTHENTICATE),
    );
    response
}

/// A request body, or the web layer's refusal of it as a JSON error (413
/// for a body over `max_body_size`).
pub fn body(raw: Result<Bytes, BytesRejection>) -> Api<Bytes> {
    raw.map_err(|rejection| ApiError::Rejected {
        status: rejection.status(),
        message: rejection.body_text(),
    })
}

/// A JSON object from a request body: 400 (JSON) when there is none, it is
/// not JSON, or it is not an object of the expected shape.
pub fn json_body<T: DeserializeOwned>(body: &Bytes) -> Api<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("a JSON body is required".into()));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
}

/// An integer query value: `None` when absent or empty, 400 when it is not
/// an integer.
pub fn int_query(query: &HashMap<String, String>, key: &str) -> Api<Option<i64>> {
    match query.get(key).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::BadRequest(format!("`{key}` must be an integer"))),
    }
}

/// A numeric id from a path segment; anything else is 404, as a route
/// typed `int` answers in the original.
pub fn path_id(raw: &str, what: &str) -> Api<i64> {
    raw.parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::NotFound(format!("no {what} {raw}")))
}

/// A response with a status, a `Location` header and a JSON body.
pub fn created(location: &str, body: impl serde::Serialize) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The current time in integer UNIX seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
