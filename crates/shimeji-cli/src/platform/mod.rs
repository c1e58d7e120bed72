//! The platform commands, which follow the service registry:
//! `shimeji haproxy-sync` keeps HAProxy's backends in step with it, and
//! `shimeji upgrade` rolls the instances of a service to a new command.

mod haproxy_api;
mod haproxy_sync;
mod upgrade;

use std::path::PathBuf;
use std::time::Duration;

use shimeji::cli::{EXIT_CONNECT, EXIT_FAILURE, EXIT_USAGE};
use shimeji::registry::{host_name, Registry, RegistryError};

use haproxy_api::RuntimeApi;
use haproxy_sync::{HaproxySync, SyncOptions};
pub use upgrade::UpgradeError;
use upgrade::UpgradeOptions;

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
    /// The service registry the instances register in: etcd://host:2379[,host:2379…].
    #[arg(long, value_name = "URL", env = "REGISTRY", hide_env_values = true)]
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

/// `shimeji upgrade --help`.
pub const UPGRADE_ABOUT: &str = "\
Roll the instances of SERVICE running on this host to NEW_COMMAND, one at a
time, never running fewer than before.

For each old instance (found in the registry by host and pid, oldest first):
start NEW_COMMAND detached (its own process group, stdin closed, stdout and
stderr appended to a log file in --log-dir, REGISTRY set to --registry); wait until a new instance of
SERVICE registers (a new instance id whose pid is the started process or runs
under it; else, after 2 s, any new instance id), until GET /health/ready at its
HTTP address answers 200 (a 404 there means it serves no such endpoint, and
registration, which instances do once ready, stands for readiness), and until
every router (gateway, haproxy-sync) has applied the revision of its
registration; with --soak, watch it that long: it must keep running and
registered, and with --max-error-rate its error rate over the soak, from
shimeji_entrypoint_calls_total in its /metrics (every outcome but `ok` counts
as an error), must not exceed the rate; then SIGTERM the old instance and wait
until it exited and its record is gone (SIGKILL after --grace).

A new instance that fails a step is stopped the same way, and the upgrade ends
with exit status 1, the old instances not yet replaced still running. The
processes it started are listed in <log dir>/<SERVICE>.upgrade.json; `shimeji
upgrade SERVICE --abort` stops those that still run, the same graceful way
(refusing, without --force, to leave SERVICE with no instance).

Exit status: 0 done, 1 a step failed, 2 usage (nothing to upgrade), 3 the
registry cannot be reached.";

/// Arguments of `shimeji upgrade`.
#[derive(clap::Args)]
pub struct UpgradeArgs {
    /// The service to upgrade.
    service: String,
    /// The service registry the instances register in: etcd://host:2379[,host:2379…].
    #[arg(long, value_name = "URL", env = "REGISTRY", hide_env_values = true)]
    registry: String,
    /// Seconds to watch each new instance before an old one stops.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    soak: f64,
    /// Highest error rate over the soak, from 0 to 1 (e.g. 0.01).
    #[arg(long, value_name = "RATE")]
    max_error_rate: Option<f64>,
    /// Seconds an instance may take to stop after SIGTERM before SIGKILL.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    grace: f64,
    /// Where the new instances' logs and the upgrade's state file go.
    #[arg(long, value_name = "DIR", default_value = "upgrade-logs")]
    log_dir: PathBuf,
    /// Seconds a new instance may take to register and be ready.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    ready_timeout: f64,
    /// Seconds the routers may take to apply a new instance's registration.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    applied_timeout: f64,
    /// Stop the instances the last upgrade of SERVICE started instead.
    #[arg(long, conflicts_with_all = ["command", "max_error_rate"])]
    abort: bool,
    /// With --abort: stop them even when no other instance would be left.
    #[arg(long, requires = "abort")]
    force: bool,
    /// The command that starts one new instance.
    #[arg(
        last = true,
        value_name = "NEW_COMMAND",
        required_unless_present = "abort"
    )]
    command: Vec<String>,
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

/// The registry at `url`, its errors with their exit status. It must be
/// one other processes share: an in-process registry would be this
/// command's alone.
async fn connect(url: &str) -> Result<Registry, (u8, String)> {
    let registry = Registry::connect(url).await.map_err(|e| match e {
        RegistryError::BadUrl { .. } => (EXIT_USAGE, e.to_string()),
        e => (EXIT_CONNECT, e.to_string()),
    })?;
    if !registry.is_remote() {
        return Err((
            EXIT_USAGE,
            format!(
                "--registry {url} is a registry of this process alone: name the one the instances \
                 register in (etcd://host:2379)"
            ),
        ));
    }
    Ok(registry)
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

/// Runs `shimeji upgrade`.
pub async fn upgrade(args: UpgradeArgs) -> Result<(), (u8, String)> {
    let grace = seconds(args.grace, "grace")?;
    let outcome = if args.abort {
        upgrade::abort(
            &args.registry,
            &args.service,
            &args.log_dir,
            grace,
            args.force,
        )
        .await
    } else {
        if let Some(rate) = args.max_error_rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err((
                    EXIT_USAGE,
                    format!("--max-error-rate must be from 0 to 1, not {rate}"),
                ));
            }
            if args.soak <= 0.0 {
                return Err((
                    EXIT_USAGE,
                    "--max-error-rate needs a --soak to measure over".into(),
                ));
            }
        }
        let options = UpgradeOptions {
            service: args.service,
            command: args.command,
            environment: vec![("REGISTRY".to_string(), args.registry.clone())],
            soak: seconds(args.soak, "soak")?,
            max_error_rate: args.max_error_rate,
            grace,
            log_dir: args.log_dir,
            ready_timeout: seconds(args.ready_timeout, "ready-timeout")?,
            applied_timeout: seconds(args.applied_timeout, "applied-timeout")?,
        };
        upgrade::roll(&args.registry, options).await
    };
    outcome.map_err(|e| match e {
        UpgradeError::Usage(m) => (EXIT_USAGE, m),
        UpgradeError::Registry(m) => (EXIT_CONNECT, m),
        UpgradeError::Failed(m) => (EXIT_FAILURE, m),
    })
}
