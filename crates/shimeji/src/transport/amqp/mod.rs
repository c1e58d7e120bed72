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
//!
//! # How it is built
//!
//! - `settings`: [`AmqpSettings`] and the TLS options; no I/O.
//! - `session`: the connection, the state kept across connections, and the
//!   supervisor that reconnects and serves every instance again.
//! - `publisher`: requests on a plain channel (`mandatory`, no confirm);
//!   replies and events on confirm-mode lanes.
//! - `replies`: the reply queue and its consumer, the calls waiting for a
//!   reply, and, serving side, the count of unconfirmed replies.
//! - `consumer`: a served instance's queues, their consumers, and the
//!   handling of each delivery until it is acked, requeued or rejected.
//! - `acks`: the batched acks of one consumer channel.
//! - `wire`: Nameko's names, headers and bodies; pure functions.
//!
//! A call and its reply:
//!
//! 1. `call` (below) registers the call under a fresh correlation id
//!    (`replies`) and publishes the request to the RPC exchange, routing key
//!    `service.method`, with its reply key in `reply_to` (`publisher`). A
//!    request no queue takes comes back at once: `publisher` fails the call
//!    with `UnknownService`.
//! 2. In the serving process, the instance's consumer takes the request off
//!    `rpc-SERVICE`, decodes it (`wire`) and runs the handler (`consumer`).
//! 3. It publishes the reply on a confirm lane to the caller's reply key
//!    (`publisher`) and acks the request once the broker confirmed it
//!    (`acks`); an unconfirmed reply sends the request back to its queue.
//! 4. The caller's reply consumer takes the reply off its reply queue and
//!    hands it to the waiting call by correlation id (`replies`).
//!
//! An event: `publish` (below) declares its source's exchange once per
//! connection (`session`), publishes it on a confirm lane and waits for the
//! confirm; each handler's queue gets a copy, handled and acked in
//! `consumer`.

use futures::future::BoxFuture;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Endpoint, Event, Request, Serving, Transport, TransportError};
use crate::error::CallError;
use crate::payload::Payload;

mod acks;
mod consumer;
mod publisher;
mod replies;
mod session;
mod settings;
pub mod wire;

pub use replies::MAX_REPLY_ATTEMPTS;
pub use session::ConnectError;
pub use settings::{AmqpSettings, AmqpSsl, DEFAULT_MAX_MESSAGE_SIZE};

use crate::sync::lock;
use consumer::ServedEndpoint;
use session::{Session, TransportState};

/// The RabbitMQ transport. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct AmqpTransport {
    inner: Arc<TransportState>,
}

impl AmqpTransport {
    /// Connects to the broker. `name` labels the connection
    /// (`rabbitmqctl list_connections client_properties`) and the reply queue.
    /// After a connection loss the transport reconnects by itself.
    pub async fn connect(settings: AmqpSettings, name: &str) -> Result<Self, ConnectError> {
        let inner = Arc::new(TransportState::new(settings, name));
        let first = Session::open(&inner).await?;
        inner.session.send_replace(Some(first.clone()));
        tokio::spawn(session::supervise(Arc::downgrade(&inner), first));
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
            session.close().await;
        }
    }
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
            let session = self.inner.session().await;
            session
                .publisher
                .publish_request(&self.inner.settings.rpc_exchange, &routing_key, props, body)
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?;
            let result = reply
                .await
                .unwrap_or_else(|_| Err(CallError::Transport("reply channel closed".into())));
            result.map(Payload::Json)
        })
    }

    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            // A JSON value always encodes; an error here is a bug.
            let body = serde_json::to_vec(&event.payload)
                .map_err(|e| TransportError::Other(format!("could not encode the event: {e}")))?;
            let exchange = wire::events_exchange(&event.source);
            let session = self.inner.session().await;
            session
                .declare_exchange(&exchange)
                .await
                .map_err(|e| TransportError::Other(e.to_string()))?;
            let headers = wire::context_headers(event.context.as_ref());
            let props = wire::properties(Some(headers), None, None);
            let confirm = session
                .publisher
                .lane()
                .publish(&exchange, &event.event_type, props, body)
                .await
                .map_err(|e| TransportError::Other(e.to_string()))?;
            match confirm.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(TransportError::Other(
                    "the broker refused the event (nack)".into(),
                )),
                Err(_) => Err(TransportError::Other(
                    "the connection was lost before the broker confirmed the event".into(),
                )),
            }
        })
    }

    fn serve(&self, endpoint: Endpoint) -> BoxFuture<'_, Result<Serving, TransportError>> {
        Box::pin(async move {
            let served = Arc::new(ServedEndpoint::new(endpoint));
            let session = self.inner.session().await;
            consumer::consume(&self.inner, &session, &served)
                .await
                .map_err(|e| consumer::serve_error(served.endpoint.service, e))?;
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
