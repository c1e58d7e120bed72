//! One worker's HTTP/1.1 connections to the instances, kept alive between
//! requests: hyper's client connection (`hyper::client::conn::http1`) under
//! a pool of its own, so that a request costs a look-up by upstream number
//! under the worker's own (uncontended) lock rather than a shared pool
//! keyed by URI.
//!
//! - A connection goes back to its upstream's idle list as soon as its
//!   response head arrived; it is only taken again once hyper says it is
//!   ready, which is when that response's body has been read to its end. A
//!   response the client abandoned closes its connection, which the next
//!   look-up drops.
//! - Taken newest first; idle ones older than `idle_timeout` are closed,
//!   and an upstream keeps at most `max_idle` of them.
//! - A request hyper hands back unsent from a reused connection (it found
//!   the connection closed) is sent once more on a new connection: that is
//!   still the same try (the instance got nothing).

use futures::task::noop_waker_ref;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

use crate::body::OutBody;
use crate::upstream::Upstream;

/// The body the gateway sends upstream.
type Sent = OutBody<Incoming>;

/// Why a try got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made: nothing was sent.
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The connection could not be set up within the connect timeout.
    #[error("connecting timed out")]
    ConnectTimeout,
    /// hyper failed the request; `is_canceled()` says it was not sent.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// An idle (or about to be) connection.
struct Idle {
    sender: SendRequest<Sent>,
    since: Instant,
}

/// Hashes an upstream number as it is: the numbers are unique already.
#[derive(Default)]
struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Lists = HashMap<u64, Vec<Idle>, BuildHasherDefault<NumberHasher>>;

/// One worker's connections, by upstream.
pub(crate) struct ConnectionPool {
    idle: Mutex<Lists>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
}

/// Every how many returns the lists of gone upstreams are swept.
const SWEEP_EVERY: u32 = 1024;

impl ConnectionPool {
    /// An empty pool.
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        ConnectionPool {
            idle: Mutex::new(Lists::default()),
            connect_timeout,
            idle_timeout,
            max_idle: max_idle.max(1),
        }
    }

    /// Sends `request` (origin-form URI, `Host` set) to `upstream` on an
    /// idle connection, or a new one.
    pub(crate) async fn send(
        self: &Arc<Self>,
        upstream: &Upstream,
        mut request: http::Request<Sent>,
    ) -> Result<http::Response<Incoming>, SendError> {
        if let Some(mut sender) = self.checkout(upstream.number) {
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.keep(upstream.number, sender, &response);
                    return Ok(response);
                }
                Err(mut failed) => match failed.take_message() {
                    // Found closed before a byte was written: a new
                    // connection gets it.
                    Some(unsent) => request = unsent,
                    None => return Err(failed.into_error().into()),
                },
            }
        }
        // Boxed: the rare path keeps the common one's future small.
        Box::pin(self.send_on_new(upstream, request)).await
    }

    /// Sends `request` on a new connection to `upstream`.
    async fn send_on_new(
        &self,
        upstream: &Upstream,
        request: http::Request<Sent>,
    ) -> Result<http::Response<Incoming>, SendError> {
        let mut sender = self.connect(upstream).await?;
        let response = sender.send_request(request).await?;
        self.keep(upstream.number, sender, &response);
        Ok(response)
    }

    /// A connection of `upstream` ready for a request.
    fn checkout(&self, upstream: u64) -> Option<SendRequest<Sent>> {
        let mut lists = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = lists.get_mut(&upstream)?;
        let now = Instant::now();
        let mut cx = Context::from_waker(noop_waker_ref());
        // Newest last: the busy ones (a body still streaming) stay.
        let mut index = list.len();
        while index > 0 {
            index -= 1;
            let idle = &mut list[index];
            if idle.sender.is_closed() || now.duration_since(idle.since) > self.idle_timeout {
                list.swap_remove(index);
                continue;
            }
            match idle.sender.poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => return Some(list.swap_remove(index).sender),
                Poll::Ready(Err(_)) => {
                    list.swap_remove(index);
                }
                Poll::Pending => {}
            }
        }
        None
    }

    /// Puts `sender` back after its response head arrived (not after a
    /// protocol switch: that connection is the tunnel's now).
    fn keep(&self, upstream: u64, sender: SendRequest<Sent>, response: &http::Response<Incoming>) {
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS || sender.is_closed() {
            return;
        }
        let mut lists = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = lists.entry(upstream).or_default();
        if list.len() >= self.max_idle {
            list.remove(0);
        }
        list.push(Idle {
            sender,
            since: Instant::now(),
        });
        sweep(&mut lists, self.idle_timeout);
    }

    /// A new connection to `upstream`, its driver spawned on this worker.
    async fn connect(&self, upstream: &Upstream) -> Result<SendRequest<Sent>, SendError> {
        let connecting = async {
            let stream = TcpStream::connect(upstream.authority.as_str())
                .await
                .map_err(SendError::Connect)?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(SendError::Http)?;
            tokio::spawn(async move {
                if let Err(error) = connection.with_upgrades().await {
                    tracing::debug!(error = %error, "upstream connection ended");
                }
            });
            Ok(sender)
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| SendError::ConnectTimeout)?
    }
}

/// Now and then, drops the closed and expired connections of every
/// upstream, and the lists left empty (upstreams gone from the registry).
fn sweep(lists: &mut Lists, idle_timeout: Duration) {
    thread_local! {
        static RETURNS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    let due = RETURNS.with(|n| {
        let next = n.get().wrapping_add(1);
        n.set(next);
        next % SWEEP_EVERY == 0
    });
    if !due {
        return;
    }
    let now = Instant::now();
    lists.retain(|_, list| {
        list.retain(|idle| {
            !idle.sender.is_closed() && now.duration_since(idle.since) <= idle_timeout
        });
        !list.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn upstream_numbers_hash_apart() {
        let build = BuildHasherDefault::<NumberHasher>::default();
        let a = build.hash_one(1u64);
        let b = build.hash_one(2u64);
        assert_ne!(a, b);
        assert_ne!(a & 0xff, 0, "low bits are used by the table");
    }
}
