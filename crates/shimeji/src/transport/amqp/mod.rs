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
use amqprs::channel::{
    BasicCancelArguments, BasicConsumeArguments, BasicQosArguments, Channel, ConsumerMessage,
    ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{BasicProperties, Close};
use futures::future::BoxFuture;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    event_queue_name, Binding, DispatchError, Event, Request, Serving, Transport, TransportError,
};
use crate::config::redact_uri;
use crate::error::{CallError, RemoteError};
use crate::payload::Payload;
use crate::service::HandlerType;

mod acks;
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

/// A service instance served on the broker, re-served after a reconnect.
struct Served {
    binding: Binding,
    /// The channel its consumers run on, on the current connection.
    channel: Mutex<Option<(Channel, Vec<String>)>>,
    /// The acks of that channel.
    acker: Mutex<Option<Arc<acks::Acker>>>,
    stopped: CancellationToken,
    /// Deliveries taken and not yet acked, requeued or rejected.
    unsettled: std::sync::atomic::AtomicUsize,
    settled: tokio::sync::Notify,
    /// Requests whose reply the broker did not confirm.
    unconfirmed: replies::UnconfirmedReplies,
}

/// Counts a delivery as unsettled while it lives.
struct Unsettled<'a>(&'a Served);

impl<'a> Unsettled<'a> {
    fn new(served: &'a Served) -> Self {
        served.unsettled.fetch_add(1, Ordering::AcqRel);
        Unsettled(served)
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if self.0.unsettled.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

impl Served {
    /// Resolves once no delivery is unsettled.
    async fn all_settled(&self) {
        self.until_idle().await;
        let acker = lock(&self.acker).clone();
        if let Some(acker) = acker {
            acker.flush().await;
        }
    }

    /// Resolves once no delivery is being worked on.
    async fn until_idle(&self) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.unsettled.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
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
                        if let Err(error) = consume(&strong, &s, s2).await {
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
            let served = Arc::new(Served {
                binding,
                channel: Mutex::new(None),
                acker: Mutex::new(None),
                stopped: CancellationToken::new(),
                unsettled: Default::default(),
                settled: Default::default(),
                unconfirmed: Default::default(),
            });
            let session = self.session().await;
            consume(&self.inner, &session, &served).await.map_err(|e| {
                let message = e.to_string();
                if message.contains("PRECONDITION_FAILED") {
                    TransportError::Conflict {
                        queue: served.binding.service.to_string(),
                        message,
                    }
                } else {
                    TransportError::Other(message)
                }
            })?;
            lock(&self.inner.served).push(served.clone());
            let inner = self.inner.clone();
            let settling = served.clone();
            Ok(Serving::new(move || {
                Box::pin(async move {
                    served.stopped.cancel();
                    lock(&inner.served).retain(|s| !Arc::ptr_eq(s, &served));
                    let current = lock(&served.channel).clone();
                    if let Some((channel, tags)) = current {
                        for tag in tags {
                            let _ = channel.basic_cancel(BasicCancelArguments::new(&tag)).await;
                        }
                    }
                })
            })
            .with_settle(move || Box::pin(async move { settling.all_settled().await })))
        })
    }
}

/// Declares a service instance's queues on the current connection and
/// consumes them.
async fn consume(
    inner: &Arc<Inner>,
    session: &Session,
    served: &Arc<Served>,
) -> Result<(), amqprs::error::Error> {
    let binding = &served.binding;
    let channel = session.connection.open_channel(None).await?;
    let rpc_exchange = &inner.settings.rpc_exchange;
    let prefetch = u16::try_from(binding.max_workers).unwrap_or(u16::MAX);
    let mut queues: Vec<(String, Option<&'static str>)> = Vec::new();
    if binding.has_rpc {
        let queue = wire::rpc_queue(binding.service);
        channel
            .exchange_declare(
                ExchangeDeclareArguments::new(rpc_exchange, "topic")
                    .durable(true)
                    .finish(),
            )
            .await?;
        channel
            .queue_declare(QueueDeclareArguments::new(&queue).durable(true).finish())
            .await?;
        channel
            .queue_bind(QueueBindArguments::new(
                &queue,
                rpc_exchange,
                &wire::rpc_binding_key(binding.service),
            ))
            .await?;
        queues.push((queue, None));
    }
    for spec in binding.event_handlers {
        let exchange = wire::events_exchange(spec.source);
        let queue = event_queue_name(binding.service, spec, &binding.instance_id);
        let broadcast = spec.handler_type == HandlerType::Broadcast;
        channel
            .exchange_declare(
                ExchangeDeclareArguments::new(&exchange, "topic")
                    .durable(true)
                    .finish(),
            )
            .await?;
        channel
            .queue_declare(
                QueueDeclareArguments::new(&queue)
                    .durable(true)
                    .exclusive(broadcast)
                    .auto_delete(broadcast || !spec.reliable_delivery)
                    .finish(),
            )
            .await?;
        channel
            .queue_bind(QueueBindArguments::new(&queue, &exchange, spec.event_type))
            .await?;
        queues.push((queue, Some(spec.method)));
    }
    channel
        .basic_qos(BasicQosArguments::new(0, prefetch, false))
        .await?;
    // A body over the limit is refused on its content header and never
    // gathered: memory per instance stays within max_message_size × prefetch.
    channel.set_max_content_size(inner.settings.max_message_size);
    let acker = acks::Acker::new(channel.clone());
    let mut tags = Vec::new();
    for (queue, event_method) in queues {
        let (tag, rx) = channel
            .basic_consume_rx(BasicConsumeArguments::new(&queue, "").finish())
            .await?;
        tags.push(tag);
        let worker = Worker {
            inner: Arc::downgrade(inner),
            acker: acker.clone(),
            served: served.clone(),
            event_method,
        };
        tokio::spawn(worker.run(rx));
    }
    *lock(&served.channel) = Some((channel, tags));
    *lock(&served.acker) = Some(acker);
    Ok(())
}

/// A delivery's body: its bytes (empty when it was over the size limit and
/// dropped on arrival) and the size its content header announced.
#[derive(Clone, Copy)]
struct Body<'a> {
    bytes: &'a [u8],
    size: u64,
}

/// Takes deliveries off one queue and hands each to the service.
struct Worker {
    inner: Weak<Inner>,
    acker: Arc<acks::Acker>,
    served: Arc<Served>,
    /// `Some(method)` for an event queue, `None` for the RPC queue.
    event_method: Option<&'static str>,
}

impl Worker {
    async fn run(self, mut rx: tokio::sync::mpsc::UnboundedReceiver<ConsumerMessage>) {
        let this = Arc::new(self);
        while let Some(message) = rx.recv().await {
            let this = this.clone();
            tokio::spawn(async move { this.handle(message).await });
        }
    }

    async fn handle(&self, message: ConsumerMessage) {
        let ConsumerMessage {
            deliver,
            basic_properties,
            content,
            body_size,
            ..
        } = message;
        let Some(deliver) = deliver else {
            return;
        };
        let _unsettled = Unsettled::new(&self.served);
        let tag = deliver.delivery_tag();
        let Some(props) = basic_properties else {
            // Every tag must be settled, or the acks after it stop.
            crate::metrics::dropped("amqp", "malformed");
            return self.acker.reject(tag).await;
        };
        // `None` when the body was over max_message_size and so dropped.
        let body = content.unwrap_or_default();
        let body = Body {
            bytes: &body,
            size: body_size,
        };
        match self.event_method {
            Some(method) => self.handle_event(method, tag, &props, body).await,
            None => {
                self.handle_rpc(deliver.routing_key(), tag, &props, body)
                    .await
            }
        }
    }

    async fn handle_rpc(
        &self,
        routing_key: &str,
        tag: u64,
        props: &BasicProperties,
        body: Body<'_>,
    ) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let service = self.served.binding.service;
        let max = inner.settings.max_message_size;
        let (reply_to, correlation_id, result) = match wire::parse_request(
            routing_key,
            props,
            body.bytes,
            body.size,
            max,
        ) {
            Ok(incoming) => {
                let result = self
                    .served
                    .binding
                    .handler
                    .handle_rpc(
                        &incoming.method,
                        Payload::Json(incoming.body),
                        Some(incoming.context),
                    )
                    .await;
                if let Err(e) = &result {
                    if e.exc_type == "ServiceStopping" {
                        // Another instance will take it.
                        return self.acker.requeue(tag).await;
                    }
                }
                let result = result.and_then(|p| {
                    p.into_json()
                        .map_err(|e| RemoteError::unserializable(e.to_string()))
                });
                (incoming.reply_to, incoming.correlation_id, result)
            }
            Err(wire::Refusal {
                reply: Some((to, id)),
                error,
            }) => {
                tracing::warn!(service, routing_key, error = %error.value, "malformed request: answered with MalformedRequest");
                (to, id, Err(*error))
            }
            Err(wire::Refusal { reply: None, error }) => {
                tracing::warn!(service, routing_key, error = %error.value, "malformed request with nowhere to answer: rejected");
                crate::metrics::dropped("amqp", "malformed");
                return self.acker.reject(tag).await;
            }
        };
        // The request's name in `Served::unconfirmed`, built only when needed.
        let key = || {
            format!(
                "{reply_to}/{}",
                correlation_id.as_deref().unwrap_or_default()
            )
        };
        let props = wire::properties_with_mode(
            wire::delivery_mode(inner.settings.persistent_replies),
            None,
            correlation_id.as_deref(),
            None,
        );
        let session = inner.session.borrow().clone();
        let Some(session) = session else {
            // Disconnected: leave the request unacked; the broker hands it
            // out again.
            return;
        };
        let published = session
            .publisher
            .lane()
            .publish(
                &inner.settings.rpc_exchange,
                &reply_to,
                props,
                wire::reply_body(result),
            )
            .await;
        let failure = match published {
            Ok(confirm) => match confirm.await {
                Ok(true) => {
                    self.served.unconfirmed.confirmed(key);
                    return self.acker.ack(tag);
                }
                Ok(false) => "the broker refused the reply (nack)".to_string(),
                Err(_) => {
                    "the connection was lost before the broker confirmed the reply".to_string()
                }
            },
            Err(error) => format!("cannot publish the reply: {error}"),
        };
        if self.served.unconfirmed.retry(key()) {
            // The request goes back for another try.
            tracing::warn!(
                service,
                routing_key,
                reason = failure,
                "reply not confirmed: the request will be served again"
            );
            self.acker.requeue(tag).await;
        } else {
            tracing::error!(
                service,
                routing_key,
                reason = failure,
                attempts = MAX_REPLY_ATTEMPTS,
                "reply never confirmed: the request is dropped and its caller will time out"
            );
            crate::metrics::dropped("amqp", "reply_unconfirmed");
            self.acker.reject(tag).await;
        }
    }

    async fn handle_event(
        &self,
        method: &'static str,
        tag: u64,
        props: &BasicProperties,
        body: Body<'_>,
    ) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let service = self.served.binding.service;
        if body.size > inner.settings.max_message_size as u64 {
            tracing::warn!(
                service,
                method,
                size = body.size,
                "event over the size limit: rejected"
            );
            crate::metrics::dropped("amqp", "malformed");
            return self.acker.reject(tag).await;
        }
        if props.headers_malformed() {
            tracing::warn!(
                service,
                method,
                "event headers are not a valid AMQP field table (or nest too deep): rejected"
            );
            crate::metrics::dropped("amqp", "malformed");
            return self.acker.reject(tag).await;
        }
        let payload: Value = match serde_json::from_slice(body.bytes) {
            Ok(v) => v,
            Err(error) => {
                tracing::warn!(service, method, %error, "event body is not JSON: rejected");
                crate::metrics::dropped("amqp", "malformed");
                return self.acker.reject(tag).await;
            }
        };
        let context = wire::context_from_headers(props.headers());
        match self
            .served
            .binding
            .handler
            .handle_event(method, payload, Some(context))
            .await
        {
            Err(e) if e.exc_type == "ServiceStopping" => self.acker.requeue(tag).await,
            Err(error) => {
                tracing::warn!(service, method, %error, "event handler failed");
                self.acker.ack(tag)
            }
            Ok(()) => self.acker.ack(tag),
        }
    }
}
