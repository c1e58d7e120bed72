//! What a peer on the broker cannot do to a service: stall it with one slow
//! call, crash it with one message, or make it serve a request forever.
//! Each test fails without the fix it guards.

mod support;

use amqprs::channel::{BasicPublishArguments, Channel, ConsumerMessage, ExchangeDeclareArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{BasicProperties, FieldTable, FieldValue};
use serde_json::{json, Value};
use shimeji::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

fn uri() -> String {
    support::amqp_uri("amqp_hardening")
}

fn config() -> Config {
    Config::new().set("AMQP_URI", uri())
}

#[derive(Default, Dependencies)]
struct Lane {
    pings: Arc<AtomicUsize>,
}

/// Counts its runs. Its own service, so that no other test's instance
/// takes its requests (the attempts are counted per instance).
#[derive(Default, Dependencies)]
struct Counter {
    runs: Arc<AtomicUsize>,
}

#[service(name = "hardening_counter")]
impl Counter {
    #[rpc]
    async fn count(&self) -> usize {
        self.runs.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[service(name = "hardening_lane")]
impl Lane {
    #[rpc]
    async fn slow(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }

    #[rpc]
    async fn fast(&self, n: u64) -> u64 {
        n
    }

    #[rpc]
    async fn echo(&self, size: usize) -> String {
        "x".repeat(size)
    }

    #[event_handler("hardening_source", "ping")]
    async fn ping(&self, _payload: Value) {
        self.pings.fetch_add(1, Ordering::SeqCst);
    }
}

async fn start(service: impl Service, config: Config) -> RunningServices {
    ServiceRunner::with_config(config)
        .service(service)
        .start()
        .await
        .expect("the service starts on RabbitMQ")
}

/// A raw client: a connection, a channel, and an auto-delete queue
/// `raw-{key}` bound to the RPC exchange by `key`.
async fn raw_client(key: &str, arguments: FieldTable) -> (Connection, Channel) {
    support::raw_queue(
        &uri(),
        "raw test client",
        &format!("raw-{key}"),
        key,
        arguments,
    )
    .await
}

async fn consume(channel: &Channel, key: &str) -> UnboundedReceiver<ConsumerMessage> {
    support::consume_raw(channel, &format!("raw-{key}")).await
}

fn request_props(reply_to: &str, headers: Option<FieldTable>) -> BasicProperties {
    let mut props = support::request_props(reply_to, "corr-1");
    if let Some(headers) = headers {
        props.with_headers(headers);
    }
    props.finish()
}

/// Headers whose key `a` nests `depth` field tables.
fn deep_headers(depth: usize) -> FieldTable {
    let mut table = FieldTable::new();
    for _ in 0..depth {
        let mut outer = FieldTable::new();
        outer.insert("a".try_into().expect("name"), FieldValue::F(table));
        table = outer;
    }
    table
}

/// Publishes one message whose headers nest `depth` tables. Encoding (and
/// dropping) such a value recurses once per level, so it runs on a thread
/// of its own with a stack to match.
fn publish_deep(depth: usize, exchange: &'static str, routing_key: &'static str, reply_to: &str) {
    let uri = uri();
    let reply_to = reply_to.to_string();
    std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let args = OpenConnectionArguments::try_from(uri.as_str()).expect("uri");
                let connection = Connection::open(&args).await.expect("connection");
                let channel = connection.open_channel(None).await.expect("channel");
                channel
                    .exchange_declare(
                        ExchangeDeclareArguments::new(exchange, "topic")
                            .durable(true)
                            .finish(),
                    )
                    .await
                    .expect("exchange");
                let props = request_props(&reply_to, Some(deep_headers(depth)));
                channel
                    .basic_publish(
                        props,
                        br#"{"args": [], "kwargs": {"n": 1}}"#.to_vec(),
                        BasicPublishArguments::new(exchange, routing_key),
                    )
                    .await
                    .expect("publish");
                // let the frames go out before the connection closes
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = connection.close().await;
            });
        })
        .expect("thread")
        .join()
        .expect("the deep publisher ran");
}

/// Messages ready in the queues of this binary's vhost whose name starts with `prefix`.
fn ready(prefix: &str) -> u64 {
    support::queues(&uri())
        .into_iter()
        .filter(|(name, _, _)| name.starts_with(prefix))
        .map(|(_, ready, _)| ready)
        .sum()
}

/// A counter's value in the scrape, 0 when absent.
fn scraped(series: &str) -> u64 {
    support::sample(&shimeji::metrics::render(), series).map_or(0, |n| n as u64)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_slow_call_does_not_stall_the_fast_ones_behind_it() {
    let running = start(Lane::default(), config().set("max_workers", 4)).await;
    let lane: LaneClient = running.client();
    let slow = {
        let lane = lane.clone();
        tokio::spawn(async move { lane.slow(4_000).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // With max_workers 4 the prefetch is 4: were the finished fast calls
    // left unacked behind the slow one, the 4th would wait for it.
    let mut slowest = Duration::ZERO;
    for n in 0..12 {
        let started = Instant::now();
        assert_eq!(lane.fast(n).await.expect("fast call"), n);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        !slow.is_finished(),
        "the fast calls had to wait for the slow one (slowest fast call {slowest:?})"
    );
    eprintln!("12 fast calls behind a 4 s call: slowest {slowest:?}");
    assert_eq!(slow.await.expect("task").expect("slow call"), 4_000);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_with_headers_nested_5000_deep_gets_malformed_request_and_the_service_lives() {
    let running = start(Lane::default(), config()).await;
    let key = uuid::Uuid::new_v4().to_string();
    let (connection, channel) = raw_client(&key, FieldTable::new()).await;
    let mut replies = consume(&channel, &key).await;

    publish_deep(5_000, "nameko-rpc", "hardening_lane.fast", &key);

    let reply = tokio::time::timeout(Duration::from_secs(5), replies.recv())
        .await
        .expect("a reply within 5 s")
        .expect("a reply");
    let body: Value = serde_json::from_slice(&reply.content.expect("body")).expect("JSON");
    assert_eq!(body["error"]["exc_type"], "MalformedRequest", "{body}");
    assert!(
        body["error"]["value"]
            .as_str()
            .unwrap_or_default()
            .contains("headers"),
        "{body}"
    );
    assert_eq!(
        ready("rpc-hardening_lane"),
        0,
        "nothing left to crash the next instance"
    );
    let lane: LaneClient = running.client();
    assert_eq!(lane.fast(7).await.expect("still serving"), 7);
    let _ = connection.close().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_with_headers_nested_5000_deep_is_rejected_and_the_handler_lives() {
    let lane = Lane::default();
    let pings = lane.pings.clone();
    let running = start(lane, config()).await;
    let before = scraped(
        "shimeji_transport_messages_dropped_total{transport=\"amqp\",reason=\"malformed\"}",
    );

    publish_deep(5_000, "hardening_source.events", "ping", "unused");
    running
        .event_dispatcher("hardening_source")
        .dispatch("ping", json!({"n": 1}))
        .await
        .expect("a normal event");

    let deadline = Instant::now() + Duration::from_secs(5);
    while pings.load(Ordering::SeqCst) < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pings.load(Ordering::SeqCst), 1, "the normal event only");
    assert_eq!(
        ready("evt-hardening_source-ping"),
        0,
        "the deep one is rejected, not requeued"
    );
    let after = scraped(
        "shimeji_transport_messages_dropped_total{transport=\"amqp\",reason=\"malformed\"}",
    );
    assert_eq!(after, before + 1, "the rejection is counted");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_reply_is_never_confirmed_is_given_up_after_bounded_attempts() {
    let counter = Counter::default();
    let runs = counter.runs.clone();
    let running = start(counter, config()).await;
    let series =
        "shimeji_transport_messages_dropped_total{transport=\"amqp\",reason=\"reply_unconfirmed\"}";
    let before = scraped(series);
    // A reply queue that refuses every message: the broker nacks each reply.
    let key = uuid::Uuid::new_v4().to_string();
    let mut refuse = FieldTable::new();
    refuse.insert("x-max-length".try_into().expect("name"), FieldValue::l(0));
    refuse.insert(
        "x-overflow".try_into().expect("name"),
        FieldValue::S("reject-publish".try_into().expect("value")),
    );
    let (connection, channel) = raw_client(&key, refuse).await;
    channel
        .basic_publish(
            request_props(&key, None),
            br#"{"args": [], "kwargs": {}}"#.to_vec(),
            BasicPublishArguments::new("nameko-rpc", "hardening_counter.count"),
        )
        .await
        .expect("publish");

    let deadline = Instant::now() + Duration::from_secs(10);
    while scraped(series) == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempts = runs.load(Ordering::SeqCst);
    assert_eq!(
        attempts as u32,
        shimeji::transport::amqp::MAX_REPLY_ATTEMPTS,
        "served again a bounded number of times"
    );
    assert_eq!(scraped(series), before + 1, "the drop is counted");
    assert_eq!(ready("rpc-hardening_counter"), 0, "the request is gone");
    // and the service still answers others
    let counter: CounterClient = running.client();
    assert_eq!(counter.count().await.expect("still serving"), attempts + 1);
    let _ = connection.close().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_over_the_callers_size_limit_fails_the_call_clearly() {
    let service = start(Lane::default(), config()).await;
    #[derive(Default, Dependencies)]
    struct Idle;
    #[service(name = "hardening_idle")]
    impl Idle {
        #[rpc]
        async fn nothing(&self) {}
    }
    let caller = ServiceRunner::with_config(config().set("max_message_size", 1024))
        .service(Idle)
        .start()
        .await
        .expect("caller starts");
    let lane: LaneClient = caller.client();
    assert_eq!(lane.echo(100).await.expect("small reply").len(), 100);
    let err = lane.echo(8_192).await.expect_err("reply over the limit");
    assert!(matches!(err, CallError::Decode(_)), "{err:?}");
    assert!(err.to_string().contains("over the limit"), "{err}");
    assert_eq!(lane.echo(10).await.expect("still calling").len(), 10);
    caller.stop().await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_with_headers_nested_5000_deep_does_not_kill_the_caller() {
    let service = start(Lane::default(), config()).await;
    #[derive(Default, Dependencies)]
    struct Caller;
    #[service(name = "hardening_caller")]
    impl Caller {
        #[rpc]
        async fn nothing(&self) {}
    }
    let caller = ServiceRunner::with_config(config())
        .service(Caller)
        .start()
        .await
        .expect("caller starts");
    let lane: LaneClient = caller.client();
    assert_eq!(lane.fast(1).await.expect("a first call"), 1);
    // The caller's reply queue is bound to the RPC exchange by its reply key.
    let vhost = support::vhost(&uri());
    let bindings = support::ctl(&[
        "list_bindings",
        "-q",
        "-p",
        &vhost,
        "destination_name",
        "routing_key",
    ]);
    let key = bindings
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(queue, _)| queue.starts_with("rpc.reply-hardening_caller-"))
        .map(|(_, key)| key.to_string())
        .expect("the caller's reply queue");
    let key: &'static str = Box::leak(key.into_boxed_str());
    publish_deep(5_000, "nameko-rpc", key, "unused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lane.fast(2).await.expect("the caller lives and calls"), 2);
    caller.stop().await;
    service.stop().await;
}

/// Deletes the test's broker user whatever happens.
struct UserGuard(String);

impl Drop for UserGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_with_reserved_characters_works_percent_encoded() {
    let uri = uri();
    let vhost = support::vhost(&uri);
    let user = format!("hardening-{}", std::process::id());
    let password = "Sx1/Ty2@Uz3:Vw4%Xq5";
    let _guard = UserGuard(user.clone());
    let _ = std::process::Command::new("rabbitmqctl")
        .args(["delete_user", &user])
        .output();
    support::ctl(&["add_user", &user, password]);
    support::ctl(&["set_permissions", "-p", &vhost, &user, ".*", ".*", ".*"]);
    let encoded = "Sx1%2FTy2%40Uz3%3AVw4%25Xq5";
    let config = Config::new().set(
        "AMQP_URI",
        format!("amqp://{user}:{encoded}@127.0.0.1:5672/{vhost}"),
    );
    let running = start(Lane::default(), config).await;
    let lane: LaneClient = running.client();
    assert_eq!(lane.fast(5).await.expect("a call as that user"), 5);
    running.stop().await;
}
