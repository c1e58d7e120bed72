//! What the README promises of observing services, on the embedded
//! transport: `shimeji_workers_waiting` counts work waiting for a free
//! worker, and `/health/ready` answers 503 while the services start.

mod support;

use shimeji::prelude::*;
use shimeji::Dependency;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::sample;

/// A free local port for `METRICS_ADDRESS`.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

#[derive(Dependencies)]
struct Narrow;

#[service(name = "claims_narrow")]
impl Narrow {
    #[rpc]
    async fn nap(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }
}

/// With `max_workers: 1` and one call in its worker, two more calls wait:
/// the scrape says so while they do, and 0 once they are done.
#[tokio::test]
async fn workers_waiting_counts_work_waiting_for_a_worker() {
    let address = free_address();
    let running = ServiceRunner::with_config(
        Config::new()
            .set("METRICS_ADDRESS", address.clone())
            .set("max_workers", 1),
    )
    .service(Narrow)
    .start()
    .await
    .unwrap();
    let client: NarrowClient = running.client();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.nap(800).await })
        })
        .collect();
    let url = format!("http://{address}/metrics");
    let series = r#"shimeji_workers_waiting{service="claims_narrow"}"#;
    let started = Instant::now();
    loop {
        let scrape = get(&url).await.map(|(_, body)| body).unwrap_or_default();
        if sample(&scrape, series) == Some(2.0) {
            assert_eq!(
                sample(&scrape, r#"shimeji_workers_busy{service="claims_narrow"}"#),
                Some(1.0),
                "{scrape}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "two calls never showed as waiting:\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 800);
    }
    let (_, scrape) = get(&url).await.expect("a scrape");
    assert_eq!(sample(&scrape, series), Some(0.0), "{scrape}");
    running.stop().await;
}

/// A dependency whose setup lasts until it is released.
#[derive(Clone, Default)]
struct Gate(Arc<tokio::sync::Notify>);

impl Dependency for Gate {
    fn setup<'a>(&'a self, _ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        Box::pin(async move {
            self.0.notified().await;
            Ok(())
        })
    }
}

#[derive(Default, Dependencies)]
struct Slow {
    gate: Gate,
}

#[service(name = "claims_slow_start")]
impl Slow {
    #[rpc]
    async fn ping(&self) {}
}

/// `/health/ready` answers 503 (stage `starting`) while a service is still
/// starting, and 200 once every service has; `/health/live` answers 200
/// throughout.
#[tokio::test]
async fn not_ready_while_starting() {
    let address = free_address();
    let gate = Gate::default();
    let service = Slow { gate: gate.clone() };
    let runner = ServiceRunner::with_config(Config::new().set("METRICS_ADDRESS", address.clone()))
        .service(service);
    let ready = format!("http://{address}/health/ready");
    // While the start waits on the gate, probe; then open the gate.
    let probe = async {
        let began = Instant::now();
        let answer = loop {
            if let Some(answer) = get(&ready).await {
                break answer;
            }
            assert!(
                began.elapsed() < Duration::from_secs(5),
                "/health/ready never answered while starting"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let live = get(&format!("http://{address}/health/live")).await;
        gate.0.notify_one();
        (answer, live)
    };
    let (started, ((status, body), live)) = tokio::join!(runner.start(), probe);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("starting"), "{body}");
    assert_eq!(live.map(|(status, _)| status), Some(200));
    let running = started.unwrap();
    let (status, body) = get(&ready).await.expect("/health/ready answers");
    assert_eq!(status, 200, "{body}");
    running.stop().await;
}
