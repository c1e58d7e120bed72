//! Delivery guarantees on RabbitMQ: a request is acked only after its reply
//! is published, so an instance killed mid-call (`kill -9`) has the request
//! redelivered to another; the prefetch equals `max_workers`.
//!
//! The instances run in child processes: this test binary re-runs itself,
//! selected by an environment variable.

mod support;

use shimeji::prelude::*;
use std::time::Duration;

const CHILD: &str = "SHIMEJI_DELIVERY_CHILD_URI";

fn uri() -> String {
    support::amqp_uri("amqp_delivery")
}

#[derive(Dependencies)]
struct Crashy;

#[service(name = "amqp_crashy")]
impl Crashy {
    /// Says which process works on it, works, returns that process id.
    #[rpc]
    async fn work(&self, millis: u64) -> u32 {
        println!("working {}", std::process::id());
        tokio::time::sleep(Duration::from_millis(millis)).await;
        std::process::id()
    }
}

fn serve_in_child(uri: String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let running = ServiceRunner::with_config(Config::new().set("AMQP_URI", uri))
            .service(Crashy)
            .start()
            .await
            .unwrap();
        println!("ready {}", std::process::id());
        running.run_until_signal().await;
    });
}

/// Starts an instance of `amqp_crashy` in a child process, and waits until
/// it serves.
fn spawn_instance(uri: &str) -> support::TestChild {
    let mut instance = support::spawn_test(
        "a_killed_instance_has_its_request_redelivered",
        &[(CHILD, uri)],
    );
    instance.wait_for("ready", Duration::from_secs(30), |l| l.contains("ready"));
    instance
}

#[test]
fn a_killed_instance_has_its_request_redelivered() {
    if let Ok(uri) = std::env::var(CHILD) {
        return serve_in_child(uri);
    }
    let uri = uri();
    let mut instances = [spawn_instance(&uri), spawn_instance(&uri)];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = rt.block_on(async {
        ServiceRunner::with_config(Config::new().set("AMQP_URI", uri.clone()))
            .start()
            .await
            .unwrap()
    });
    let client: CrashyClient = running.client();
    let call = rt.spawn(async move {
        client
            .with_timeout(Duration::from_secs(30))
            .work(1_500)
            .await
    });

    // Find the instance that took the request, and kill it mid-call.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let victim = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no instance took the request"
        );
        let found = instances.iter().position(|i| {
            i.lines
                .try_recv()
                .map(|l| l.starts_with("working"))
                .unwrap_or(false)
        });
        if let Some(i) = found {
            break i;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let victim_pid = instances[victim].id();
    instances[victim]
        .process
        .kill()
        .expect("kill -9 the instance");
    let _ = instances[victim].process.wait();

    let survivor_pid = instances[1 - victim].id();
    let answered_by = rt
        .block_on(call)
        .unwrap()
        .expect("the call completes on the other instance");
    assert_eq!(answered_by, survivor_pid, "the victim was {victim_pid}");

    rt.block_on(running.stop());
    let survivor = &mut instances[1 - victim];
    survivor.signal("TERM");
    let _ = survivor.process.wait();
}

#[derive(Dependencies)]
struct Prefetched;

#[service(name = "amqp_prefetched")]
impl Prefetched {
    #[rpc]
    async fn ping(&self) {}
}

#[tokio::test]
async fn the_prefetch_equals_max_workers() {
    let uri = uri();
    let running = ServiceRunner::with_config(
        Config::new()
            .set("AMQP_URI", uri.clone())
            .set("max_workers", 7),
    )
    .service(Prefetched)
    .start()
    .await
    .unwrap();
    let vhost = support::vhost(&uri);
    let consumers = support::ctl(&[
        "list_consumers",
        "-q",
        "-p",
        &vhost,
        "queue_name",
        "prefetch_count",
    ]);
    let line = consumers
        .lines()
        .find(|l| l.starts_with("rpc-amqp_prefetched"))
        .unwrap_or_else(|| panic!("no consumer on rpc-amqp_prefetched: {consumers}"));
    assert_eq!(line.split('\t').nth(1).map(str::trim), Some("7"), "{line}");
    running.stop().await;
}
