//! `shimeji`: call services, dispatch events, show a configuration, list
//! the services a RabbitMQ broker serves; keep HAProxy in step with the
//! service registry, and roll the instances of a service to a new version.
//!
//! ```text
//! shimeji call greeter.hello '{"name": "Ada"}'      # keyword arguments
//! shimeji call calculator.add '[1, 2]'              # positional arguments
//! shimeji dispatch greeter greeted '{"name": "Ada"}'
//! shimeji show-config --config config.yaml
//! shimeji services
//! shimeji gateway --registry etcd://127.0.0.1:2379 --listen 0.0.0.0:8080
//! shimeji haproxy-sync --registry etcd://127.0.0.1:2379 --haproxy-socket /run/haproxy/admin.sock
//! shimeji upgrade notes --registry etcd://127.0.0.1:2379 -- ./notes-v2
//! ```
//!
//! Exit status: 0 done, 1 the call failed (a remote error, a timeout, a
//! step of an upgrade), 2 a usage or configuration error, 3 the broker (or
//! the service registry) cannot be reached.

mod gateway;
mod platform;
mod services;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::Value;
use shimeji::cli::{
    render_config, CliError, ConfigArgs, ConfigFormat, LogArgs, EXIT_CONNECT, EXIT_FAILURE,
};
use shimeji::config::redact_uri;
use shimeji::context::WorkerContext;
use shimeji::transport::amqp::{AmqpSettings, AmqpTransport};
use shimeji::{CallError, Client, Config, EventDispatcher};
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The broker when neither `--broker`, `AMQP_URI` nor the config file names one.
const DEFAULT_BROKER: &str = "amqp://guest:guest@localhost";

/// How long to wait for the broker to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const AFTER_HELP: &str = "\
The broker is --broker, else AMQP_URI in the environment, else AMQP_URI in the
--config file, else amqp://guest:guest@localhost. Its password is never printed.

Exit status: 0 done, 1 the call failed (remote error, timeout), 2 usage or
configuration error, 3 the broker cannot be reached.";

/// Talks to shimeji and Nameko services over RabbitMQ.
#[derive(Parser)]
#[command(name = "shimeji", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Call an RPC method and print its result as JSON.
    #[command(after_help = "\
Examples:
  shimeji call greeter.hello '{\"name\": \"Ada\"}'   keyword arguments
  shimeji call calculator.add '[1, 2]'           positional arguments
  echo '{\"name\": \"Ada\"}' | shimeji call greeter.hello -
  shimeji call --context '{\"user_id\": \"u1\"}' users.me

A remote error prints `exc_type: message` on stderr and exits 1.")]
    Call(CallArgs),
    /// Dispatch an event as service SOURCE.
    #[command(after_help = "\
Example:
  shimeji dispatch greeter greeted '{\"name\": \"Ada\"}'

The event goes to the exchange `SOURCE.events` with routing key EVENT_TYPE, as
Nameko's EventDispatcher sends it; the command returns once the broker has
confirmed it. Handlers that are not bound at that moment do not see it.")]
    Dispatch(DispatchArgs),
    /// Print the configuration, secrets hidden.
    #[command(after_help = "\
Shows --config FILE (with ${VAR} substituted and environment overrides
applied) or, without it, the configuration taken from the environment, plus
--broker as AMQP_URI. Passwords in URIs and keys named *password*, *secret* or
*token* are shown as ***.")]
    ShowConfig(ShowConfigArgs),
    /// List the services the broker serves.
    #[command(long_about = services::LONG_ABOUT)]
    Services(ServicesArgs),
    /// Serve HTTP in front of the instances the registry lists.
    #[command(long_about = gateway::LONG_ABOUT)]
    Gateway(gateway::GatewayArgs),
    /// Keep HAProxy's backends in step with the service registry.
    #[command(long_about = platform::HAPROXY_SYNC_ABOUT)]
    HaproxySync(platform::HaproxySyncArgs),
    /// Roll the instances of a service on this host to a new command.
    #[command(long_about = platform::UPGRADE_ABOUT)]
    Upgrade(platform::UpgradeArgs),
}

#[derive(clap::Args)]
struct CallArgs {
    /// The method to call, `service.method`.
    #[arg(value_name = "SERVICE.METHOD")]
    target: String,
    /// The arguments: a JSON object (keyword arguments) or a JSON array
    /// (positional arguments); `-` reads them from stdin. None when omitted.
    #[arg(value_name = "ARGS")]
    args: Option<String>,
    /// Seconds to wait for the reply [default: the config's rpc_timeout, else 30].
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Context data sent with the call, a JSON object, e.g. '{"user_id": "u1"}'.
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
}

#[derive(clap::Args)]
struct DispatchArgs {
    /// The service the event comes from.
    source: String,
    /// The event type.
    event_type: String,
    /// The payload, any JSON value; `-` reads it from stdin. `null` when omitted.
    #[arg(value_name = "PAYLOAD")]
    payload: Option<String>,
    /// Context data sent with the event, a JSON object.
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
}

#[derive(clap::Args)]
struct ShowConfigArgs {
    /// How to print it.
    #[arg(long, value_enum, default_value_t)]
    format: ConfigFormat,
}

#[derive(clap::Args)]
struct ServicesArgs {
    /// Print a JSON array of `{"service": …, "consumers": …}` instead of names.
    #[arg(long)]
    json: bool,
    /// The management API to ask, `https://host:port` (or `http://…`: the
    /// broker's password then crosses the network in clear). Default: for
    /// amqps://, https://<host>:15671; for amqp:// on this machine,
    /// http://<host>:15672; otherwise none (rabbitmqctl is asked).
    #[arg(long, value_name = "URL")]
    management_url: Option<String>,
}

/// Why a command failed; each kind has its exit status.
enum Failure {
    /// Usage, configuration, connection: see [`CliError::code`].
    Cli(CliError),
    /// The call returned an error.
    Call(CallError),
    /// Anything else, with its exit status.
    Other(u8, String),
}

impl From<CliError> for Failure {
    fn from(e: CliError) -> Self {
        Failure::Cli(e)
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Cli(CliError::Usage(message.into()))
}

const BROKER_HELP: &str = "The RabbitMQ broker: amqp://user:password@host:port/vhost";
const BROKER_LONG_HELP: &str = "\
The RabbitMQ broker: amqp://user:password@host:port/vhost (amqps:// for TLS).

Default: AMQP_URI in the environment, else AMQP_URI in the --config file, else
amqp://guest:guest@localhost.";
const LOG_LEVEL_HELP: &str =
    "What to log: a level, or tracing filter directives [default: RUST_LOG, else warn]";
const LOG_LEVEL_LONG_HELP: &str = "\
What to log: a level, or tracing filter directives [default: RUST_LOG, else warn].

A level is one of error, warn, info, debug, trace; directives look like
`info,shimeji=debug`.";

fn main() -> ExitCode {
    // The shared options, with this command's defaults in their help.
    let mut command = Cli::command()
        .mut_arg("broker", |arg| {
            arg.help(BROKER_HELP).long_help(BROKER_LONG_HELP)
        })
        .mut_arg("log_level", |arg| {
            arg.help(LOG_LEVEL_HELP).long_help(LOG_LEVEL_LONG_HELP)
        });
    let cli = match Cli::from_arg_matches_mut(&mut command.get_matches_mut()) {
        Ok(cli) => cli,
        Err(e) => e.format(&mut command).exit(),
    };
    // One event loop (`shimeji gateway` starts one more per extra core).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Cli(e)) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
        Err(Failure::Call(e)) => {
            let message = match e.remote() {
                Some(remote) => remote.value.clone(),
                None => e.to_string(),
            };
            eprintln!("{}: {message}", e.exc_type());
            ExitCode::from(EXIT_FAILURE)
        }
        Err(Failure::Other(code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // The long-running commands say what they do; the rest only what goes wrong.
    let default_level = match cli.command {
        Command::Gateway(_) | Command::HaproxySync(_) => "info",
        _ => "warn",
    };
    cli.log.init(default_level)?;
    let config = cli.config.load()?;
    match cli.command {
        Command::Call(args) => call(with_broker(config)?, args).await,
        Command::Dispatch(args) => dispatch(with_broker(config)?, args).await,
        Command::ShowConfig(args) => {
            print!("{}", render_config(&config, args.format));
            Ok(())
        }
        Command::Gateway(args) => gateway::run(&config, args).await,
        Command::Services(args) => {
            let config = with_broker(config)?;
            let uri = config.amqp_uri().unwrap_or_else(|| DEFAULT_BROKER.into());
            let found = services::list(&uri, args.management_url.as_deref())
                .await
                .map_err(|e| Failure::Other(EXIT_CONNECT, e))?;
            if args.json {
                let list: Vec<Value> = found
                    .iter()
                    .map(|(service, consumers)| {
                        serde_json::json!({ "service": service, "consumers": consumers })
                    })
                    .collect();
                println!("{}", Value::Array(list));
            } else {
                for (service, _) in found {
                    println!("{service}");
                }
            }
            Ok(())
        }
        Command::HaproxySync(args) => platform::haproxy_sync(args)
            .await
            .map_err(|(code, message)| Failure::Other(code, message)),
        Command::Upgrade(args) => platform::upgrade(args)
            .await
            .map_err(|(code, message)| Failure::Other(code, message)),
    }
}

/// The configuration with the default broker when it names none, checked.
fn with_broker(config: Config) -> Result<Config, Failure> {
    let config = match config.amqp_uri() {
        Some(_) => config,
        None => config.set("AMQP_URI", DEFAULT_BROKER),
    };
    config.validate().map_err(CliError::from)?;
    Ok(config)
}

/// Reads a JSON command line argument; `-` reads stdin. `what` names it in errors.
fn json_argument(raw: &str, what: &str) -> Result<Value, Failure> {
    let text = if raw == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| usage(format!("cannot read {what} from stdin: {e}")))?;
        text
    } else {
        raw.to_string()
    };
    serde_json::from_str(&text).map_err(|e| usage(format!("invalid JSON in {what}: {e}")))
}

/// The root context carrying `--context` data.
fn context(raw: Option<&str>) -> Result<WorkerContext, Failure> {
    let root = WorkerContext::root();
    let Some(raw) = raw else { return Ok(root) };
    match json_argument(raw, "--context data")? {
        Value::Object(data) => Ok(data
            .into_iter()
            .fold(root, |ctx, (key, value)| ctx.with_data(key, value))),
        other => Err(usage(format!(
            "--context must be a JSON object, e.g. '{{\"user_id\": \"u1\"}}', not {other}"
        ))),
    }
}

/// Connects to the broker named by `AMQP_URI`.
async fn connect(config: &Config) -> Result<AmqpTransport, Failure> {
    let settings = AmqpSettings::from_config(config)
        .ok_or_else(|| usage("no broker: set --broker or AMQP_URI"))?;
    let uri = redact_uri(&settings.uri);
    match tokio::time::timeout(CONNECT_TIMEOUT, AmqpTransport::connect(settings, "cli")).await {
        Ok(Ok(transport)) => Ok(transport),
        Ok(Err(e)) => Err(CliError::Connect(e.to_string()).into()),
        Err(_) => Err(CliError::Connect(format!(
            "cannot connect to {uri}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))
        .into()),
    }
}

async fn call(config: Config, args: CallArgs) -> Result<(), Failure> {
    let (service, method) = match args.target.split_once('.') {
        Some((s, m)) if !s.is_empty() && !m.is_empty() => (s.to_string(), m.to_string()),
        _ => {
            return Err(usage(format!(
                "expected SERVICE.METHOD, e.g. greeter.hello, not `{}`",
                args.target
            )))
        }
    };
    let call_args = match args.args.as_deref() {
        None => Value::Null,
        Some(raw) => match json_argument(raw, "the arguments")? {
            v @ (Value::Object(_) | Value::Array(_)) => v,
            other => {
                return Err(usage(format!(
                    "the arguments must be a JSON object (keyword arguments) or a JSON array \
                     (positional arguments), not {other}; for one positional argument write [{other}]"
                )))
            }
        },
    };
    let timeout = match args.timeout {
        None => config.rpc_timeout(),
        Some(secs) if secs.is_finite() && secs > 0.0 => Duration::from_secs_f64(secs),
        Some(secs) => {
            return Err(usage(format!(
                "--timeout must be a positive number of seconds, not {secs}"
            )))
        }
    };
    let ctx = context(args.context.as_deref())?;
    let transport = connect(&config).await?;
    let client = Client::new(Arc::new(transport.clone()), timeout);
    let result = shimeji::context::scope(ctx, client.call(service, method, call_args)).await;
    transport.close().await;
    let value = result.map_err(Failure::Call)?;
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| Failure::Other(EXIT_FAILURE, format!("cannot print the result: {e}")))?;
    println!("{text}");
    Ok(())
}

async fn dispatch(config: Config, args: DispatchArgs) -> Result<(), Failure> {
    let payload = match args.payload.as_deref() {
        None => Value::Null,
        Some(raw) => json_argument(raw, "the payload")?,
    };
    if args.source.is_empty() || args.event_type.is_empty() {
        return Err(usage("SOURCE and EVENT_TYPE must not be empty"));
    }
    let ctx = context(args.context.as_deref())?;
    let transport = connect(&config).await?;
    // A one-shot command: the dispatcher wants a `'static` source name.
    let source: &'static str = Box::leak(args.source.into_boxed_str());
    let events = EventDispatcher::new(source, Arc::new(transport.clone()));
    let event_type = args.event_type;
    let result = shimeji::context::scope(ctx, events.dispatch(event_type.clone(), payload)).await;
    transport.close().await;
    result.map_err(|e| Failure::Other(EXIT_FAILURE, format!("cannot dispatch: {e}")))?;
    println!("dispatched {source}.{event_type}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn context_data() {
        let ctx = context(Some(r#"{"user_id": "u1", "language": "fr"}"#))
            .ok()
            .unwrap();
        assert_eq!(ctx.user_id(), Some("u1"));
        assert_eq!(ctx.language(), Some("fr"));
        assert!(
            matches!(context(Some("[1]")), Err(Failure::Cli(e)) if e.code() == shimeji::cli::EXIT_USAGE)
        );
    }
}
