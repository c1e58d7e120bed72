//! What the test binaries share, each piece written once:
//!
//! - here, RabbitMQ: a virtual host of each test binary's run, `rabbitmqctl`,
//!   stopping the broker, and a raw AMQP client that publishes and consumes
//!   as a peer would;
//! - [`child`]: running part of a test in a child process;
//! - [`etcd`]: a throwaway etcd on free loopback ports;
//! - [`events`]: services that record the events they handle;
//! - [`scrape`]: reading a Prometheus scrape;
//! - [`websocket`]: a WebSocket client of the hub.
//!
//! A run's virtual host is `shimeji-test-<binary>-<pid>-<random>`: two runs
//! on one broker (two checkouts, two CI jobs) never share one, so neither
//! deletes what the other is using. It is deleted when the test binary
//! exits, whether its tests passed or failed. A run killed before it could
//! (SIGKILL, a crash) leaves its vhost behind; the next run deletes every
//! such `shimeji-test-*-<pid>-*` vhost whose process no longer exists on
//! this machine and that has no connection. Vhosts in the older form
//! `shimeji-test-<binary>` cannot be told apart from a live run's and are
//! left alone: `rabbitmqctl delete_vhost` them by hand.
//!
//! Each test binary uses a part of this module: the rest is dead code there.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod child;
pub mod etcd;
pub mod events;
pub mod scrape;
pub mod websocket;

pub use child::{spawn_test, TestChild};
pub use etcd::Etcd;
pub(crate) use events::event_log_service;
pub use events::EventLog;
pub use scrape::sample;
pub use websocket::{connect_ws, next_json, Socket};

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

/// An AMQP URI on a virtual host of this test binary's run, created on
/// first use and deleted when the binary exits.
pub fn amqp_uri(binary: &str) -> String {
    static VHOSTS: OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        OnceLock::new();
    require_broker();
    let map = VHOSTS.get_or_init(|| {
        delete_stale_vhosts();
        Default::default()
    });
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(binary.to_string())
        .or_insert_with(|| {
            let vhost = format!(
                "shimeji-test-{binary}-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            );
            ctl(&["add_vhost", &vhost]);
            ctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
            delete_at_exit(&vhost);
            format!("amqp://guest:guest@{BROKER}/{vhost}")
        })
        .clone()
}

/// The virtual hosts this process created, deleted at exit.
fn created() -> &'static std::sync::Mutex<Vec<String>> {
    static CREATED: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    CREATED.get_or_init(Default::default)
}

fn delete_at_exit(vhost: &str) {
    extern "C" {
        fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
    }
    extern "C" fn delete_created() {
        let vhosts = std::mem::take(&mut *created().lock().unwrap_or_else(|p| p.into_inner()));
        for vhost in vhosts {
            let _ = rabbitmqctl(&["delete_vhost", &vhost]);
        }
    }
    let mut vhosts = created().lock().unwrap_or_else(|p| p.into_inner());
    if vhosts.is_empty() {
        // SAFETY: registers a plain function with no arguments, once per
        // process; libtest's exit (pass or fail) runs it.
        unsafe { atexit(delete_created) };
    }
    vhosts.push(vhost.to_string());
}

/// The process id in a run's vhost name, `shimeji-test-<binary>-<pid>-<hex>`.
pub fn vhost_pid(vhost: &str) -> Option<u32> {
    let rest = vhost.strip_prefix("shimeji-test-")?;
    let (rest, random) = rest.rsplit_once('-')?;
    if random.len() != 8 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    rest.rsplit_once('-')?.1.parse().ok()
}

/// Deletes the vhosts of earlier runs that are provably over: their process
/// is gone from this machine and nothing is connected to them.
pub fn delete_stale_vhosts() -> Vec<String> {
    let Ok(vhosts) = rabbitmqctl(&["list_vhosts", "-q", "name"]) else {
        return Vec::new();
    };
    let connected = rabbitmqctl(&["list_connections", "-q", "vhost"]).unwrap_or_default();
    let mut deleted = Vec::new();
    for vhost in vhosts.lines().map(str::trim) {
        let Some(pid) = vhost_pid(vhost) else {
            continue;
        };
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        let in_use = connected.lines().any(|l| l.trim() == vhost);
        if !alive && !in_use && rabbitmqctl(&["delete_vhost", vhost]).is_ok() {
            deleted.push(vhost.to_string());
        }
    }
    deleted
}

/// The virtual host of an AMQP URI made by [`amqp_uri`].
pub fn vhost(uri: &str) -> String {
    uri.rsplit('/').next().unwrap_or("/").to_string()
}

/// Stops the broker application (`rabbitmqctl stop_app`); the returned
/// guard starts it again when dropped, however the test ends (a failed
/// assertion unwinds through it).
#[must_use = "the broker starts again when the guard is dropped"]
pub fn stop_broker() -> BrokerStopped {
    ctl(&["stop_app"]);
    BrokerStopped(())
}

/// Starts the broker application again when dropped; see [`stop_broker`].
pub struct BrokerStopped(());

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        let started = rabbitmqctl(&["start_app"]).and_then(|_| rabbitmqctl(&["await_startup"]));
        if let Err(e) = started {
            // Panicking while unwinding would abort: say it loudly instead.
            eprintln!("the broker could not be started again: {e}");
        }
    }
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

/// The messages (ready and unacknowledged) in queue `queue` of the
/// virtual host of `vhost_uri`; `None` when there is no such queue.
pub fn messages(vhost_uri: &str, queue: &str) -> Option<u64> {
    queues(vhost_uri)
        .into_iter()
        .find(|(name, _, _)| name == queue)
        .map(|(_, messages, _)| messages)
}

/// Waits up to `within` for queue `queue` of the virtual host of
/// `vhost_uri` to hold no messages, asking every 100 ms; when the time is
/// up, what it still holds (`None`: there is no such queue).
pub async fn until_empty(
    vhost_uri: &str,
    queue: &str,
    within: Duration,
) -> Result<(), Option<u64>> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = messages(vhost_uri, queue);
        if left == Some(0) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(left);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A raw AMQP client on `uri` (connection `name`): Nameko's RPC exchange
/// declared, and an auto-delete queue `queue` (with `arguments`) bound to it
/// by `key`, as a caller's reply queue is. See [`consume_raw`].
pub async fn raw_queue(
    uri: &str,
    name: &str,
    queue: &str,
    key: &str,
    arguments: amqprs::FieldTable,
) -> (amqprs::connection::Connection, amqprs::channel::Channel) {
    let (connection, channel) = raw_connection(uri, name).await;
    bind_raw_queue(&channel, queue, key, arguments).await;
    (connection, channel)
}

/// A raw AMQP connection to `uri` named `name`, and a channel on it with
/// Nameko's RPC exchange declared.
pub async fn raw_connection(
    uri: &str,
    name: &str,
) -> (amqprs::connection::Connection, amqprs::channel::Channel) {
    let mut args = amqprs::connection::OpenConnectionArguments::try_from(uri).expect("an AMQP URI");
    args.connection_name(name);
    let connection = amqprs::connection::Connection::open(&args)
        .await
        .expect("the raw client connects");
    let channel = connection.open_channel(None).await.expect("a channel");
    channel
        .exchange_declare(
            amqprs::channel::ExchangeDeclareArguments::new("nameko-rpc", "topic")
                .durable(true)
                .finish(),
        )
        .await
        .expect("declare nameko-rpc");
    (connection, channel)
}

/// Declares the auto-delete queue `queue` (with `arguments`) on `channel`
/// and binds it to the RPC exchange by `key`.
pub async fn bind_raw_queue(
    channel: &amqprs::channel::Channel,
    queue: &str,
    key: &str,
    arguments: amqprs::FieldTable,
) {
    use amqprs::channel::{QueueBindArguments, QueueDeclareArguments};
    channel
        .queue_declare(
            QueueDeclareArguments::new(queue)
                .auto_delete(true)
                .arguments(arguments)
                .finish(),
        )
        .await
        .expect("declare the raw queue");
    channel
        .queue_bind(QueueBindArguments::new(queue, "nameko-rpc", key))
        .await
        .expect("bind the raw queue");
}

/// The properties of a well-formed RPC request a raw client publishes: a
/// JSON body, answered on `reply_to` with `correlation_id`.
pub fn request_props(reply_to: &str, correlation_id: &str) -> amqprs::BasicProperties {
    let mut props = amqprs::BasicProperties::default();
    props
        .with_content_type("application/json")
        .with_reply_to(reply_to)
        .with_correlation_id(correlation_id);
    props.finish()
}

/// Consumes `queue` on `channel` without acks.
pub async fn consume_raw(
    channel: &amqprs::channel::Channel,
    queue: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<amqprs::channel::ConsumerMessage> {
    channel
        .basic_consume_rx(
            amqprs::channel::BasicConsumeArguments::new(queue, "")
                .manual_ack(false)
                .finish(),
        )
        .await
        .expect("consume the raw queue")
        .1
}
