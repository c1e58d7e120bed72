//! The AMQP transport against a real RabbitMQ: the same services as on the
//! embedded transport, selected by configuration only.

mod support;

use amqprs::channel::BasicPublishArguments;
use amqprs::connection::Connection;
use amqprs::BasicProperties;
use serde_json::{json, Value};
use shimeji::context::{self, WorkerContext};
use shimeji::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn uri() -> String {
    support::amqp_uri("amqp")
}

fn config() -> Config {
    Config::new().set("AMQP_URI", uri())
}

#[derive(Debug, thiserror::Error, Exception)]
#[exception(module = "calc")]
enum CalcError {
    #[error("cannot divide {0} by zero")]
    DivideByZero(i64),
}

#[derive(Default, Dependencies)]
struct Calc {
    events: EventDispatcher,
}

#[service(name = "amqp_calc")]
impl Calc {
    #[rpc]
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        if b == 0 {
            return Err(CalcError::DivideByZero(a));
        }
        Ok(a / b)
    }

    #[rpc]
    async fn whoami(&self) -> Value {
        let ctx = context::current().expect("worker context");
        json!({
            "stack": ctx.call_id_stack(),
            "data": ctx.data_map(),
            "trace_id": ctx.trace_id(),
            "span_id": ctx.span_id(),
            "parent_span_id": ctx.parent_span_id(),
        })
    }

    #[rpc]
    async fn shout(&self, word: String) -> Result<String, DispatchError> {
        self.events
            .dispatch("shouted", json!({ "word": word }))
            .await?;
        Ok(word.to_uppercase())
    }

    #[rpc]
    async fn sleep(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }
}

async fn start_calc() -> RunningServices {
    ServiceRunner::with_config(config())
        .service(Calc::default())
        .start()
        .await
        .expect("calc starts on RabbitMQ")
}

#[tokio::test]
async fn the_same_service_runs_over_rabbitmq_by_configuration() {
    let running = start_calc().await;
    assert_eq!(running.transport().name(), "amqp");
    let calc: CalcClient = running.client();
    assert_eq!(calc.div(84, 2).await.unwrap(), 42);
    let client = running.dynamic_client();
    assert_eq!(
        client
            .call("amqp_calc", "div", json!([9, 3]))
            .await
            .unwrap(),
        json!(3)
    );
    assert_eq!(
        client
            .call("amqp_calc", "div", json!({"a": 9, "b": 3}))
            .await
            .unwrap(),
        json!(3)
    );

    let err = calc.div(1, 0).await.unwrap_err();
    assert!(err.is("DivideByZero"), "{err:?}");
    let remote = err.remote().unwrap();
    assert_eq!(remote.exc_path, "calc.DivideByZero");
    assert_eq!(remote.value, "cannot divide 1 by zero");

    let err = client
        .call("amqp_calc", "nope", json!([]))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::MethodNotFound(_)), "{err:?}");
    let err = client
        .call("amqp_calc", "div", json!([1]))
        .await
        .unwrap_err();
    assert_eq!(
        err.remote().unwrap().value,
        "div() missing 1 required positional argument: 'b'"
    );

    let err = calc
        .with_timeout(Duration::from_millis(100))
        .sleep(2_000)
        .await
        .unwrap_err();
    assert!(err.is("Timeout"), "{err:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_workers_dispatching_at_once_on_a_fresh_connection() {
    // The first events of a connection declare their exchange: concurrent
    // first dispatches must not trip over each other.
    let running = start_calc().await;
    let calc: CalcClient = running.client();
    let calls: Vec<_> = (0..30).map(|i| calc.shout(format!("w{i}"))).collect();
    for (i, result) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(result.unwrap(), format!("W{i}"));
    }
    assert!(matches!(running.transport().name(), "amqp"));
    running.stop().await;
}

#[tokio::test]
async fn unknown_service_fails_at_once_not_at_the_timeout() {
    let running = ServiceRunner::with_config(config()).start().await.unwrap();
    let client = running
        .dynamic_client()
        .with_timeout(Duration::from_secs(20));
    let started = Instant::now();
    let err = client
        .call("amqp_nosuchsvc", "go", json!([]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::UnknownService(s) if s == "amqp_nosuchsvc"),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    running.stop().await;
}

#[tokio::test]
async fn context_travels_in_nameko_headers() {
    let running = start_calc().await;
    let calc: CalcClient = running.client();
    let root = WorkerContext::root()
        .with_data("user_id", "u-7")
        .with_data("language", "de");
    let seen = context::scope(root, calc.whoami()).await.unwrap();
    let stack = seen["stack"].as_array().unwrap();
    assert_eq!(stack.len(), 1);
    assert!(stack[0].as_str().unwrap().starts_with("amqp_calc.whoami."));
    assert_eq!(seen["data"]["user_id"], "u-7");
    assert_eq!(seen["data"]["language"], "de");
    running.stop().await;
}

/// The first hop of a chain hop → calc, over the broker.
#[derive(Default, Dependencies)]
struct Hop {
    calc: CalcClient,
}

#[service(name = "amqp_hop")]
impl Hop {
    #[rpc]
    async fn go(&self) -> Result<Value, CallError> {
        let ctx = context::current().expect("worker context");
        Ok(json!({
            "trace_id": ctx.trace_id(),
            "span_id": ctx.span_id(),
            "parent_span_id": ctx.parent_span_id(),
            "next": self.calc.whoami().await?,
        }))
    }
}

#[tokio::test]
async fn trace_context_travels_in_the_traceparent_header() {
    use shimeji::trace::TraceParent;
    let running = ServiceRunner::with_config(config())
        .service(Calc::default())
        .service(Hop::default())
        .start()
        .await
        .unwrap();
    let hop: HopClient = running.client();
    let given =
        TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
    let root = WorkerContext::root().with_trace_parent(given);
    let seen = context::scope(root, hop.go()).await.unwrap();
    assert_eq!(
        seen["trace_id"], "0af7651916cd43dd8448eb211c80319c",
        "{seen}"
    );
    assert_eq!(seen["parent_span_id"], "b7ad6b7169203331", "{seen}");
    assert_eq!(seen["next"]["trace_id"], seen["trace_id"], "{seen}");
    assert_eq!(seen["next"]["parent_span_id"], seen["span_id"], "{seen}");
    assert!(
        seen["next"]["data"].get("traceparent").is_none(),
        "trace context is not context data: {seen}"
    );
    running.stop().await;
}

support::event_log_service!(
    PoolListener,
    "amqp_pool",
    "pool",
    on_shouted,
    "amqp_calc",
    "shouted"
);
support::event_log_service!(
    SingleListener,
    "amqp_single",
    "singleton",
    on_shouted,
    "amqp_calc",
    "shouted",
    handler_type = "singleton"
);
support::event_log_service!(
    SingleListener2,
    "amqp_single2",
    "singleton",
    on_shouted,
    "amqp_calc",
    "shouted",
    handler_type = "singleton"
);
support::event_log_service!(
    BroadcastListener,
    "amqp_broadcast",
    "broadcast",
    on_shouted,
    "amqp_calc",
    "shouted",
    handler_type = "broadcast"
);

#[tokio::test]
async fn events_follow_each_handler_type_across_instances() {
    let log: support::EventLog = Arc::default();
    let mut runner = ServiceRunner::with_config(config()).service(Calc::default());
    for instance in 0..2 {
        runner = runner
            .service(PoolListener {
                instance,
                log: log.clone(),
            })
            .service(SingleListener {
                instance,
                log: log.clone(),
            })
            .service(SingleListener2 {
                instance,
                log: log.clone(),
            })
            .service(BroadcastListener {
                instance,
                log: log.clone(),
            });
    }
    let running = runner.start().await.unwrap();
    let calc: CalcClient = running.client();
    for word in ["a", "b", "c", "d"] {
        calc.shout(word.into()).await.unwrap();
    }
    // 4 events: pool once each, singleton once each in the cluster, broadcast twice each.
    let expected = 4 + 4 + 8;
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.lock().unwrap().len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = log.lock().unwrap().clone();
    let count = |kind: &str, word: &str| {
        seen.iter()
            .filter(|(k, _, p)| *k == kind && p["word"] == word)
            .count()
    };
    for word in ["a", "b", "c", "d"] {
        assert_eq!(count("pool", word), 1, "{seen:?}");
        assert_eq!(count("singleton", word), 1, "{seen:?}");
        assert_eq!(count("broadcast", word), 2, "{seen:?}");
    }
    for instance in 0..2 {
        assert!(seen
            .iter()
            .any(|(k, i, _)| *k == "broadcast" && *i == instance));
    }
    running.stop().await;
}

/// A connection of a raw client, with an auto-delete queue `queue` bound to
/// the RPC exchange by `key` and consumed without acks.
async fn listen(
    name: &str,
    queue: &str,
    key: &str,
) -> (
    Connection,
    amqprs::channel::Channel,
    tokio::sync::mpsc::UnboundedReceiver<amqprs::channel::ConsumerMessage>,
) {
    let (connection, channel) =
        support::raw_queue(&uri(), name, queue, key, amqprs::FieldTable::new()).await;
    let rx = support::consume_raw(&channel, queue).await;
    (connection, channel, rx)
}

/// Publishes a raw request to `amqp_calc` and waits for a reply on a queue
/// of its own; `None` when no reply comes within a second.
async fn raw_request(props: BasicProperties, body: Vec<u8>) -> Option<Value> {
    let key = uuid::Uuid::new_v4().to_string();
    let (connection, channel, mut rx) =
        listen("raw test client", &format!("raw-{key}"), &key).await;
    let mut props = props;
    if props.reply_to().map(String::as_str) == Some("REPLY") {
        props.with_reply_to(&key);
    }
    channel
        .basic_publish(
            props,
            body,
            BasicPublishArguments::new("nameko-rpc", "amqp_calc.div"),
        )
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .ok()
        .flatten();
    let _ = connection.close().await;
    reply.and_then(|m| serde_json::from_slice(&m.content?).ok())
}

fn props(content_type: Option<&str>, reply_to: bool) -> BasicProperties {
    let mut p = BasicProperties::default();
    if let Some(ct) = content_type {
        p.with_content_type(ct);
    }
    p.with_correlation_id("corr-1");
    if reply_to {
        p.with_reply_to("REPLY");
    }
    p.finish()
}

#[tokio::test]
async fn bad_input_on_the_wire_is_answered_or_rejected_and_the_service_keeps_serving() {
    let running = ServiceRunner::with_config(config().set("max_message_size", 1024))
        .service(Calc::default())
        .start()
        .await
        .unwrap();
    let malformed = |reply: Option<Value>| {
        let reply = reply.expect("a MalformedRequest reply");
        assert_eq!(reply["error"]["exc_type"], "MalformedRequest", "{reply}");
        reply["error"]["value"].as_str().unwrap().to_string()
    };
    // Not JSON.
    let why = malformed(
        raw_request(
            props(Some("application/json"), true),
            b"{\"args\": [1,".to_vec(),
        )
        .await,
    );
    assert!(why.contains("not valid JSON"), "{why}");
    // JSON that is not a request body.
    let why =
        malformed(raw_request(props(Some("application/json"), true), b"[1, 2]".to_vec()).await);
    assert!(why.contains("args"), "{why}");
    // A content type shimeji does not read (Nameko's pickle).
    let why = malformed(
        raw_request(
            props(Some("application/x-python-serialize"), true),
            b"\x80\x04".to_vec(),
        )
        .await,
    );
    assert!(why.contains("content type"), "{why}");
    // Over the size limit.
    let big = serde_json::to_vec(&json!({"args": ["x".repeat(4096)], "kwargs": {}})).unwrap();
    let why = malformed(raw_request(props(Some("application/json"), true), big).await);
    assert!(why.contains("over the limit"), "{why}");
    // No reply_to: nowhere to answer; rejected, not requeued forever.
    let none = raw_request(
        props(Some("application/json"), false),
        b"{\"args\": [4, 2], \"kwargs\": {}}".to_vec(),
    )
    .await;
    assert!(none.is_none());
    // Other tests' calls to amqp_calc (a 2 s `sleep`) may be in the queue
    // for a while; the rejected message must not stay there.
    if let Err(left) = support::until_empty(&uri(), "rpc-amqp_calc", Duration::from_secs(15)).await
    {
        panic!("the message must not stay in the queue: {left:?}");
    }
    // A request without a content type is read as JSON, Nameko's default.
    let reply = raw_request(
        props(None, true),
        b"{\"args\": [4, 2], \"kwargs\": {}}".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(reply["result"], 2);
    // And the service still serves.
    let calc: CalcClient = running.client();
    assert_eq!(calc.div(10, 5).await.unwrap(), 2);
    running.stop().await;
}

#[tokio::test]
async fn each_connection_names_its_service() {
    let running = start_calc().await;
    let vhost = support::vhost(&uri());
    let listing = support::ctl(&["list_connections", "-q", "vhost", "client_properties"]);
    let mine: Vec<&str> = listing.lines().filter(|l| l.starts_with(&vhost)).collect();
    assert!(
        mine.iter().any(|l| l.contains("shimeji amqp_calc")),
        "{listing}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_failed_connection_never_shows_the_password() {
    let bad = uri().replace("guest:guest", "guest:hunter2-secret");
    let err = ServiceRunner::with_config(Config::new().set("AMQP_URI", bad))
        .service(Calc::default())
        .start()
        .await
        .err()
        .expect("a wrong password fails the start");
    let message = err.to_string();
    assert!(message.contains("guest:***@"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

/// Requests are persistent (delivery mode 2) as Nameko sends them, unless
/// `persistent_requests: false`.
#[tokio::test]
async fn request_delivery_mode_follows_persistent_requests() {
    // A queue standing in for service `amqp_probe`, so requests are routed.
    let (connection, channel, mut rx) = listen("probe", "rpc-amqp_probe", "amqp_probe.*").await;
    for (persistent, mode) in [(None, 2), (Some(false), 1), (Some(true), 2)] {
        let mut config = config();
        if let Some(p) = persistent {
            config = config.set("persistent_requests", p);
        }
        let running = ServiceRunner::with_config(config).start().await.unwrap();
        let client = running
            .dynamic_client()
            .with_timeout(Duration::from_millis(300));
        // Nobody answers: the call times out; the request is what matters.
        let _ = client.call("amqp_probe", "go", json!([])).await;
        let message = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the request reached the probe queue")
            .unwrap();
        let props = message.basic_properties.unwrap();
        assert_eq!(
            props.delivery_mode(),
            Some(mode),
            "persistent_requests = {persistent:?}"
        );
        running.stop().await;
    }
    let _ = channel.close().await;
    let _ = connection.close().await;
}

#[derive(Default, Dependencies)]
struct Acks;

#[service(name = "amqp_acks")]
impl Acks {
    #[rpc]
    async fn echo(&self, n: u64) -> u64 {
        // Finish out of order, so acks cannot simply follow the tags.
        tokio::time::sleep(Duration::from_millis(n % 7)).await;
        n
    }
}

/// Acks go out several at a time: every request is acked in the end, while
/// the service keeps running, even when the work finishes out of order.
#[tokio::test(flavor = "multi_thread")]
async fn every_request_is_acked_while_the_service_runs() {
    let running = ServiceRunner::with_config(config().set("max_workers", 16))
        .service(Acks)
        .start()
        .await
        .unwrap();
    let acks: AcksClient = running.client();
    let calls: Vec<_> = (0..300).map(|n| acks.echo(n)).collect();
    for (n, result) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(result.unwrap(), n as u64);
    }
    if let Err(left) = support::until_empty(&uri(), "rpc-amqp_acks", Duration::from_secs(10)).await
    {
        panic!("rpc-amqp_acks still holds {left:?} messages (unacked) 10 s after the last reply");
    }
    running.stop().await;
}

#[derive(Dependencies)]
struct AmqpSingleReliable;
#[service(name = "amqp_single_reliable")]
impl AmqpSingleReliable {
    #[event_handler("amqp_shop", "sold", handler_type = "singleton")]
    async fn handle(&self, _payload: Value) {}
}

#[derive(Dependencies)]
struct AmqpSingleUnreliable;
#[service(name = "amqp_single_unreliable")]
impl AmqpSingleUnreliable {
    #[event_handler(
        "amqp_shop",
        "sold",
        handler_type = "singleton",
        reliable_delivery = false
    )]
    async fn handle(&self, _payload: Value) {}
}

/// The broker refuses a queue declared again with other settings (reply
/// code 406): the start fails with a conflict that names the queue.
#[tokio::test]
async fn a_queue_declared_with_other_settings_is_a_conflict_named_by_the_broker() {
    let first = ServiceRunner::with_config(config())
        .service(AmqpSingleReliable)
        .start()
        .await
        .expect("the first declaration starts");
    let err = ServiceRunner::with_config(config())
        .service(AmqpSingleUnreliable)
        .start()
        .await
        .err()
        .expect("the second declaration must be refused");
    first.stop().await;
    let message = err.to_string();
    assert!(
        message.contains("evt-amqp_shop-sold") && message.contains("conflicts"),
        "a conflict naming the queue, got: {message}"
    );
    assert!(
        matches!(
            &err,
            StartError::Transport {
                source: shimeji::transport::TransportError::Conflict { .. },
                ..
            }
        ),
        "{err:?}"
    );
}
