//! Events on the embedded transport: Nameko's three handler types, each with
//! several instances of the handling services in one process, and reliable
//! delivery.

mod support;

use serde_json::{json, Value};
use shimeji::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Who handled what: (service, instance number, payload).
type Log = support::EventLog;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn taken(log: &Log) -> Vec<(&'static str, usize, Value)> {
    log.lock().unwrap().clone()
}

support::event_log_service!(PoolA, "pool_a", "pool_a", handle, "shop", "sold");
support::event_log_service!(
    PoolB,
    "pool_b",
    "pool_b",
    handle,
    "shop",
    "sold",
    handler_type = "service_pool"
);
support::event_log_service!(
    SingleA,
    "single_a",
    "single_a",
    handle,
    "shop",
    "sold",
    handler_type = "singleton"
);
support::event_log_service!(
    SingleB,
    "single_b",
    "single_b",
    handle,
    "shop",
    "sold",
    handler_type = "singleton"
);
support::event_log_service!(
    Everyone,
    "everyone",
    "everyone",
    handle,
    "shop",
    "sold",
    handler_type = "broadcast"
);

/// Dispatches `count` events from `shop` and waits until `expected` handler
/// runs have finished.
async fn dispatch_and_settle(running: &RunningServices, log: &Log, count: usize, expected: usize) {
    let shop = running.event_dispatcher("shop");
    for i in 0..count {
        shop.dispatch("sold", json!({ "n": i })).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while taken(log).len() < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Give a wrongly delivered extra event the time to show up.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn service_pool_one_instance_of_each_service_gets_each_event() {
    let log = log();
    let mut runner = ServiceRunner::with_config(Config::new());
    for instance in 0..3 {
        runner = runner
            .service(PoolA {
                instance,
                log: log.clone(),
            })
            .service(PoolB {
                instance,
                log: log.clone(),
            });
    }
    let running = runner.start().await.unwrap();
    dispatch_and_settle(&running, &log, 6, 12).await;
    let seen = taken(&log);
    for service in ["pool_a", "pool_b"] {
        let mine: Vec<_> = seen.iter().filter(|(s, _, _)| *s == service).collect();
        assert_eq!(
            mine.len(),
            6,
            "{service} must handle each event once: {seen:?}"
        );
        for n in 0..6 {
            assert_eq!(mine.iter().filter(|(_, _, p)| p["n"] == n).count(), 1);
        }
        // The pool shares the work: every instance got some.
        for instance in 0..3 {
            assert!(
                mine.iter().any(|(_, i, _)| *i == instance),
                "{service} instance {instance} idle: {seen:?}"
            );
        }
    }
    running.stop().await;
}

#[tokio::test]
async fn singleton_one_instance_in_the_whole_cluster_gets_each_event() {
    let log = log();
    let mut runner = ServiceRunner::with_config(Config::new());
    for instance in 0..2 {
        runner = runner
            .service(SingleA {
                instance,
                log: log.clone(),
            })
            .service(SingleB {
                instance,
                log: log.clone(),
            });
    }
    let running = runner.start().await.unwrap();
    dispatch_and_settle(&running, &log, 8, 8).await;
    let seen = taken(&log);
    assert_eq!(
        seen.len(),
        8,
        "each event handled once in the cluster: {seen:?}"
    );
    for n in 0..8 {
        assert_eq!(seen.iter().filter(|(_, _, p)| p["n"] == n).count(), 1);
    }
    running.stop().await;
}

#[tokio::test]
async fn broadcast_every_instance_gets_each_event() {
    let log = log();
    let mut runner = ServiceRunner::with_config(Config::new());
    for instance in 0..3 {
        runner = runner.service(Everyone {
            instance,
            log: log.clone(),
        });
    }
    let running = runner.start().await.unwrap();
    dispatch_and_settle(&running, &log, 2, 6).await;
    let seen = taken(&log);
    assert_eq!(seen.len(), 6, "{seen:?}");
    for instance in 0..3 {
        for n in 0..2 {
            assert_eq!(
                seen.iter()
                    .filter(|(_, i, p)| *i == instance && p["n"] == n)
                    .count(),
                1,
                "instance {instance} event {n}: {seen:?}"
            );
        }
    }
    running.stop().await;
}

#[tokio::test]
async fn reliable_delivery_keeps_events_while_the_service_is_down() {
    let transport = shimeji::transport::MemoryTransport::new();
    let log = log();
    // Start and stop the handler once: its durable queue stays behind.
    let first = ServiceRunner::with_config(Config::new())
        .transport(transport.clone())
        .service(PoolA {
            instance: 0,
            log: log.clone(),
        })
        .start()
        .await
        .unwrap();
    first.stop().await;

    let shop = ServiceRunner::with_config(Config::new())
        .transport(transport.clone())
        .start()
        .await
        .unwrap();
    shop.event_dispatcher("shop")
        .dispatch("sold", json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(transport.backlog("evt-shop-sold--pool_a.handle"), 1);
    assert!(taken(&log).is_empty());

    // The next instance gets the event that waited.
    let second = ServiceRunner::with_config(Config::new())
        .transport(transport.clone())
        .service(PoolA {
            instance: 1,
            log: log.clone(),
        })
        .start()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while taken(&log).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(taken(&log), vec![("pool_a", 1, json!({"n": 1}))]);
    second.stop().await;
    shop.stop().await;
}

#[derive(Dependencies)]
struct Unreliable {
    log: Log,
}

#[service(name = "unreliable")]
impl Unreliable {
    #[event_handler("shop", "sold", reliable_delivery = false)]
    async fn handle(&self, payload: Value) {
        self.log.lock().unwrap().push(("unreliable", 0, payload));
    }
}

#[tokio::test]
async fn without_reliable_delivery_events_are_not_kept() {
    let transport = shimeji::transport::MemoryTransport::new();
    let log = log();
    let first = ServiceRunner::with_config(Config::new())
        .transport(transport.clone())
        .service(Unreliable { log: log.clone() })
        .start()
        .await
        .unwrap();
    first.stop().await;
    let shop = ServiceRunner::with_config(Config::new())
        .transport(transport.clone())
        .start()
        .await
        .unwrap();
    shop.event_dispatcher("shop")
        .dispatch("sold", json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(transport.backlog("evt-shop-sold--unreliable.handle"), 0);
    shop.stop().await;
}

#[derive(Dependencies)]
struct SingleReliable;
#[service(name = "single_reliable")]
impl SingleReliable {
    #[event_handler("shop", "sold", handler_type = "singleton")]
    async fn handle(&self, _payload: Value) {}
}

#[derive(Dependencies)]
struct SingleUnreliable;
#[service(name = "single_unreliable")]
impl SingleUnreliable {
    #[event_handler("shop", "sold", handler_type = "singleton", reliable_delivery = false)]
    async fn handle(&self, _payload: Value) {}
}

#[tokio::test]
async fn conflicting_singleton_declarations_fail_at_start_with_a_clear_error() {
    let err = ServiceRunner::with_config(Config::new())
        .service(SingleReliable)
        .service(SingleUnreliable)
        .start()
        .await
        .err()
        .expect("the second declaration must be refused");
    let message = err.to_string();
    assert!(message.contains("evt-shop-sold"), "{message}");
    assert!(message.contains("reliable_delivery"), "{message}");
    assert!(message.contains("single_unreliable.handle"), "{message}");
}

#[derive(serde::Deserialize)]
struct Sold {
    #[allow(dead_code)]
    n: u32,
}

#[derive(Dependencies)]
struct Strict;
#[service(name = "strict")]
impl Strict {
    #[event_handler("shop", "sold")]
    async fn handle(&self, _sold: Sold) {}
}

#[tokio::test]
async fn a_payload_of_the_wrong_shape_is_a_typed_error_and_the_handler_keeps_serving() {
    let running = ServiceRunner::with_config(Config::new())
        .service(Strict)
        .start()
        .await
        .unwrap();
    let shop = running.event_dispatcher("shop");
    let waiter = running.entrypoint_waiter("strict", "handle");
    shop.dispatch("sold", json!("not an object")).await.unwrap();
    let finished = waiter.wait(Duration::from_secs(2)).await.unwrap();
    let err = finished.result.unwrap_err();
    assert_eq!(err.exc_type, "MalformedRequest");
    let waiter = running.entrypoint_waiter("strict", "handle");
    shop.dispatch("sold", json!({"n": 3})).await.unwrap();
    assert!(waiter
        .wait(Duration::from_secs(2))
        .await
        .unwrap()
        .result
        .is_ok());
    running.stop().await;
}

/// A dispatcher behind an `Arc` is a dependency like a plain one.
#[derive(Dependencies)]
struct Till {
    events: Arc<EventDispatcher>,
}

#[service(name = "till")]
impl Till {
    #[rpc]
    async fn sell(&self, n: u32) -> Result<(), DispatchError> {
        self.events.dispatch("sold", json!({ "n": n })).await
    }
}

#[derive(Dependencies)]
struct TillAudit;

#[service(name = "till_audit")]
impl TillAudit {
    #[event_handler("till", "sold")]
    async fn handle(&self, _sold: Sold) {}
}

#[tokio::test]
async fn a_dispatcher_behind_an_arc_is_set_up_and_dispatches() {
    let running = ServiceRunner::with_config(Config::new())
        .service(Till {
            events: Arc::default(),
        })
        .service(TillAudit)
        .start()
        .await
        .unwrap();
    let waiter = running.entrypoint_waiter("till_audit", "handle");
    let till: TillClient = running.client();
    till.sell(2).await.unwrap();
    let finished = waiter.wait(Duration::from_secs(2)).await.unwrap();
    assert!(finished.result.is_ok());
    running.stop().await;
}
