//! HTTP and WebSocket entrypoints, on axum (feature `http`).
//!
//! `#[http(GET, "/users/{id}")]` makes a method an HTTP entrypoint. Its
//! parameters are axum extractors (`Path`, `Query`, `Json`, `HeaderMap`, …);
//! it may return a value (sent as JSON), anything axum turns into a response
//! (`String`, `(StatusCode, body)`, `(StatusCode, HeaderMap, body)`,
//! `Response`), or a `Result` of those. The error type of a `Result` is the
//! method's *expected* error: it becomes a 4xx response with a JSON body
//! naming its type and message (`400` unless the type says otherwise with
//! `#[exception(status = 404)]`). Anything else — a panic, a 5xx status —
//! becomes a 500 with no internals in the body.
//!
//! ```
//! use shimeji::prelude::*;
//! use shimeji::http::{Json, Path};
//!
//! #[derive(Debug, thiserror::Error, Exception)]
//! #[exception(status = 404)]
//! #[error("no user {0}")]
//! struct NoSuchUser(u64);
//!
//! #[derive(Default, Dependencies)]
//! struct Users;
//!
//! #[service(name = "users")]
//! impl Users {
//!     #[http(GET, "/users/{id}")]
//!     async fn get(&self, Path(id): Path<u64>) -> Result<serde_json::Value, NoSuchUser> {
//!         if id == 1 { Ok(serde_json::json!({"id": 1, "name": "Ada"})) } else { Err(NoSuchUser(id)) }
//!     }
//!
//!     #[http(POST, "/echo")]
//!     async fn echo(&self, Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
//!         Json(body)
//!     }
//! }
//! ```
//!
//! All services of a runner share one server on `WEB_SERVER_ADDRESS`
//! (default `0.0.0.0:8000`). Request bodies are limited to
//! `max_body_size` bytes (default 2 MiB; more gets 413). Unknown routes get
//! 404, malformed JSON 400, a path parameter of the wrong type 400.
//!
//! The WebSocket hub (see [`WebSocketHub`]) answers on `/ws` when a service
//! is marked `#[service(name = "…", websocket)]`. Its sockets are bounded:
//! messages by `websocket_max_message_size` (default `max_body_size`),
//! requests running at once per socket by `websocket_max_in_flight` (16),
//! frames waiting to be written per socket by `websocket_send_queue` (256);
//! `websocket_allowed_origins` refuses upgrades from other origins (403).

use axum::http::StatusCode;
use serde_json::json;

use crate::error::Exception;

pub(crate) mod handler;
mod hooks;
mod hub;
mod listener;
pub(crate) mod ops;
pub(crate) mod server;
mod socket;

pub use axum::extract::{FromRequest, FromRequestParts, Json, Path, Query, Request};
pub use axum::http::{HeaderMap, HeaderValue, Method};
pub use axum::response::{IntoResponse, Response};
#[doc(hidden)]
pub use handler::plug_in as __plug_in;
pub use handler::HttpService;
pub use hooks::{HookError, SocketInfo};
pub use hub::WebSocketHub;

/// Status codes, re-exported from `http`.
pub use axum::http::StatusCode as Status;

/// The header that names a request at the edge. An HTTP entrypoint takes
/// the client's (when it is 1 to 128 visible ASCII characters) or makes
/// one, returns it in the response, and puts it at the root of the
/// `call_id_stack`: every worker the request reaches, in any service, has it
/// first in its stack, and every JSON log line shows it as `request_id`.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The caller context of an HTTP request: the request id at the root of the
/// call id stack and the client's `traceparent`, if any.
pub(crate) fn edge_context(headers: &HeaderMap) -> (crate::WorkerContext, HeaderValue) {
    let given = headers
        .get(REQUEST_ID_HEADER)
        .filter(|v| {
            let bytes = v.as_bytes();
            (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned();
    let request_id = given.unwrap_or_else(|| {
        let id = crate::context::new_uuid().simple().to_string();
        HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("unknown"))
    });
    let id = String::from_utf8_lossy(request_id.as_bytes()).into_owned();
    let mut context = crate::WorkerContext::from_wire(vec![id], Default::default());
    if let Some(parent) = headers
        .get(crate::trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::trace::TraceParent::parse)
    {
        context = context.with_trace_parent(parent);
    }
    (context, request_id)
}

/// Default `max_body_size`: 2 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 2 * 1024 * 1024;
/// Default `websocket_max_in_flight`: requests of one socket running at once.
pub const DEFAULT_WEBSOCKET_MAX_IN_FLIGHT: usize = 16;
/// Default `websocket_send_queue`: frames waiting to be written to one socket.
pub const DEFAULT_WEBSOCKET_SEND_QUEUE: usize = 256;
/// Default `WEB_SERVER_ADDRESS`.
pub const DEFAULT_WEB_SERVER_ADDRESS: &str = "0.0.0.0:8000";

/// An HTTP entrypoint, as `#[service]` declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRouteSpec {
    /// The entrypoint.
    pub id: crate::entrypoint::EntrypointId,
    /// `GET`, `POST`, …
    pub method: &'static str,
    /// The route, with `{param}` placeholders.
    pub path: &'static str,
    /// The method that handles it.
    pub name: &'static str,
}

/// The JSON body of an error response: `{"error": type, "message": text}`.
pub fn error_body(status: StatusCode, exc_type: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": exc_type, "message": message })),
    )
        .into_response()
}

/// The response for an entrypoint's expected error: its status (4xx), or a
/// 500 with no details when the type asks for a 5xx.
pub fn error_response<E: Exception + ?Sized>(error: &E) -> Response {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    if status.is_server_error() {
        tracing::error!(exc_type = %error.exc_type(), error = %error.message(), "HTTP entrypoint failed");
        let mut response = error_body(status, "InternalServerError", "internal server error");
        // For the entrypoint's metrics: the run failed with this type.
        response
            .extensions_mut()
            .insert(FailedWith(error.exc_type().to_string()));
        return response;
    }
    error_body(status, &error.exc_type(), &error.message())
}

/// The error type a 5xx response of [`error_response`] stands for; read by
/// the entrypoint's metrics, never sent.
#[derive(Debug, Clone)]
pub(crate) struct FailedWith(pub(crate) String);

/// 404 for a route the service does not have.
pub fn not_found(name: &str) -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("no HTTP entrypoint `{name}`"),
    )
}

#[doc(hidden)]
pub mod __respond {
    //! Turns an entrypoint's value into a response: anything axum can turn
    //! into one as axum does, any other serializable value as JSON.
    use super::{IntoResponse, Json, Response};
    use std::cell::Cell;

    pub struct Responder<T>(Cell<Option<T>>);

    impl<T> Responder<T> {
        pub fn new(value: T) -> Self {
            Responder(Cell::new(Some(value)))
        }
        fn take(&self) -> Option<T> {
            self.0.take()
        }
    }

    pub trait ViaIntoResponse {
        fn respond(&self) -> Response;
    }
    impl<T: IntoResponse> ViaIntoResponse for &Responder<T> {
        fn respond(&self) -> Response {
            self.take()
                .map(IntoResponse::into_response)
                .unwrap_or_default()
        }
    }

    pub trait ViaJson {
        fn respond(&self) -> Response;
    }
    impl<T: serde::Serialize> ViaJson for Responder<T> {
        fn respond(&self) -> Response {
            self.take()
                .map(|v| Json(v).into_response())
                .unwrap_or_default()
        }
    }
}
