//! The connection to the broker and the state the transport keeps across
//! connections ([`TransportState`]): a [`Session`] is one connection with its
//! publisher channels and its reply consumer; [`supervise`] watches it and,
//! when it is lost, opens a new one with backoff and serves every instance
//! again on it.
//!
//! In the flow: [`AmqpTransport::connect`](super::AmqpTransport) opens the
//! first session and hands it to the supervisor. The current session is in
//! `TransportState::session` (a watch channel): calls and events wait there for one
//! while disconnected; a reply to publish finds none, and its request stays
//! unacked for the broker to hand out again. When the connection is lost,
//! the supervisor clears it, fails the publishes waiting for a confirm
//! (`publisher`), and, once reconnected, declares the reply queue
//! (`replies`) and every served instance's queues (`consumer`) again before
//! it publishes the new session.

use amqprs::callbacks::ConnectionCallback;
use amqprs::channel::ExchangeDeclareArguments;
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::Close;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::consumer::{self, ServedEndpoint};
use super::publisher::Publisher;
use super::replies::{self, PendingCalls};
use super::{lock, wire, AmqpSettings};
use crate::config::redact_uri;

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the transport could not connect.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {uri}: {message}")]
pub struct ConnectError {
    /// The broker's address, password hidden.
    pub uri: String,
    /// What went wrong.
    pub message: String,
}

/// The transport's shared state: what every clone of
/// [`AmqpTransport`](super::AmqpTransport) and every task of the transport
/// reach. Tasks hold it weakly: the transport ends with its last clone.
pub(super) struct TransportState {
    pub(super) settings: AmqpSettings,
    /// Labels the connection (`shimeji NAME (pid N)`).
    name: String,
    /// The current session; `None` while disconnected.
    pub(super) session: watch::Sender<Option<Arc<Session>>>,
    /// The instances served, served again after a reconnect.
    pub(super) served: Mutex<Vec<Arc<ServedEndpoint>>>,
    /// The calls waiting for their reply.
    pub(super) pending: PendingCalls,
    /// The routing key of this transport's replies, a fresh UUID.
    pub(super) reply_key: String,
    /// The queue the replies come to, bound with `reply_key`.
    pub(super) reply_queue: String,
    /// Cancelled by `close` or when the transport is dropped: the
    /// supervisor stops.
    pub(super) shutdown: CancellationToken,
    /// How many times the connection was re-established.
    pub(super) reconnects: AtomicU64,
    /// The runtime the transport was connected on.
    runtime: tokio::runtime::Handle,
}

impl TransportState {
    /// The state of a transport named `name`, not connected yet.
    pub(super) fn new(settings: AmqpSettings, name: &str) -> Self {
        let reply_key = uuid::Uuid::new_v4().to_string();
        let owner = name.split([' ', ',']).next().unwrap_or("shimeji");
        TransportState {
            reply_queue: wire::reply_queue(owner, &reply_key),
            reply_key,
            name: name.to_string(),
            session: watch::channel(None).0,
            served: Mutex::new(Vec::new()),
            pending: Default::default(),
            shutdown: CancellationToken::new(),
            reconnects: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::current(),
            settings,
        }
    }

    /// The current session, once there is one.
    pub(super) async fn session(&self) -> Arc<Session> {
        let mut rx = self.session.subscribe();
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `inner`: not reached.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for TransportState {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // amqprs closes a dropped channel from a task it spawns: when the
        // last handle goes away outside any runtime (a client dropped after
        // `block_on` returned), drop the channels inside ours.
        let _entered = tokio::runtime::Handle::try_current()
            .is_err()
            .then(|| self.runtime.enter());
        self.session.send_replace(None);
        lock(&self.served).clear();
    }
}

/// One connection to the broker and what runs on it.
pub(super) struct Session {
    pub(super) connection: Connection,
    /// Its publishing channels.
    pub(super) publisher: Publisher,
    /// Event exchanges declared on this connection. Declaring waits on this
    /// lock: amqprs cannot have two declarations in flight on one channel.
    exchanges: tokio::sync::Mutex<HashSet<String>>,
    /// Cancelled when the connection is lost.
    lost: CancellationToken,
}

impl Session {
    /// Opens a connection, its publisher channels and its reply consumer.
    pub(super) async fn open(inner: &Arc<TransportState>) -> Result<Arc<Session>, ConnectError> {
        let settings = &inner.settings;
        let fail = |message: String| ConnectError {
            uri: redact_uri(&settings.uri),
            message,
        };
        if settings.uri.starts_with("amqps://") {
            // rustls needs a process-wide crypto provider; install ours once.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut args = OpenConnectionArguments::try_from(settings.uri.as_str())
            .map_err(|e| fail(e.to_string()))?;
        if let (true, Some(ssl)) = (settings.uri.starts_with("amqps://"), &settings.ssl) {
            let adaptor = ssl.adaptor(args.get_host()).map_err(fail)?;
            args.tls_adaptor(adaptor);
        }
        args.heartbeat(settings.heartbeat).connection_name(&format!(
            "shimeji {} (pid {})",
            inner.name,
            std::process::id()
        ));
        // A broker that drops packets must not hang the start.
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, Connection::open(&args))
            .await
            .map_err(|_| fail(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        let lost = CancellationToken::new();
        connection
            .register_callback(ConnectionWatch { lost: lost.clone() })
            .await
            .map_err(|e| fail(e.to_string()))?;
        let publisher = Publisher::open(&connection, inner)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let session = Arc::new(Session {
            connection,
            publisher,
            exchanges: tokio::sync::Mutex::new(HashSet::new()),
            lost,
        });
        replies::start_reply_consumer(inner, &session)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(session)
    }

    /// Declares the events exchange `exchange`, once per connection.
    pub(super) async fn declare_exchange(
        &self,
        exchange: &str,
    ) -> Result<(), amqprs::error::Error> {
        let mut declared = self.exchanges.lock().await;
        if !declared.contains(exchange) {
            self.publisher
                .control()
                .exchange_declare(
                    ExchangeDeclareArguments::new(exchange, "topic")
                        .durable(true)
                        .finish(),
                )
                .await?;
            declared.insert(exchange.to_string());
        }
        Ok(())
    }

    /// Closes the connection.
    pub(super) async fn close(&self) {
        self.lost.cancel();
        let _ = self.connection.clone().close().await;
    }
}

/// Watches the connection; reconnects with backoff when it is lost (100 ms,
/// doubling up to 5 s), until the transport closes or is dropped.
pub(super) async fn supervise(inner: Weak<TransportState>, mut session: Arc<Session>) {
    loop {
        let Some(shutdown) = inner.upgrade().map(|i| i.shutdown.clone()) else {
            return;
        };
        let connection = session.connection.clone();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = session.lost.cancelled() => {}
            _ = connection.listen_network_io_failure() => {}
        }
        session.lost.cancel();
        session.publisher.fail_all();
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.shutdown.is_cancelled() {
            return;
        }
        strong.session.send_replace(None);
        tracing::warn!(uri = %redact_uri(&strong.settings.uri), "connection to the broker lost: reconnecting");
        drop(strong);
        let mut backoff = Duration::from_millis(100);
        session = loop {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            if strong.shutdown.is_cancelled() {
                return;
            }
            match Session::open(&strong).await {
                Ok(s) => {
                    strong.reconnects.fetch_add(1, Ordering::Relaxed);
                    let served: Vec<_> = lock(&strong.served).clone();
                    let mut ok = true;
                    for s2 in served.iter().filter(|s| !s.stopped.is_cancelled()) {
                        if let Err(error) = consumer::consume(&strong, &s, s2).await {
                            tracing::warn!(service = s2.endpoint.service, %error, "cannot serve after reconnect");
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        strong.session.send_replace(Some(s.clone()));
                        crate::metrics::reconnected("amqp");
                        tracing::info!("reconnected to the broker");
                        break s;
                    }
                    s.close().await;
                }
                Err(error) => tracing::warn!(%error, retry_in = ?backoff, "reconnect failed"),
            }
            drop(strong);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
    }
}

/// Cancels the session's `lost` token when the broker closes the
/// connection, and logs flow control.
struct ConnectionWatch {
    lost: CancellationToken,
}

#[async_trait::async_trait]
impl ConnectionCallback for ConnectionWatch {
    async fn close(
        &mut self,
        _connection: &Connection,
        close: Close,
    ) -> Result<(), amqprs::error::Error> {
        tracing::warn!(reason = %close, "the broker closed the connection");
        self.lost.cancel();
        Ok(())
    }
    async fn blocked(&mut self, _connection: &Connection, reason: String) {
        tracing::warn!(reason, "the broker blocked the connection");
    }
    async fn unblocked(&mut self, _connection: &Connection) {
        tracing::info!("the broker unblocked the connection");
    }
    async fn secret_updated(&mut self, _connection: &Connection) {}
}
