//! Accepting client connections: HTTP/1.1 with keep-alive and upgrades,
//! on hyper, each connection in its own task; a graceful stop.
//!
//! Stopping: the listener closes (no new connection), every connection is
//! told to finish (hyper answers what it is serving, then closes; idle
//! keep-alive connections close at once), and connections still open when
//! the grace period ends are dropped.

use axum::body::Body;
use axum::Router;
use http::HeaderValue;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::admin;
use crate::body::ResponseBody;
use crate::headers;
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
    async fn call(
        &self,
        req: http::Request<Incoming>,
        peer: Option<&HeaderValue>,
    ) -> http::Response<ResponseBody> {
        if let Some(admin) = &self.admin {
            if self.proxy.is_none() || admin::PATHS.contains(&req.uri().path()) {
                return match admin.clone().oneshot(req.map(Body::new)).await {
                    Ok(response) => response.map(ResponseBody::Other),
                    Err(never) => match never {},
                };
            }
        }
        match &self.proxy {
            Some(proxy) => proxy.handle(req, peer).await,
            None => http::Response::new(ResponseBody::Other(Body::empty())),
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

/// `count` listeners on `address`: one plain listener, or `count` sharing
/// its port (`SO_REUSEPORT`), the first binding the port when `address`
/// asks for any.
pub(crate) fn bind(
    address: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let one = |address: SocketAddr, shared: bool| -> std::io::Result<std::net::TcpListener> {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        if shared {
            socket.set_reuseport(true)?;
        }
        socket.set_nodelay(true)?;
        socket.bind(address)?;
        let listener = socket.listen(BACKLOG)?;
        listener.into_std()
    };
    let shared = count > 1;
    let first = one(address, shared)?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(one(actual, shared)?);
    }
    Ok(all)
}

/// Pending connections a listener keeps.
const BACKLOG: u32 = 1024;

/// Runs `app` on `listener` on a thread of its own with its own event loop
/// until `done`; `make_app` builds the app there (its connection pool
/// belongs to that loop).
pub(crate) fn spawn_worker(
    index: usize,
    listener: std::net::TcpListener,
    make_app: impl FnOnce() -> App + Send + 'static,
    connections: Connections,
    header_read_timeout: Duration,
    done: CancellationToken,
) -> std::io::Result<()> {
    let thread = std::thread::Builder::new().name(format!("gateway-worker-{index}"));
    thread.spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, index, "cannot start a worker's event loop");
                return;
            }
        };
        runtime.block_on(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => serve(listener, make_app(), connections, header_read_timeout),
                Err(error) => tracing::error!(%error, index, "a worker cannot listen"),
            }
            done.cancelled().await;
        });
    })?;
    Ok(())
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
    let peer_ip = headers::peer_value(peer.ip());
    let service = service_fn(move |req| {
        let app = app.clone();
        let peer_ip = peer_ip.clone();
        async move { Ok::<_, Infallible>(app.call(req, peer_ip.as_ref()).await) }
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
