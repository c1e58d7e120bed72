//! RPC and events over RabbitMQ, side by side in one bounded run:
//!
//! * (a) a raw amqprs client and server doing Nameko's request-reply by hand
//!   (mandatory publish, publisher confirms on replies, ack after the reply);
//! * (b) a shimeji client calling a shimeji service;
//! * (c) Nameko's `ClusterRpcProxy` calling a Nameko service;
//! * (d) Nameko's `ClusterRpcProxy` calling the shimeji service;
//! * events with publisher confirms, (a) raw vs (b) `EventDispatcher`;
//! * idle RSS and start-to-first-reply of the greeter example vs `nameko run`.
//!
//! ```text
//! cargo bench --bench amqp                       # 3 rounds, medians
//! ROUNDS=5 CALLS=3000 CALLS64=20000 cargo bench --bench amqp
//! ```
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest); the Nameko contenders
//! need `interop/setup.sh` (run on first use). Each round runs every
//! contender, so noise hits all alike; figures are medians of the rounds.

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{BasicProperties, FieldTable};
use serde_json::{json, Value};
use shimeji::prelude::*;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const VHOST: &str = "shimeji-bench";

fn uri() -> String {
    format!("amqp://guest:guest@127.0.0.1:5672/{VHOST}")
}

mod common;

use common::{concurrent, env_usize, median, medians, sequential, Figures};

/// Sequential calls with per-call latency, then 64 in flight.
async fn measure<C, F, Fut>(calls: usize, calls64: usize, client: C, call: F) -> Figures
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = C> + Send,
{
    let (seq, p50, p99) = sequential(calls, || {
        let c = client.clone();
        async move {
            call(c).await;
        }
    })
    .await;
    let c64 = concurrent(calls64, client, call).await;
    Figures { seq, p50, p99, c64 }
}

// ---------------------------------------------------------------- (a) raw amqprs

async fn open(name: &str) -> Connection {
    let mut args = OpenConnectionArguments::try_from(uri().as_str()).expect("uri");
    args.connection_name(name);
    Connection::open(&args).await.expect("connect to RabbitMQ")
}

/// A confirm-mode channel whose confirms are matched to publishes by tag.
#[derive(Clone)]
struct ConfirmChannel {
    channel: Channel,
    state: Arc<tokio::sync::Mutex<u64>>,
    waiting: Arc<Mutex<std::collections::BTreeMap<u64, oneshot::Sender<()>>>>,
}

struct ConfirmCallback(Arc<Mutex<std::collections::BTreeMap<u64, oneshot::Sender<()>>>>);

#[async_trait::async_trait]
impl amqprs::callbacks::ChannelCallback for ConfirmCallback {
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
        let mut w = self.0.lock().unwrap();
        if ack.mutiple() {
            let rest = w.split_off(&(ack.delivery_tag() + 1));
            for (_, tx) in std::mem::replace(&mut *w, rest) {
                let _ = tx.send(());
            }
        } else if let Some(tx) = w.remove(&ack.delivery_tag()) {
            let _ = tx.send(());
        }
    }
    async fn publish_nack(&mut self, _: &Channel, _: amqprs::Nack) {}
    async fn publish_return(
        &mut self,
        _: &Channel,
        _: amqprs::Return,
        _: BasicProperties,
        _: Vec<u8>,
    ) {
    }
}

impl ConfirmChannel {
    async fn open(connection: &Connection) -> Self {
        let channel = connection.open_channel(None).await.unwrap();
        let waiting = Arc::new(Mutex::new(Default::default()));
        channel
            .register_callback(ConfirmCallback(waiting.clone()))
            .await
            .unwrap();
        channel
            .confirm_select(ConfirmSelectArguments::default())
            .await
            .unwrap();
        ConfirmChannel {
            channel,
            state: Arc::new(tokio::sync::Mutex::new(1)),
            waiting,
        }
    }

    async fn publish(
        &self,
        exchange: &str,
        key: &str,
        mandatory: bool,
        props: BasicProperties,
        body: Vec<u8>,
    ) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut next = self.state.lock().await;
        self.waiting.lock().unwrap().insert(*next, tx);
        *next += 1;
        let mut args = BasicPublishArguments::new(exchange, key);
        args.mandatory(mandatory);
        self.channel.basic_publish(props, body, args).await.unwrap();
        rx
    }
}

fn json_props(correlation_id: Option<&str>, reply_to: Option<&str>) -> BasicProperties {
    let mut p = BasicProperties::default();
    p.with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_delivery_mode(2)
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

/// The raw server: consume `rpc-rawecho`, reply with a confirm, then ack.
async fn raw_server() -> Connection {
    let connection = open("bench raw server").await;
    let publisher = ConfirmChannel::open(&connection).await;
    let channel = connection.open_channel(None).await.unwrap();
    channel
        .exchange_declare(
            ExchangeDeclareArguments::new("nameko-rpc", "topic")
                .durable(true)
                .finish(),
        )
        .await
        .unwrap();
    channel
        .queue_declare(
            QueueDeclareArguments::new("rpc-rawecho")
                .durable(true)
                .finish(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(QueueBindArguments::new(
            "rpc-rawecho",
            "nameko-rpc",
            "rawecho.*",
        ))
        .await
        .unwrap();
    channel
        .basic_qos(BasicQosArguments::new(0, 64, false))
        .await
        .unwrap();
    let (_, mut rx) = channel
        .basic_consume_rx(BasicConsumeArguments::new("rpc-rawecho", "").finish())
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let publisher = publisher.clone();
            let channel = channel.clone();
            tokio::spawn(async move {
                let (Some(deliver), Some(props), Some(body)) =
                    (msg.deliver, msg.basic_properties, msg.content)
                else {
                    return;
                };
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let reply =
                    serde_json::to_vec(&json!({"result": request["args"][0], "error": null}))
                        .unwrap();
                let to = props.reply_to().cloned().unwrap_or_default();
                let confirm = publisher
                    .publish(
                        "nameko-rpc",
                        &to,
                        false,
                        json_props(props.correlation_id().map(String::as_str), None),
                        reply,
                    )
                    .await;
                let _ = confirm.await;
                let _ = channel
                    .basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false))
                    .await;
            });
        }
    });
    connection
}

/// The raw client: one reply queue, replies matched by correlation id;
/// requests published `mandatory` on a plain channel, replies taken without
/// acks (what shimeji's client does).
#[derive(Clone)]
struct RawClient {
    publisher: ConfirmChannel,
    requests: Channel,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>,
    reply_key: Arc<str>,
}

impl RawClient {
    async fn connect(connection: &Connection) -> Self {
        let publisher = ConfirmChannel::open(connection).await;
        let requests = connection.open_channel(None).await.unwrap();
        let channel = connection.open_channel(None).await.unwrap();
        let reply_key: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        // The reply queue Nameko declares: durable, expiring 5 minutes after its last consumer.
        let queue = format!("rpc.reply-raw-{reply_key}");
        let mut expires = FieldTable::new();
        expires.insert(
            "x-expires".try_into().unwrap(),
            amqprs::FieldValue::I(300_000),
        );
        channel
            .queue_declare(
                QueueDeclareArguments::new(&queue)
                    .durable(true)
                    .arguments(expires)
                    .finish(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(QueueBindArguments::new(&queue, "nameko-rpc", &reply_key))
            .await
            .unwrap();
        let (_, mut rx) = channel
            .basic_consume_rx(BasicConsumeArguments::new(&queue, "").finish())
            .await
            .unwrap();
        let pending: Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>> = Arc::default();
        let p = pending.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let Some(d) = &msg.deliver {
                    let _ = channel
                        .basic_ack(BasicAckArguments::new(d.delivery_tag(), false))
                        .await;
                }
                let id = msg
                    .basic_properties
                    .as_ref()
                    .and_then(|p| p.correlation_id().cloned())
                    .unwrap_or_default();
                if let Some(tx) = p.lock().unwrap().remove(&id) {
                    let _ = tx.send(msg.content.unwrap_or_default());
                }
            }
        });
        RawClient {
            publisher,
            requests,
            pending,
            reply_key,
        }
    }

    async fn call(&self, value: &str) -> Value {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id.clone(), tx);
        let body = serde_json::to_vec(&json!({"args": [value], "kwargs": {}})).unwrap();
        let mut args = BasicPublishArguments::new("nameko-rpc", "rawecho.echo");
        args.mandatory(true);
        self.requests
            .basic_publish(json_props(Some(&id), Some(&self.reply_key)), body, args)
            .await
            .expect("publish the request");
        let reply = rx.await.expect("raw reply");
        serde_json::from_slice::<Value>(&reply).unwrap()["result"].take()
    }
}

// ---------------------------------------------------------------- (b) shimeji

#[derive(Default, Dependencies)]
struct BenchEcho;

#[service(name = "benchecho")]
impl BenchEcho {
    #[rpc]
    async fn echo(&self, value: Value) -> Value {
        value
    }
}

// ---------------------------------------------------------------- (c), (d) Nameko

fn interop_python() -> Result<String, String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/interop/setup.sh"))
        .output()
        .map_err(|e| format!("cannot run interop/setup.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "interop/setup.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string())
}

fn nameko_bench(
    python: &str,
    service: &str,
    calls: usize,
    calls64: usize,
) -> Result<Figures, String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(python)
        .arg(format!("{root}/interop/bench_nameko.py"))
        .arg(service)
        .env("AMQP_URI", uri())
        .env("CALLS", calls.to_string())
        .env("CALLS64", calls64.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .map_err(|e| format!("{e}: {text}"))?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Figures {
        seq: f("seq_calls_per_sec"),
        p50: f("seq_p50_us"),
        p99: f("seq_p99_us"),
        c64: f("c64_calls_per_sec"),
    })
}

fn nameko_run(python: &str, module: &str) -> Child {
    let root = env!("CARGO_MANIFEST_DIR");
    let nameko = std::path::Path::new(python).with_file_name("nameko");
    Command::new(nameko)
        .args(["run", "--config", "config.yaml", module])
        .current_dir(format!("{root}/interop"))
        .env("AMQP_URI", uri())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nameko run")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let own: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    own
}

/// Starts a greeter process, polls `greeter.hello` until it answers; returns
/// (time to first reply, idle RSS after a second).
async fn start_to_reply(client: &Client, mut child: Child) -> (Duration, u64) {
    let start = Instant::now();
    loop {
        let quick = client.with_timeout(Duration::from_millis(200));
        if quick
            .call("greeter", "hello", json!({"name": "Ada"}))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "greeter never answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    (took, rss)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        // `cargo test --benches` builds and runs this once; the bench needs a broker and --bench.
        println!("amqp bench: run with `cargo bench --bench amqp`");
        return;
    }
    let rounds = env_usize("ROUNDS", 3);
    let calls = env_usize("CALLS", 2_000);
    let calls64 = env_usize("CALLS64", 10_000);
    let events = env_usize("EVENTS", 3_000);
    let _ = Command::new("rabbitmqctl")
        .args(["add_vhost", VHOST])
        .output();
    let _ = Command::new("rabbitmqctl")
        .args(["set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"])
        .output();
    let python = match interop_python().and_then(|p| {
        if std::env::var("SKIP_NAMEKO").is_ok() {
            Err("SKIP_NAMEKO is set".to_string())
        } else {
            Ok(p)
        }
    }) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("Nameko contenders NOT MEASURED: {e}");
            None
        }
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Connections close from their destructors, which need the runtime.
    let _entered = rt.enter();
    let (raw_server, raw_client_conn, service, client_side) = rt.block_on(async {
        let raw_server = raw_server().await;
        let raw_client_conn = open("bench raw client").await;
        let service = ServiceRunner::with_config(
            Config::from_env()
                .set("AMQP_URI", uri())
                .set("max_workers", 64),
        )
        .service(BenchEcho)
        .start()
        .await
        .expect("shimeji service");
        let client_side = ServiceRunner::with_config(Config::from_env().set("AMQP_URI", uri()))
            .start()
            .await
            .expect("shimeji client");
        (raw_server, raw_client_conn, service, client_side)
    });
    let raw = rt.block_on(RawClient::connect(&raw_client_conn));
    let ours: BenchEchoClient = client_side.client();
    let nameko_services = python.as_ref().map(|p| nameko_run(p, "services"));
    std::thread::sleep(Duration::from_secs(if python.is_some() { 3 } else { 0 }));

    let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("round {round}: (a) raw");
        a.push(rt.block_on(measure(
            calls,
            calls64,
            raw.clone(),
            |r: RawClient| async move {
                std::hint::black_box(r.call("Ada").await);
                r
            },
        )));
        eprintln!("round {round}: (b) shimeji");
        b.push(rt.block_on(measure(
            calls,
            calls64,
            ours.clone(),
            |g: BenchEchoClient| async move {
                std::hint::black_box(g.echo(json!("Ada")).await.expect("shimeji call"));
                g
            },
        )));
        if let Some(py) = &python {
            match nameko_bench(py, "pybench", calls / 4, calls64 / 4) {
                Ok(f) => c.push(f),
                Err(e) => eprintln!("(c) failed: {e}"),
            }
            match nameko_bench(py, "benchecho", calls / 4, calls64 / 4) {
                Ok(f) => d.push(f),
                Err(e) => eprintln!("(d) failed: {e}"),
            }
        }
        eprintln!("round {round}: events");
        // Events with confirms, one after another.
        ea.push(rt.block_on(async {
            raw.publisher
                .channel
                .exchange_declare(
                    ExchangeDeclareArguments::new("benchecho.events", "topic")
                        .durable(true)
                        .finish(),
                )
                .await
                .expect("declare the events exchange");
            let start = Instant::now();
            for _ in 0..events {
                let confirm = raw
                    .publisher
                    .publish(
                        "benchecho.events",
                        "tick",
                        false,
                        json_props(None, None),
                        b"{\"n\": 1}".to_vec(),
                    )
                    .await;
                confirm.await.expect("confirm");
            }
            events as f64 / start.elapsed().as_secs_f64()
        }));
        eb.push(rt.block_on(async {
            let dispatcher = client_side.event_dispatcher("benchecho");
            let start = Instant::now();
            for _ in 0..events {
                dispatcher
                    .dispatch("tick", json!({"n": 1}))
                    .await
                    .expect("dispatch");
            }
            events as f64 / start.elapsed().as_secs_f64()
        }));
        eprintln!("round {round}/{rounds} done");
    }
    if let Some(mut child) = nameko_services {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }

    // Start-up and idle memory: the greeter example vs `nameko run` of the same service.
    let startup = rt.block_on(async {
        let client = client_side.dynamic_client();
        let root = env!("CARGO_MANIFEST_DIR");
        let build = Command::new("cargo")
            .args(["build", "--release", "--example", "greeter"])
            .current_dir(root)
            .status();
        let mut ours = None;
        if build.map(|s| s.success()).unwrap_or(false) {
            let exe = format!("{root}/target/release/examples/greeter");
            let child = Command::new(exe)
                .env("AMQP_URI", uri())
                .stdout(Stdio::null())
                .spawn()
                .expect("greeter");
            ours = Some(start_to_reply(&client, child).await);
        }
        let theirs = match &python {
            Some(py) => Some(start_to_reply(&client, nameko_run(py, "greeter")).await),
            None => None,
        };
        (ours, theirs)
    });

    let (a, b, c, d) = (medians(&a), medians(&b), medians(&c), medians(&d));
    println!("\nRPC over RabbitMQ, medians of {rounds} rounds ({calls} sequential calls, {calls64} with 64 in flight; Nameko runs a quarter of that)\n");
    println!("| contender | seq calls/s | p50 µs | p99 µs | c64 calls/s |");
    println!("|---|---:|---:|---:|---:|");
    let row = |name: &str, f: &Figures| {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
            f.seq, f.p50, f.p99, f.c64
        )
    };
    row("(a) raw amqprs client → raw server", &a);
    row("(b) shimeji client → shimeji service", &b);
    if python.is_some() {
        row("(c) Nameko ClusterRpcProxy → Nameko service", &c);
        row("(d) Nameko ClusterRpcProxy → shimeji service", &d);
    }
    println!("\n| ratio | sequential | 64 in flight | target |");
    println!("|---|---:|---:|---|");
    println!(
        "| (b) / (a) | {:.2} | {:.2} | ≥ 0.8 both |",
        b.seq / a.seq,
        b.c64 / a.c64
    );
    if python.is_some() {
        println!(
            "| (b) / (c) | {:.1} | {:.1} | ≥ 4 sequential, ≥ 20 with 64 in flight |",
            b.seq / c.seq,
            b.c64 / c.c64
        );
        println!(
            "| (d) / (c) | {:.1} | {:.1} | |",
            d.seq / c.seq,
            d.c64 / c.c64
        );
    }
    let (ea, eb) = (median(ea), median(eb));
    println!("\nevents with publisher confirms, one at a time: (a) raw {ea:.0}/s, (b) shimeji {eb:.0}/s, ratio {:.2}", eb / ea);
    let (ours, theirs) = startup;
    if let Some((t, rss)) = ours {
        println!(
            "greeter example: first reply {:.0} ms after start, idle RSS {:.1} MB",
            t.as_secs_f64() * 1e3,
            rss as f64 / 1024.0
        );
    }
    if let Some((t, rss)) = theirs {
        println!(
            "nameko run greeter: first reply {:.0} ms after start, idle RSS {:.1} MB",
            t.as_secs_f64() * 1e3,
            rss as f64 / 1024.0
        );
    }
    rt.block_on(async {
        service.stop().await;
        client_side.stop().await;
        let _ = raw_server.close().await;
    });
}
