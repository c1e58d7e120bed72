//! Serving a service instance: declaring its queues, consuming them, and
//! handling each delivery until it is settled (acked, requeued or rejected).
//!
//! In the flow: [`AmqpTransport::serve`](super::AmqpTransport) makes a
//! [`ServedEndpoint`] and calls [`consume`], which declares the instance's RPC queue
//! and event queues on a channel of its own (`session`'s supervisor calls it
//! again after a reconnect) and starts one [`QueueConsumer`] per queue. Each
//! delivery is handled in a task of its own:
//!
//! - a request is decoded (`wire`), run by the service's handler, and its
//!   reply published on a confirm lane (`publisher`) to the caller's reply
//!   queue; the request is acked once the broker confirmed the reply. An
//!   unconfirmed reply sends the request back to the queue, counted by
//!   `replies::UnconfirmedReplies`; a malformed request is answered with
//!   `MalformedRequest`, or rejected when it has nowhere to be answered;
//! - an event is decoded and run, then acked (a failed handler included);
//!   a malformed event is rejected.
//!
//! Acks go through the channel's `acks::Acker`, which batches them. A
//! delivery the service refuses because it is stopping is requeued for
//! another instance (the two `HandlerError::Stopping` arms below). [`ServedEndpoint`]
//! counts the deliveries not settled yet, so that stopping can wait for
//! them.

use amqprs::channel::{
    BasicCancelArguments, BasicConsumeArguments, BasicQosArguments, Channel, ConsumerMessage,
    ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
};
use amqprs::BasicProperties;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use tokio_util::sync::CancellationToken;

use super::replies::{UnconfirmedReplies, MAX_REPLY_ATTEMPTS};

use super::session::{Session, TransportState};
use super::{acks, lock, wire};
use crate::entrypoint::{EventHandlerSpec, HandlerType};
use crate::error::RemoteError;
use crate::payload::Payload;
use crate::transport::{event_queue_name, Endpoint, HandlerError, TransportError};

/// A service instance served on the broker, re-served after a reconnect.
pub(super) struct ServedEndpoint {
    /// The instance: its service, handler, queues and `max_workers`.
    pub(super) endpoint: Endpoint,
    /// The channel its consumers run on, on the current connection, and
    /// their consumer tags.
    channel: Mutex<Option<(Channel, Vec<String>)>>,
    /// The acks of that channel.
    acker: Mutex<Option<Arc<acks::Acker>>>,
    /// Cancelled when the instance stops being served.
    pub(super) stopped: CancellationToken,
    /// Deliveries taken and not yet acked, requeued or rejected.
    unsettled: std::sync::atomic::AtomicUsize,
    /// Notified when the last unsettled delivery settles.
    settled: tokio::sync::Notify,
    /// Requests whose reply the broker did not confirm.
    unconfirmed: UnconfirmedReplies,
}

impl ServedEndpoint {
    /// `endpoint`, not consumed yet.
    pub(super) fn new(endpoint: Endpoint) -> Self {
        ServedEndpoint {
            endpoint,
            channel: Mutex::new(None),
            acker: Mutex::new(None),
            stopped: CancellationToken::new(),
            unsettled: Default::default(),
            settled: Default::default(),
            unconfirmed: Default::default(),
        }
    }

    /// Stops taking deliveries: forgets the instance (no re-serving after a
    /// reconnect) and cancels its consumers. Deliveries taken go on.
    pub(super) async fn stop(self: &Arc<Self>, inner: &TransportState) {
        self.stopped.cancel();
        lock(&inner.served).retain(|s| !Arc::ptr_eq(s, self));
        let current = lock(&self.channel).clone();
        if let Some((channel, tags)) = current {
            for tag in tags {
                let _ = channel.basic_cancel(BasicCancelArguments::new(&tag)).await;
            }
        }
    }

    /// Resolves once no delivery is unsettled and their acks went out.
    pub(super) async fn all_settled(&self) {
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

/// Counts a delivery as unsettled while it lives.
struct DeliveryInProgress<'a>(&'a ServedEndpoint);

impl<'a> DeliveryInProgress<'a> {
    fn new(served: &'a ServedEndpoint) -> Self {
        served.unsettled.fetch_add(1, Ordering::AcqRel);
        DeliveryInProgress(served)
    }
}

impl Drop for DeliveryInProgress<'_> {
    fn drop(&mut self) {
        if self.0.unsettled.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

/// The AMQP reply code of a declaration that does not match the existing
/// queue or exchange (`PRECONDITION_FAILED`).
const PRECONDITION_FAILED: u16 = 406;

/// What a failure to serve means: a queue declared earlier with other
/// settings (the broker closes the channel with 406) is a conflict,
/// anything else a transport failure.
pub(super) fn serve_error(service: &str, error: amqprs::error::Error) -> TransportError {
    if error.reply_code() == Some(PRECONDITION_FAILED) {
        TransportError::Conflict {
            queue: service.to_string(),
            message: error.to_string(),
        }
    } else {
        TransportError::Other(error.to_string())
    }
}

/// Declares a service instance's queues on a channel of its own on
/// `session` and consumes them: the RPC queue, bound to the RPC exchange,
/// and a queue per event handler, bound to its source's events exchange.
/// The prefetch is `max_workers`; each queue gets a [`QueueConsumer`].
pub(super) async fn consume(
    inner: &Arc<TransportState>,
    session: &Session,
    served: &Arc<ServedEndpoint>,
) -> Result<(), amqprs::error::Error> {
    let endpoint = &served.endpoint;
    let channel = session.connection.open_channel(None).await?;
    let rpc_exchange = &inner.settings.rpc_exchange;
    let prefetch = u16::try_from(endpoint.max_workers).unwrap_or(u16::MAX);
    let mut queues: Vec<(String, Option<&'static EventHandlerSpec>)> = Vec::new();
    if endpoint.has_rpc {
        let queue = wire::rpc_queue(endpoint.service);
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
                &wire::rpc_binding_key(endpoint.service),
            ))
            .await?;
        queues.push((queue, None));
    }
    for spec in endpoint.event_handlers {
        let exchange = wire::events_exchange(spec.source);
        let queue = event_queue_name(endpoint.service, spec, &endpoint.instance_id);
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
                    .auto_delete(spec.queue_auto_delete())
                    .finish(),
            )
            .await?;
        channel
            .queue_bind(QueueBindArguments::new(&queue, &exchange, spec.event_type))
            .await?;
        queues.push((queue, Some(spec)));
    }
    channel
        .basic_qos(BasicQosArguments::new(0, prefetch, false))
        .await?;
    // A body over the limit is refused on its content header and never
    // gathered: memory per instance stays within max_message_size × prefetch.
    channel.set_max_content_size(inner.settings.max_message_size);
    let acker = acks::Acker::new(channel.clone());
    let mut tags = Vec::new();
    for (queue, event_handler) in queues {
        let (tag, rx) = channel
            .basic_consume_rx(BasicConsumeArguments::new(&queue, "").finish())
            .await?;
        tags.push(tag);
        let queue_consumer = QueueConsumer {
            inner: Arc::downgrade(inner),
            acker: acker.clone(),
            served: served.clone(),
            event_handler,
        };
        tokio::spawn(queue_consumer.run(rx));
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
    /// The announced size, in bytes.
    size: u64,
}

/// The reply to one request.
struct Reply<'a> {
    /// The caller's reply address (routing key on the RPC exchange).
    to: &'a str,
    /// The request's correlation id, echoed so the caller can match it.
    correlation_id: Option<&'a str>,
    /// What the handler returned, or why the request failed.
    result: Result<Value, RemoteError>,
}

/// Takes deliveries off one queue and hands each to the service.
struct QueueConsumer {
    /// Weak: a delivery in flight does not keep the transport alive.
    inner: Weak<TransportState>,
    /// The acks of the channel the queue is consumed on.
    acker: Arc<acks::Acker>,
    /// The instance the deliveries are for.
    served: Arc<ServedEndpoint>,
    /// `Some(method)` for an event queue, `None` for the RPC queue.
    event_handler: Option<&'static EventHandlerSpec>,
}

impl QueueConsumer {
    /// Hands each delivery of `rx` to a task of its own, until the consumer
    /// is cancelled or its channel closes.
    async fn run(self, mut rx: tokio::sync::mpsc::UnboundedReceiver<ConsumerMessage>) {
        let this = Arc::new(self);
        while let Some(message) = rx.recv().await {
            let this = this.clone();
            tokio::spawn(async move { this.handle(message).await });
        }
    }

    /// Handles one delivery, counted as unsettled until it returns. Every
    /// delivery ends acked, requeued or rejected, unless the connection or
    /// the transport is gone first (the broker then hands it out again).
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
        let _unsettled = DeliveryInProgress::new(&self.served);
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
        match self.event_handler {
            Some(handler) => self.handle_event(handler, tag, &props, body).await,
            None => {
                self.handle_rpc(deliver.routing_key(), tag, &props, body)
                    .await
            }
        }
    }

    /// Handles a request: decodes it, runs it, and replies (see `reply`). A
    /// request too malformed to be answered is rejected.
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
        let service = self.served.endpoint.service;
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
                    .endpoint
                    .handler
                    .handle_rpc(
                        &incoming.method,
                        Payload::Json(incoming.body),
                        Some(incoming.context),
                    )
                    .await;
                // Refused because the service is stopping: another instance
                // will take the request.
                let result = match result {
                    Err(HandlerError::Stopping) => return self.acker.requeue(tag).await,
                    Err(HandlerError::Failed(error)) => Err(error),
                    Ok(payload) => Ok(payload),
                };
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
        let reply = Reply {
            to: &reply_to,
            correlation_id: correlation_id.as_deref(),
            result,
        };
        self.reply(&inner, routing_key, tag, reply).await;
    }

    /// Publishes the reply to the request `tag` and settles the request by
    /// the broker's answer: acked once the reply is confirmed; requeued when
    /// it is not, until [`MAX_REPLY_ATTEMPTS`], then rejected; left unacked
    /// while disconnected (the broker hands it out again).
    async fn reply(&self, inner: &TransportState, routing_key: &str, tag: u64, reply: Reply<'_>) {
        let service = self.served.endpoint.service;
        let Reply {
            to: reply_to,
            correlation_id,
            result,
        } = reply;
        // The request's name in `ServedEndpoint::unconfirmed`, built only when needed.
        let key = || format!("{reply_to}/{}", correlation_id.unwrap_or_default());
        let props = wire::properties_with_mode(
            wire::delivery_mode(inner.settings.persistent_replies),
            None,
            correlation_id,
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
                reply_to,
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

    /// Handles an event: decodes it and runs it, then acks it (a failed
    /// handler included). A malformed or oversized event is rejected.
    async fn handle_event(
        &self,
        handler: &'static EventHandlerSpec,
        tag: u64,
        props: &BasicProperties,
        body: Body<'_>,
    ) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let service = self.served.endpoint.service;
        let method = handler.method;
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
            .endpoint
            .handler
            .handle_event(handler, payload, Some(context))
            .await
        {
            // Refused because the service is stopping: another instance
            // will take the event.
            Err(HandlerError::Stopping) => self.acker.requeue(tag).await,
            Err(HandlerError::Failed(error)) => {
                tracing::warn!(service, method, %error, "event handler failed");
                self.acker.ack(tag)
            }
            Ok(()) => self.acker.ack(tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqprs::error::Error;

    fn closed(reply_code: u16, reply_text: &str) -> Error {
        Error::ChannelClosedByServer {
            reply_code,
            reply_text: reply_text.into(),
        }
    }

    #[test]
    fn a_declaration_refused_with_406_is_a_conflict() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'rpc-x'";
        match serve_error("x", closed(406, text)) {
            TransportError::Conflict { queue, message } => {
                assert_eq!(queue, "x");
                assert!(message.contains(text), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_failures_are_not_conflicts_whatever_their_text() {
        // Another reply code, and a message that only mentions the name.
        let errors = [
            closed(405, "RESOURCE_LOCKED - cannot obtain exclusive access"),
            closed(404, "NOT_FOUND - PRECONDITION_FAILED in a name"),
            Error::ChannelUseError("PRECONDITION_FAILED".into()),
            Error::InternalChannelError("channel closed".into()),
        ];
        for error in errors {
            assert!(
                matches!(serve_error("x", error), TransportError::Other(_)),
                "a conflict"
            );
        }
    }
}
