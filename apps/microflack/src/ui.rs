//! The ui service: MicroFlack's page at `/` and its files under
//! `/static/`, all built into the binary (the Socket.IO client comes from
//! npm at build time, see `build.rs`), so it needs no files beside it and
//! no internet.
//!
//! The page uses Socket.IO, or polls the API every second when the config
//! key `NO_SOCKETIO` is set (any non-empty value, as the original).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shimeji::prelude::*;
use shimeji::ServiceConfig;

use crate::api::{Api, ApiError};

/// Config key: set (non-empty, not `false`), the page polls instead of
/// using Socket.IO.
pub const NO_SOCKETIO_KEY: &str = "NO_SOCKETIO";

/// The page, with its import map in place (`{{USE_SOCKETIO}}` is set per
/// config).
const PAGE: &str = include_str!(concat!(env!("OUT_DIR"), "/index.html"));

/// The page's Content-Security-Policy: its own scripts, styles and
/// connections only (WebSocket to the same origin included), plus the one
/// inline script, the import map, by its hash.
const CSP: &str = concat!(
    "default-src 'self'; script-src 'self' '",
    env!("MICROFLACK_IMPORT_MAP_HASH"),
    "'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; ",
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
);

/// The vendored bundle is named with its version, so it can be cached for good.
const FOREVER: &str = "public, max-age=31536000, immutable";
/// The page's own files change with the binary: revalidated every time.
const REVALIDATE: &str = "no-cache";

const JS: &str = "text/javascript; charset=utf-8";

/// A file under `/static/`.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    cache: &'static str,
    body: &'static str,
}

/// One of the page's own files in `web/src`, revalidated every time.
macro_rules! own {
    ($file:literal, $content_type:expr) => {
        Asset {
            path: $file,
            content_type: $content_type,
            cache: REVALIDATE,
            body: include_str!(concat!("../web/src/", $file)),
        }
    };
}

const ASSETS: &[Asset] = &[
    own!("app.js", JS),
    own!("api.js", JS),
    own!("live.js", JS),
    own!("views.js", JS),
    own!("styles.css", "text/css; charset=utf-8"),
    Asset {
        path: concat!(
            "vendor/socket.io-",
            env!("MICROFLACK_SOCKET_IO_VERSION"),
            ".esm.min.js"
        ),
        content_type: JS,
        cache: FOREVER,
        body: include_str!(concat!(env!("OUT_DIR"), "/socket.io.esm.min.js")),
    },
];

/// Whether a `NO_SOCKETIO` value turns Socket.IO off.
fn polling(value: Option<&serde_json::Value>) -> bool {
    match value {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => !s.is_empty() && s != "false",
        Some(serde_json::Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(_) => true,
    }
}

/// The page as served when Socket.IO is on (or off).
pub fn page(use_socketio: bool) -> String {
    PAGE.replace(
        "{{USE_SOCKETIO}}",
        if use_socketio { "true" } else { "false" },
    )
}

fn respond(content_type: &'static str, cache: &'static str, body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The ui service.
#[derive(Default, Dependencies)]
pub struct Ui {
    config: ServiceConfig,
}

#[service(name = "ui")]
impl Ui {
    /// `GET /`: the page.
    #[http(GET, "/")]
    async fn index(&self) -> Response {
        let value = self
            .config
            .get::<serde_json::Value>(NO_SOCKETIO_KEY)
            .ok()
            .flatten();
        let mut response = respond(
            "text/html; charset=utf-8",
            REVALIDATE,
            page(!polling(value.as_ref())),
        );
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        response
    }

    /// `GET /static/{path}`: the page's scripts, styles and the vendored
    /// Socket.IO client.
    #[http(GET, "/static/{*path}")]
    async fn asset(&self, Path(path): Path<String>) -> Api<Response> {
        let asset = ASSETS
            .iter()
            .find(|a| a.path == path)
            .ok_or_else(|| ApiError::NotFound(format!("no file /static/{path}")))?;
        Ok(respond(
            asset.content_type,
            asset.cache,
            asset.body.to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn no_socketio_values() {
        assert!(!polling(None));
        assert!(!polling(Some(&json!(""))));
        assert!(!polling(Some(&json!(false))));
        assert!(!polling(Some(&json!("false"))));
        assert!(polling(Some(&json!("1"))));
        assert!(polling(Some(&json!(1))));
        assert!(polling(Some(&json!("yes"))));
        assert!(polling(Some(&json!(true))));
    }

    #[test]
    fn the_page_imports_the_vendored_bundle() {
        let page = page(true);
        assert!(page.contains(r#"data-socketio="true""#));
        let vendor = ASSETS.iter().find(|a| a.cache == FOREVER).map(|a| a.path);
        assert!(page.contains(&format!("/static/{}", vendor.unwrap_or("?"))));
        assert!(!page.contains("{{"));
    }
}
