//! Raw AMQP request-reply loop (Nameko's RPC wire format), lapin vs amqprs,
//! against a local RabbitMQ. See README.md.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const EXCHANGE: &str = "bench-rpc";
const SERVER_QUEUE: &str = "bench-rpc-echo";
const BINDING: &str = "echo.*";
const ROUTING_KEY: &str = "echo.hello";
const BODY: &[u8] = br#"{"args": ["Ada"], "kwargs": {}}"#;
const JSON: &str = "application/json";
const PREFETCH: u16 = 64;
const CONCURRENCY: usize = 64;
const ROUNDS: usize = 3;
const WARMUP: usize = 500;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls waiting for their reply, by correlation id.
type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// A running echo server and a connected caller, for one client library.
struct Bench<C, P> {
    server: C,
    client: C,
    publisher: P,
    pending: Pending,
    reply_key: String,
}

impl<C, P> Bench<C, P> {
    fn new(server: C, client: C, publisher: P, pending: Pending, reply_key: String) -> Self {
        Bench {
            server,
            client,
            publisher,
            pending,
            reply_key,
        }
    }
}

/// The caller's reply routing key (a uuid) and its reply queue's name.
fn reply_names() -> (String, String) {
    let key = uuid::Uuid::new_v4().to_string();
    let queue = format!("bench-rpc-reply-{key}");
    (key, queue)
}

/// Hands a reply to the call waiting for it.
fn dispatch(pending: &Pending, correlation_id: Option<&str>, body: Vec<u8>) {
    let waiter = correlation_id.and_then(|id| pending.lock().unwrap().remove(id));
    if let Some(tx) = waiter {
        let _ = tx.send(body);
    }
}

/// One call, the same for both clients: register a fresh correlation id,
/// publish the request (`publish` resolves to its confirm), await the reply.
async fn round_trip<F>(pending: &Pending, publish: impl FnOnce(String) -> F)
where
    F: Future<Output = bool>,
{
    let id = uuid::Uuid::new_v4().to_string();
    let (tx, rx) = oneshot::channel();
    pending.lock().unwrap().insert(id.clone(), tx);
    let call = async {
        assert!(publish(id).await, "request nacked");
        rx.await.expect("reply")
    };
    let reply = tokio::time::timeout(CALL_TIMEOUT, call).await;
    assert_eq!(reply.expect("call timed out"), BODY, "echoed body");
}

trait Rpc: Send + Sync + 'static {
    fn call(&self) -> impl Future<Output = ()> + Send;
    fn stop(self) -> impl Future<Output = ()> + Send;
}

mod with_lapin {
    use super::*;
    use futures_lite::StreamExt;
    use lapin::{options::*, types::FieldTable, BasicProperties, Channel, Connection};
    use lapin::{ConnectionProperties, Consumer, ExchangeKind, Result};

    pub type LapinBench = Bench<Connection, Channel>;

    /// A connection with a consuming channel and a confirm-mode publishing one.
    async fn connect(url: &str) -> Result<(Connection, Channel, Channel)> {
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        let conn = Connection::connect(url, props).await?;
        let consume = conn.create_channel().await?;
        let publisher = conn.create_channel().await?;
        publisher.confirm_select(Default::default()).await?;
        let opts = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let (kind, args) = (ExchangeKind::Topic, FieldTable::default());
        consume.exchange_declare(EXCHANGE, kind, opts, args).await?;
        Ok((conn, consume, publisher))
    }

    /// Declares, binds and consumes `queue`.
    async fn consume(
        ch: &Channel,
        queue: &str,
        opts: QueueDeclareOptions,
        key: &str,
    ) -> Result<Consumer> {
        let args = FieldTable::default;
        ch.queue_declare(queue, opts, args()).await?;
        let bind = QueueBindOptions::default();
        ch.queue_bind(queue, EXCHANGE, key, bind, args()).await?;
        let opts = BasicConsumeOptions::default();
        ch.basic_consume(queue, "", opts, args()).await
    }

    pub async fn start(url: &str) -> Result<LapinBench> {
        // Server: echoes each request to its reply_to, then acks it.
        let (server, channel, publisher) = connect(url).await?;
        channel.basic_qos(PREFETCH, Default::default()).await?;
        let opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut requests = consume(&channel, SERVER_QUEUE, opts, BINDING).await?;
        tokio::spawn(async move {
            while let Some(Ok(request)) = requests.next().await {
                let publisher = publisher.clone();
                tokio::spawn(async move {
                    let props = &request.properties;
                    let reply_to = props.reply_to().as_ref().expect("reply_to");
                    let id = props.correlation_id().clone().expect("id");
                    let reply = BasicProperties::default()
                        .with_content_type(JSON.into())
                        .with_correlation_id(id);
                    let (key, opts) = (reply_to.as_str(), BasicPublishOptions::default());
                    let publish =
                        publisher.basic_publish(EXCHANGE, key, opts, &request.data, reply);
                    let confirm = publish.await.expect("publish").await;
                    assert!(confirm.expect("confirm").is_ack(), "reply nacked");
                    let ack = request.ack(Default::default());
                    let _ = ack.await; // fails only when the bench stops
                });
            }
        });

        // Client: a reply queue bound under a uuid routing key.
        let (client, channel, publisher) = connect(url).await?;
        let (reply_key, queue) = reply_names();
        let opts = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let mut replies = consume(&channel, &queue, opts, &reply_key).await?;
        let pending = Pending::default();
        let waiting = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(reply)) = replies.next().await {
                let id = reply.properties.correlation_id().as_ref();
                dispatch(&waiting, id.map(|s| s.as_str()), reply.data);
                let ack = reply.acker.ack(Default::default());
                if ack.await.is_err() {
                    break; // the bench stopped
                }
            }
        });
        Ok(Bench::new(server, client, publisher, pending, reply_key))
    }

    impl Rpc for LapinBench {
        async fn call(&self) {
            round_trip(&self.pending, |id| async move {
                let props = BasicProperties::default()
                    .with_content_type(JSON.into())
                    .with_content_encoding("utf-8".into())
                    .with_delivery_mode(2)
                    .with_reply_to(self.reply_key.as_str().into())
                    .with_correlation_id(id.into());
                let opts = BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                };
                let publisher = &self.publisher;
                let publish = publisher.basic_publish(EXCHANGE, ROUTING_KEY, opts, BODY, props);
                let confirm = publish.await.expect("publish").await;
                confirm.expect("confirm").is_ack()
            })
            .await
        }

        async fn stop(self) {
            let _ = self.client.close(200, "bye").await;
            let _ = self.server.close(200, "bye").await;
        }
    }
}

mod with_amqprs {
    use super::*;
    use amqprs::callbacks::ChannelCallback;
    use amqprs::channel::*;
    use amqprs::connection::{Connection, OpenConnectionArguments};
    use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
    use std::collections::BTreeMap;
    use tokio::sync::mpsc::UnboundedReceiver;

    type Result<T> = std::result::Result<T, amqprs::error::Error>;
    type Confirms = Arc<Mutex<BTreeMap<u64, oneshot::Sender<bool>>>>;
    pub type AmqprsBench = Bench<Connection, Publisher>;

    /// A confirm-mode channel. amqprs has no confirm tracking of its own: delivery
    /// tags are counted here, under a lock so that they follow publish order.
    pub struct Publisher {
        channel: Channel,
        next_tag: tokio::sync::Mutex<u64>,
        confirms: Confirms,
    }

    impl Publisher {
        /// Publishes and waits for the broker's confirm: true for ack.
        async fn publish(
            &self,
            args: BasicPublishArguments,
            props: BasicProperties,
            body: Vec<u8>,
        ) -> bool {
            let (tx, rx) = oneshot::channel();
            {
                let mut next = self.next_tag.lock().await;
                self.confirms.lock().unwrap().insert(*next, tx);
                let publish = self.channel.basic_publish(props, body, args);
                publish.await.expect("publish");
                *next += 1;
            }
            rx.await.unwrap_or(false)
        }
    }

    /// Settles publishes as the broker acks or nacks them.
    struct ConfirmWatch(Confirms);

    impl ConfirmWatch {
        fn settle(&self, tag: u64, multiple: bool, ok: bool) {
            let mut confirms = self.0.lock().unwrap();
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
        async fn close(&mut self, _: &Channel, _: CloseChannel) -> Result<()> {
            Ok(())
        }
        async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<()> {
            Ok(())
        }
        async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool> {
            Ok(active)
        }
        async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
            self.settle(ack.delivery_tag(), ack.mutiple(), true);
        }
        async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
            self.settle(nack.delivery_tag(), nack.multiple(), false);
        }
        async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {
        }
    }

    /// A connection with a consuming channel and a confirm-mode publishing one.
    async fn connect(url: &str) -> Result<(Connection, Channel, Publisher)> {
        let conn = Connection::open(&OpenConnectionArguments::try_from(url)?).await?;
        let consume = conn.open_channel(None).await?;
        let channel = conn.open_channel(None).await?;
        let confirms = Confirms::default();
        let watch = ConfirmWatch(confirms.clone());
        channel.register_callback(watch).await?;
        channel.confirm_select(Default::default()).await?;
        let next_tag = tokio::sync::Mutex::new(1);
        let publisher = Publisher {
            channel,
            next_tag,
            confirms,
        };
        let mut args = ExchangeDeclareArguments::new(EXCHANGE, "topic");
        consume
            .exchange_declare(args.durable(true).finish())
            .await?;
        Ok((conn, consume, publisher))
    }

    /// Declares, binds and consumes `queue`.
    async fn consume(
        ch: &Channel,
        args: QueueDeclareArguments,
        key: &str,
    ) -> Result<UnboundedReceiver<ConsumerMessage>> {
        let queue = ch.queue_declare(args).await?.expect("queue.declare-ok").0;
        let bind = QueueBindArguments::new(&queue, EXCHANGE, key);
        ch.queue_bind(bind).await?;
        let consume = BasicConsumeArguments::new(&queue, "");
        Ok(ch.basic_consume_rx(consume).await?.1)
    }

    pub async fn start(url: &str) -> Result<AmqprsBench> {
        // Server: echoes each request to its reply_to, then acks it.
        let (server, channel, publisher) = connect(url).await?;
        let publisher = Arc::new(publisher);
        let qos = BasicQosArguments::new(0, PREFETCH, false);
        channel.basic_qos(qos).await?;
        let args = QueueDeclareArguments::durable_client_named(SERVER_QUEUE);
        let mut requests = consume(&channel, args, BINDING).await?;
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let (publisher, channel) = (publisher.clone(), channel.clone());
                tokio::spawn(async move {
                    let props = request.basic_properties.expect("properties");
                    let reply_to = props.reply_to().expect("reply_to");
                    let id = props.correlation_id().expect("id");
                    let reply = BasicProperties::default()
                        .with_content_type(JSON)
                        .with_correlation_id(id)
                        .finish();
                    let args = BasicPublishArguments::new(EXCHANGE, reply_to);
                    let body = request.content.expect("content");
                    let confirm = publisher.publish(args, reply, body).await;
                    assert!(confirm, "reply nacked");
                    let tag = request.deliver.expect("deliver").delivery_tag();
                    let ack = channel.basic_ack(BasicAckArguments::new(tag, false));
                    let _ = ack.await; // fails only when the bench stops
                });
            }
        });

        // Client: a reply queue bound under a uuid routing key.
        let (client, channel, publisher) = connect(url).await?;
        let (reply_key, queue) = reply_names();
        let mut args = QueueDeclareArguments::new(&queue);
        let args = args.exclusive(true).auto_delete(true).finish();
        let mut replies = consume(&channel, args, &reply_key).await?;
        let pending = Pending::default();
        let waiting = pending.clone();
        tokio::spawn(async move {
            while let Some(reply) = replies.recv().await {
                let props = reply.basic_properties.as_ref();
                let id = props.and_then(|p| p.correlation_id());
                let body = reply.content.unwrap_or_default();
                dispatch(&waiting, id.map(|s| s.as_str()), body);
                let tag = reply.deliver.expect("deliver").delivery_tag();
                let ack = channel.basic_ack(BasicAckArguments::new(tag, false));
                if ack.await.is_err() {
                    break; // the bench stopped
                }
            }
        });
        Ok(Bench::new(server, client, publisher, pending, reply_key))
    }

    impl Rpc for AmqprsBench {
        async fn call(&self) {
            round_trip(&self.pending, |id| async move {
                let props = BasicProperties::default()
                    .with_content_type(JSON)
                    .with_content_encoding("utf-8")
                    .with_delivery_mode(2)
                    .with_reply_to(&self.reply_key)
                    .with_correlation_id(&id)
                    .finish();
                let mut args = BasicPublishArguments::new(EXCHANGE, ROUTING_KEY);
                args.mandatory(true);
                let publisher = &self.publisher;
                publisher.publish(args, props, BODY.to_vec()).await
            })
            .await
        }

        async fn stop(self) {
            let _ = self.client.close().await;
            let _ = self.server.close().await;
        }
    }
}

/// `total` calls spread over `CONCURRENCY` tasks; returns calls/s.
async fn concurrent<R: Rpc>(rpc: &Arc<R>, total: usize) -> f64 {
    let issued = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (rpc, issued) = (rpc.clone(), issued.clone());
            tokio::spawn(async move {
                while issued.fetch_add(1, Ordering::Relaxed) < total {
                    rpc.call().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Rows of the table: what `round` measures, in order.
const FIGURES: [&str; 4] = [
    "sequential calls/s",
    "sequential p50 (µs)",
    "sequential p99 (µs)",
    "concurrency 64 calls/s",
];

/// Warms up, measures, and stops one client's bench.
async fn round<R: Rpc>(bench: R, n_seq: usize, n_c64: usize) -> [f64; 4] {
    let rpc = Arc::new(bench);
    concurrent(&rpc, WARMUP).await;
    let mut latencies = Vec::with_capacity(n_seq);
    let start = Instant::now();
    for _ in 0..n_seq {
        let t = Instant::now();
        rpc.call().await;
        latencies.push(t.elapsed());
    }
    let seq_cps = n_seq as f64 / start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((n_seq - 1) as f64 * p).round() as usize];
    let (p50, p99) = (pct(0.50).as_secs_f64(), pct(0.99).as_secs_f64());
    let figures = [seq_cps, p50 * 1e6, p99 * 1e6, concurrent(&rpc, n_c64).await];
    Arc::into_inner(rpc).expect("callers done").stop().await;
    figures
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn env_usize(name: &str, default: usize) -> usize {
    let value = std::env::var(name).ok();
    value.and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let url = std::env::var("AMQP_URL");
    let url = url.unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into());
    let n_seq = env_usize("BENCH_N_SEQ", 5000);
    let n_c64 = env_usize("BENCH_N_C64", 20000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (mut lapin, mut amqprs) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for r in 1..=ROUNDS {
            let bench = with_lapin::start(&url).await.expect("lapin setup");
            lapin.push(round(bench, n_seq, n_c64).await);
            eprintln!("round {r} lapin:  {:.0?}", lapin[r - 1]);
            let bench = with_amqprs::start(&url).await.expect("amqprs setup");
            amqprs.push(round(bench, n_seq, n_c64).await);
            eprintln!("round {r} amqprs: {:.0?}", amqprs[r - 1]);
        }
    });
    println!("Median of {ROUNDS} rounds; N = {n_seq} sequential, {n_c64} at concurrency 64.\n");
    println!("| figure | lapin | amqprs | amqprs/lapin |");
    println!("| --- | ---: | ---: | ---: |");
    for (i, name) in FIGURES.iter().enumerate() {
        let l = median(lapin.iter().map(|f| f[i]).collect());
        let a = median(amqprs.iter().map(|f| f[i]).collect());
        println!("| {name} | {l:.0} | {a:.0} | {:.2} |", a / l);
    }
}
