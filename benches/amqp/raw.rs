//! (a) The raw client and server: amqprs doing on the wire what shimeji's
//! transport does, and nothing else.
//!
//! Server: one connection; the service queue consumed on a channel of its
//! own with `basic.qos(prefetch = max_workers)` and manual acks; each
//! request handled in a task of its own; its reply published (not
//! `mandatory`) on one of four confirm-mode channels taken in turn,
//! persistent or transient as set; the request acked once the reply is
//! confirmed, acks coalesced (`acks`).
//!
//! Client: one connection; requests published persistent and `mandatory`
//! on a channel without confirms; replies consumed without acks
//! (`no_ack`) from a durable reply queue that expires five minutes after
//! its last consumer, matched to their call by correlation id.

use amqprs::channel::{BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel};
use amqprs::channel::{ConsumerMessage, ExchangeDeclareArguments};
use amqprs::connection::Connection;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

use crate::acks::Acker;
use crate::wire::{self, ConfirmLane, Ids, RPC_EXCHANGE};

/// shimeji's confirm lanes for replies and events.
const LANES: usize = 4;
/// shimeji's default `max_message_size`, set on consuming channels.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// A serving side's settings, on both the raw server and shimeji's service.
#[derive(Clone, Copy, Debug)]
pub struct ServerSettings {
    /// `max_workers`: the prefetch.
    pub max_workers: u16,
    /// Replies with delivery mode 2.
    pub persistent_replies: bool,
}

impl ServerSettings {
    /// `10p`, `64t`, …: a name for queues and services.
    pub fn tag(&self) -> String {
        let p = if self.persistent_replies { "p" } else { "t" };
        format!("{}{p}", self.max_workers)
    }

    /// What a reader needs to know, next to the figures.
    pub fn describe(&self) -> String {
        format!(
            "max_workers {}, {} replies",
            self.max_workers,
            if self.persistent_replies {
                "persistent"
            } else {
                "transient"
            }
        )
    }
}

/// Serves `echo` on `rpc-{service}`; the connection lives as long as the
/// returned handle.
pub async fn serve(service: &str, settings: ServerSettings) -> Result<Connection, String> {
    let e = |e: amqprs::error::Error| e.to_string();
    let connection = wire::open(&format!("bench raw server {service}")).await?;
    let mut lanes = Vec::with_capacity(LANES);
    for _ in 0..LANES {
        lanes.push(ConfirmLane::open(&connection).await?);
    }
    let lanes = Arc::new(lanes);
    let channel = connection.open_channel(None).await.map_err(e)?;
    let queue = wire::declare_service_queue(&channel, service).await?;
    channel
        .basic_qos(BasicQosArguments::new(0, settings.max_workers, false))
        .await
        .map_err(e)?;
    channel.set_max_content_size(MAX_MESSAGE_SIZE);
    let acker = Acker::new(channel.clone());
    let (_, mut rx) = channel
        .basic_consume_rx(BasicConsumeArguments::new(&queue, "").finish())
        .await
        .map_err(e)?;
    let next_lane = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        let _channel = channel;
        while let Some(message) = rx.recv().await {
            let (lanes, acker, next_lane) = (lanes.clone(), acker.clone(), next_lane.clone());
            tokio::spawn(async move {
                let lane = &lanes[next_lane.fetch_add(1, Ordering::Relaxed) % LANES];
                handle(message, lane, &acker, settings.persistent_replies).await;
            });
        }
    });
    Ok(connection)
}

/// Replies to one request and acks it once the reply is confirmed. A reply
/// not confirmed leaves its request unacked: its call then times out and
/// the round is flagged as failed.
async fn handle(message: ConsumerMessage, lane: &ConfirmLane, acker: &Acker, persistent: bool) {
    let (Some(deliver), Some(props), Some(body)) =
        (message.deliver, message.basic_properties, message.content)
    else {
        return;
    };
    let mut request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = json!({"result": request["args"][0].take(), "error": null});
    let reply = serde_json::to_vec(&reply).unwrap_or_default();
    let to = props.reply_to().map(String::as_str).unwrap_or_default();
    let correlation_id = props.correlation_id().map(String::as_str);
    let reply_props = wire::props(persistent, correlation_id, None);
    let Ok(confirm) = lane.publish(RPC_EXCHANGE, to, reply_props, reply).await else {
        return;
    };
    if confirm.await == Ok(true) {
        acker.ack(deliver.delivery_tag());
    }
}

/// The raw client; clones share its connection's channels.
#[derive(Clone)]
pub struct Client(Arc<Inner>);

struct Inner {
    requests: Channel,
    pending: Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>,
    reply_key: String,
    ids: Ids,
}

impl Client {
    /// Opens the request channel and the reply consumer on `connection`.
    pub async fn connect(connection: &Connection) -> Result<Self, String> {
        let e = |e: amqprs::error::Error| e.to_string();
        let requests = connection.open_channel(None).await.map_err(e)?;
        requests
            .exchange_declare(
                ExchangeDeclareArguments::new(RPC_EXCHANGE, "topic")
                    .durable(true)
                    .finish(),
            )
            .await
            .map_err(e)?;
        let replies = connection.open_channel(None).await.map_err(e)?;
        let reply_key = uuid::Uuid::new_v4().to_string();
        let queue = format!("rpc.reply-rawclient-{reply_key}");
        wire::declare_reply_queue(&replies, &queue, &reply_key).await?;
        replies.set_max_content_size(MAX_MESSAGE_SIZE);
        let (_, mut rx) = replies
            .basic_consume_rx(
                BasicConsumeArguments::new(&queue, "")
                    .manual_ack(false)
                    .finish(),
            )
            .await
            .map_err(e)?;
        let inner = Arc::new(Inner {
            requests,
            pending: Mutex::default(),
            reply_key,
            ids: Ids::new(),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let _replies = replies;
            while let Some(message) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let Some(id) = message
                    .basic_properties
                    .as_ref()
                    .and_then(|p| p.correlation_id())
                else {
                    continue;
                };
                let waiting = inner.pending.lock().expect("pending").remove(id);
                if let Some(tx) = waiting {
                    let _ = tx.send(message.content.unwrap_or_default());
                }
            }
        });
        Ok(Client(inner))
    }

    /// Calls `{service}.echo(value)`; returns the result.
    pub async fn echo(&self, service: &str, value: &str) -> Result<Value, String> {
        let inner = &self.0;
        let id = inner.ids.next();
        let (tx, rx) = oneshot::channel();
        inner
            .pending
            .lock()
            .expect("pending")
            .insert(id.clone(), tx);
        let body = serde_json::to_vec(&json!({"args": [value], "kwargs": {}}))
            .map_err(|e| e.to_string())?;
        let mut args = BasicPublishArguments::new(RPC_EXCHANGE, &format!("{service}.echo"));
        args.mandatory(true);
        let props = wire::props(true, Some(&id), Some(&inner.reply_key));
        if let Err(e) = inner.requests.basic_publish(props, body, args).await {
            inner.pending.lock().expect("pending").remove(&id);
            return Err(e.to_string());
        }
        let reply = rx.await.map_err(|_| "reply channel closed".to_string())?;
        let mut reply: Value = serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
        Ok(reply["result"].take())
    }
}

/// The raw event publisher, as shimeji's: the events exchange declared
/// once per connection, each event persistent, not `mandatory`, on one of
/// four confirm channels taken in turn, its confirm awaited.
pub struct Events {
    lanes: Vec<ConfirmLane>,
    next: AtomicUsize,
    exchange: String,
}

impl Events {
    /// Opens the lanes on `connection` and declares `{source}.events`.
    pub async fn open(connection: &Connection, source: &str) -> Result<Self, String> {
        let mut lanes = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            lanes.push(ConfirmLane::open(connection).await?);
        }
        let exchange = format!("{source}.events");
        lanes[0]
            .channel
            .exchange_declare(
                ExchangeDeclareArguments::new(&exchange, "topic")
                    .durable(true)
                    .finish(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(Events {
            lanes,
            next: AtomicUsize::new(0),
            exchange,
        })
    }

    /// Publishes one event and waits for its confirm.
    pub async fn publish(&self, event_type: &str, body: Value) -> Result<(), String> {
        let lane = &self.lanes[self.next.fetch_add(1, Ordering::Relaxed) % LANES];
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let props = wire::props(true, None, None);
        let confirm = lane
            .publish(&self.exchange, event_type, props, body)
            .await?;
        match confirm.await {
            Ok(true) => Ok(()),
            _ => Err("event not confirmed".to_string()),
        }
    }
}
