//! The operations server on `METRICS_ADDRESS`: `/metrics`, `/health/live`,
//! `/health/ready`. It is a runner extension: it listens from before the
//! services start, so that probes see them start, and stops last.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde_json::json;
use std::any::Any;

use super::listener::Listening;
use crate::config::Config;
use crate::container::StartError;
use crate::dependency::Extensions;
use crate::extension::{RunnerExtension, Shared};
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

/// The operations server of a runner whose configuration sets
/// `METRICS_ADDRESS`.
pub(crate) struct OpsServer {
    address: String,
    listening: Option<Listening>,
}

impl OpsServer {
    /// The operations server `config` asks for, if any. Asking for one
    /// turns metrics on, before the transport connects.
    pub(crate) fn from_config(config: &Config) -> Option<Self> {
        let address = config.metrics_address()?;
        crate::metrics::enable();
        Some(OpsServer {
            address,
            listening: None,
        })
    }
}

impl RunnerExtension for OpsServer {
    fn open<'a>(
        &'a mut self,
        runner: &'a Shared,
        _values: &'a mut Extensions,
    ) -> BoxFuture<'a, Result<(), StartError>> {
        Box::pin(async move {
            let listening = Listening::serve(
                "metrics and health checks server",
                &self.address,
                router(runner.health.clone()),
            )
            .await?;
            self.listening = Some(listening);
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        super::listener::stop(&mut self.listening)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl OpsServer {
    /// The address it listens on, once started.
    pub(crate) fn address(&self) -> Option<std::net::SocketAddr> {
        super::listener::address_of(&self.listening)
    }
}
