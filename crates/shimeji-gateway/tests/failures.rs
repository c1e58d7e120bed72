//! The gateway when instances fail: retries on another instance, what is
//! never retried, ejection, the retry budget.

mod common;

use common::*;
use serde_json::json;
use shimeji::registry::Registry;
use shimeji_gateway::Settings;
use std::sync::atomic::Ordering;
use std::time::Duration;

const CONNECT_ERRORS: &str = r#"service="items",kind="connect""#;
const BROKEN_ERRORS: &str = r#"service="items",kind="broken""#;

#[tokio::test]
async fn gets_are_retried_on_another_instance_when_one_is_down() {
    let registry = Registry::memory();
    let live = Instance::start("items-live").await;
    let _live = live.register(&registry).await;
    let dead = record("items", "items-dead", dead_address(), item_routes());
    let _dead = registry.register(dead, TTL).await.unwrap();
    // Never ejected here: every pick of the dead one is a retry.
    let settings = Settings {
        eject_after: 1000,
        ..settings()
    };
    let (gateway, base) = gateway(&registry, settings).await;
    let http = client();

    let seen = spread(&http, &format!("{base}/items/1"), 30).await;
    assert_eq!(seen.get("items-live"), Some(&30), "{seen:?}");
    // POSTs that could not connect were not sent: retried too.
    for _ in 0..10 {
        let r = http
            .post(format!("{base}/items"))
            .json(&json!({"n": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    assert_eq!(live.posts.load(Ordering::SeqCst), 10);
    let text = metrics(&http, &base).await;
    let connect = sample(
        &text,
        "shimeji_gateway_upstream_errors_total",
        CONNECT_ERRORS,
    );
    let retried = sample(
        &text,
        "shimeji_gateway_retries_total",
        r#"service="items",outcome="sent""#,
    );
    assert!(connect > 0.0, "the dead instance was never picked: {text}");
    assert_eq!(retried, connect, "every connect failure was retried");
    gateway.stop().await;
    live.stop().await;
}

#[tokio::test]
async fn a_post_whose_bytes_were_sent_is_never_replayed_but_a_get_is_retried() {
    let registry = Registry::memory();
    let live = Instance::start("items-live").await;
    let _live = live.register(&registry).await;
    let dropper = Dropper::start().await;
    let fake = record("items", "items-dropper", dropper.address, item_routes());
    let _fake = registry.register(fake, TTL).await.unwrap();
    let (gateway, base) = gateway(&registry, settings()).await;
    let http = client();

    let (mut created, mut failed) = (0, 0);
    for i in 0..30 {
        let r = http
            .post(format!("{base}/items"))
            .json(&json!({"n": i}))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 => created += 1,
            502 => {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"], "bad_gateway");
                failed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(failed > 0, "the dropper was never picked");
    // Each POST the dropper swallowed failed; none reached the live one too.
    assert_eq!(dropper.requests.load(Ordering::SeqCst), failed);
    assert_eq!(live.posts.load(Ordering::SeqCst), created);
    assert_eq!(created + failed, 30);

    // GETs are idempotent: the same failure is retried on the live one.
    let before = dropper.requests.load(Ordering::SeqCst);
    let seen = spread(&http, &format!("{base}/items/1"), 30).await;
    assert_eq!(seen.get("items-live"), Some(&30));
    assert!(
        dropper.requests.load(Ordering::SeqCst) > before,
        "the dropper got GETs"
    );
    let text = metrics(&http, &base).await;
    assert!(
        sample(
            &text,
            "shimeji_gateway_upstream_errors_total",
            BROKEN_ERRORS
        ) > 0.0
    );
    assert_eq!(
        sample(
            &text,
            "shimeji_gateway_ejections_total",
            r#"service="items""#
        ),
        0.0,
        "a connection that was made does not count towards ejection"
    );
    gateway.stop().await;
    live.stop().await;
}

#[tokio::test]
async fn an_instance_is_ejected_after_consecutive_connect_failures() {
    let registry = Registry::memory();
    let live = Instance::start("items-live").await;
    let _live = live.register(&registry).await;
    let dead = record("items", "items-dead", dead_address(), item_routes());
    let _dead = registry.register(dead, TTL).await.unwrap();
    let settings = Settings {
        eject_after: 2,
        eject_for: Duration::from_secs(60),
        ..settings()
    };
    let (gateway, base) = gateway(&registry, settings).await;
    let http = client();
    let url = format!("{base}/items/1");

    // Until the dead one has been picked twice.
    let mut connect = 0.0;
    for _ in 0..200 {
        spread(&http, &url, 1).await;
        connect = sample(
            &metrics(&http, &base).await,
            "shimeji_gateway_upstream_errors_total",
            CONNECT_ERRORS,
        );
        if connect >= 2.0 {
            break;
        }
    }
    assert_eq!(connect, 2.0);
    // Ejected: not tried again during its cool-down.
    let seen = spread(&http, &url, 50).await;
    assert_eq!(seen.get("items-live"), Some(&50));
    let text = metrics(&http, &base).await;
    assert_eq!(
        sample(
            &text,
            "shimeji_gateway_upstream_errors_total",
            CONNECT_ERRORS
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "shimeji_gateway_ejections_total",
            r#"service="items""#
        ),
        1.0
    );
    gateway.stop().await;
    live.stop().await;
}

#[tokio::test]
async fn a_service_whose_only_instance_is_down_gets_502_then_503_once_ejected() {
    let registry = Registry::memory();
    let dead = record("items", "items-dead", dead_address(), item_routes());
    let _dead = registry.register(dead, TTL).await.unwrap();
    let settings = Settings {
        eject_after: 2,
        eject_for: Duration::from_secs(60),
        ..settings()
    };
    let (gateway, base) = gateway(&registry, settings).await;
    let http = client();
    let url = format!("{base}/items/1");
    for _ in 0..2 {
        let (status, body) = get_json(&http, &url).await;
        assert_eq!((status, body["error"].as_str()), (502, Some("bad_gateway")));
    }
    let (status, body) = get_json(&http, &url).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")));
    gateway.stop().await;
}

#[tokio::test]
async fn an_empty_retry_budget_refuses_retries() {
    let registry = Registry::memory();
    let live = Instance::start("items-live").await;
    let _live = live.register(&registry).await;
    let dead = record("items", "items-dead", dead_address(), item_routes());
    let _dead = registry.register(dead, TTL).await.unwrap();
    let settings = Settings {
        eject_after: 1000,
        retry_ratio: 0.0,
        retry_min_per_sec: 0,
        ..settings()
    };
    let (gateway, base) = gateway(&registry, settings).await;
    let http = client();
    let mut bad = 0;
    for _ in 0..30 {
        let (status, _) = get_json(&http, &format!("{base}/items/1")).await;
        if status == 502 {
            bad += 1;
        }
    }
    let text = metrics(&http, &base).await;
    let refused = sample(
        &text,
        "shimeji_gateway_retries_total",
        r#"service="items",outcome="refused""#,
    );
    assert!(bad > 0, "the dead instance was never picked");
    assert_eq!(refused, f64::from(bad));
    assert_eq!(
        sample(
            &text,
            "shimeji_gateway_retries_total",
            r#"service="items",outcome="sent""#
        ),
        0.0
    );
    gateway.stop().await;
    live.stop().await;
}
