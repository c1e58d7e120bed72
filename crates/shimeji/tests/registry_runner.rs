//! A runner in the service registry: it registers once ready, with the
//! routes its services declare, and stops in the order that loses no
//! request behind a router (not ready, deregistered, applied by every
//! router, then the listener closes and the requests in flight finish).

mod support;

use serde_json::Value;
use shimeji::http::Path;
use shimeji::prelude::*;
use shimeji::registry::{Registry, Route, Table};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const WITHIN: Duration = Duration::from_secs(15);

/// Lets `/slow` answer.
static FINISH_SLOW: Notify = Notify::const_new();
/// Told when `/slow` started.
static SLOW_STARTED: Notify = Notify::const_new();

#[derive(Default, Dependencies)]
struct Catalog;

#[service(name = "catalog")]
impl Catalog {
    #[http(GET, "/items/{id}")]
    async fn item(&self, Path(id): Path<u64>) -> Value {
        serde_json::json!({ "id": id })
    }

    #[http(POST, "/items")]
    async fn add(&self) -> &'static str {
        "added"
    }

    #[http(GET, "/slow")]
    async fn slow(&self) -> &'static str {
        SLOW_STARTED.notify_one();
        FINISH_SLOW.notified().await;
        "slow done"
    }
}

#[derive(Default, Dependencies)]
struct Ledger;

#[service(name = "ledger")]
impl Ledger {
    #[rpc]
    async fn balance(&self) -> i64 {
        0
    }
}

#[derive(Default, Dependencies)]
struct Chat;

#[service(name = "chat", websocket)]
impl Chat {
    #[rpc]
    async fn say(&self, text: String) -> String {
        text
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WITHIN, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn loopback() -> Config {
    Config::new()
        .set("WEB_SERVER_ADDRESS", "127.0.0.1:0")
        .set("METRICS_ADDRESS", "127.0.0.1:0")
}

/// A GET on a new connection: its status, or the connection error.
async fn get(address: &str, path: &str) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(WITHIN)
        .build()
        .map_err(|e| e.to_string())?;
    client
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn registers_once_ready_with_the_routes_it_serves() {
    let registry = Registry::memory();
    let mut watcher = registry.watcher();
    within("the first list", watcher.wait_until(|t| t.lists == 1)).await;
    // The moment the record appears, its address must answer its routes.
    let mut tables = watcher.subscribe();
    let first_seen = tokio::spawn(async move {
        loop {
            let table: Arc<Table> = tables.borrow_and_update().clone();
            if let Some(record) = table.instances_of("catalog").next() {
                let address = record.http.clone().expect("an HTTP address");
                return get(&address, "/items/7").await;
            }
            tables.changed().await.expect("watching");
        }
    });
    let running = ServiceRunner::with_config(loopback())
        .registry(registry.clone())
        .service(Catalog)
        .service(Ledger)
        .service(Chat)
        .start()
        .await
        .expect("start");
    assert_eq!(
        within("the first request", first_seen).await.expect("task"),
        Ok(200)
    );

    let web = running.web_address().expect("web server").to_string();
    let records: Vec<_> = running
        .registrations()
        .iter()
        .map(|r| r.record().clone())
        .collect();
    assert_eq!(records.len(), 3);
    let catalog = &records[0];
    assert_eq!(catalog.service, "catalog");
    assert_eq!(catalog.http.as_deref(), Some(web.as_str()));
    let mut routes = catalog.routes.clone();
    routes.sort();
    assert_eq!(
        routes,
        vec![
            Route::new("GET", "/items/{id}"),
            Route::new("GET", "/slow"),
            Route::new("POST", "/items"),
        ]
    );
    assert_eq!(catalog.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(catalog.pid, std::process::id());
    assert!(!catalog.host.is_empty());
    assert!(!catalog.websocket && !catalog.sticky);
    // Its operations server, where `upgrade` reads readiness and metrics.
    let ops = running.metrics_address().expect("ops server").to_string();
    assert!(records
        .iter()
        .all(|r| r.ops.as_deref() == Some(ops.as_str())));
    // An RPC-only service: registered, with nothing for a router.
    let ledger = &records[1];
    assert_eq!(
        (ledger.service.as_str(), ledger.http.as_deref()),
        ("ledger", None)
    );
    assert!(ledger.routes.is_empty());
    // A WebSocket service: reached on the web server's `/ws`.
    let chat = &records[2];
    assert!(chat.websocket);
    assert_eq!(chat.http.as_deref(), Some(web.as_str()));
    // One instance id for the runner's services.
    assert!(records.iter().all(|r| r.instance_id == catalog.instance_id));

    running.stop().await;
    assert!(registry
        .snapshot()
        .await
        .expect("snapshot")
        .instances
        .is_empty());
}

#[tokio::test]
async fn the_configuration_names_id_version_address_and_stickiness() {
    let config = loopback()
        .set("instance_id", "catalog-blue-1")
        .set("SERVICE_VERSION", "2.0.0-rc.1")
        .set("registry_advertise_address", "catalog.internal:8080")
        .set("sticky_sessions", true)
        .set("registry_ttl", 3);
    let running = ServiceRunner::with_config(config)
        .service(Catalog)
        .start()
        .await
        .expect("start");
    let registration = &running.registrations()[0];
    let record = registration.record();
    assert_eq!(record.instance_id, "catalog-blue-1");
    assert_eq!(record.version, "2.0.0-rc.1");
    assert_eq!(record.http.as_deref(), Some("catalog.internal:8080"));
    // The operations server on the advertised host, at its own port.
    let ops_port = running.metrics_address().expect("ops server").port();
    assert_eq!(
        record.ops.as_deref(),
        Some(format!("catalog.internal:{ops_port}").as_str())
    );
    assert!(record.sticky);
    assert_eq!(registration.ttl(), Duration::from_secs(3));
    // The runner's own in-process registry when none is named.
    assert_eq!(running.registry().name(), "memory");
    let snapshot = running.registry().snapshot().await.expect("snapshot");
    assert_eq!(snapshot.instances, vec![record.clone()]);
    running.stop().await;
}

#[tokio::test]
async fn a_bad_registry_setting_fails_the_start() {
    let bad = ServiceRunner::with_config(loopback().set("REGISTRY", "zookeeper://x:1"))
        .service(Catalog)
        .start()
        .await;
    assert!(
        matches!(bad, Err(StartError::Config(ref e)) if e.key == "REGISTRY"),
        "{:?}",
        bad.err()
    );
    let bad = ServiceRunner::with_config(loopback().set("registry_ttl", 0.5))
        .service(Catalog)
        .start()
        .await;
    assert!(
        matches!(bad, Err(StartError::Config(ref e)) if e.key == "registry_ttl"),
        "{:?}",
        bad.err()
    );
}

/// A router that applies every change at once, except the deletion of
/// `catalog`'s record, which it applies when `release` is told.
fn lagging_router(registry: Registry, release: Arc<Notify>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let reporter = registry
            .router("gateway-test", Duration::from_secs(10))
            .await
            .expect("router");
        let mut watcher = registry.watcher();
        let mut had_catalog = false;
        loop {
            let table = watcher.changed().await;
            let has_catalog = table.instances_of("catalog").count() > 0;
            if had_catalog && !has_catalog {
                release.notified().await;
            }
            had_catalog = has_catalog;
            reporter.report(table.revision).await.expect("report");
        }
    })
}

async fn ready_status(metrics: SocketAddr) -> u16 {
    get(&metrics.to_string(), "/health/ready")
        .await
        .expect("health answers")
}

#[tokio::test]
async fn stop_deregisters_waits_for_the_routers_then_closes_and_finishes_in_flight_work() {
    let registry = Registry::memory();
    let release = Arc::new(Notify::new());
    let router = lagging_router(registry.clone(), release.clone());
    let mut watcher = registry.watcher();
    let running = ServiceRunner::with_config(loopback().set("deregister_timeout", 30))
        .registry(registry.clone())
        .service(Catalog)
        .start()
        .await
        .expect("start");
    let web = running.web_address().expect("web").to_string();
    let metrics = running.metrics_address().expect("metrics");
    within("the record", watcher.wait_until(|t| t.instances.len() == 1)).await;
    assert_eq!(ready_status(metrics).await, 200);

    // A request in flight when the stop begins.
    let slow = tokio::spawn({
        let web = web.clone();
        async move { get(&web, "/slow").await }
    });
    within("the slow request", SLOW_STARTED.notified()).await;

    let stopping = tokio::spawn(running.stop());
    // Deregistered, and not ready any more...
    within(
        "the deregistration",
        watcher.wait_until(|t| t.instances.is_empty()),
    )
    .await;
    assert_eq!(ready_status(metrics).await, 503);
    // ... but while the router has not applied it, the instance still
    // takes new connections and answers.
    assert_eq!(get(&web, "/items/1").await, Ok(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stopping.is_finished(), "the stop waits for the router");
    assert_eq!(get(&web, "/items/2").await, Ok(200));

    // The router applies it: the listener closes...
    release.notify_one();
    within("the listener to close", async {
        while get(&web, "/items/3").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        !stopping.is_finished(),
        "the stop waits for the request in flight"
    );
    // ... and the request in flight still gets its answer.
    FINISH_SLOW.notify_one();
    assert_eq!(
        within("the slow answer", slow).await.expect("task"),
        Ok(200)
    );
    within("the stop", stopping).await.expect("stop");
    router.abort();
}

#[tokio::test]
async fn with_no_router_reporting_it_waits_the_delay_still_serving() {
    let registry = Registry::memory();
    let mut watcher = registry.watcher();
    let running = ServiceRunner::with_config(loopback().set("deregister_delay", 2))
        .registry(registry.clone())
        .service(Catalog)
        .start()
        .await
        .expect("start");
    let web = running.web_address().expect("web").to_string();
    within("the record", watcher.wait_until(|t| t.instances.len() == 1)).await;
    let stopping = tokio::spawn(running.stop());
    within(
        "the deregistration",
        watcher.wait_until(|t| t.instances.is_empty()),
    )
    .await;
    assert_eq!(
        get(&web, "/items/1").await,
        Ok(200),
        "still serving during the delay"
    );
    within("the stop", stopping).await.expect("stop");
    assert!(get(&web, "/items/1").await.is_err(), "closed after it");
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_runner_registers_in_the_etcd_its_configuration_names() {
    let etcd = support::Etcd::start();
    let config = loopback()
        .set("registry", etcd.url())
        .set("deregister_delay", 0.1);
    let running = ServiceRunner::with_config(config)
        .service(Catalog)
        .start()
        .await
        .expect("start");
    assert_eq!(running.registry().name(), "etcd");
    let observer = Registry::connect(&etcd.url()).await.expect("connect");
    let snapshot = observer.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.instances.len(), 1);
    let record = &snapshot.instances[0];
    assert_eq!(record.service, "catalog");
    assert_eq!(
        record.http.as_deref(),
        Some(running.web_address().expect("web").to_string().as_str())
    );
    running.stop().await;
    assert!(observer
        .snapshot()
        .await
        .expect("snapshot")
        .instances
        .is_empty());
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn an_unreachable_registry_fails_the_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config = loopback()
        .set("REGISTRY", format!("etcd://127.0.0.1:{port}"))
        .set("registry_ttl", 2);
    let failed = ServiceRunner::with_config(config)
        .service(Catalog)
        .start()
        .await;
    match failed {
        Err(StartError::Connect(message)) => assert!(message.contains("registry"), "{message}"),
        other => panic!("expected a connect error, got {:?}", other.err()),
    }
}
