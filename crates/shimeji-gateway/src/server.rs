//! Accepting client connections: HTTP/1.1 with keep-alive and upgrades,
//! on hyper, each connection in its own task; a graceful stop.
//!
//! Stopping: the listener closes (no new connection), every connection is
//! told to finish (hyper answers what it is serving, then closes; idle
//! keep-alive connections close at once), and connections still open when
//! the grace period ends are dropped.

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::admin;
use crate::proxy::Proxy;

/// How long to wait before accepting again after `accept` failed (out of
/// file descriptors, …).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What one listener serves.
#[derive(Clone)]
pub(crate) struct App {
    /// The proxy; `None` on an admin-only listener.
    pub(crate) proxy: Option<Arc<Proxy>>,
    /// The admin endpoints, when this listener serves them.
    pub(crate) admin: Option<Router>,
}

impl App {
    async fn call(&self, req: http::Request<Incoming>, peer: SocketAddr) -> http::Response<Body> {
        let req = req.map(Body::new);
        if let Some(admin) = &self.admin {
            if self.proxy.is_none() || admin::PATHS.contains(&req.uri().path()) {
                return match admin.clone().oneshot(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
            }
        }
        match &self.proxy {
            Some(proxy) => proxy.handle(req, Some(peer)).await,
            None => http::Response::new(Body::empty()),
        }
    }
}

/// The signals and the tracker shared by every connection of a gateway.
#[derive(Clone, Default)]
pub(crate) struct Connections {
    /// Stop accepting and close connections gracefully.
    pub(crate) graceful: CancellationToken,
    /// Drop the connections still open.
    pub(crate) hard: CancellationToken,
    /// Every accept loop and connection task.
    pub(crate) tracker: TaskTracker,
}

/// Serves `app` on `listener` until the graceful stop.
pub(crate) fn serve(
    listener: TcpListener,
    app: App,
    connections: Connections,
    header_read_timeout: Duration,
) {
    let tracker = connections.tracker.clone();
    tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = connections.graceful.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            let app = app.clone();
            connections.tracker.spawn(connection(
                stream,
                peer,
                app,
                connections.clone(),
                header_read_timeout,
            ));
        }
        tracing::debug!("listener closed");
    });
}

/// Serves one connection until it ends, is stopped gracefully or dropped.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: App,
    connections: Connections,
    header_read_timeout: Duration,
) {
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.call(req, peer).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => Some(ended),
        () = connections.graceful.cancelled() => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                ended = conn.as_mut() => ended,
                () = connections.hard.cancelled() => return,
            }
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}
