//! The gateway's own endpoints: `GET /health` (200 once the first
//! registry table is applied, 503 before that and while stopping) and
//! `GET /metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::proxy::Shared;

/// What the endpoints read.
pub(crate) struct Admin {
    /// What the proxies share (the routing table, the metrics).
    pub(crate) shared: Arc<Shared>,
    /// Set when the gateway starts stopping.
    pub(crate) stopping: AtomicBool,
    /// The id the gateway reports its applied revision under.
    pub(crate) router_id: String,
}

/// The paths [`router`] serves.
pub(crate) const PATHS: [&str; 2] = ["/health", "/metrics"];

/// The router of the admin endpoints; anything else is a JSON 404.
pub(crate) fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not_found", "message": "try /health or /metrics"})),
            )
        })
        .with_state(admin)
}

async fn health(State(admin): State<Arc<Admin>>) -> Response {
    let table = admin.shared.routes.load();
    let stopping = admin.stopping.load(Ordering::Relaxed);
    let (status, word) = match (table.ready, stopping) {
        (_, true) => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        (true, false) => (StatusCode::OK, "ready"),
    };
    let body = json!({
        "status": word,
        "router_id": admin.router_id,
        "revision": table.revision,
        "registry_connected": table.connected,
        "instances": table.instances,
        "routes": table.paths(),
        "websockets": admin.shared.tunnels.len(),
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.shared.metrics.render(),
    )
        .into_response()
}
