//! The gateway on a real etcd (started per test; feature `etcd`): it
//! follows registrations and deregistrations, reports its revision, and
//! keeps routing with its last table while etcd is down.
#![cfg(feature = "etcd")]

mod common;
#[allow(dead_code)]
#[path = "../../shimeji/tests/support/etcd.rs"]
mod etcd;

use common::*;
use shimeji::registry::Registry;
use std::time::{Duration, Instant};

#[tokio::test]
async fn follows_an_etcd_registry_and_keeps_routing_while_it_is_down() {
    let mut etcd = etcd::Etcd::start();
    let registry = Registry::connect(&etcd.url()).await.expect("connect");
    let a = Instance::start("items-a").await;
    let b = Instance::start("items-b").await;
    let _a = a.register(&registry).await;
    let b_registration = b.register(&registry).await;
    let (gateway, base) = gateway(&registry, settings()).await;
    applied(&gateway, b_registration.revision()).await;
    let http = client();
    let url = format!("{base}/items/1");
    let seen = spread(&http, &url, 40).await;
    assert_eq!(seen.len(), 2, "{seen:?}");

    let started = Instant::now();
    let revision = b_registration.deregister().await.unwrap();
    let waited = registry.wait_applied(revision, WITHIN).await.unwrap();
    let propagation = started.elapsed();
    assert_eq!(waited.routers, 1);
    assert!(waited.all_applied, "behind: {:?}", waited.behind);
    let seen = spread(&http, &url, 30).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["items-a"], "{seen:?}");
    eprintln!("deregistration applied and reported by the gateway in {propagation:?}");
    b.stop().await;

    // etcd down: the last table stays (fail static).
    etcd.stop();
    let deadline = Instant::now() + WITHIN;
    loop {
        let (_, health) = get_json(&http, &format!("{base}/health")).await;
        if health["registry_connected"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not notice: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = spread(&http, &url, 10).await;
    assert_eq!(seen.get("items-a"), Some(&10));

    // Back: it lists again and reports again.
    etcd.start_again(false);
    let deadline = Instant::now() + WITHIN;
    loop {
        let (_, health) = get_json(&http, &format!("{base}/health")).await;
        if health["registry_connected"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not reconnect: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = spread(&http, &url, 10).await;
    assert_eq!(seen.get("items-a"), Some(&10));
    gateway.stop().await;
    assert!(registry.routers().await.unwrap().is_empty());
    a.stop().await;
}
