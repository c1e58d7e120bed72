//! `microflack`: runs MicroFlack's services — all five in one process by
//! default, or the `--services` named — until SIGTERM or Ctrl-C.

use clap::Parser;
use std::process::ExitCode;

use microflack::{add_services, config_from_env, parse_services, with_defaults, Secret};

/// Runs MicroFlack's services until SIGTERM or Ctrl-C.
///
/// Environment: WEB_SERVER_ADDRESS (default 127.0.0.1:5000), MICROFLACK_DATA
/// (SQLite databases, default ./microflack-data), USERS_DATABASE_URL,
/// MESSAGES_DATABASE_URL, TOKENS_DATABASE_URL (sqlite:// or postgres://),
/// JWT_SECRET_KEY (unset: a random one per start), AMQP_URI (services in
/// other processes find each other over RabbitMQ), REGISTRY,
/// LINK_PREVIEWS_ALLOW_PRIVATE, NO_SOCKETIO (the page polls instead of
/// using Socket.IO), MESSAGES_LIST_CACHE_MS (the messages list's cache: its
/// longest age, default 1000; 0 turns it off).
#[derive(Debug, Parser)]
#[command(name = "microflack", version)]
struct Args {
    /// The services to run, comma-separated: users, tokens, messages, push, ui.
    #[arg(long, value_name = "LIST", default_value = "all")]
    services: String,
    /// Logging.
    #[command(flatten)]
    log: shimeji::cli::LogArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.log.init("info") {
        eprintln!("error: {e}");
        return e.exit_code();
    }
    let services = match parse_services(&args.services) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut config, secret) = with_defaults(config_from_env());
    if services.contains(&"push")
        && config
            .get::<bool>("sticky_sessions")
            .ok()
            .flatten()
            .is_none()
    {
        // Socket.IO's long polling needs each client's requests on one
        // instance: routers that follow the registry keep them there.
        config = config.set("sticky_sessions", true);
    }
    if secret == Secret::Generated {
        tracing::warn!(
            "JWT_SECRET_KEY is not set: generated a random one for this process \
             (tokens end with it; services in other processes cannot check them)"
        );
    }
    let runner = add_services(shimeji::ServiceRunner::with_config(config), &services);
    let running = match runner.start().await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        services = %services.join(","),
        transport = running.transport().name(),
        "MicroFlack started"
    );
    if let Some(address) = running.web_address() {
        let host = if address.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            address.ip().to_string()
        };
        println!(
            "MicroFlack is serving on http://{host}:{} (Ctrl-C to stop)",
            address.port()
        );
    }
    running.run_until_signal().await;
    ExitCode::SUCCESS
}
