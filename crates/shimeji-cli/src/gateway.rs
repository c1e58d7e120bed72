//! `shimeji gateway`: an HTTP gateway that routes to the instances the
//! registry lists, until SIGTERM or Ctrl-C.

use shimeji::registry::{registry_url, Registry};
use shimeji::Config;
use shimeji_gateway::{Gateway, GatewayError, Settings};
use std::net::SocketAddr;
use std::time::Duration;

use crate::Failure;

/// The command's long help.
pub const LONG_ABOUT: &str = "\
Serve HTTP in front of shimeji instances, routing by the registry.

Each instance publishes its HTTP address and the routes of its #[http]
entrypoints in the registry; the gateway follows it and routes by method and
path, to the less loaded of two instances drawn at random. A request to a
path no instance serves gets a JSON 404; a route whose service has no
instance up gets a JSON 503. An instance that refuses connections is ejected
for a while; a request that could not be sent, or an idempotent one whose
connection broke, is retried once on another instance (a POST whose bytes
were sent never is). WebSocket upgrades are tunnelled. GET /health and
GET /metrics are served on --listen, or on --admin-listen when given.

After every registry change the gateway reports the revision it routes with,
so that a stopping instance closes only once no gateway can send to it.
SIGTERM or Ctrl-C stops it gracefully: requests in flight finish (within
--shutdown-grace), then its report is removed.

Examples:
  shimeji gateway --registry etcd://127.0.0.1:2379 --listen 0.0.0.0:8080
  REGISTRY=etcd://10.0.0.2:2379,10.0.0.3:2379 shimeji gateway --admin-listen 127.0.0.1:9090";

/// The gateway's options.
#[derive(clap::Args)]
pub struct GatewayArgs {
    /// The registry to follow: etcd://host:2379[,host:2379…] [default:
    /// REGISTRY in the environment or the --config file].
    #[arg(long, value_name = "URL", env = "REGISTRY", hide_env_values = true)]
    registry: Option<String>,
    /// Where to accept client connections.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Serve /health and /metrics here instead of on --listen.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Threads serving clients, each with its own event loop and connection
    /// pool [default: one per core].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// The id to report the applied revision under [default: gateway-<host>-<pid>-<random>].
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Seconds to wait for a connection to an instance.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = seconds)]
    connect_timeout: Duration,
    /// Seconds one try may wait for a response head.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = seconds)]
    try_timeout: Duration,
    /// Seconds all tries of a request may wait for a response head.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    deadline: Duration,
    /// Connect failures in a row that eject an instance.
    #[arg(long, value_name = "N", default_value_t = 3)]
    eject_after: u32,
    /// Seconds an ejected instance stays out.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    eject_for: Duration,
    /// Share of a service's requests that may be retried (0 to 1).
    #[arg(long, value_name = "RATIO", default_value_t = 0.2)]
    retry_ratio: f32,
    /// Seconds requests in flight and WebSocket tunnels get to finish on stop.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = seconds)]
    shutdown_grace: Duration,
}

/// Parses a positive number of seconds.
fn seconds(raw: &str) -> Result<Duration, String> {
    match raw.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "expected a positive number of seconds, not `{raw}`"
        )),
    }
}

/// Runs the gateway until a stop signal.
pub async fn run(config: &Config, args: GatewayArgs) -> Result<(), Failure> {
    let url = args
        .registry
        .clone()
        .or_else(|| registry_url(config))
        .ok_or_else(|| {
            crate::usage("no registry: set --registry or REGISTRY (etcd://host:2379)")
        })?;
    let settings = Settings {
        listen: args.listen,
        admin_listen: args.admin_listen,
        workers: args.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        router_id: args.id,
        connect_timeout: args.connect_timeout,
        try_timeout: args.try_timeout,
        deadline: args.deadline,
        eject_after: args.eject_after,
        eject_for: args.eject_for,
        retry_ratio: args.retry_ratio,
        shutdown_grace: args.shutdown_grace,
        ..Settings::default()
    };
    settings
        .validate()
        .map_err(|e| crate::usage(e.to_string()))?;
    let registry = Registry::connect(&url).await.map_err(|e| match e {
        shimeji::registry::RegistryError::BadUrl { .. } => crate::usage(e.to_string()),
        other => Failure::Other(shimeji::cli::EXIT_CONNECT, other.to_string()),
    })?;
    if !registry.is_remote() {
        tracing::warn!(
            "the registry is in this process: no instance elsewhere can register; \
             use etcd://host:2379"
        );
    }
    let gateway = Gateway::start(registry, settings)
        .await
        .map_err(|e| match e {
            GatewayError::Registry(error) => {
                Failure::Other(shimeji::cli::EXIT_CONNECT, error.to_string())
            }
            other => Failure::Other(shimeji::cli::EXIT_FAILURE, other.to_string()),
        })?;
    eprintln!(
        "gateway listening on {} (router id {})",
        gateway.local_addr(),
        gateway.router_id()
    );
    shimeji::runner::shutdown_signal().await;
    eprintln!("stopping: letting requests in flight finish");
    gateway.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_must_be_positive() {
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(seconds("0").is_err());
        assert!(seconds("-1").is_err());
        assert!(seconds("soon").is_err());
    }
}
