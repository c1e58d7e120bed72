//! `amqps://` URIs use TLS, and check the broker's certificate.
//!
//! Needs the local RabbitMQ's TLS listener on 127.0.0.1:5671, with a test
//! certificate: `bash .ci/rabbitmq-tls.sh` sets it up (idempotently; `bash
//! .ci/run` calls it). By default shimeji checks a broker's certificate
//! against the webpki (Mozilla) roots, which do not hold the test CA, and
//! refuses it; told to trust the test CA (`AMQP_SSL: {ca_certs: …}`), it
//! serves and calls over TLS.

mod support;

use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::tls::TlsAdaptor;
use shimeji::prelude::*;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

const TLS_BROKER: &str = "127.0.0.1:5671";

/// The test CA, failing the test with instructions when the listener or
/// its certificate is missing.
fn require_tls_listener() -> PathBuf {
    support::require_broker();
    let dir =
        std::env::var("SHIMEJI_TLS_DIR").unwrap_or_else(|_| "/etc/rabbitmq/shimeji-tls".into());
    let ca = PathBuf::from(dir).join("ca.pem");
    let listening = TcpStream::connect_timeout(
        &TLS_BROKER.parse().expect("address"),
        Duration::from_secs(2),
    )
    .is_ok();
    if !listening || !ca.exists() {
        panic!(
            "RabbitMQ has no TLS listener on {TLS_BROKER} with the test certificate ({} {}). \
             Set it up with `bash .ci/rabbitmq-tls.sh` (as root; it makes the certificate with \
             openssl and starts the listener without restarting the broker).",
            ca.display(),
            if ca.exists() { "exists" } else { "is missing" }
        );
    }
    ca
}

#[derive(Dependencies)]
struct Tls;

#[service(name = "tls_probe")]
impl Tls {
    #[rpc]
    async fn ping(&self) {}
}

#[tokio::test]
async fn amqps_speaks_tls_and_checks_the_certificate() {
    let ca = require_tls_listener();
    let vhost = support::vhost(&support::amqp_uri("amqp_tls"));

    // The listener works for a client that trusts the test CA.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = OpenConnectionArguments::new("localhost", 5671, "guest", "guest");
    args.virtual_host(&vhost).tls_adaptor(
        TlsAdaptor::without_client_auth(Some(&ca), "localhost".into()).expect("the test CA"),
    );
    let connection = tokio::time::timeout(Duration::from_secs(10), Connection::open(&args))
        .await
        .expect("the TLS listener answers")
        .expect("a client trusting the test CA connects over TLS");
    let _ = connection.close().await;

    // shimeji on amqps:// speaks TLS to it and refuses the certificate it
    // cannot verify: the handshake failed, not the AMQP protocol.
    let uri = format!("amqps://guest:guest@localhost:5671/{vhost}");
    let err = ServiceRunner::with_config(Config::new().set("AMQP_URI", uri))
        .service(Tls)
        .start()
        .await
        .err()
        .expect("an unverifiable certificate fails the start");
    let message = err.to_string().to_lowercase();
    assert!(
        message.contains("certificate") || message.contains("issuer"),
        "a TLS certificate error: {err}"
    );

    // Told to trust the test CA (Nameko's AMQP_SSL), shimeji serves and
    // calls over TLS end to end.
    let uri = format!("amqps://guest:guest@localhost:5671/{vhost}");
    let running = ServiceRunner::with_config(
        Config::new()
            .set("AMQP_URI", uri.clone())
            .set("AMQP_SSL", serde_json::json!({ "ca_certs": ca })),
    )
    .service(Tls)
    .start()
    .await
    .expect("amqps:// with the test CA in AMQP_SSL");
    let probe: TlsClient = running.client();
    probe.ping().await.expect("a call over TLS");
    let listing = support::ctl(&["list_connections", "-q", "vhost", "ssl"]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(&vhost) && l.ends_with("true")),
        "the broker sees a TLS connection on {vhost}: {listing}"
    );
    running.stop().await;
    // A missing CA file is a clear start error.
    let err = ServiceRunner::with_config(Config::new().set("AMQP_URI", uri).set(
        "AMQP_SSL",
        serde_json::json!({ "ca_certs": "/nonexistent/ca.pem" }),
    ))
    .service(Tls)
    .start()
    .await
    .err()
    .expect("a missing CA file fails the start");
    assert!(err.to_string().contains("AMQP_SSL"), "{err}");

    // The same port over plain amqp:// is not AMQP: it fails otherwise.
    let plain = format!("amqp://guest:guest@localhost:5671/{vhost}");
    let err = ServiceRunner::with_config(Config::new().set("AMQP_URI", plain))
        .service(Tls)
        .start()
        .await
        .err()
        .expect("plain AMQP to a TLS port fails");
    assert!(
        !err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}
