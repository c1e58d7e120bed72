//! WebSocket (and any HTTP/1.1 upgrade an instance accepts) tunnels.
//!
//! The upgrade request goes to an instance like any request (its
//! `Connection: upgrade` and `Upgrade` headers kept). When the instance
//! answers `101 Switching Protocols`, the gateway answers the client the
//! same, and once hyper has handed over both connections it copies bytes
//! both ways until either side closes. The instance counts the tunnel as
//! in flight for as long as it is open, so that sockets spread over the
//! instances too. A stopping gateway lets tunnels run for its grace period,
//! then closes them.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::upstream::InFlight;

/// The open tunnels.
#[derive(Debug, Default)]
pub(crate) struct Tunnels {
    tracker: TaskTracker,
    close: CancellationToken,
}

impl Tunnels {
    /// Splices the client's connection to the instance's once both are
    /// upgraded, counting it in `open` and holding `in_flight`.
    pub(crate) fn splice(
        &self,
        client: OnUpgrade,
        upstream: OnUpgrade,
        in_flight: InFlight,
        open: Gauge,
    ) {
        let close = self.close.clone();
        self.tracker.spawn(async move {
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(both) => both,
                Err(error) => {
                    tracing::debug!(%error, "upgrade not completed");
                    return;
                }
            };
            let instance = in_flight.upstream().instance_id.clone();
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            open.inc();
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                    Ok((up, down)) => tracing::debug!(%instance, up, down, "tunnel closed"),
                    Err(error) => tracing::debug!(%instance, %error, "tunnel broken"),
                },
                () = close.cancelled() => tracing::debug!(%instance, "tunnel closed by the gateway's stop"),
            }
            open.dec();
            drop(in_flight);
        });
    }

    /// The tunnels open or being opened.
    pub(crate) fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Stops taking tunnels and waits for the open ones to end.
    pub(crate) async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Closes every tunnel now.
    pub(crate) fn close_all(&self) {
        self.close.cancel();
    }
}
