//! The platform commands, which follow the service registry:
//! `shimeji haproxy-sync` keeps HAProxy's backends in step with it.

mod haproxy_api;
mod haproxy_sync;

use std::path::PathBuf;
use std::time::Duration;

use shimeji::cli::{EXIT_CONNECT, EXIT_USAGE};
use shimeji::registry::{host_name, Registry, RegistryError};

use haproxy_api::RuntimeApi;
use haproxy_sync::{HaproxySync, SyncOptions};

/// `shimeji haproxy-sync --help`.
pub const HAPROXY_SYNC_ABOUT: &str = "\
Keep HAProxy's backends in step with the service registry, through HAProxy's
runtime API (no reload).

Each service S is served by backend <prefix>S, which must exist in haproxy.cfg
with no servers and a dynamic balancing algorithm (`balance leastconn`), and
the stats socket must be at `level admin`. Every registered instance of S with
an HTTP address becomes a server of it, named after its instance id: added
and enabled when it registers; when it goes, set to drain (in-flight requests
finish, no new one is sent there), then put in maintenance and deleted once
its sessions ended (or after --drain-timeout). After each pass that left
HAProxy in step, the registry revision it applied is reported, as a gateway
does, so stopping instances wait for HAProxy before they close. Errors are
logged and the pass retried; HAProxy keeps its last servers meanwhile.

The sync owns every server of the backends it manages: those of the services
it has seen and, when --backend-prefix is set, every backend whose name starts
with it. Servers added at run time do not survive an HAProxy restart or
reload: the next pass (within --resync) adds them again.

Runs until SIGTERM or Ctrl-C.";

/// Arguments of `shimeji haproxy-sync`.
#[derive(clap::Args)]
pub struct HaproxySyncArgs {
    /// The service registry: etcd://host:2379[,host:2379…] [default: REGISTRY].
    #[arg(long, value_name = "URL", env = "REGISTRY")]
    registry: String,
    /// HAProxy's stats socket (`stats socket PATH level admin`).
    #[arg(long, value_name = "PATH")]
    haproxy_socket: PathBuf,
    /// Backend of service S: <PREFIX>S.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    backend_prefix: String,
    /// Server keywords for each added server, e.g. "check inter 1s"
    /// (health checks are then enabled).
    #[arg(long, value_name = "KEYWORDS", default_value = "")]
    server_options: String,
    /// Seconds between two passes when the registry says nothing new.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    resync: f64,
    /// Seconds a drained server may keep sessions before they are shut.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    drain_timeout: f64,
    /// Its router id in the registry [default: haproxy-<host>-<hash of the socket path>].
    #[arg(long, value_name = "ID")]
    router_id: Option<String>,
    /// Seconds of the lease its router report is kept under.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    router_ttl: u64,
}

/// A number of seconds from the command line.
fn seconds(value: f64, flag: &str) -> Result<Duration, (u8, String)> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        (
            EXIT_USAGE,
            format!("--{flag} must be a number of seconds, not {value}"),
        )
    })
}

/// The registry at `url`, its errors with their exit status.
async fn connect(url: &str) -> Result<Registry, (u8, String)> {
    Registry::connect(url).await.map_err(|e| match e {
        RegistryError::BadUrl { .. } => (EXIT_USAGE, e.to_string()),
        e => (EXIT_CONNECT, e.to_string()),
    })
}

/// Runs `shimeji haproxy-sync` until SIGTERM or Ctrl-C.
pub async fn haproxy_sync(args: HaproxySyncArgs) -> Result<(), (u8, String)> {
    let options = SyncOptions {
        backend_prefix: args.backend_prefix,
        server_options: args.server_options,
        resync: seconds(args.resync, "resync")?.max(Duration::from_millis(100)),
        drain_timeout: seconds(args.drain_timeout, "drain-timeout")?,
    };
    if options.server_options.contains([';', '\n']) {
        return Err((
            EXIT_USAGE,
            "--server-options cannot hold `;` or a line break".into(),
        ));
    }
    if !options.backend_prefix.is_empty() && !haproxy_api::valid_name(&options.backend_prefix) {
        return Err((
            EXIT_USAGE,
            "--backend-prefix may hold only letters, digits, `-`, `_`, `.` and `:`".into(),
        ));
    }
    let router_id = args
        .router_id
        .unwrap_or_else(|| default_router_id(&args.haproxy_socket));
    let api = RuntimeApi::new(&args.haproxy_socket, Duration::from_secs(5));
    let registry = connect(&args.registry).await?;
    let router = registry
        .router(&router_id, Duration::from_secs(args.router_ttl.max(1)))
        .await
        .map_err(|e| {
            (
                EXIT_CONNECT,
                format!("cannot report as router {router_id}: {e}"),
            )
        })?;
    tracing::info!(router = %router_id, socket = %args.haproxy_socket.display(), registry = registry.name(), "following the registry");
    haproxy_sync::run(
        registry,
        HaproxySync::new(api, options),
        router,
        stop_signal(),
    )
    .await;
    Ok(())
}

/// `haproxy-<host>-<8 hex digits of the socket's path>`: the same id when
/// the sync restarts, so its report replaces the previous one.
fn default_router_id(socket: &std::path::Path) -> String {
    let path = socket.display().to_string();
    let hash = path.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let host: String = host_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("haproxy-{host}-{hash:08x}")
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM: stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
