//! HTTP and WebSocket entrypoints against a real server on loopback.

mod support;

use futures::SinkExt;
use serde::Deserialize;
use serde_json::{json, Value};
use shimeji::http::{HeaderMap, Json, Path, Query, Status, WebSocketHub};
use shimeji::prelude::*;
use support::next_json;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, thiserror::Error, Exception)]
enum UserError {
    #[error("no user {0}")]
    #[exception(status = 404)]
    NotFound(u64),
    #[error("name must not be empty")]
    EmptyName,
    #[error("the database is on fire")]
    #[exception(status = 503)]
    Database,
}

#[derive(Deserialize)]
struct Paging {
    limit: Option<u32>,
}

#[derive(Deserialize, serde::Serialize)]
struct NewUser {
    name: String,
}

#[derive(Default, Dependencies)]
struct Users;

#[service(name = "http_users")]
impl Users {
    #[http(GET, "/users/{id}")]
    async fn get(&self, Path(id): Path<u64>) -> Result<Value, UserError> {
        match id {
            1 => Ok(json!({"id": 1, "name": "Ada"})),
            500 => Err(UserError::Database),
            _ => Err(UserError::NotFound(id)),
        }
    }

    #[http(GET, "/users")]
    async fn list(&self, Query(paging): Query<Paging>, headers: HeaderMap) -> Value {
        let lang = headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("en")
            .to_string();
        json!({"limit": paging.limit.unwrap_or(10), "language": lang})
    }

    #[http(POST, "/users")]
    async fn create(
        &self,
        Json(user): Json<NewUser>,
    ) -> Result<(Status, HeaderMap, Json<Value>), UserError> {
        if user.name.is_empty() {
            return Err(UserError::EmptyName);
        }
        let mut headers = HeaderMap::new();
        headers.insert("location", "/users/2".parse().unwrap());
        Ok((
            Status::CREATED,
            headers,
            Json(json!({"id": 2, "name": user.name})),
        ))
    }

    #[http(GET, "/hello")]
    async fn hello(&self) -> String {
        "Hello, world!".to_string()
    }

    #[http(DELETE, "/users/{id}")]
    async fn delete(&self, Path(_id): Path<u64>) -> Status {
        panic!("secret internals: /etc/db-password")
    }
}

#[derive(Default, Dependencies)]
struct Chat {
    hub: WebSocketHub,
}

#[service(name = "http_chat", websocket)]
impl Chat {
    #[rpc]
    async fn join(&self, room: String) -> bool {
        let ctx = shimeji::context::current().unwrap();
        let socket = ctx
            .data("socket_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.hub.subscribe(&socket, &room)
    }

    #[rpc]
    async fn say(&self, room: String, text: String) -> usize {
        self.hub
            .broadcast(&room, "message", json!({ "room": room, "text": text }))
    }

    #[http(GET, "/chat/health")]
    async fn health(&self) -> &'static str {
        "ok"
    }
}

async fn start() -> (RunningServices, String) {
    let running = ServiceRunner::with_config(
        Config::new()
            .set("WEB_SERVER_ADDRESS", "127.0.0.1:0")
            .set("max_body_size", 1024),
    )
    .service(Users)
    .service(Chat::default())
    .start()
    .await
    .unwrap();
    let base = format!("http://{}", running.web_address().unwrap());
    (running, base)
}

#[tokio::test]
async fn entrypoints_answer_with_values_statuses_and_headers() {
    let (running, base) = start().await;
    let http = reqwest::Client::new();

    let r = http.get(format!("{base}/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"id": 1, "name": "Ada"})
    );

    let r = http
        .get(format!("{base}/users?limit=3"))
        .header("accept-language", "fr")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"limit": 3, "language": "fr"})
    );

    let r = http
        .post(format!("{base}/users"))
        .json(&json!({"name": "Bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/users/2");
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "Bob");

    let r = http.get(format!("{base}/hello")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Hello, world!");
    let r = http
        .get(format!("{base}/chat/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    running.stop().await;
}

#[tokio::test]
async fn expected_errors_are_4xx_and_anything_else_a_500_without_internals() {
    let (running, base) = start().await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{base}/users/7")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "NotFound", "message": "no user 7"})
    );

    let r = http
        .post(format!("{base}/users"))
        .json(&json!({"name": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "EmptyName");

    let r = http.get(format!("{base}/users/500")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(!body.contains("fire"), "{body}");

    let r = http.delete(format!("{base}/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("password") && !body.contains("secret"),
        "{body}"
    );
    // The service keeps serving.
    assert_eq!(
        http.get(format!("{base}/users/1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    running.stop().await;
}

#[tokio::test]
async fn bad_input_gets_400_413_and_404() {
    let (running, base) = start().await;
    let http = reqwest::Client::new();
    // Malformed JSON body.
    let r = http
        .post(format!("{base}/users"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        !r.text().await.unwrap().is_empty(),
        "a message says what is wrong"
    );
    // A path parameter of the wrong type.
    let r = http.get(format!("{base}/users/abc")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // A body over max_body_size.
    let big = json!({"name": "x".repeat(4096)});
    let r = http
        .post(format!("{base}/users"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // An unknown route.
    let r = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "NotFound");
    // A known route, another method: 405 in JSON, with `Allow`.
    let r = http.patch(format!("{base}/users")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "MethodNotAllowed"
    );
    running.stop().await;
}

#[tokio::test]
async fn websocket_rpc_push_and_bad_frames() {
    let (running, base) = start().await;
    let url = base.replace("http://", "ws://") + "/ws";
    let (mut a, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let hello = next_json(&mut a).await;
    assert_eq!(hello["event"], "connected");
    assert!(hello["data"]["socket_id"].is_string());
    next_json(&mut b).await;

    // RPC over the socket.
    let call = json!({"method": "http_chat.join", "data": {"room": "lobby"}, "correlation_id": 1});
    b.send(Message::Text(call.to_string().into()))
        .await
        .unwrap();
    let reply = next_json(&mut b).await;
    assert_eq!(
        reply,
        json!({"type": "result", "success": true, "data": true, "correlation_id": 1})
    );

    // A frame that is not JSON: an error frame, and the connection stays.
    a.send(Message::Text("{not json".into())).await.unwrap();
    let reply = next_json(&mut a).await;
    assert_eq!(reply["success"], false);
    assert_eq!(reply["error"]["exc_type"], "MalformedRequest");
    // An unknown method.
    a.send(Message::Text(
        json!({"method": "http_users.get", "correlation_id": "x"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let reply = next_json(&mut a).await;
    assert_eq!(reply["error"]["exc_type"], "MethodNotFound");
    assert_eq!(reply["correlation_id"], "x");

    // Push: `a` speaks, `b` (subscribed) hears.
    let say = json!({"method": "http_chat.say", "data": {"room": "lobby", "text": "hi"}, "correlation_id": 2});
    a.send(Message::Text(say.to_string().into())).await.unwrap();
    let reply = next_json(&mut a).await;
    assert_eq!(reply["data"], 1, "one subscriber reached");
    let pushed = next_json(&mut b).await;
    assert_eq!(
        pushed,
        json!({"type": "event", "event": "message", "data": {"room": "lobby", "text": "hi"}})
    );
    running.stop().await;
}

/// A port another socket holds: the runner says which address it could not
/// listen on, and stops what it started.
#[tokio::test]
async fn a_taken_port_is_a_listen_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let config = Config::new().set("WEB_SERVER_ADDRESS", address.as_str());
    let error = match ServiceRunner::with_config(config)
        .service(Users)
        .start()
        .await
    {
        Ok(_) => panic!("started on a taken port"),
        Err(error) => error,
    };
    match &error {
        StartError::Listen {
            address: at,
            source,
        } => {
            assert_eq!(at, &address);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("not a listen error: {other:?}"),
    }
    assert!(error.to_string().contains(&address), "{error}");
}

#[derive(Default, Dependencies)]
struct Greeter;

#[service(name = "http_greeter")]
impl Greeter {
    #[http(GET, "/hello")]
    async fn hello(&self) -> String {
        "Hi!".to_string()
    }
}

/// Two services declaring one route: a routes error naming both, and
/// nothing listens.
#[tokio::test]
async fn one_route_in_two_services_is_a_routes_error() {
    let config = Config::new().set("WEB_SERVER_ADDRESS", "127.0.0.1:0");
    let started = ServiceRunner::with_config(config)
        .service(Users)
        .service(Greeter)
        .start()
        .await;
    match started {
        Err(StartError::Routes(message)) => {
            assert!(message.contains("GET /hello"), "{message}");
            assert!(message.contains("http_greeter.hello"), "{message}");
        }
        Err(other) => panic!("not a routes error: {other:?}"),
        Ok(_) => panic!("started with one route twice"),
    }
}
