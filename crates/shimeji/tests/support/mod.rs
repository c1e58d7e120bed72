//! Shared by the tests that need RabbitMQ: a fresh virtual host per test
//! binary, and a clear failure when no broker is reachable.
#![allow(dead_code)]

use std::net::TcpStream;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The broker the tests use.
pub const BROKER: &str = "127.0.0.1:5672";

fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `rabbitmqctl`, failing the test with its error.
pub fn ctl(args: &[&str]) -> String {
    rabbitmqctl(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Fails the test with instructions when RabbitMQ is not reachable.
pub fn require_broker() {
    if TcpStream::connect_timeout(&BROKER.parse().expect("address"), Duration::from_secs(2))
        .is_err()
    {
        panic!(
            "RabbitMQ is not reachable at {BROKER}. Start it with \
             `rabbitmq-server -detached && rabbitmqctl await_startup` (or run `bash .ci/run`, which does)."
        );
    }
}

/// An AMQP URI on a virtual host of this test binary's own, created fresh
/// (and emptied of anything an earlier run left) on first use.
pub fn amqp_uri(binary: &str) -> String {
    static VHOSTS: OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        OnceLock::new();
    require_broker();
    let map = VHOSTS.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(binary.to_string())
        .or_insert_with(|| {
            let vhost = format!("shimeji-test-{binary}");
            let _ = rabbitmqctl(&["delete_vhost", &vhost]);
            ctl(&["add_vhost", &vhost]);
            ctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
            format!("amqp://guest:guest@{BROKER}/{vhost}")
        })
        .clone()
}

/// The queues of a virtual host: (name, messages ready, consumers).
pub fn queues(vhost_uri: &str) -> Vec<(String, u64, u64)> {
    let vhost = vhost_uri.rsplit('/').next().unwrap_or("/");
    ctl(&[
        "list_queues",
        "-q",
        "-p",
        vhost,
        "name",
        "messages",
        "consumers",
    ])
    .lines()
    .filter_map(|line| {
        let mut parts = line.split('\t');
        Some((
            parts.next()?.to_string(),
            parts.next()?.trim().parse().ok()?,
            parts.next()?.trim().parse().ok()?,
        ))
    })
    .collect()
}
