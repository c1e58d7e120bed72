//! WebSocket connect and disconnect hooks: a service stores data for a
//! socket, and learns when the socket goes, whichever side closed it.

mod support;

use futures::SinkExt;
use serde_json::{json, Value};
use shimeji::http::{SocketInfo, WebSocketHub};
use shimeji::prelude::*;
use std::sync::Mutex;
use std::time::Duration;
use support::{next_json, Socket};
use tokio_tungstenite::tungstenite::Message;

/// One hook run, as the hook saw it.
#[derive(Debug, Clone)]
struct Run {
    hook: &'static str,
    socket_id: String,
    user: Option<Value>,
    /// The call id of the hook's worker.
    call_id: Option<String>,
    /// `socket_id` in the worker's context data.
    context_socket: Option<Value>,
}

static RUNS: Mutex<Vec<Run>> = Mutex::new(Vec::new());

fn record(hook: &'static str, socket: &SocketInfo) {
    let ctx = shimeji::context::current();
    RUNS.lock().unwrap().push(Run {
        hook,
        socket_id: socket.socket_id.clone(),
        user: socket.data.get("user_id").cloned(),
        call_id: ctx.as_ref().and_then(|c| c.call_id()),
        context_socket: ctx.as_ref().and_then(|c| c.data("socket_id").cloned()),
    });
}

/// The runs of `hook` for `socket_id` so far.
fn runs(hook: &str, socket_id: &str) -> Vec<Run> {
    RUNS.lock()
        .unwrap()
        .iter()
        .filter(|r| r.hook == hook && r.socket_id == socket_id)
        .cloned()
        .collect()
}

/// Waits up to 10 s for a run of `hook` for `socket_id`, then a moment
/// more to see that no second one comes.
async fn the_run(hook: &str, socket_id: &str) -> Run {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while runs(hook, socket_id).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {hook} run for {socket_id}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let all = runs(hook, socket_id);
    assert_eq!(all.len(), 1, "{hook} ran more than once: {all:?}");
    all.into_iter().next().unwrap()
}

#[derive(Dependencies)]
struct Presence {
    hub: WebSocketHub,
}

impl Default for Presence {
    fn default() -> Self {
        let hub = WebSocketHub::default()
            .on_connect(|socket: SocketInfo| async move {
                record("connect", &socket);
                Ok(())
            })
            .on_disconnect(|socket: SocketInfo| async move {
                record("disconnect", &socket);
                match socket.data.get("user_id").and_then(Value::as_str) {
                    Some("panics") => panic!("a hook that panics"),
                    Some("fails") => Err("a hook that fails".into()),
                    _ => Ok(()),
                }
            });
        Presence { hub }
    }
}

fn caller_socket() -> String {
    let ctx = shimeji::context::current().expect("in a worker");
    ctx.data("socket_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[service(name = "ws_presence", websocket)]
impl Presence {
    /// Stores the caller's user for its socket.
    #[rpc]
    async fn sign_in(&self, user_id: String) -> bool {
        self.hub.set_data(&caller_socket(), "user_id", &user_id)
    }

    /// What is stored for the caller's socket.
    #[rpc]
    async fn whoami(&self) -> Option<Value> {
        self.hub.data(&caller_socket())?.get("user_id").cloned()
    }

    /// What is stored for socket `socket_id`, if it is open.
    #[rpc]
    async fn data_of(&self, socket_id: String) -> Option<serde_json::Map<String, Value>> {
        self.hub.data(&socket_id)
    }

    /// Pushes `n` events of `size` bytes to the caller, as fast as it can.
    #[rpc]
    async fn flood(&self, n: usize, size: usize) -> usize {
        let socket = caller_socket();
        let blob = "x".repeat(size);
        let mut taken = 0;
        for _ in 0..n {
            if !self.hub.unicast(&socket, "blob", &blob) {
                break;
            }
            taken += 1;
            tokio::task::yield_now().await;
        }
        taken
    }
}

/// Two instances of the service: their hooks still run once per socket.
async fn start(config: Config) -> (RunningServices, String) {
    let running = ServiceRunner::with_config(config.set("WEB_SERVER_ADDRESS", "127.0.0.1:0"))
        .service(Presence::default())
        .service(Presence::default())
        .start()
        .await
        .unwrap();
    let url = format!("ws://{}/ws", running.web_address().unwrap());
    (running, url)
}

/// Connects; returns the socket and its id.
async fn connect(url: &str) -> (Socket, String) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["event"], "connected");
    let id = hello["data"]["socket_id"].as_str().unwrap().to_string();
    (ws, id)
}

/// Calls `method` over `ws` and returns its result frame.
async fn call(ws: &mut Socket, method: &str, data: Value) -> Value {
    let frame = json!({"method": method, "data": data, "correlation_id": 1});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    loop {
        let reply = next_json(ws).await;
        if reply["type"] == "result" {
            return reply;
        }
    }
}

/// Connects and signs in as `user`.
async fn signed_in(url: &str, user: &str) -> (Socket, String) {
    let (mut ws, id) = connect(url).await;
    let reply = call(&mut ws, "ws_presence.sign_in", json!({ "user_id": user })).await;
    assert_eq!(reply["data"], true, "{reply}");
    (ws, id)
}

#[tokio::test]
async fn a_client_close_runs_the_disconnect_hook_once_with_the_stored_user() {
    let (running, url) = start(Config::new()).await;
    let (mut ws, id) = signed_in(&url, "ada").await;
    let reply = call(&mut ws, "ws_presence.whoami", json!({})).await;
    assert_eq!(reply["data"], "ada");

    let connected = the_run("connect", &id).await;
    assert_eq!(connected.user, None, "no data yet on connect");
    ws.close(None).await.unwrap();

    let gone = the_run("disconnect", &id).await;
    assert_eq!(gone.user, Some(json!("ada")));
    // A worker of the service: a call id of its own, the socket in its data.
    let call_id = gone.call_id.expect("the hook runs with a call id");
    assert!(
        call_id.starts_with("ws_presence.on_disconnect."),
        "{call_id}"
    );
    assert_eq!(gone.context_socket, Some(json!(id)));
    running.stop().await;
}

#[tokio::test]
async fn a_server_side_close_of_a_slow_consumer_runs_the_disconnect_hook_once() {
    let (running, url) = start(Config::new().set("websocket_send_queue", 4)).await;
    let (mut ws, id) = signed_in(&url, "bob").await;
    // Pushes the client does not read overflow its queue: the server closes it.
    let flood = json!({"method": "ws_presence.flood", "data": {"n": 100_000, "size": 64 * 1024}, "correlation_id": 2});
    ws.send(Message::Text(flood.to_string().into()))
        .await
        .unwrap();

    let gone = the_run("disconnect", &id).await;
    assert_eq!(gone.user, Some(json!("bob")));
    drop(ws);
    running.stop().await;
}

#[tokio::test]
async fn a_hook_that_panics_or_fails_does_not_take_the_server_down() {
    let (running, url) = start(Config::new()).await;
    for user in ["panics", "fails"] {
        let (mut ws, id) = signed_in(&url, user).await;
        ws.close(None).await.unwrap();
        let gone = the_run("disconnect", &id).await;
        assert_eq!(gone.user, Some(json!(user)));
    }

    // The server serves on, and the hooks still run.
    let (mut ws, id) = signed_in(&url, "cy").await;
    let reply = call(&mut ws, "ws_presence.whoami", json!({})).await;
    assert_eq!(reply["data"], "cy");
    ws.close(None).await.unwrap();
    assert_eq!(the_run("disconnect", &id).await.user, Some(json!("cy")));
    running.stop().await;
}

#[tokio::test]
async fn data_lives_as_long_as_its_socket() {
    let (running, url) = start(Config::new()).await;
    let client = running.dynamic_client();
    // Called over no socket: there is nothing to store data for.
    let stored = client
        .call("ws_presence", "sign_in", json!({"user_id": "x"}))
        .await
        .unwrap();
    assert_eq!(stored, false);

    let (mut ws, id) = signed_in(&url, "dee").await;
    let data = client
        .call("ws_presence", "data_of", json!({ "socket_id": id }))
        .await
        .unwrap();
    assert_eq!(data, json!({"user_id": "dee"}));
    ws.close(None).await.unwrap();
    the_run("disconnect", &id).await;
    let data = client
        .call("ws_presence", "data_of", json!({ "socket_id": id }))
        .await
        .unwrap();
    assert_eq!(data, Value::Null, "a closed socket's data is gone");
    running.stop().await;
}
