//! A server that listens: how the web server and the operations server
//! bind, serve and stop.

use axum::Router;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::container::StartError;

/// How long a stopping server may take to finish the requests in flight.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A server serving on its address until stopped.
pub(crate) struct Listening {
    address: SocketAddr,
    task: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Listening {
    /// Binds `address` and serves `router` there; `server` names it in logs.
    /// A bind failure is [`StartError::Listen`], naming the address.
    pub(crate) async fn serve(
        server: &'static str,
        address: &str,
        router: Router,
    ) -> Result<Self, StartError> {
        let listen_error = |source| StartError::Listen {
            address: address.to_string(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(listen_error)?;
        let local = listener.local_addr().map_err(listen_error)?;
        tracing::info!(address = %local, "{server} listening");
        let shutdown = CancellationToken::new();
        let stopped = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "{server} failed");
            }
        });
        Ok(Listening {
            address: local,
            task,
            shutdown,
        })
    }

    /// The address it listens on.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops taking connections; the requests in flight go on.
    pub(crate) fn stop_accepting(&self) {
        self.shutdown.cancel();
    }

    /// Stops taking connections and waits a while for the requests in
    /// flight to finish.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(STOP_GRACE, self.task).await;
    }
}

/// The address of a server's listener, once the server started.
pub(crate) fn address_of(listening: &Option<Listening>) -> Option<SocketAddr> {
    listening.as_ref().map(Listening::address)
}

/// Stops a server's listener, if the server started: the `stop` of both
/// servers.
pub(crate) fn stop(listening: &mut Option<Listening>) -> BoxFuture<'static, ()> {
    let listening = listening.take();
    Box::pin(async move {
        if let Some(listening) = listening {
            listening.stop().await;
        }
    })
}
