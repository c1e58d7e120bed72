//! The standard command line of a service binary (feature `cli`, on by default).
//!
//! One line gives a service binary the same options as every other shimeji
//! binary: a config file, the broker, logging, and a graceful stop on
//! SIGTERM or Ctrl-C.
//!
//! ```no_run
//! use shimeji::prelude::*;
//!
//! #[derive(Default, Dependencies)]
//! struct Greeter;
//!
//! #[service(name = "greeter")]
//! impl Greeter {
//!     #[rpc]
//!     async fn hello(&self, name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     shimeji::cli::run(|runner| runner.service(Greeter)).await
//! }
//! ```
//!
//! The binary then takes:
//!
//! ```text
//! greeter [--config <FILE>] [--broker <AMQP_URI>] [--log-level <LEVEL>] [--log-format text|json]
//!         [--show-config[=yaml|json]]
//! ```
//!
//! | option | meaning |
//! |---|---|
//! | `--config <FILE>` | a YAML config file, loaded with [`Config::load`]; without it the configuration comes from the environment ([`Config::from_env`]) |
//! | `--broker <AMQP_URI>` | the broker; wins over `AMQP_URI` in the environment and in the file. Without any, the services run on the embedded transport |
//! | `--log-level <LEVEL>` | a level (`debug`) or tracing filter directives (`info,shimeji=debug`); default `RUST_LOG`, else `info` |
//! | `--log-format text\|json` | human-readable lines, or one JSON object per line; logs go to stderr |
//! | `--show-config` | prints the configuration, secrets hidden, and exits |
//!
//! [`run`] parses the process's arguments, sets up logging, starts the
//! services, serves until SIGTERM or Ctrl-C, then drains and stops them. When
//! something goes wrong it prints one line naming the problem on stderr and
//! returns a non-zero [`ExitCode`]: 2 for a usage or configuration error, 3
//! when the broker cannot be reached, 1 when a service fails to start (see
//! [`CliError::code`]).
//!
//! A binary with options of its own flattens [`ServiceArgs`] into its own
//! parser and calls [`serve`]:
//!
//! ```no_run
//! # use shimeji::prelude::*;
//! # #[derive(Default, Dependencies)] struct Greeter;
//! # #[service(name = "greeter")]
//! # impl Greeter { #[rpc] async fn hello(&self, name: String) -> String { name } }
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     shimeji: shimeji::cli::ServiceArgs,
//!     /// How many greeter instances to run.
//!     #[arg(long, default_value_t = 1)]
//!     instances: usize,
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     let args = Args::parse();
//!     let served = shimeji::cli::serve(args.shimeji, |mut runner| {
//!         for _ in 0..args.instances {
//!             runner = runner.service(Greeter);
//!         }
//!         runner
//!     })
//!     .await;
//!     match served {
//!         Ok(()) => std::process::ExitCode::SUCCESS,
//!         Err(e) => {
//!             eprintln!("error: {e}");
//!             e.exit_code()
//!         }
//!     }
//! }
//! ```
//!
//! The pieces ([`ConfigArgs`], [`LogArgs`], [`render_config`]) serve the
//! `shimeji` command too, so every shimeji command line reads its options
//! the same way.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{redact_uri, Config, ConfigError};
use crate::container::StartError;
use crate::runner::ServiceRunner;

/// Exit status: a usage error (bad option, bad argument) or a bad configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the broker cannot be reached.
pub const EXIT_CONNECT: u8 = 3;
/// Exit status: anything else failed (a service did not start, a call failed).
pub const EXIT_FAILURE: u8 = 1;

/// Where the configuration comes from: `--config` and `--broker`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// A YAML config file.
    ///
    /// `${VAR}` and `${VAR:default}` in it are replaced from the environment,
    /// and known keys set in the environment override it. Without it the
    /// configuration comes from the environment alone.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The RabbitMQ broker: amqp://user:password@host:port/vhost.
    ///
    /// `amqps://` for TLS. Wins over AMQP_URI in the config file. With no
    /// AMQP_URI at all, services run on the embedded transport, reachable in
    /// this process only.
    #[arg(
        long,
        value_name = "AMQP_URI",
        env = "AMQP_URI",
        hide_env_values = true,
        global = true
    )]
    pub broker: Option<String>,
}

impl ConfigArgs {
    /// The configuration these options name: the file (or the environment),
    /// with `--broker` as `AMQP_URI`.
    pub fn load(&self) -> Result<Config, CliError> {
        let config = match &self.config {
            Some(path) => {
                // `Config::load` names an unreadable file as if it were a
                // key; say plainly which file cannot be read.
                if let Err(e) = std::fs::metadata(path) {
                    return Err(CliError::Usage(format!(
                        "cannot read config file `{}`: {e}",
                        path.display()
                    )));
                }
                Config::load(path).map_err(|error| CliError::Config {
                    file: Some(path.clone()),
                    error,
                })?
            }
            None => Config::from_env(),
        };
        Ok(match &self.broker {
            Some(broker) => config.set("AMQP_URI", check_broker(broker)?),
            None => config,
        })
    }
}

/// Checks that `uri` is an AMQP URI; the error shows it without its password.
fn check_broker(uri: &str) -> Result<&str, CliError> {
    if uri.starts_with("amqp://") || uri.starts_with("amqps://") {
        Ok(uri)
    } else {
        Err(CliError::Usage(format!(
            "--broker must be an amqp:// or amqps:// URI, not `{}`",
            redact_uri(uri)
        )))
    }
}

pub use crate::logging::LogFormat;

/// Logging options: `--log-level` and `--log-format`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// What to log: a level, or tracing filter directives [default: RUST_LOG, else info].
    ///
    /// A level is one of error, warn, info, debug, trace; directives look
    /// like `info,shimeji=debug`.
    #[arg(long, value_name = "LEVEL", env = "RUST_LOG", global = true)]
    pub log_level: Option<String>,
    /// How log lines look; they go to stderr.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t,
        global = true
    )]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the process's tracing subscriber, writing to stderr, at
    /// `--log-level` or else `default_level`. Only the first call in a
    /// process installs anything; when the program already installed a
    /// subscriber of its own, that one stays.
    pub fn init(&self, default_level: &str) -> Result<(), CliError> {
        let level = self.log_level.as_deref().unwrap_or(default_level);
        crate::logging::init(level, self.log_format).map_err(|e| CliError::Usage(format!("--{e}")))
    }
}

/// How [`render_config`] writes a configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigFormat {
    /// YAML, as config files are written.
    #[default]
    Yaml,
    /// Pretty-printed JSON.
    Json,
}

/// A configuration as text, secrets hidden ([`Config::redacted`]): the
/// password in `AMQP_URI` and in any other URI, and every key whose name
/// says password, secret or token.
///
/// ```
/// use shimeji::cli::{render_config, ConfigFormat};
/// use shimeji::Config;
///
/// let config = Config::new().set("AMQP_URI", "amqp://app:s3cret@rabbit/").set("max_workers", 4);
/// let yaml = render_config(&config, ConfigFormat::Yaml);
/// assert!(yaml.contains("amqp://app:***@rabbit/"), "{yaml}");
/// assert!(!yaml.contains("s3cret"));
/// ```
pub fn render_config(config: &Config, format: ConfigFormat) -> String {
    let value = serde_json::Value::Object(config.redacted());
    match format {
        ConfigFormat::Yaml => serde_yaml_ng::to_string(&value)
            .unwrap_or_else(|e| format!("# cannot render the configuration as YAML: {e}\n")),
        ConfigFormat::Json => {
            let mut json = serde_json::to_string_pretty(&value).unwrap_or_default();
            json.push('\n');
            json
        }
    }
}

/// The command line of a service binary: [`ConfigArgs`], [`LogArgs`] and
/// `--show-config`.
#[derive(Debug, Clone, Default, Parser)]
#[command(about = "Runs shimeji services until SIGTERM or Ctrl-C, then drains and stops them")]
pub struct ServiceArgs {
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Print the configuration the services would run with, secrets
    /// hidden, and exit.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "yaml"
    )]
    pub show_config: Option<ConfigFormat>,
}

/// Why a command line could not do its work. [`code`](Self::code) is the
/// exit status it asks for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A bad option or argument (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// A bad configuration (exit status 2).
    #[error("{}{error}", file.as_ref().map(|f| format!("config file `{}`: ", f.display())).unwrap_or_default())]
    Config {
        /// The config file, when the error is in one.
        file: Option<PathBuf>,
        /// What is wrong.
        error: ConfigError,
    },
    /// The broker cannot be reached (exit status 3). The message names the
    /// broker without its password.
    #[error("{0}")]
    Connect(String),
    /// A service failed to start (exit status 1).
    #[error(transparent)]
    Start(StartError),
}

impl From<ConfigError> for CliError {
    fn from(error: ConfigError) -> Self {
        CliError::Config { file: None, error }
    }
}

impl From<StartError> for CliError {
    fn from(error: StartError) -> Self {
        match error {
            StartError::Config(error) => CliError::Config { file: None, error },
            StartError::Connect(message) => CliError::Connect(message),
            other => CliError::Start(other),
        }
    }
}

impl CliError {
    /// The exit status: 2 for usage and configuration errors, 3 when the
    /// broker cannot be reached, 1 otherwise.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config { .. } => EXIT_USAGE,
            CliError::Connect(_) => EXIT_CONNECT,
            CliError::Start(_) => EXIT_FAILURE,
        }
    }

    /// [`code`](Self::code) as an [`ExitCode`], to return from `main`.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

/// The whole `main` of a service binary: parses the process's arguments
/// ([`ServiceArgs`]), then [`serve`]s the services `services` adds to the
/// runner. On failure prints `error: <what went wrong>` on stderr and
/// returns the matching exit status; `--help` and usage errors exit as
/// clap does (0 and 2).
///
/// ```no_run
/// # use shimeji::prelude::*;
/// # #[derive(Default, Dependencies)] struct Greeter;
/// # #[service(name = "greeter")]
/// # impl Greeter { #[rpc] async fn hello(&self, name: String) -> String { name } }
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     shimeji::cli::run(|runner| runner.service(Greeter)).await
/// }
/// ```
pub async fn run<F>(services: F) -> ExitCode
where
    F: FnOnce(ServiceRunner) -> ServiceRunner,
{
    match serve(ServiceArgs::parse(), services).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Sets up logging, loads the configuration, starts the services
/// `services` adds to a [`ServiceRunner::with_config`], serves until
/// SIGTERM or Ctrl-C, then drains and stops them. With `--show-config`,
/// prints the configuration on stdout instead and returns.
pub async fn serve<F>(args: ServiceArgs, services: F) -> Result<(), CliError>
where
    F: FnOnce(ServiceRunner) -> ServiceRunner,
{
    let config = args.config.load()?;
    let mut log = args.log;
    let (level, format) = logging_from_config(&config);
    if log.log_format == LogFormat::Text {
        log.log_format = format.unwrap_or(LogFormat::Text);
    }
    log.init(level.as_deref().unwrap_or("info"))?;
    if let Some(format) = args.show_config {
        print!("{}", render_config(&config, format));
        return Ok(());
    }
    config.validate()?;
    let broker = config.amqp_uri().map(|uri| redact_uri(&uri));
    let running = services(ServiceRunner::with_config(config)).start().await?;
    match &broker {
        Some(uri) => tracing::info!(broker = %uri, "serving until SIGTERM or Ctrl-C"),
        None => tracing::info!(
            transport = running.transport().name(),
            "serving until SIGTERM or Ctrl-C (no AMQP_URI: embedded transport)"
        ),
    }
    running.run_until_signal().await;
    tracing::info!("stopped");
    Ok(())
}

/// Logging from the `LOGGING` config key, as Nameko names it: a level
/// (`LOGGING: debug`), an object with `level` and `format` (`text` or
/// `json`), or a Nameko dictConfig, whose `root.level` is taken.
/// `--log-level` and `RUST_LOG` win over it.
pub fn logging_from_config(config: &Config) -> (Option<String>, Option<LogFormat>) {
    let Ok(Some(logging)) = config.get::<serde_json::Value>("LOGGING") else {
        return (None, None);
    };
    let level = match &logging {
        serde_json::Value::String(level) => Some(level.clone()),
        other => other
            .get("level")
            .or_else(|| other.get("root").and_then(|r| r.get("level")))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
    }
    .map(|l| l.to_ascii_lowercase());
    let format = match logging.get("format").and_then(serde_json::Value::as_str) {
        Some("json") => Some(LogFormat::Json),
        Some("text") => Some(LogFormat::Text),
        _ => None,
    };
    (level, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logging_key_as_nameko_names_it() {
        let dict =
            Config::from_yaml("LOGGING:\n  version: 1\n  root:\n    level: DEBUG\n").unwrap();
        assert_eq!(logging_from_config(&dict), (Some("debug".into()), None));
        let short = Config::from_yaml("LOGGING:\n  level: warn\n  format: json\n").unwrap();
        assert_eq!(
            logging_from_config(&short),
            (Some("warn".into()), Some(LogFormat::Json))
        );
        let none = Config::new();
        assert_eq!(logging_from_config(&none), (None, None));
    }

    #[test]
    fn broker_wins_and_is_checked() {
        let args = ConfigArgs {
            config: None,
            broker: Some("amqp://u:pw@h/".into()),
        };
        let config = args.load().unwrap();
        assert_eq!(config.amqp_uri().as_deref(), Some("amqp://u:pw@h/"));
        let bad = ConfigArgs {
            config: None,
            broker: Some("http://u:pw@h/".into()),
        };
        let err = bad.load().unwrap_err();
        assert_eq!(err.code(), EXIT_USAGE);
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn missing_file_is_a_usage_error() {
        let args = ConfigArgs {
            config: Some("/nonexistent/shimeji.yaml".into()),
            broker: None,
        };
        let err = args.load().unwrap_err();
        assert_eq!(err.code(), EXIT_USAGE);
        assert!(
            err.to_string()
                .starts_with("cannot read config file `/nonexistent/shimeji.yaml`"),
            "{err}"
        );
    }

    #[test]
    fn start_errors_map_to_exit_codes() {
        let connect = CliError::from(StartError::Connect(
            "cannot connect to amqp://u:***@h/: refused".into(),
        ));
        assert_eq!(connect.code(), EXIT_CONNECT);
        let other = CliError::from(StartError::Listen {
            address: "0.0.0.0:8000".into(),
            source: std::io::ErrorKind::AddrInUse.into(),
        });
        assert_eq!(other.code(), EXIT_FAILURE);
        let config = CliError::from(StartError::Config(ConfigError {
            key: "max_workers".into(),
            message: "must be at least 1".into(),
        }));
        assert_eq!(config.code(), EXIT_USAGE);
    }

    #[test]
    fn service_args_parse() {
        let args = ServiceArgs::try_parse_from([
            "svc",
            "--broker",
            "amqp://h/",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--show-config",
        ])
        .unwrap();
        assert_eq!(args.config.broker.as_deref(), Some("amqp://h/"));
        assert_eq!(args.log.log_format, LogFormat::Json);
        assert_eq!(args.show_config, Some(ConfigFormat::Yaml));
        let args = ServiceArgs::try_parse_from(["svc", "--show-config=json"]).unwrap();
        assert_eq!(args.show_config, Some(ConfigFormat::Json));
    }

    #[test]
    fn render_both_formats() {
        let config = Config::new()
            .set("AMQP_URI", "amqp://u:pw@h/")
            .set("db", serde_json::json!({"password": "p", "host": "h"}));
        let json: serde_json::Value =
            serde_json::from_str(&render_config(&config, ConfigFormat::Json)).unwrap();
        assert_eq!(json["AMQP_URI"], "amqp://u:***@h/");
        assert_eq!(json["db"]["password"], "***");
        let yaml = render_config(&config, ConfigFormat::Yaml);
        assert!(!yaml.contains("pw") && yaml.contains("host: h"), "{yaml}");
    }
}
