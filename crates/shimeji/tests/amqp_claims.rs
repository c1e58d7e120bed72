//! What the README promises of the AMQP transport, each observed on the
//! broker: reply delivery modes (`persistent_replies`), a custom
//! `rpc_exchange`, the negotiated heartbeat, publisher confirms on replies
//! and events, reliable delivery of events while a handler is down, and a
//! virtual host of each test run's own.

mod support;

use amqprs::channel::{
    BasicPublishArguments, ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{BasicProperties, FieldTable};
use serde_json::{json, Value};
use shimeji::prelude::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn uri() -> String {
    support::amqp_uri("amqp_claims")
}

fn config() -> Config {
    Config::new().set("AMQP_URI", uri())
}

#[derive(Dependencies)]
struct Echo;

#[service(name = "claims_echo")]
impl Echo {
    #[rpc]
    async fn echo(&self, n: u64) -> u64 {
        n
    }
}

/// Publishes a raw request to `claims_echo.echo` and returns the reply's
/// properties, read from a queue of its own bound to `nameko-rpc`.
async fn raw_reply_properties() -> BasicProperties {
    let key = uuid::Uuid::new_v4().to_string();
    let queue = format!("claims-reply-{key}");
    let (connection, channel) =
        support::raw_queue(&uri(), "claims raw client", &queue, &key, FieldTable::new()).await;
    let mut rx = support::consume_raw(&channel, &queue).await;
    let mut props = BasicProperties::default();
    props
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_correlation_id("claims-1")
        .with_reply_to(&key);
    channel
        .basic_publish(
            props.finish(),
            br#"{"args": [7], "kwargs": {}}"#.to_vec(),
            BasicPublishArguments::new("nameko-rpc", "claims_echo.echo"),
        )
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a reply within 10 s")
        .expect("the reply consumer is open");
    let body: Value = serde_json::from_slice(reply.content.as_deref().unwrap_or_default()).unwrap();
    assert_eq!(body, json!({"result": 7, "error": null}));
    let _ = connection.close().await;
    reply.basic_properties.expect("reply properties")
}

/// Replies are transient by default; `persistent_replies: true` makes them
/// persistent, as Nameko sends them.
#[tokio::test]
async fn reply_delivery_mode_follows_persistent_replies() {
    for (persistent, mode) in [(None, 1), (Some(false), 1), (Some(true), 2)] {
        let mut config = config();
        if let Some(p) = persistent {
            config = config.set("persistent_replies", p);
        }
        let running = ServiceRunner::with_config(config)
            .service(Echo)
            .start()
            .await
            .unwrap();
        let props = raw_reply_properties().await;
        assert_eq!(
            props.delivery_mode(),
            Some(mode),
            "persistent_replies = {persistent:?}"
        );
        assert_eq!(props.correlation_id().map(String::as_str), Some("claims-1"));
        running.stop().await;
    }
}

#[derive(Dependencies)]
struct Exchanged;

#[service(name = "claims_exchanged")]
impl Exchanged {
    #[rpc]
    async fn double(&self, n: u64) -> u64 {
        n * 2
    }
}

/// `rpc_exchange` moves requests and replies to another exchange: a service
/// and a client configured with it talk, and the service's queue is bound
/// to that exchange only.
#[tokio::test]
async fn a_custom_rpc_exchange_works_end_to_end() {
    let config = config().set("rpc_exchange", "claims-rpc");
    let service = ServiceRunner::with_config(config.clone())
        .service(Exchanged)
        .start()
        .await
        .unwrap();
    let caller = ServiceRunner::with_config(config).start().await.unwrap();
    let client = caller
        .dynamic_client()
        .with_timeout(Duration::from_secs(10));
    assert_eq!(
        client
            .call("claims_exchanged", "double", json!([21]))
            .await
            .unwrap(),
        json!(42)
    );
    let vhost = support::vhost(&uri());
    let bindings = support::ctl(&[
        "list_bindings",
        "-q",
        "-p",
        &vhost,
        "source_name",
        "destination_name",
        "routing_key",
    ]);
    let to_queue: Vec<&str> = bindings
        .lines()
        .filter(|l| l.contains("\trpc-claims_exchanged\t"))
        .collect();
    assert!(
        to_queue.contains(&"claims-rpc\trpc-claims_exchanged\tclaims_exchanged.*"),
        "{bindings}"
    );
    assert!(
        !to_queue.iter().any(|l| l.starts_with("nameko-rpc\t")),
        "{bindings}"
    );
    // A client on the default exchange does not reach it.
    let plain = ServiceRunner::with_config(Config::new().set("AMQP_URI", uri()))
        .start()
        .await
        .unwrap();
    let err = plain
        .dynamic_client()
        .with_timeout(Duration::from_secs(5))
        .call("claims_exchanged", "double", json!([1]))
        .await
        .unwrap_err();
    assert!(err.is("UnknownService") || err.is("Timeout"), "{err:?}");
    plain.stop().await;
    caller.stop().await;
    service.stop().await;
}

#[derive(Dependencies)]
struct Beating;

#[service(name = "claims_heartbeat")]
impl Beating {
    #[rpc]
    async fn ping(&self) {}
}

/// The broker's view of this run's connections of `service`: their
/// negotiated heartbeat (`timeout`, seconds) and their pid.
fn connections_of(service: &str) -> Vec<(u64, String)> {
    let vhost = support::vhost(&uri());
    let listing = support::ctl(&[
        "list_connections",
        "-q",
        "vhost",
        "timeout",
        "pid",
        "client_properties",
    ]);
    let name = format!("shimeji {service} (pid {})", std::process::id());
    listing
        .lines()
        .filter(|l| l.starts_with(&format!("{vhost}\t")) && l.contains(&name))
        .filter_map(|l| {
            let mut parts = l.split('\t').skip(1);
            Some((
                parts.next()?.trim().parse().ok()?,
                parts.next()?.to_string(),
            ))
        })
        .collect()
}

/// `HEARTBEAT` (default 60) is what the broker negotiates with each
/// connection.
#[tokio::test]
async fn the_heartbeat_is_negotiated() {
    for (heartbeat, expected) in [(None, 60), (Some(7), 7)] {
        let mut config = config();
        if let Some(h) = heartbeat {
            config = config.set("HEARTBEAT", h);
        }
        let running = ServiceRunner::with_config(config)
            .service(Beating)
            .start()
            .await
            .unwrap();
        let connections = connections_of("claims_heartbeat");
        assert!(!connections.is_empty(), "no connection of claims_heartbeat");
        for (timeout, _) in &connections {
            assert_eq!(*timeout, expected, "HEARTBEAT = {heartbeat:?}");
        }
        running.stop().await;
        // Gone before the next round looks.
        let closed = Instant::now();
        while !connections_of("claims_heartbeat").is_empty() {
            assert!(closed.elapsed() < Duration::from_secs(10), "still open");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[derive(Default, Dependencies)]
struct Announcer {
    events: EventDispatcher,
}

#[service(name = "claims_announcer")]
impl Announcer {
    #[rpc]
    async fn announce(&self, n: u64) -> Result<u64, DispatchError> {
        self.events.dispatch("announced", json!({ "n": n })).await?;
        Ok(n)
    }
}

/// Replies and events go out on confirm-mode channels, and an event the
/// broker refuses (`nack`: its only queue is full, `reject-publish`) fails
/// the dispatch instead of vanishing.
#[tokio::test]
async fn replies_and_events_wait_for_publisher_confirms() {
    let vhost = support::vhost(&uri());
    support::ctl(&[
        "set_policy",
        "-p",
        &vhost,
        "claims-full",
        "^claims-full$",
        r#"{"max-length": 0, "overflow": "reject-publish"}"#,
        "--apply-to",
        "queues",
    ]);
    let running = ServiceRunner::with_config(config())
        .service(Announcer::default())
        .start()
        .await
        .unwrap();
    let client = running
        .dynamic_client()
        .with_timeout(Duration::from_secs(10));
    // No queue bound to the events: the event is confirmed (unroutable, not
    // refused), the reply too.
    assert_eq!(
        client
            .call("claims_announcer", "announce", json!([1]))
            .await
            .unwrap(),
        json!(1)
    );

    // Every channel of the service's connection that publishes is in confirm mode.
    let pids: Vec<String> = connections_of("claims_announcer")
        .into_iter()
        .map(|(_, pid)| pid)
        .collect();
    assert!(!pids.is_empty(), "no connection of claims_announcer");
    let channels = support::ctl(&["list_channels", "-q", "connection", "confirm"]);
    let confirming = channels
        .lines()
        .filter(|l| pids.iter().any(|p| l.starts_with(&format!("{p}\t"))))
        .filter(|l| l.ends_with("\ttrue"))
        .count();
    assert!(confirming >= 1, "no confirm-mode channel: {channels}");

    // A full queue with `reject-publish` makes the broker nack the event.
    let args = OpenConnectionArguments::try_from(uri().as_str()).unwrap();
    let connection = Connection::open(&args).await.unwrap();
    let channel = connection.open_channel(None).await.unwrap();
    channel
        .exchange_declare(
            ExchangeDeclareArguments::new("claims_announcer.events", "topic")
                .durable(true)
                .finish(),
        )
        .await
        .unwrap();
    channel
        .queue_declare(QueueDeclareArguments::new("claims-full").finish())
        .await
        .unwrap();
    channel
        .queue_bind(QueueBindArguments::new(
            "claims-full",
            "claims_announcer.events",
            "announced",
        ))
        .await
        .unwrap();
    let err = client
        .call("claims_announcer", "announce", json!([2]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("refused") || err.to_string().contains("nack"),
        "the refused event fails the dispatch: {err:?}"
    );
    // And a dispatcher outside any service sees the same.
    let outside = running
        .event_dispatcher("claims_announcer")
        .dispatch("announced", json!({"n": 3}))
        .await;
    assert!(outside.is_err(), "{outside:?}");
    let _ = connection.close().await;
    running.stop().await;
}

/// Payloads the reliable handler has received.
static HEARD: Mutex<Vec<Value>> = Mutex::new(Vec::new());

#[derive(Dependencies)]
struct Listener;

#[service(name = "claims_listener")]
impl Listener {
    #[event_handler("claims_source", "ping", reliable_delivery = true)]
    async fn on_ping(&self, payload: Value) {
        HEARD
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(payload);
    }
}

/// With `reliable_delivery` (the default), a handler's queue outlives it:
/// an event dispatched while the handler is down is handled once it is back.
#[tokio::test]
async fn events_wait_while_a_reliable_handler_is_down() {
    let listener = ServiceRunner::with_config(config())
        .service(Listener)
        .start()
        .await
        .unwrap();
    listener.stop().await;
    let source = ServiceRunner::with_config(config()).start().await.unwrap();
    source
        .event_dispatcher("claims_source")
        .dispatch("ping", json!({"while": "down"}))
        .await
        .unwrap();
    let kept: u64 = support::queues(&uri())
        .iter()
        .filter(|(name, _, _)| name.contains("claims_listener"))
        .map(|(_, ready, _)| *ready)
        .sum();
    assert_eq!(kept, 1, "the event waits in the handler's queue");
    assert!(HEARD.lock().unwrap_or_else(|p| p.into_inner()).is_empty());

    let listener = ServiceRunner::with_config(config())
        .service(Listener)
        .start()
        .await
        .unwrap();
    let back = Instant::now();
    loop {
        let heard = HEARD.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !heard.is_empty() {
            assert_eq!(heard, vec![json!({"while": "down"})]);
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the event kept while the handler was down never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    listener.stop().await;
    source.stop().await;
}

/// Each run has a vhost of its own; a vhost of a run whose process is gone
/// is deleted, a live run's is not.
#[tokio::test]
async fn each_run_has_its_own_vhost() {
    let vhost = support::vhost(&uri());
    assert_eq!(
        support::vhost_pid(&vhost),
        Some(std::process::id()),
        "{vhost}"
    );
    assert_ne!(
        support::vhost(&support::amqp_uri("amqp_claims_other")),
        vhost
    );
    // A live process's vhost (pid 1 is always alive), and a gone one's.
    let live = "shimeji-test-claims_probe-1-0000abcd";
    let gone_pid = (100_000..4_000_000)
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .expect("a free pid");
    let gone = format!("shimeji-test-claims_probe-{gone_pid}-0000abcd");
    for v in [live, gone.as_str()] {
        support::ctl(&["add_vhost", v]);
    }
    let deleted = support::delete_stale_vhosts();
    let left = support::ctl(&["list_vhosts", "-q", "name"]);
    let _ = support::ctl(&["delete_vhost", live]);
    assert!(deleted.contains(&gone), "{deleted:?}");
    assert!(!left.lines().any(|l| l.trim() == gone), "{left}");
    assert!(left.lines().any(|l| l.trim() == live), "{left}");
    assert!(left.lines().any(|l| l.trim() == vhost), "{left}");
}
