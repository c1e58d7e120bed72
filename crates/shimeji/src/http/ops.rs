//! The operations server on `METRICS_ADDRESS`: `/metrics`, `/health/live`,
//! `/health/ready`.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

fn router(health: Health) -> Router {
    let ready = health.clone();
    Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                    crate::metrics::render(),
                )
            }),
        )
        .route(
            "/health/live",
            get(|| async { Json(json!({"status": "live"})) }),
        )
        .route(
            "/health/ready",
            get(move || {
                let readiness = ready.readiness();
                async move {
                    let status = if readiness.ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, Json(readiness)).into_response()
                }
            }),
        )
        .fallback(|| async {
            super::error_body(
                StatusCode::NOT_FOUND,
                "NotFound",
                "this address serves /metrics, /health/live and /health/ready",
            )
        })
}

/// Starts the operations server; it stops when `shutdown` is cancelled.
pub(crate) async fn serve(
    address: &str,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on METRICS_ADDRESS {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(address = %local, "metrics and health checks served");
    let app = router(health);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics server failed");
        }
    });
    Ok((local, task))
}
