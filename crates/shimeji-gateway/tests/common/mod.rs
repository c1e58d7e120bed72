//! What the gateway tests share: a shimeji HTTP service run on a free
//! loopback port, its registration by hand, fake instances that misbehave,
//! a gateway on a free port, and reading its metrics.
#![allow(dead_code)]

use serde_json::{json, Value};
use shimeji::http::{HeaderMap, Json, Path, Query, Status};
use shimeji::prelude::*;
use shimeji::registry::{InstanceRecord, Registration, Registry, Route};
use shimeji_gateway::{Gateway, Settings};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Generous bound for anything a test waits for.
pub const WITHIN: Duration = Duration::from_secs(10);

/// A lease long enough that no test sees it expire.
pub const TTL: Duration = Duration::from_secs(30);

/// An HTTP service that says which instance answered and what it saw.
#[derive(Dependencies)]
pub struct Items {
    name: String,
    posts: Arc<AtomicUsize>,
    sessions: Arc<AtomicUsize>,
}

#[derive(serde::Deserialize)]
pub struct SocketIo {
    sid: Option<String>,
}

#[service(name = "items", websocket)]
impl Items {
    #[http(GET, "/items/{id}")]
    async fn get(&self, Path(id): Path<u64>, headers: HeaderMap) -> Json<Value> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Json(json!({
            "id": id,
            "instance": self.name,
            "x-request-id": header("x-request-id"),
            "traceparent": header("traceparent"),
            "x-forwarded-for": header("x-forwarded-for"),
            "x-forwarded-proto": header("x-forwarded-proto"),
            "x-hop": header("x-hop"),
        }))
    }

    /// Served by every instance, but listed only in the records of the
    /// `stock` service: only they get its requests.
    #[http(GET, "/stock/{id}")]
    async fn stock(&self, Path(id): Path<u64>) -> Json<Value> {
        Json(json!({"stock": id, "instance": self.name}))
    }

    #[http(POST, "/items")]
    async fn create(&self, Json(item): Json<Value>) -> (Status, Json<Value>) {
        self.posts.fetch_add(1, Ordering::SeqCst);
        (
            Status::CREATED,
            Json(json!({"instance": self.name, "item": item})),
        )
    }

    #[http(GET, "/slow")]
    async fn slow(&self) -> Json<Value> {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Json(json!({"instance": self.name}))
    }

    /// An Engine.IO-like handshake and session: the handshake names a
    /// session of this instance, a request with a session says whose it is.
    #[http(GET, "/socket.io/")]
    async fn socket_io(&self, Query(q): Query<SocketIo>) -> String {
        match q.sid {
            None => {
                let n = self.sessions.fetch_add(1, Ordering::SeqCst);
                format!(
                    r#"0{{"sid":"{}-{n}","upgrades":["websocket"],"pingInterval":25000}}"#,
                    self.name
                )
            }
            Some(sid) => format!("{} {sid}", self.name),
        }
    }

    #[rpc]
    async fn whoami(&self) -> String {
        self.name.clone()
    }
}

/// The routes `Items` declares, as its record lists them.
pub fn item_routes() -> Vec<Route> {
    vec![
        Route::new("GET", "/items/{id}"),
        Route::new("POST", "/items"),
        Route::new("GET", "/slow"),
        Route::new("GET", "/socket.io/"),
    ]
}

/// A running `Items` instance.
pub struct Instance {
    pub name: String,
    pub address: SocketAddr,
    pub posts: Arc<AtomicUsize>,
    running: Option<RunningServices>,
}

impl Instance {
    /// Starts instance `name` on a free loopback port.
    pub async fn start(name: &str) -> Instance {
        let posts = Arc::new(AtomicUsize::new(0));
        let running =
            ServiceRunner::with_config(Config::new().set("WEB_SERVER_ADDRESS", "127.0.0.1:0"))
                .service(Items {
                    name: name.to_string(),
                    posts: posts.clone(),
                    sessions: Arc::new(AtomicUsize::new(0)),
                })
                .start()
                .await
                .expect("the items service starts");
        let address = running.web_address().expect("a web address");
        Instance {
            name: name.to_string(),
            address,
            posts,
            running: Some(running),
        }
    }

    /// Its record, as a runner would publish it.
    pub fn record(&self) -> InstanceRecord {
        record("items", &self.name, self.address, item_routes())
    }

    /// Registers it by hand.
    pub async fn register(&self, registry: &Registry) -> Registration {
        registry
            .register(self.record(), TTL)
            .await
            .expect("register")
    }

    /// Stops it.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

/// A record of instance `id` of `service` at `address`.
pub fn record(service: &str, id: &str, address: SocketAddr, routes: Vec<Route>) -> InstanceRecord {
    let mut record = InstanceRecord::new(service, id);
    record.http = Some(address.to_string());
    record.routes = routes;
    record.websocket = true;
    record
}

/// A loopback address nothing listens on (a port just freed).
pub fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// A fake instance that accepts each connection, reads what comes, and
/// closes it without answering; it counts the requests it read.
pub struct Dropper {
    pub address: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Dropper {
    pub async fn start() -> Dropper {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    // Read the request (head and body) as it comes, then drop it.
                    let mut read = 0;
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf))
                            .await
                    {
                        if n == 0 {
                            break;
                        }
                        read += n;
                    }
                    if read > 0 {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Dropper {
            address,
            requests,
            task,
        }
    }
}

impl Drop for Dropper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings for a test gateway on a free loopback port.
pub fn settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        ..Settings::default()
    }
}

/// Starts a gateway on `registry` and waits until it applied the first
/// table.
pub async fn gateway(registry: &Registry, settings: Settings) -> (Gateway, String) {
    let gateway = Gateway::start(registry.clone(), settings)
        .await
        .expect("the gateway starts");
    assert!(gateway.ready(WITHIN).await, "the gateway applied no table");
    let base = format!("http://{}", gateway.local_addr());
    (gateway, base)
}

/// Waits until `gateway` routes with revision `revision` or later.
pub async fn applied(gateway: &Gateway, revision: u64) {
    assert!(
        gateway.applied(revision, WITHIN).await,
        "the gateway did not apply revision {revision} (it is at {})",
        gateway.revision()
    );
}

/// An HTTP client that does not pool (each request a new connection)
/// unless asked.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WITHIN)
        .build()
        .expect("a client")
}

/// GETs `url`: status and JSON body.
pub async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// The value of the sample `name{labels}` in a Prometheus text, 0 when absent.
pub fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let wanted = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The gateway's `/metrics`.
pub async fn metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Counts the `instance` field of `n` GETs of `url`, failing on non-200.
pub async fn spread(client: &reqwest::Client, url: &str, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let (status, body) = get_json(client, url).await;
        assert_eq!(status, 200, "{body}");
        let instance = body["instance"].as_str().unwrap_or("?").to_string();
        *seen.entry(instance).or_insert(0) += 1;
    }
    seen
}
