//! An HTTP gateway in front of shimeji instances, routing by the service
//! registry: no route file, no reload.
//!
//! Every instance publishes in the [registry](shimeji::registry) its HTTP
//! address and the method + path templates of its `#[http]` entrypoints.
//! The gateway follows the registry and routes each request by method and
//! path (matchit, the router under axum) to an instance that serves that
//! route:
//!
//! - **picking**: the less loaded (fewer requests in flight) of two
//!   instances drawn at random (power of two choices);
//! - **ejection**: an instance that refused `eject_after` connections in a
//!   row is out of rotation for `eject_for` (the registry's lease remains
//!   the main liveness signal; ejection covers the seconds before a dead
//!   instance's lease expires);
//! - **retries**: at most one, on a *different* instance, under a
//!   per-service retry budget (see below);
//! - **timeouts**: `try_timeout` per try, `deadline` over all tries (both
//!   until the response head; a body then streams as long as it takes);
//! - **WebSocket** (and any HTTP/1.1 upgrade) tunnels; services whose
//!   record says `sticky` keep a client on one instance by a cookie
//!   (`shimeji_sticky`) or its Socket.IO session id (`sid`, learnt from the
//!   handshake answer);
//! - **headers**: `X-Request-Id` and `traceparent` passed on when valid,
//!   made otherwise; hop-by-hop headers dropped both ways;
//!   `X-Forwarded-For` appended, `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` set when absent;
//! - **answers of its own**, in JSON: 404 `{"error": "not_found", …}` for a
//!   path no instance serves, 405 for a served path with another method,
//!   503 `{"error": "unavailable", …}` when the route's service has no
//!   instance up (a service whose instances all left keeps its routes for
//!   that), 502 / 504 when the instances failed;
//! - `GET /health` (200 once the first registry table is applied, 503
//!   before and while stopping) and `GET /metrics` (Prometheus), on the
//!   main listener or on their own (`admin_listen`);
//! - **zero lost requests on deploys**: after applying each new table the
//!   gateway reports its revision to the registry; a stopping instance
//!   deregisters and waits until every gateway has applied that revision
//!   before it closes its listener.
//!
//! # Retries
//!
//! A request is tried at most twice, the second time on a **different**
//! instance picked from the routing table as it is then, within the
//! deadline, and only if the service's retry budget allows it (about
//! `retry_ratio` of its requests over `retry_window`, plus
//! `retry_min_per_sec`; tower's `TpsBudget`), so that retries cannot
//! multiply the load of a failing service. Whether the second try may go
//! depends on what the first one may have done:
//!
//! | the first try | the instance may have | retried when |
//! |---|---|---|
//! | could not connect | seen nothing | always (the body is still in hand) |
//! | was handed back unsent by hyper (the connection closed before the request was written) | seen nothing | always (same) |
//! | sent (part of) the request, then the connection broke before a response head | processed it | the method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) **and** its body is empty or was buffered |
//! | sent it, no response head within `try_timeout` | processed it, or be processing it | same as above |
//! | got a response head (any status, 5xx included) | answered | never: the response goes to the client |
//!
//! So a POST (or PATCH) whose bytes were sent is never sent again: the
//! client gets a 502 or 504 and decides. Bodies of idempotent requests up
//! to `replay_buffer` with a `Content-Length` are read before the first
//! try so that they can be sent again; any other body streams, and can be
//! sent again only when the first try read none of it.
//!
//! Upstream connections are HTTP/1.1, pooled and kept alive (hyper-util's
//! client); clients speak HTTP/1.1 (or 1.0) to the gateway.
//!
//! ```no_run
//! use shimeji::registry::Registry;
//! use shimeji_gateway::{Gateway, Settings};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::connect("etcd://127.0.0.1:2379").await?;
//! let settings = Settings {
//!     listen: "0.0.0.0:8080".parse()?,
//!     ..Settings::default()
//! };
//! let gateway = Gateway::start(registry, settings).await?;
//! tokio::signal::ctrl_c().await?;
//! gateway.stop().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod admin;
mod balance;
mod body;
mod eject;
mod follow;
mod headers;
mod metrics;
mod pool;
mod proxy;
mod respond;
mod retry;
mod routes;
mod server;
mod settings;
mod sticky;
mod upstream;
mod websocket;

pub use settings::Settings;

use shimeji::registry::{Registry, RegistryError, Revision};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::follow::Following;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, Shared};
use crate::routes::Builder;
use crate::server::{App, Connections};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A setting cannot work.
    #[error("bad gateway setting: {0}")]
    Settings(String),
    /// An address could not be listened on.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The registry could not be used.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A running gateway. Stop it with [`stop`](Self::stop); dropped without
/// it, its tasks end with the runtime.
pub struct Gateway {
    shared: Arc<Shared>,
    /// Ends the worker threads when the gateway goes.
    _done: Done,
    admin: Arc<Admin>,
    connections: Connections,
    following: Following,
    address: SocketAddr,
    admin_address: Option<SocketAddr>,
    grace: Duration,
}

/// Cancels its token when dropped: worker threads end with their gateway.
struct Done(CancellationToken);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("address", &self.address)
            .field("router_id", &self.admin.router_id)
            .field("revision", &self.revision())
            .finish()
    }
}

impl Gateway {
    /// Listens, starts following `registry` and reporting as a router, and
    /// serves. Requests get a 404 until the first table is applied (see
    /// [`ready`](Self::ready)).
    pub async fn start(registry: Registry, settings: Settings) -> Result<Gateway, GatewayError> {
        settings.validate()?;
        let listen_error =
            |address: SocketAddr| move |source| GatewayError::Listen { address, source };
        let mut listeners = server::bind(settings.listen, settings.workers)
            .map_err(listen_error(settings.listen))?;
        let admin_listener = match settings.admin_listen {
            Some(address) => {
                let mut one = server::bind(address, 1).map_err(listen_error(address))?;
                one.pop()
            }
            None => None,
        };
        let address = listeners
            .first()
            .map(std::net::TcpListener::local_addr)
            .transpose()
            .map_err(listen_error(settings.listen))?
            .unwrap_or(settings.listen);
        let admin_address = admin_listener
            .as_ref()
            .map(std::net::TcpListener::local_addr)
            .transpose()
            .map_err(listen_error(settings.listen))?;

        let router_id = settings.router_id.clone().unwrap_or_else(|| {
            format!(
                "gateway-{}-{}-{:04x}",
                shimeji::registry::host_name(),
                std::process::id(),
                fastrand::u16(..)
            )
        });
        let reporter = registry.router(&router_id, settings.router_ttl).await?;
        let metrics = Arc::new(Metrics::new());
        let builder = Builder::new(
            metrics.clone(),
            settings.retry_window,
            settings.retry_min_per_sec,
            settings.retry_ratio,
        );
        let shared = Arc::new(Shared::new(settings.clone(), metrics));
        let following = Following::start(registry.watcher(), builder, shared.clone(), reporter);
        let admin = Arc::new(Admin {
            shared: shared.clone(),
            stopping: Default::default(),
            router_id,
        });

        let connections = Connections::default();
        let done = CancellationToken::new();
        let admin_router = admin::router(admin.clone());
        let inline_admin = admin_listener.is_none().then(|| admin_router.clone());
        let timeout = settings.header_read_timeout;
        // Worker 0 on this runtime, the others on threads of their own.
        let first = listeners.remove(0);
        for (i, listener) in listeners.into_iter().enumerate() {
            let (shared, admin) = (shared.clone(), inline_admin.clone());
            let make_app = move || App {
                proxy: Some(Arc::new(Proxy::new(shared))),
                admin,
            };
            server::spawn_worker(
                i + 1,
                listener,
                make_app,
                connections.clone(),
                timeout,
                done.clone(),
            )
            .map_err(listen_error(address))?;
        }
        let tokio_listener = |l: std::net::TcpListener, at: SocketAddr| {
            TcpListener::from_std(l).map_err(listen_error(at))
        };
        let main = App {
            proxy: Some(Arc::new(Proxy::new(shared.clone()))),
            admin: inline_admin,
        };
        server::serve(
            tokio_listener(first, address)?,
            main,
            connections.clone(),
            timeout,
        );
        if let (Some(listener), Some(at)) = (admin_listener, admin_address) {
            let app = App {
                proxy: None,
                admin: Some(admin_router),
            };
            server::serve(
                tokio_listener(listener, at)?,
                app,
                connections.clone(),
                timeout,
            );
        }
        tracing::info!(%address, ?admin_address, router_id = %admin.router_id,
            registry = registry.name(), "gateway listening");
        Ok(Gateway {
            shared,
            admin,
            _done: Done(done),
            connections,
            following,
            address,
            admin_address,
            grace: settings.shutdown_grace,
        })
    }

    /// Where it accepts client connections.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Where it serves `/health` and `/metrics` when they have their own
    /// listener.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    /// The id it reports its applied revision under.
    pub fn router_id(&self) -> &str {
        &self.admin.router_id
    }

    /// The registry revision of the routing table in use (0 before the
    /// first).
    pub fn revision(&self) -> Revision {
        self.shared.routes.load().revision
    }

    /// Whether the first registry table has been applied.
    pub fn is_ready(&self) -> bool {
        self.shared.routes.load().ready
    }

    /// Waits until the routing table in use was built from revision
    /// `revision` or later, for at most `timeout`; whether it was.
    pub async fn applied(&self, revision: Revision, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let table = self.shared.routes.load();
            if table.ready && table.revision >= revision {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the first registry table is applied, for at most
    /// `timeout`; whether it was.
    pub async fn ready(&self, timeout: Duration) -> bool {
        self.applied(0, timeout).await
    }

    /// Stops: `/health` answers 503, the listeners close, requests in
    /// flight and WebSocket tunnels get the grace period to finish (then
    /// they are dropped), the registry is no longer followed, and the
    /// router report is deleted so that no instance waits for this
    /// gateway.
    pub async fn stop(self) {
        self.admin.stopping.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.grace;
        self.connections.graceful.cancel();
        self.connections.tracker.close();
        let finished = tokio::time::timeout_at(deadline, async {
            self.connections.tracker.wait().await;
            self.shared.tunnels.wait().await;
        })
        .await;
        if finished.is_err() {
            tracing::warn!(grace = ?self.grace, "connections still open after the grace period: closing them");
            self.connections.hard.cancel();
            self.shared.tunnels.close_all();
            self.connections.tracker.wait().await;
            self.shared.tunnels.wait().await;
        }
        if let Some(reporter) = self.following.stop().await {
            if let Err(error) = reporter.stop().await {
                tracing::warn!(%error, "cannot delete the router report: it expires with its lease");
            }
        }
        tracing::info!(address = %self.address, "gateway stopped");
    }
}
