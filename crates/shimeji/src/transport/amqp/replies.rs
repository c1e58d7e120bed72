//! Replies: the calls waiting for theirs, the reply queue and its consumer
//! on the calling side; on the serving side, the count of replies the broker
//! did not confirm.
//!
//! In the flow, calling side: [`AmqpTransport::call`](super::AmqpTransport)
//! registers its call in [`PendingCalls`] under a fresh correlation id
//! before it publishes the request, then waits. The reply consumer (started
//! by `session` on every connection) takes each reply off this transport's
//! reply queue and hands it to the call with its correlation id. A reply
//! nobody waits for any more (the call timed out, or the request was served
//! twice) is dropped; the call's [`PendingGuard`] forgets it however it
//! ends. A request nobody serves is failed from `publisher` instead.
//!
//! Serving side: `consumer` acks a request only once the broker confirmed
//! its reply. An unconfirmed reply sends the request back to its queue;
//! [`UnconfirmedReplies`] counts these per request and gives the request up
//! after [`MAX_REPLY_ATTEMPTS`].

use amqprs::channel::{
    BasicConsumeArguments, ConsumerMessage, QueueBindArguments, QueueDeclareArguments,
};
use amqprs::{FieldTable, FieldValue};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

use super::session::{Session, TransportState};
use super::{lock, wire};
use crate::error::CallError;

/// Where a call's reply goes.
type PendingReply = oneshot::Sender<Result<Value, CallError>>;

/// The calls waiting for their reply, by correlation id.
#[derive(Default)]
pub(super) struct PendingCalls(Mutex<HashMap<String, PendingReply>>);

impl PendingCalls {
    /// Registers the call `id`. The receiver gets its reply; the guard
    /// forgets the call when dropped.
    pub(super) fn register(
        &self,
        id: &str,
    ) -> (
        PendingGuard<'_>,
        oneshot::Receiver<Result<Value, CallError>>,
    ) {
        let (tx, reply) = oneshot::channel();
        lock(&self.0).insert(id.to_string(), tx);
        let guard = PendingGuard {
            calls: self,
            id: id.to_string(),
        };
        (guard, reply)
    }

    /// Takes the call `id` out, to answer it.
    pub(super) fn take(&self, id: &str) -> Option<PendingReply> {
        lock(&self.0).remove(id)
    }
}

/// Removes a call's pending entry when the call ends, however it ends.
pub(super) struct PendingGuard<'a> {
    calls: &'a PendingCalls,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.calls.0).remove(&self.id);
    }
}

/// Declares the reply queue and consumes it, routing replies to their calls.
pub(super) async fn start_reply_consumer(
    inner: &Arc<TransportState>,
    session: &Session,
) -> Result<(), amqprs::error::Error> {
    let channel = session.connection.open_channel(None).await?;
    let mut args = FieldTable::new();
    if let Ok(name) = "x-expires".try_into() {
        args.insert(name, FieldValue::I(wire::REPLY_QUEUE_EXPIRES_MS));
    }
    channel
        .queue_declare(
            QueueDeclareArguments::new(&inner.reply_queue)
                .durable(true)
                .arguments(args)
                .finish(),
        )
        .await?;
    channel
        .queue_bind(QueueBindArguments::new(
            &inner.reply_queue,
            &inner.settings.rpc_exchange,
            &inner.reply_key,
        ))
        .await?;
    channel.set_max_content_size(inner.settings.max_message_size);
    let (_tag, mut rx) = channel
        // Replies are taken as they come (no ack): a reply lost with its
        // connection leaves its call to its timeout.
        .basic_consume_rx(
            BasicConsumeArguments::new(&inner.reply_queue, "")
                .manual_ack(false)
                .finish(),
        )
        .await?;
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        // The channel closes when its handle drops: keep it with its consumer.
        let _channel = channel;
        while let Some(message) = rx.recv().await {
            let Some(inner) = weak.upgrade() else { return };
            let ConsumerMessage {
                basic_properties,
                content,
                body_size,
                ..
            } = message;
            let Some(id) = basic_properties.as_ref().and_then(|p| p.correlation_id()) else {
                tracing::warn!("reply without a correlation id: dropped");
                continue;
            };
            let Some(tx) = inner.pending.take(id) else {
                // A late or repeated reply (the call timed out, or the
                // request was redelivered): nobody waits for it.
                continue;
            };
            let reply = match content {
                Some(body) => wire::decode_reply(&body)
                    .map_err(CallError::Decode)
                    .and_then(|r| r.map_err(CallError::from_remote)),
                None => Err(CallError::Decode(format!(
                    "reply of {} bytes is over the limit of {} bytes (max_message_size)",
                    body_size, inner.settings.max_message_size
                ))),
            };
            let _ = tx.send(reply);
        }
    });
    Ok(())
}

/// How many times a request is served again because its reply was not
/// confirmed, before it is given up on (rejected, logged as an error and
/// counted in `shimeji_transport_messages_dropped_total`).
pub const MAX_REPLY_ATTEMPTS: u32 = 5;

/// Requests remembered in [`UnconfirmedReplies`] at most; past it the oldest
/// counts are forgotten (a request then gets a few more attempts, never
/// endless ones: each forgetting needs this many other failing requests).
const UNCONFIRMED_REMEMBERED: usize = 4096;

/// The requests of one served instance whose reply the broker did not
/// confirm, by reply address and correlation id: how many times each was
/// requeued for that.
#[derive(Default)]
pub(super) struct UnconfirmedReplies(Mutex<HashMap<String, u32>>);

impl UnconfirmedReplies {
    /// Counts one unconfirmed reply to the request `key`; `true` while it
    /// may be served again.
    pub(super) fn retry(&self, key: String) -> bool {
        let mut unconfirmed = lock(&self.0);
        if unconfirmed.len() >= UNCONFIRMED_REMEMBERED && !unconfirmed.contains_key(&key) {
            unconfirmed.clear();
        }
        let attempts = unconfirmed.entry(key.clone()).or_insert(0);
        *attempts += 1;
        if *attempts < MAX_REPLY_ATTEMPTS {
            return true;
        }
        unconfirmed.remove(&key);
        false
    }

    /// The reply to `key` was confirmed: forget its failures.
    /// (`key` is only built when some failure is remembered: nothing is
    /// allocated per call otherwise.)
    pub(super) fn confirmed(&self, key: impl FnOnce() -> String) {
        let mut unconfirmed = lock(&self.0);
        if !unconfirmed.is_empty() {
            unconfirmed.remove(&key());
        }
    }
}
