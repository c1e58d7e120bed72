//! The naive raw client and server: request-reply done by hand the way
//! Nameko does it, not the way shimeji does. Kept as an extra row to show
//! what shimeji's wire choices are worth; it is NOT the like-for-like
//! baseline (that is `raw`).
//!
//! Differences from `raw`: replies always persistent; the reply consumer
//! acks each reply (`basic.ack` per reply, sent before the reply is handed
//! over); replies go out on one confirm channel; each request is acked on
//! its own (no `multiple`). Requests as in `raw`: persistent, `mandatory`,
//! no confirm.

use amqprs::channel::{BasicAckArguments, BasicConsumeArguments, BasicPublishArguments};
use amqprs::channel::{BasicQosArguments, Channel};
use amqprs::connection::Connection;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

use crate::wire::{self, ConfirmLane, Ids, RPC_EXCHANGE};

/// Serves `echo` on `rpc-{service}` with `prefetch` unacked requests at most.
pub async fn serve(service: &str, prefetch: u16) -> Result<Connection, String> {
    let e = |e: amqprs::error::Error| e.to_string();
    let connection = wire::open(&format!("bench naive server {service}")).await?;
    let lane = Arc::new(ConfirmLane::open(&connection).await?);
    let channel = connection.open_channel(None).await.map_err(e)?;
    let queue = wire::declare_service_queue(&channel, service).await?;
    channel
        .basic_qos(BasicQosArguments::new(0, prefetch, false))
        .await
        .map_err(e)?;
    let (_, mut rx) = channel
        .basic_consume_rx(BasicConsumeArguments::new(&queue, "").finish())
        .await
        .map_err(e)?;
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let (lane, channel) = (lane.clone(), channel.clone());
            tokio::spawn(async move {
                let (Some(deliver), Some(props), Some(body)) =
                    (msg.deliver, msg.basic_properties, msg.content)
                else {
                    return;
                };
                let mut request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let reply = json!({"result": request["args"][0].take(), "error": null});
                let reply = serde_json::to_vec(&reply).unwrap_or_default();
                let to = props.reply_to().map(String::as_str).unwrap_or_default();
                let reply_props =
                    wire::props(true, props.correlation_id().map(String::as_str), None);
                let Ok(confirm) = lane.publish(RPC_EXCHANGE, to, reply_props, reply).await else {
                    return;
                };
                if confirm.await == Ok(true) {
                    let _ = channel
                        .basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false))
                        .await;
                }
            });
        }
    });
    Ok(connection)
}

/// The naive client; clones share its channels.
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
        let replies = connection.open_channel(None).await.map_err(e)?;
        let reply_key = uuid::Uuid::new_v4().to_string();
        let queue = format!("rpc.reply-naiveclient-{reply_key}");
        wire::declare_reply_queue(&replies, &queue, &reply_key).await?;
        let (_, mut rx) = replies
            .basic_consume_rx(BasicConsumeArguments::new(&queue, "").finish())
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
            while let Some(msg) = rx.recv().await {
                if let Some(d) = &msg.deliver {
                    let _ = replies
                        .basic_ack(BasicAckArguments::new(d.delivery_tag(), false))
                        .await;
                }
                let Some(inner) = weak.upgrade() else { return };
                let Some(id) = msg
                    .basic_properties
                    .as_ref()
                    .and_then(|p| p.correlation_id())
                else {
                    continue;
                };
                let waiting = inner.pending.lock().expect("pending").remove(id);
                if let Some(tx) = waiting {
                    let _ = tx.send(msg.content.unwrap_or_default());
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
        inner
            .requests
            .basic_publish(props, body, args)
            .await
            .map_err(|e| e.to_string())?;
        let reply = rx.await.map_err(|_| "reply channel closed".to_string())?;
        let mut reply: Value = serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
        Ok(reply["result"].take())
    }
}
