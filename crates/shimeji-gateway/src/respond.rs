//! The gateway's own answers: JSON bodies in the shape
//! `{"error": "<code>", "message": "…", "request_id": "…"}` (plus
//! `"service"` when one is concerned), with the request id header.

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::ResponseBody;
use crate::headers::REQUEST_ID;

/// A JSON answer of `status` with error code `code`.
fn error(
    status: StatusCode,
    code: &str,
    message: String,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    error_with(
        status,
        json!({ "error": code, "message": message }),
        request_id,
    )
}

fn error_with(
    status: StatusCode,
    mut body: Value,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    if let (Some(map), Ok(id)) = (body.as_object_mut(), request_id.to_str()) {
        map.insert("request_id".into(), Value::String(id.to_string()));
    }
    let mut response = Response::new(ResponseBody::Other(Body::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REQUEST_ID, request_id.clone());
    response
}

/// 404: no instance serves this path.
pub(crate) fn not_found(
    method: &str,
    path: &str,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no service serves {method} {path}"),
        request_id,
    )
}

/// 405: the path is served, with other methods.
pub(crate) fn method_not_allowed(
    method: &str,
    allow: &str,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not served here; try {allow}"),
        request_id,
    );
    if let Ok(value) = HeaderValue::from_str(allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// 503: the route's service has no instance up.
pub(crate) fn unavailable(service: &str, request_id: &HeaderValue) -> Response<ResponseBody> {
    let body = json!({
        "error": "unavailable",
        "service": service,
        "message": format!("no instance of {service} is up"),
    });
    error_with(StatusCode::SERVICE_UNAVAILABLE, body, request_id)
}

/// 502: no instance could be reached, or the connection broke.
pub(crate) fn bad_gateway(
    service: &str,
    why: &str,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let body = json!({
        "error": "bad_gateway",
        "service": service,
        "message": format!("{service}: {why}"),
    });
    error_with(StatusCode::BAD_GATEWAY, body, request_id)
}

/// 504: no response head in time.
pub(crate) fn gateway_timeout(service: &str, request_id: &HeaderValue) -> Response<ResponseBody> {
    let body = json!({
        "error": "gateway_timeout",
        "service": service,
        "message": format!("{service} did not answer in time"),
    });
    error_with(StatusCode::GATEWAY_TIMEOUT, body, request_id)
}

/// 400: the request's body could not be read.
pub(crate) fn bad_request(why: &str, request_id: &HeaderValue) -> Response<ResponseBody> {
    error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("cannot read the request body: {why}"),
        request_id,
    )
}

/// 408: the request's body did not come in time.
pub(crate) fn request_timeout(request_id: &HeaderValue) -> Response<ResponseBody> {
    error(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request body did not come in time".into(),
        request_id,
    )
}
