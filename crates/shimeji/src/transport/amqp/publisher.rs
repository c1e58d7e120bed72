//! Publishing to the broker: requests on a plain channel, replies and
//! events on confirm-mode channels ("lanes") that tell each publish whether
//! the broker took it.
//!
//! In the flow: [`AmqpTransport::call`](super::AmqpTransport) publishes a
//! request with [`Publisher::publish_request`]: `mandatory`, without a
//! confirm (its reply says it arrived). A request no queue takes comes back
//! as `basic.return`, and [`PublisherWatch`] fails its pending call at once
//! with `UnknownService`. `consumer` publishes a reply on a lane and acks its
//! request only once the broker confirmed the reply; the transport's
//! `publish` waits for the confirm of an event the same way.
//!
//! A lane numbers its publishes (the broker confirms by delivery tag, in
//! publish order) and keeps a sender per tag until the broker acks or nacks
//! it, one tag or `multiple` up to it. When the connection is lost,
//! [`Publisher::fail_all`] drops every sender: each waiting publish learns
//! that its confirm will never come.

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicPublishArguments, Channel, ConfirmSelectArguments, ExchangeDeclareArguments,
};
use amqprs::connection::Connection;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::oneshot;

use super::session::TransportState;
use super::{lock, wire};
use crate::error::CallError;

/// How many confirm-mode channels replies and events spread over: each is a
/// process of its own in the broker, and a lock of its own here.
const CONFIRM_LANES: usize = 4;

/// The senders waiting for a confirm, by delivery tag.
type Confirms = Arc<Mutex<BTreeMap<u64, oneshot::Sender<bool>>>>;

/// Confirm-mode channels, where each publish learns whether the broker took
/// it (replies, events), and a plain channel for requests: a request needs no
/// confirm, its reply says it arrived, and an unroutable one comes back
/// (`mandatory`) at once.
pub(super) struct Publisher {
    lanes: Vec<ConfirmLane>,
    next_lane: AtomicU64,
    requests: Channel,
}

/// One confirm-mode channel and the confirms it waits for.
pub(super) struct ConfirmLane {
    channel: Channel,
    /// Serializes publishes so that delivery tags follow publish order.
    next_tag: tokio::sync::Mutex<u64>,
    confirms: Confirms,
}

impl ConfirmLane {
    async fn open(
        connection: &Connection,
        inner: &Arc<TransportState>,
    ) -> Result<Self, amqprs::error::Error> {
        let channel = connection.open_channel(None).await?;
        let confirms = Confirms::default();
        channel
            .register_callback(PublisherWatch {
                confirms: confirms.clone(),
                inner: Arc::downgrade(inner),
            })
            .await?;
        channel
            .confirm_select(ConfirmSelectArguments::default())
            .await?;
        Ok(ConfirmLane {
            channel,
            next_tag: tokio::sync::Mutex::new(1),
            confirms,
        })
    }

    /// Publishes a reply or an event (not `mandatory`); the receiver resolves
    /// with the broker's confirm (`true` for ack), or closes when the
    /// connection is lost first.
    pub(super) async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        props: BasicProperties,
        body: Vec<u8>,
    ) -> Result<oneshot::Receiver<bool>, amqprs::error::Error> {
        let (tx, rx) = oneshot::channel();
        let mut next = self.next_tag.lock().await;
        let tag = *next;
        lock(&self.confirms).insert(tag, tx);
        let args = BasicPublishArguments::new(exchange, routing_key);
        match self.channel.basic_publish(props, body, args).await {
            Ok(()) => {
                *next += 1;
                Ok(rx)
            }
            Err(e) => {
                lock(&self.confirms).remove(&tag);
                Err(e)
            }
        }
    }
}

impl Publisher {
    /// Opens the lanes and the request channel on `connection`, and declares
    /// the RPC exchange.
    pub(super) async fn open(
        connection: &Connection,
        inner: &Arc<TransportState>,
    ) -> Result<Self, amqprs::error::Error> {
        let mut lanes = Vec::with_capacity(CONFIRM_LANES);
        for _ in 0..CONFIRM_LANES {
            lanes.push(ConfirmLane::open(connection, inner).await?);
        }
        let requests = connection.open_channel(None).await?;
        requests
            .register_callback(PublisherWatch {
                confirms: Confirms::default(),
                inner: Arc::downgrade(inner),
            })
            .await?;
        requests
            .exchange_declare(
                ExchangeDeclareArguments::new(&inner.settings.rpc_exchange, "topic")
                    .durable(true)
                    .finish(),
            )
            .await?;
        Ok(Publisher {
            lanes,
            next_lane: AtomicU64::new(0),
            requests,
        })
    }

    /// The channel declarations go through (one at a time: see `Session::exchanges`).
    pub(super) fn control(&self) -> &Channel {
        &self.requests
    }

    /// The lane for the next confirmed publish: the lanes take turns.
    pub(super) fn lane(&self) -> &ConfirmLane {
        let i = self.next_lane.fetch_add(1, Ordering::Relaxed) as usize % self.lanes.len();
        &self.lanes[i]
    }

    /// Publishes a request, `mandatory`, without a confirm.
    pub(super) async fn publish_request(
        &self,
        exchange: &str,
        routing_key: &str,
        props: BasicProperties,
        body: Vec<u8>,
    ) -> Result<(), amqprs::error::Error> {
        let mut args = BasicPublishArguments::new(exchange, routing_key);
        args.mandatory(true);
        self.requests.basic_publish(props, body, args).await
    }

    /// The connection is lost: every publish waiting for a confirm learns
    /// that none will come.
    pub(super) fn fail_all(&self) {
        for lane in &self.lanes {
            lock(&lane.confirms).clear();
        }
    }
}

/// Hears a publishing channel's confirms and returned requests.
struct PublisherWatch {
    confirms: Confirms,
    inner: Weak<TransportState>,
}

impl PublisherWatch {
    /// Hands the broker's answer (`ok`: ack) to the publish of `tag`, or to
    /// every publish up to it when `multiple`.
    fn settle(&self, tag: u64, multiple: bool, ok: bool) {
        let mut confirms = lock(&self.confirms);
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
impl ChannelCallback for PublisherWatch {
    async fn close(
        &mut self,
        _channel: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        tracing::warn!(reason = %close, "the broker closed the publishing channel");
        Ok(())
    }
    async fn cancel(
        &mut self,
        _channel: &Channel,
        _cancel: Cancel,
    ) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(
        &mut self,
        _channel: &Channel,
        active: bool,
    ) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.settle(ack.delivery_tag(), ack.mutiple(), true);
    }
    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        self.settle(nack.delivery_tag(), nack.multiple(), false);
    }
    async fn publish_return(
        &mut self,
        _channel: &Channel,
        ret: Return,
        props: BasicProperties,
        _content: Vec<u8>,
    ) {
        // A request nobody serves: fail its call at once.
        let (Some(inner), Some(id)) = (self.inner.upgrade(), props.correlation_id()) else {
            return;
        };
        let service = wire::split_routing_key(ret.routing_key())
            .map_or(ret.routing_key().as_str(), |(s, _)| s)
            .to_string();
        let waiting = inner.pending.take(id);
        if let Some(tx) = waiting {
            let _ = tx.send(Err(CallError::UnknownService(service)));
        }
    }
}
