//! What the raw contenders share: the broker's address, connections,
//! confirm-mode channels, message properties and Nameko's RPC topology.

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicPublishArguments, Channel, ConfirmSelectArguments, ExchangeDeclareArguments,
    QueueBindArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{BasicProperties, FieldTable, FieldValue};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The vhost every contender of the bench uses.
pub const VHOST: &str = "shimeji-bench";
/// Nameko's RPC exchange.
pub const RPC_EXCHANGE: &str = "nameko-rpc";

/// The broker, in the bench's vhost.
pub fn uri() -> String {
    format!("amqp://guest:guest@127.0.0.1:5672/{VHOST}")
}

/// Opens a connection labelled `name` (heartbeat 60 s, as shimeji's).
pub async fn open(name: &str) -> Result<Connection, String> {
    let mut args = OpenConnectionArguments::try_from(uri().as_str()).map_err(|e| e.to_string())?;
    args.heartbeat(60).connection_name(name);
    Connection::open(&args).await.map_err(|e| e.to_string())
}

/// Properties as Nameko (and shimeji) send them: JSON, utf-8, priority 0,
/// empty headers, delivery mode 2 (persistent) or 1 (transient).
pub fn props(
    persistent: bool,
    correlation_id: Option<&str>,
    reply_to: Option<&str>,
) -> BasicProperties {
    let mut p = BasicProperties::default();
    p.with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_delivery_mode(if persistent { 2 } else { 1 })
        .with_priority(0);
    p.with_headers(FieldTable::new());
    if let Some(id) = correlation_id {
        p.with_correlation_id(id);
    }
    if let Some(to) = reply_to {
        p.with_reply_to(to);
    }
    p.finish()
}

/// Declares the RPC exchange and a service's queue `rpc-{service}`, bound
/// with `{service}.*`, as Nameko does.
pub async fn declare_service_queue(channel: &Channel, service: &str) -> Result<String, String> {
    let queue = format!("rpc-{service}");
    let e = |e: amqprs::error::Error| e.to_string();
    channel
        .exchange_declare(
            ExchangeDeclareArguments::new(RPC_EXCHANGE, "topic")
                .durable(true)
                .finish(),
        )
        .await
        .map_err(e)?;
    channel
        .queue_declare(QueueDeclareArguments::new(&queue).durable(true).finish())
        .await
        .map_err(e)?;
    channel
        .queue_bind(QueueBindArguments::new(
            &queue,
            RPC_EXCHANGE,
            &format!("{service}.*"),
        ))
        .await
        .map_err(e)?;
    Ok(queue)
}

/// Declares a caller's reply queue as Nameko does (durable, expiring five
/// minutes after its last consumer), bound to the RPC exchange with `key`.
pub async fn declare_reply_queue(channel: &Channel, queue: &str, key: &str) -> Result<(), String> {
    let e = |e: amqprs::error::Error| e.to_string();
    let mut expires = FieldTable::new();
    expires.insert(
        "x-expires".try_into().map_err(|_| "x-expires")?,
        FieldValue::I(300_000),
    );
    channel
        .queue_declare(
            QueueDeclareArguments::new(queue)
                .durable(true)
                .arguments(expires)
                .finish(),
        )
        .await
        .map_err(e)?;
    channel
        .queue_bind(QueueBindArguments::new(queue, RPC_EXCHANGE, key))
        .await
        .map_err(e)?;
    Ok(())
}

/// Fresh correlation ids without a system call per id (shimeji's come from
/// a userspace generator too): a random base plus a counter, as a UUID.
pub struct Ids {
    base: u128,
    next: std::sync::atomic::AtomicU64,
}

impl Ids {
    /// A generator with a random base.
    pub fn new() -> Self {
        Ids {
            base: uuid::Uuid::new_v4().as_u128(),
            next: Default::default(),
        }
    }

    /// The next id.
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        uuid::Uuid::from_u128(self.base ^ u128::from(n)).to_string()
    }
}

/// Senders waiting for a publisher confirm, by delivery tag.
type Confirms = Arc<Mutex<BTreeMap<u64, oneshot::Sender<bool>>>>;

/// A confirm-mode channel whose confirms are matched to publishes by tag
/// (what shimeji calls a lane).
pub struct ConfirmLane {
    pub channel: Channel,
    next_tag: tokio::sync::Mutex<u64>,
    confirms: Confirms,
}

impl ConfirmLane {
    /// Opens a channel on `connection` and puts it in confirm mode.
    pub async fn open(connection: &Connection) -> Result<Self, String> {
        let e = |e: amqprs::error::Error| e.to_string();
        let channel = connection.open_channel(None).await.map_err(e)?;
        let confirms = Confirms::default();
        channel
            .register_callback(ConfirmWatch(confirms.clone()))
            .await
            .map_err(e)?;
        channel
            .confirm_select(ConfirmSelectArguments::default())
            .await
            .map_err(e)?;
        Ok(ConfirmLane {
            channel,
            next_tag: tokio::sync::Mutex::new(1),
            confirms,
        })
    }

    /// Publishes (not `mandatory`); the receiver gets the broker's confirm
    /// (`true` for ack).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        props: BasicProperties,
        body: Vec<u8>,
    ) -> Result<oneshot::Receiver<bool>, String> {
        let (tx, rx) = oneshot::channel();
        let mut next = self.next_tag.lock().await;
        let tag = *next;
        self.confirms.lock().expect("confirms").insert(tag, tx);
        let args = BasicPublishArguments::new(exchange, routing_key);
        match self.channel.basic_publish(props, body, args).await {
            Ok(()) => {
                *next += 1;
                Ok(rx)
            }
            Err(e) => {
                self.confirms.lock().expect("confirms").remove(&tag);
                Err(e.to_string())
            }
        }
    }
}

/// Hands each confirm (one tag, or `multiple` up to it) to its publish.
struct ConfirmWatch(Confirms);

impl ConfirmWatch {
    fn settle(&self, tag: u64, multiple: bool, ok: bool) {
        let mut confirms = self.0.lock().expect("confirms");
        if multiple {
            let rest = confirms.split_off(&(tag + 1));
            for (_, tx) in std::mem::replace(&mut *confirms, rest) {
                let _ = tx.send(ok);
            }
        } else if let Some(tx) = confirms.remove(&tag) {
            let _ = tx.send(ok);
        }
    }
}

#[async_trait::async_trait]
impl ChannelCallback for ConfirmWatch {
    async fn close(
        &mut self,
        _: &Channel,
        _: amqprs::CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, _: amqprs::Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: amqprs::Ack) {
        self.settle(ack.delivery_tag(), ack.mutiple(), true);
    }
    async fn publish_nack(&mut self, _: &Channel, nack: amqprs::Nack) {
        self.settle(nack.delivery_tag(), nack.multiple(), false);
    }
    async fn publish_return(
        &mut self,
        _: &Channel,
        _: amqprs::Return,
        _: BasicProperties,
        _: Vec<u8>,
    ) {
    }
}
