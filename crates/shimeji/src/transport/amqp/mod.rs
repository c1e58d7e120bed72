//! The RabbitMQ transport, wire-compatible with Python Nameko (feature `amqp`).
//!
//! Set `AMQP_URI` (config or environment) and [`ServiceRunner`](crate::ServiceRunner)
//! runs the same services over RabbitMQ; nothing else changes. A Nameko
//! service can call a shimeji service and the other way round, events
//! included: queues, exchanges, routing keys, headers and bodies are Nameko's
//! (see `wire`).
//!
//! Delivery: a request is acked only after its reply has been published and
//! confirmed, so a service that dies mid-call has the request redelivered to
//! another instance. The broker prefetch equals `max_workers`; a finished
//! request never holds a prefetch slot behind a slow one for longer than
//! 20 ms (acks are batched, see `acks`). A reply the broker does not confirm
//! sends its request back to the queue, at most [`MAX_REPLY_ATTEMPTS`] times
//! per instance; then the request is dropped, logged as an error and
//! counted (`shimeji_transport_messages_dropped_total`). Requests are
//! published `mandatory`: a request for a service nobody serves comes back at
//! once as `UnknownService`. Replies and events wait for publisher confirms.
//!
//! Hostile input: a message whose headers cannot be decoded (malformed, or
//! tables nested deeper than 128 levels) is a `MalformedRequest` for its
//! caller, or rejected without requeue when it has no `reply_to` (events
//! too). A body larger than `max_message_size` is refused on the size its
//! content header announces; its bytes are dropped as they arrive, never
//! gathered, so the bodies an instance holds stay within
//! `max_message_size` × `max_workers`. A reply over the caller's
//! `max_message_size` fails that call with `CallError::Decode`.
//!
//! Connection loss: the transport reconnects with backoff, declares its
//! queues again and goes on. Calls in flight complete when their reply
//! arrives after the reconnect, or fail at their timeout.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use shimeji::transport::amqp::{AmqpSettings, AmqpTransport};
//!
//! let settings = AmqpSettings::new("amqp://guest:guest@127.0.0.1:5672/");
//! let transport = AmqpTransport::connect(settings, "my-client").await?;
//! # Ok(()) }
//! ```

use amqprs::callbacks::ConnectionCallback;
use amqprs::channel::ExchangeDeclareArguments;
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::Close;
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Binding, DispatchError, Event, Request, Serving, Transport, TransportError};
use crate::config::redact_uri;
use crate::error::CallError;
use crate::payload::Payload;

mod acks;
mod consumer;
mod publisher;
mod replies;
mod settings;
pub mod wire;

pub use replies::MAX_REPLY_ATTEMPTS;
pub use settings::{AmqpSettings, AmqpSsl, DEFAULT_MAX_MESSAGE_SIZE};

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

/// The RabbitMQ transport. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct AmqpTransport {
    inner: Arc<Inner>,
}

use consumer::Served;

struct Inner {
    settings: AmqpSettings,
    name: String,
    session: watch::Sender<Option<Arc<Session>>>,
    served: Mutex<Vec<Arc<Served>>>,
    pending: replies::PendingCalls,
    reply_key: String,
    reply_queue: String,
    shutdown: CancellationToken,
    reconnects: AtomicU64,
    /// The runtime the transport was connected on.
    runtime: tokio::runtime::Handle,
}

struct Session {
    connection: Connection,
    publisher: publisher::Publisher,
    /// Event exchanges declared on this connection. Declaring waits on this
    /// lock: amqprs cannot have two declarations in flight on one channel.
    exchanges: tokio::sync::Mutex<HashSet<String>>,
    /// Cancelled when the connection is lost.
    lost: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn transport_error(e: impl std::fmt::Display) -> CallError {
    CallError::Transport(e.to_string())
}

impl AmqpTransport {
    /// Connects to the broker. `name` labels the connection
    /// (`rabbitmqctl list_connections client_properties`) and the reply queue.
    /// After a connection loss the transport reconnects by itself.
    pub async fn connect(settings: AmqpSettings, name: &str) -> Result<Self, ConnectError> {
        let reply_key = uuid::Uuid::new_v4().to_string();
        let owner = name.split([' ', ',']).next().unwrap_or("shimeji");
        let inner = Arc::new(Inner {
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
        });
        let session = open_session(&inner).await?;
        inner.session.send_replace(Some(session.clone()));
        tokio::spawn(supervise(Arc::downgrade(&inner), session));
        Ok(AmqpTransport { inner })
    }

    /// How many times the connection was re-established.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.inner.session.borrow().is_some()
    }

    /// Closes the connection; the transport stops reconnecting.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        let session = self.inner.session.send_replace(None);
        if let Some(session) = session {
            session.lost.cancel();
            let _ = session.connection.clone().close().await;
        }
    }

    async fn session(&self) -> Arc<Session> {
        let mut rx = self.inner.session.subscribe();
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

impl Drop for Inner {
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

/// Opens a connection, its publisher channel and its reply consumer.
async fn open_session(inner: &Arc<Inner>) -> Result<Arc<Session>, ConnectError> {
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
    let publisher = publisher::Publisher::open(&connection, inner)
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

/// Watches the connection; reconnects with backoff when it is lost.
async fn supervise(inner: Weak<Inner>, mut session: Arc<Session>) {
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
            match open_session(&strong).await {
                Ok(s) => {
                    strong.reconnects.fetch_add(1, Ordering::Relaxed);
                    let served: Vec<_> = lock(&strong.served).clone();
                    let mut ok = true;
                    for s2 in served.iter().filter(|s| !s.stopped.is_cancelled()) {
                        if let Err(error) = consumer::consume(&strong, &s, s2).await {
                            tracing::warn!(service = s2.binding.service, %error, "cannot serve after reconnect");
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
                    s.lost.cancel();
                    let _ = s.connection.clone().close().await;
                }
                Err(error) => tracing::warn!(%error, retry_in = ?backoff, "reconnect failed"),
            }
            drop(strong);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
    }
}

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

impl Transport for AmqpTransport {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn is_connected(&self) -> bool {
        AmqpTransport::is_connected(self)
    }

    fn call(&self, request: Request) -> BoxFuture<'_, Result<Payload, CallError>> {
        Box::pin(async move {
            let body = request
                .payload
                .into_request_json()
                .and_then(|v| serde_json::to_vec(&v))
                .map_err(|e| CallError::Encode(e.to_string()))?;
            let id = crate::context::new_uuid().to_string();
            let (_guard, reply) = self.inner.pending.register(&id);
            let headers = wire::context_headers(request.context.as_ref());
            let props = wire::properties_with_mode(
                wire::delivery_mode(self.inner.settings.persistent_requests),
                Some(headers),
                Some(&id),
                Some(&self.inner.reply_key),
            );
            let routing_key = format!("{}.{}", request.service, request.method);
            let session = self.session().await;
            session
                .publisher
                .publish_request(&self.inner.settings.rpc_exchange, &routing_key, props, body)
                .await
                .map_err(transport_error)?;
            let result = reply
                .await
                .unwrap_or_else(|_| Err(CallError::Transport("reply channel closed".into())));
            result.map(Payload::Json)
        })
    }

    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&event.payload)?;
            let exchange = wire::events_exchange(&event.source);
            let session = self.session().await;
            {
                let mut declared = session.exchanges.lock().await;
                if !declared.contains(&exchange) {
                    session
                        .publisher
                        .control()
                        .exchange_declare(
                            ExchangeDeclareArguments::new(&exchange, "topic")
                                .durable(true)
                                .finish(),
                        )
                        .await
                        .map_err(|e| DispatchError::Transport(e.to_string()))?;
                    declared.insert(exchange.clone());
                }
            }
            let headers = wire::context_headers(event.context.as_ref());
            let props = wire::properties(Some(headers), None, None);
            let confirm = session
                .publisher
                .lane()
                .publish(&exchange, &event.event_type, props, body)
                .await
                .map_err(|e| DispatchError::Transport(e.to_string()))?;
            match confirm.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(DispatchError::Transport(
                    "the broker refused the event (nack)".into(),
                )),
                Err(_) => Err(DispatchError::Transport(
                    "the connection was lost before the broker confirmed the event".into(),
                )),
            }
        })
    }

    fn serve(&self, binding: Binding) -> BoxFuture<'_, Result<Serving, TransportError>> {
        Box::pin(async move {
            let served = Arc::new(Served::new(binding));
            let session = self.session().await;
            consumer::consume(&self.inner, &session, &served)
                .await
                .map_err(|e| consumer::serve_error(served.binding.service, e))?;
            lock(&self.inner.served).push(served.clone());
            let inner = self.inner.clone();
            let settling = served.clone();
            Ok(
                Serving::new(move || Box::pin(async move { served.stop(&inner).await }))
                    .with_settle(move || Box::pin(async move { settling.all_settled().await })),
            )
        })
    }
}
