//! The gateway in front of real shimeji HTTP services, on the in-process
//! registry: routing by method and path, its own JSON answers, following
//! registrations and deregistrations, headers, WebSocket, sticky sessions,
//! `/health`, `/metrics` and a graceful stop.

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use shimeji::registry::{Registry, Route};
use shimeji_gateway::Settings;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn routes_by_method_and_path_template_and_answers_json_404_405_503() {
    let registry = Registry::memory();
    let items = Instance::start("items-a").await;
    let _items = items.register(&registry).await;
    // A second service, on its own instance, with its own routes.
    let other = Instance::start("other-a").await;
    let other_routes = vec![Route::new("GET", "/stock/{id}")];
    let mut other_record = record("stock", "other-a", other.address, other_routes);
    other_record.websocket = false;
    let other_registration = registry.register(other_record, TTL).await.unwrap();
    let (gateway, base) = gateway(&registry, settings()).await;
    let http = client();

    let (status, body) = get_json(&http, &format!("{base}/items/7")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], 7);
    assert_eq!(body["instance"], "items-a");
    let created = http
        .post(format!("{base}/items"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(items.posts.load(std::sync::atomic::Ordering::SeqCst), 1);
    // /stock/{id} is listed only by the `stock` instance.
    for _ in 0..5 {
        let (status, body) = get_json(&http, &format!("{base}/stock/3")).await;
        assert_eq!((status, body["instance"].as_str()), (200, Some("other-a")));
    }

    // A path nobody serves: the gateway's JSON 404.
    let (status, body) = get_json(&http, &format!("{base}/nobody/serves/this")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    assert!(body["request_id"].is_string());
    // A served path with another method: 405 with Allow.
    let response = http.delete(format!("{base}/items")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    // A known service with no instance left: 503, not 404.
    let revision = other_registration.deregister().await.unwrap();
    applied(&gateway, revision).await;
    let (status, body) = get_json(&http, &format!("{base}/stock/1")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    assert_eq!(body["service"], "stock");

    gateway.stop().await;
    items.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn follows_registrations_and_never_picks_a_deregistered_instance_once_applied() {
    let registry = Registry::memory();
    let a = Instance::start("items-a").await;
    let b = Instance::start("items-b").await;
    let _a = a.register(&registry).await;
    let b_registration = b.register(&registry).await;
    let (gateway, base) = gateway(&registry, settings()).await;
    let http = client();
    let url = format!("{base}/items/1");

    let seen = spread(&http, &url, 40).await;
    assert!(
        seen.contains_key("items-a") && seen.contains_key("items-b"),
        "{seen:?}"
    );

    // Deregister b: once every router reports the revision, b gets nothing.
    let revision = b_registration.deregister().await.unwrap();
    let waited = registry.wait_applied(revision, WITHIN).await.unwrap();
    assert_eq!(waited.routers, 1, "the gateway reports as a router");
    assert!(waited.all_applied, "behind: {:?}", waited.behind);
    let seen = spread(&http, &url, 40).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["items-a"], "{seen:?}");
    // b may close now: nothing is routed to it.
    b.stop().await;
    let seen = spread(&http, &url, 20).await;
    assert_eq!(seen.get("items-a"), Some(&20));

    // A new instance gets traffic once registered and applied.
    let c = Instance::start("items-c").await;
    let c_registration = c.register(&registry).await;
    applied(&gateway, c_registration.revision()).await;
    let seen = spread(&http, &url, 60).await;
    assert!(seen.contains_key("items-c"), "{seen:?}");

    let routers = registry.routers().await.unwrap();
    assert_eq!(routers.len(), 1);
    assert_eq!(routers[0].id, gateway.router_id());
    assert!(routers[0].applied_revision >= c_registration.revision());
    gateway.stop().await;
    assert!(
        registry.routers().await.unwrap().is_empty(),
        "a stopped gateway deletes its router report"
    );
    a.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn request_ids_and_trace_contexts_are_passed_or_made() {
    let registry = Registry::memory();
    let a = Instance::start("items-a").await;
    let _a = a.register(&registry).await;
    let (gateway, base) = gateway(&registry, settings()).await;
    let http = client();
    let url = format!("{base}/items/1");

    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = http
        .get(&url)
        .header("x-request-id", "req-42")
        .header("traceparent", parent)
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["x-request-id"], "req-42");
    assert_eq!(seen["traceparent"], parent);
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(
        seen["x-hop"],
        Value::Null,
        "a header named by Connection stops at the gateway"
    );

    let response = http.get(&url).send().await.unwrap();
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(made.len(), 32, "a new id: {made}");
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["x-request-id"], made.as_str());
    let traceparent = seen["traceparent"]
        .as_str()
        .expect("a traceparent was made");
    assert!(
        shimeji::trace::TraceParent::parse(traceparent).is_some(),
        "{traceparent}"
    );
    // The gateway's own answers carry the id too.
    let response = http
        .get(format!("{base}/nowhere"))
        .header("x-request-id", "req-43")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-43");
    gateway.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn health_and_metrics_on_the_main_and_on_an_admin_listener() {
    let registry = Registry::memory();
    let a = Instance::start("items-a").await;
    let _a = a.register(&registry).await;
    let (gateway, base) = gateway(&registry, settings()).await;
    let http = client();

    let (status, health) = get_json(&http, &format!("{base}/health")).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ready");
    assert_eq!(health["instances"], 1);
    assert_eq!(health["router_id"], gateway.router_id());
    for _ in 0..3 {
        get_json(&http, &format!("{base}/items/1")).await;
    }
    get_json(&http, &format!("{base}/nowhere")).await;
    let text = metrics(&http, &base).await;
    let ok = sample(
        &text,
        "shimeji_gateway_requests_total",
        r#"service="items",class="2xx""#,
    );
    assert_eq!(ok, 3.0, "{text}");
    let unrouted = sample(
        &text,
        "shimeji_gateway_requests_total",
        r#"service="",class="4xx""#,
    );
    assert_eq!(unrouted, 1.0);
    assert!(text.contains("shimeji_gateway_instances 1"), "{text}");
    assert!(
        !text.contains("nowhere") && !text.contains("/items/1"),
        "no request path becomes a label"
    );
    gateway.stop().await;

    // With an admin listener the main one routes /health to the services.
    let admin_settings = Settings {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..settings()
    };
    let (gateway, base) = common::gateway(&registry, admin_settings).await;
    let admin = format!("http://{}", gateway.admin_addr().expect("an admin address"));
    let (status, health) = get_json(&http, &format!("{admin}/health")).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ready")));
    assert!(metrics(&http, &admin)
        .await
        .contains("shimeji_gateway_routes"));
    let (status, body) = get_json(&http, &format!("{base}/health")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    gateway.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_to_an_instance() {
    let registry = Registry::memory();
    let a = Instance::start("items-a").await;
    let _a = a.register(&registry).await;
    let (gateway, base) = gateway(&registry, settings()).await;
    let url = base.replace("http://", "ws://") + "/ws";

    let (mut socket, response) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("the upgrade goes through the gateway");
    assert!(response.headers().contains_key("x-request-id"));
    let hello = next_json(&mut socket).await;
    assert_eq!(hello["event"], "connected");
    let call = json!({"method": "items.whoami", "data": {}, "correlation_id": 1});
    socket
        .send(Message::Text(call.to_string().into()))
        .await
        .unwrap();
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["data"], "items-a", "{reply}");
    let text = metrics(&client(), &base).await;
    assert!(text.contains("shimeji_gateway_websockets_open 1"), "{text}");
    socket.close(None).await.unwrap();
    drop(socket);
    // Both sides closed: the tunnel ends.
    let deadline = std::time::Instant::now() + WITHIN;
    while !metrics(&client(), &base)
        .await
        .contains("shimeji_gateway_websockets_open 0")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the tunnel stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.stop().await;
    a.stop().await;
}

async fn next_json<S>(socket: &mut S) -> Value
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(WITHIN, socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("a JSON frame");
        }
    }
}

#[tokio::test]
async fn sticky_services_keep_a_client_on_one_instance_by_cookie_or_session_id() {
    let registry = Registry::memory();
    let a = Instance::start("items-a").await;
    let b = Instance::start("items-b").await;
    let mut registrations = Vec::new();
    for instance in [&a, &b] {
        let mut sticky = instance.record();
        sticky.sticky = true;
        registrations.push(registry.register(sticky, TTL).await.unwrap());
    }
    let (gateway, base) = gateway(&registry, settings()).await;
    let http = client();

    // By cookie: the first answer names an instance, the rest follow it.
    let first = http.get(format!("{base}/items/1")).send().await.unwrap();
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("shimeji_sticky="), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let owner = first.json::<Value>().await.unwrap()["instance"].clone();
    for _ in 0..20 {
        let r = http
            .get(format!("{base}/items/1"))
            .header("cookie", &pair)
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("set-cookie").is_none(), "already on it");
        assert_eq!(r.json::<Value>().await.unwrap()["instance"], owner);
    }

    // By Socket.IO session id, with no cookie: the handshake's instance.
    for _ in 0..4 {
        let handshake = http
            .get(format!("{base}/socket.io/?EIO=4&transport=polling"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let open: Value = serde_json::from_str(&handshake[1..]).unwrap();
        let sid = open["sid"].as_str().unwrap().to_string();
        let maker = sid.rsplit_once('-').unwrap().0.to_string();
        for _ in 0..5 {
            let answer = http
                .get(format!(
                    "{base}/socket.io/?EIO=4&transport=polling&sid={sid}"
                ))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert_eq!(answer, format!("{maker} {sid}"));
        }
    }
    gateway.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_stopping_gateway_finishes_requests_in_flight_and_then_refuses() {
    let registry = Registry::memory();
    let a = Instance::start("items-a").await;
    let _a = a.register(&registry).await;
    let (gateway, base) = gateway(&registry, settings()).await;
    let address = gateway.local_addr();
    let http = client();

    let slow = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/slow");
        async move { get_json(&http, &url).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gateway.stop().await;
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "the request in flight finished: {body}");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "a stopped gateway accepts no connection"
    );
    a.stop().await;
}

#[tokio::test]
async fn several_workers_share_the_port_and_the_routing_table() {
    let registry = Registry::memory();
    let a = Instance::start("items-a").await;
    let _a = a.register(&registry).await;
    let settings = Settings {
        workers: 3,
        ..settings()
    };
    let (gateway, base) = gateway(&registry, settings).await;
    // New connections land on any worker; each answers from the same table.
    for _ in 0..30 {
        let http = client();
        let (status, body) = get_json(&http, &format!("{base}/items/2")).await;
        assert_eq!((status, body["instance"].as_str()), (200, Some("items-a")));
    }
    let b = Instance::start("items-b").await;
    let b_registration = b.register(&registry).await;
    applied(&gateway, b_registration.revision()).await;
    let mut seen_b = false;
    for _ in 0..40 {
        let http = client();
        let (_, body) = get_json(&http, &format!("{base}/items/2")).await;
        seen_b |= body["instance"] == "items-b";
    }
    assert!(seen_b, "every worker routes with the new table");
    let text = metrics(&client(), &base).await;
    assert_eq!(
        sample(
            &text,
            "shimeji_gateway_requests_total",
            r#"service="items",class="2xx""#
        ),
        70.0,
        "one set of metrics for all workers"
    );
    gateway.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_stopping_gateway_closes_tunnels_still_open_after_its_grace_period() {
    let registry = Registry::memory();
    let a = Instance::start("items-a").await;
    let _a = a.register(&registry).await;
    let settings = Settings {
        shutdown_grace: Duration::from_millis(300),
        ..settings()
    };
    let (gateway, base) = gateway(&registry, settings).await;
    let url = base.replace("http://", "ws://") + "/ws";
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(next_json(&mut socket).await["event"], "connected");

    let started = std::time::Instant::now();
    tokio::time::timeout(WITHIN, gateway.stop())
        .await
        .expect("the stop waits for the grace period only");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the tunnel got its grace"
    );
    // The client sees its connection end.
    let ended = tokio::time::timeout(WITHIN, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the tunnel was closed");
    a.stop().await;
}
