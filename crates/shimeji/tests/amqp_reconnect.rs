//! Reconnecting after the broker drops connections (`rabbitmqctl
//! close_all_connections`) and after a full `stop_app` / `start_app`:
//! services and clients come back, and no call hangs past its timeout.
//!
//! One test, run step by step: both faults hit the whole broker. The broker
//! is stopped through a guard that starts it again however the test ends;
//! a second test proves the guard does (the two never run at once).

mod support;

use shimeji::prelude::*;
use shimeji::transport::amqp::{AmqpSettings, AmqpTransport};
use std::time::{Duration, Instant};

#[derive(Dependencies)]
struct Steady;

#[service(name = "amqp_steady")]
impl Steady {
    #[rpc]
    async fn echo(&self, n: u64) -> u64 {
        n
    }

    #[rpc]
    async fn slow(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }
}

/// Calls until a call succeeds again, or fails the test after `within`.
async fn until_serving(client: &SteadyClient, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match client
            .with_timeout(Duration::from_millis(500))
            .echo(7)
            .await
        {
            Ok(7) => return started.elapsed(),
            other if started.elapsed() > within => {
                panic!("not serving again after {within:?}: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

use support::vhost;

/// Both tests stop the whole broker: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_failing_step_leaves_the_broker_running() {
    let _serial = SERIAL.lock().await;
    support::require_broker();
    let failed = std::thread::spawn(|| {
        let _stopped = support::stop_broker();
        panic!("a step fails while the broker is stopped");
    })
    .join();
    assert!(failed.is_err(), "the step was meant to fail");
    // Up again, and serving AMQP: a connection opens.
    support::require_broker();
    let uri = support::amqp_uri("amqp_reconnect");
    let transport = tokio::time::timeout(
        Duration::from_secs(20),
        AmqpTransport::connect(AmqpSettings::new(uri), "reconnect-guard-check"),
    )
    .await
    .expect("the broker answers again")
    .expect("the broker accepts connections again");
    transport.close().await;
}

#[tokio::test]
async fn services_and_clients_reconnect_after_the_broker_drops_them() {
    let _serial = SERIAL.lock().await;
    let uri = support::amqp_uri("amqp_reconnect");
    // The service and the client on separate connections, as in two processes.
    let service = ServiceRunner::with_config(Config::new().set("AMQP_URI", uri.clone()))
        .service(Steady)
        .start()
        .await
        .unwrap();
    let client_transport =
        AmqpTransport::connect(AmqpSettings::new(uri.clone()), "reconnect-test-client")
            .await
            .unwrap();
    let client = SteadyClient::from(Client::new(
        std::sync::Arc::new(client_transport.clone()),
        Duration::from_secs(10),
    ));
    assert_eq!(client.echo(1).await.unwrap(), 1);

    // 1. The broker closes every connection. A call in flight completes
    //    after the reconnect or fails; it does not hang past its timeout.
    let in_flight = tokio::spawn({
        let client = client.with_timeout(Duration::from_secs(8));
        async move { client.slow(1_000).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    support::ctl(&[
        "close_all_connections",
        "-p",
        &vhost(&uri),
        "test: connection drop",
    ]);
    let took = until_serving(&client, Duration::from_secs(20)).await;
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the call in flight must not hang past its timeout")
        .unwrap();
    match &outcome {
        Ok(n) => assert_eq!(*n, 1_000),
        Err(e) => assert!(
            e.is("Timeout") || e.is("Transport"),
            "a clear error, got {e:?}"
        ),
    }
    assert!(started.elapsed() < Duration::from_secs(9));
    assert!(client_transport.reconnects() >= 1);
    eprintln!("serving again {took:?} after close_all_connections; in-flight call: {outcome:?}");

    let scrape = shimeji::metrics::render();
    let reconnects = support::sample(
        &scrape,
        r#"shimeji_transport_reconnects_total{transport="amqp"}"#,
    );
    assert!(
        reconnects >= Some(2.0),
        "service and client reconnected:\n{scrape}"
    );

    // 2. The broker application stops and starts again. Meanwhile the
    //    service is not ready; once reconnected, it is again.
    let health = service.health();
    assert!(health.readiness().ready, "{:?}", health.readiness());
    let stopped = support::stop_broker();
    let down = client
        .with_timeout(Duration::from_millis(300))
        .echo(2)
        .await;
    assert!(down.is_err(), "no broker, no reply: {down:?}");
    let lost = Instant::now();
    while health.readiness().ready {
        assert!(
            lost.elapsed() < Duration::from_secs(10),
            "still ready 10 s after the broker stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let readiness = health.readiness();
    assert!(!readiness.transport_connected, "{readiness:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stopped); // starts the broker again and waits for it
    let took = until_serving(&client, Duration::from_secs(30)).await;
    eprintln!("serving again {took:?} after start_app");
    assert_eq!(client.echo(3).await.unwrap(), 3);
    let back = Instant::now();
    while !health.readiness().ready {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "not ready 10 s after serving again: {:?}",
            health.readiness()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    service.stop().await;
    client_transport.close().await;
}
