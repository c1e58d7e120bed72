//! The WebSocket hub's bounds: message size, requests in flight per
//! socket, the send queue of a client that does not read, allowed origins.

mod support;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use shimeji::http::WebSocketHub;
use shimeji::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::{connect_ws, next_json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// `hold` runs now, and the most that ever ran at once.
static HOLDING: AtomicUsize = AtomicUsize::new(0);
static MOST_HOLDING: AtomicUsize = AtomicUsize::new(0);
/// Pushes `flood` got into a send queue.
static PUSHED: AtomicUsize = AtomicUsize::new(0);

#[derive(Default, Dependencies)]
struct Lim {
    hub: WebSocketHub,
}

#[service(name = "ws_lim", websocket)]
impl Lim {
    #[rpc]
    async fn echo(&self, text: String) -> String {
        text
    }

    /// Runs for a while, counting how many runs overlap.
    #[rpc]
    async fn hold(&self) -> usize {
        let now = HOLDING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_HOLDING.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        HOLDING.fetch_sub(1, Ordering::SeqCst);
        now
    }

    /// Pushes up to `n` events of `size` bytes to the caller, until the hub
    /// refuses one; returns how many it took.
    #[rpc]
    async fn flood(&self, n: usize, size: usize) -> usize {
        let ctx = shimeji::context::current().expect("in a worker");
        let socket = ctx
            .data("socket_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let blob = "x".repeat(size);
        let mut taken = 0;
        for _ in 0..n {
            if !self.hub.unicast(&socket, "blob", &blob) {
                break;
            }
            taken += 1;
            PUSHED.fetch_add(1, Ordering::SeqCst);
            // Let the writer run, as pushes from many workers would.
            tokio::task::yield_now().await;
        }
        taken
    }
}

async fn start(config: Config) -> (RunningServices, String) {
    let running = ServiceRunner::with_config(config.set("WEB_SERVER_ADDRESS", "127.0.0.1:0"))
        .service(Lim::default())
        .start()
        .await
        .unwrap();
    let url = format!("ws://{}/ws", running.web_address().unwrap());
    (running, url)
}

fn call(method: &str, data: Value, id: usize) -> Message {
    Message::Text(
        json!({"method": method, "data": data, "correlation_id": id})
            .to_string()
            .into(),
    )
}

/// `shimeji_websocket_closed_total{reason="…"}` now.
fn closed(reason: &str) -> f64 {
    let series = format!(r#"shimeji_websocket_closed_total{{reason="{reason}"}} "#);
    shimeji::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits up to 10 s for the count of `reason` to pass `before`.
async fn wait_closed(reason: &str, before: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = closed(reason);
        if now > before || tokio::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_oversized_message_closes_its_socket_and_the_server_serves_on() {
    // The message limit defaults to `max_body_size`.
    let (running, url) = start(Config::new().set("max_body_size", 4096)).await;
    let mut other = connect_ws(&url).await;
    let mut big = connect_ws(&url).await;
    let before = closed("message_too_large");

    let text = "y".repeat(8 * 1024);
    big.send(call("ws_lim.echo", json!({ "text": text }), 1))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match big.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(Message::Text(t))) => panic!("the oversized message was served: {t}"),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the socket closes in time");
    assert_eq!(end, Some(CloseCode::Size), "closed as too big");
    assert_eq!(wait_closed("message_too_large", before).await, before + 1.0);

    // Below the limit, on the other socket and on a new one: served.
    let text = "z".repeat(2 * 1024);
    other
        .send(call("ws_lim.echo", json!({ "text": text }), 2))
        .await
        .unwrap();
    assert_eq!(next_json(&mut other).await["data"], text);
    let mut new = connect_ws(&url).await;
    new.send(call("ws_lim.echo", json!({ "text": "hi" }), 3))
        .await
        .unwrap();
    assert_eq!(next_json(&mut new).await["data"], "hi");
    running.stop().await;
}

#[tokio::test]
async fn websocket_max_message_size_overrides_the_body_limit() {
    let (running, url) = start(
        Config::new()
            .set("max_body_size", 1024)
            .set("websocket_max_message_size", 64 * 1024),
    )
    .await;
    let mut ws = connect_ws(&url).await;
    let text = "y".repeat(8 * 1024);
    ws.send(call("ws_lim.echo", json!({ "text": text }), 1))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["data"], text);
    running.stop().await;
}

#[tokio::test]
async fn at_most_max_in_flight_requests_of_one_socket_run_at_once() {
    let (running, url) = start(
        Config::new()
            .set("websocket_max_in_flight", 3)
            .set("max_workers", 50),
    )
    .await;
    let mut ws = connect_ws(&url).await;
    const N: usize = 12;
    for i in 0..N {
        ws.feed(call("ws_lim.hold", json!({}), i)).await.unwrap();
    }
    ws.flush().await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..N {
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["success"], true, "{reply}");
        seen.push(reply["data"].as_u64().unwrap());
    }
    let most = MOST_HOLDING.load(Ordering::SeqCst);
    assert_eq!(
        most, 3,
        "at most 3 at once, and 3 did run at once: {seen:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_and_counted() {
    let (running, url) = start(Config::new().set("websocket_send_queue", 8)).await;
    let mut ws = connect_ws(&url).await;
    let before = closed("slow_consumer");
    // 2000 pushes of 32 KiB (64 MiB), which this client never reads.
    const N: usize = 2000;
    ws.send(call("ws_lim.flood", json!({"n": N, "size": 32 * 1024}), 1))
        .await
        .unwrap();
    assert_eq!(
        wait_closed("slow_consumer", before).await,
        before + 1.0,
        "the socket was closed as a slow consumer"
    );
    let last = PUSHED.load(Ordering::SeqCst);
    // What the hub took is what the kernel buffers and the queue hold,
    // not the whole flood: the rest was refused, not kept.
    assert!(
        last < N / 2,
        "{last} of {N} pushes of 32 KiB were taken for a client that reads nothing"
    );
    // The client finds its socket closed once it reads what was sent.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the socket is closed");
    // The server serves others.
    let mut new = connect_ws(&url).await;
    new.send(call("ws_lim.echo", json!({ "text": "hi" }), 2))
        .await
        .unwrap();
    assert_eq!(next_json(&mut new).await["data"], "hi");
    running.stop().await;
}

#[tokio::test]
async fn an_upgrade_from_an_origin_not_allowed_gets_403() {
    let (running, url) =
        start(Config::new().set("websocket_allowed_origins", json!(["https://good.example"])))
            .await;
    let with_origin = |origin: &str| {
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        request
    };
    match tokio_tungstenite::connect_async(with_origin("https://evil.example")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        Err(other) => panic!("refused, but not with 403: {other}"),
        Ok(_) => panic!("an upgrade from a foreign origin was accepted"),
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(with_origin("https://good.example"))
        .await
        .expect("the allowed origin connects");
    assert_eq!(next_json(&mut ws).await["event"], "connected");
    // No `Origin` at all: no browser, let in.
    connect_ws(&url).await;
    running.stop().await;
}

#[tokio::test]
async fn a_zero_limit_is_a_config_error() {
    let started = ServiceRunner::with_config(
        Config::new()
            .set("WEB_SERVER_ADDRESS", "127.0.0.1:0")
            .set("websocket_max_in_flight", 0),
    )
    .service(Lim::default())
    .start()
    .await;
    let error = started.err().expect("the start fails").to_string();
    assert!(error.contains("websocket_max_in_flight"), "{error}");
}
