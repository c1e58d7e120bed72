//! Configuration: Nameko's keys with Nameko's names, plus a service's own.
//!
//! Known keys: `AMQP_URI`, `max_workers` (10), `parent_calls_tracked` (10),
//! `rpc_timeout` (seconds, 30), `drain_timeout` (seconds, 30). Any other key
//! is the service's own, read with [`Config::get`] or the
//! [`ServiceConfig`] dependency.
//!
//! ```
//! use shimeji::Config;
//! use std::time::Duration;
//!
//! let config = Config::new()
//!     .set("max_workers", 4)
//!     .set("greeting", "Hi");
//! assert_eq!(config.max_workers(), 4);
//! assert_eq!(config.rpc_timeout(), Duration::from_secs(30));
//! assert_eq!(config.get::<String>("greeting").unwrap().as_deref(), Some("Hi"));
//! ```

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::context::DEFAULT_PARENT_CALLS_TRACKED;
use crate::dependency::{Dependency, DependencyError, SetupContext};

/// Default `max_workers`: concurrent workers per service instance.
pub const DEFAULT_MAX_WORKERS: usize = 10;
/// Default client call timeout.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a stopping service waits for its workers.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A key with a value of the wrong type.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}` has a bad value: {message}")]
pub struct ConfigError {
    /// The key.
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

/// The runner's configuration: a map of keys to JSON values.
#[derive(Debug, Clone, Default)]
pub struct Config {
    values: Map<String, Value>,
}

impl Config {
    /// An empty configuration: every key at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// The configuration with `AMQP_URI` and the other known keys taken
    /// from the environment when set there.
    pub fn from_env() -> Self {
        let mut config = Self::new();
        for key in [
            "AMQP_URI",
            "HEARTBEAT",
            "rpc_exchange",
            "max_message_size",
            "max_workers",
            "parent_calls_tracked",
            "rpc_timeout",
            "drain_timeout",
        ] {
            if let Ok(raw) = std::env::var(key) {
                let value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
                config.values.insert(key.to_string(), value);
            }
        }
        config
    }

    /// Sets a key (builder style).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.values.insert(key.into(), value.into());
        self
    }

    /// A key's value decoded as `T`; `Ok(None)` when the key is absent.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        match self.values.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| ConfigError {
                    key: key.to_string(),
                    message: e.to_string(),
                }),
        }
    }

    /// Checks the known keys; the runner calls this at start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for key in ["max_workers", "parent_calls_tracked"] {
            if let Some(0) = self.get::<usize>(key)? {
                return Err(ConfigError {
                    key: key.into(),
                    message: "must be at least 1".into(),
                });
            }
        }
        for key in ["rpc_timeout", "drain_timeout"] {
            if let Some(s) = self.get::<f64>(key)? {
                if !(s.is_finite() && s > 0.0) {
                    return Err(ConfigError {
                        key: key.into(),
                        message: "must be a positive number of seconds".into(),
                    });
                }
            }
        }
        self.get::<String>("AMQP_URI")?;
        Ok(())
    }

    fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> T {
        self.get(key).ok().flatten().unwrap_or(default)
    }

    /// `max_workers`: concurrent workers per service instance (default 10).
    pub fn max_workers(&self) -> usize {
        self.get_or("max_workers", DEFAULT_MAX_WORKERS).max(1)
    }

    /// `parent_calls_tracked`: parent call ids kept in `call_id_stack` (default 10).
    pub fn parent_calls_tracked(&self) -> usize {
        self.get_or("parent_calls_tracked", DEFAULT_PARENT_CALLS_TRACKED)
    }

    /// `rpc_timeout`: default client call timeout (default 30 s).
    pub fn rpc_timeout(&self) -> Duration {
        seconds(self.get("rpc_timeout").ok().flatten()).unwrap_or(DEFAULT_RPC_TIMEOUT)
    }

    /// `drain_timeout`: how long a stopping service waits for its workers (default 30 s).
    pub fn drain_timeout(&self) -> Duration {
        seconds(self.get("drain_timeout").ok().flatten()).unwrap_or(DEFAULT_DRAIN_TIMEOUT)
    }

    /// `AMQP_URI`, when set.
    pub fn amqp_uri(&self) -> Option<String> {
        self.get("AMQP_URI").ok().flatten()
    }
}

/// A broker address with its password hidden, fit for a log line.
///
/// ```
/// use shimeji::config::redact_uri;
/// assert_eq!(redact_uri("amqp://guest:s3cret@rabbit:5672/"), "amqp://guest:***@rabbit:5672/");
/// assert_eq!(redact_uri("amqp://rabbit"), "amqp://rabbit");
/// ```
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => uri.to_string(),
    }
}

fn seconds(value: Option<f64>) -> Option<Duration> {
    value
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
}

/// A dependency that gives a service read access to the configuration
/// (Nameko's `Config` dependency provider).
///
/// ```
/// use shimeji::prelude::*;
///
/// #[derive(Default, Dependencies)]
/// struct Greeter {
///     config: ServiceConfig,
/// }
///
/// #[service(name = "greeter")]
/// impl Greeter {
///     #[rpc]
///     async fn hello(&self, name: String) -> String {
///         let greeting = self.config.get_or("greeting", "Hello".to_string());
///         format!("{greeting}, {name}!")
///     }
/// }
/// ```
#[derive(Clone, Default)]
pub struct ServiceConfig {
    config: Arc<OnceLock<Arc<Config>>>,
}

impl ServiceConfig {
    /// A `ServiceConfig` that already holds `config` (for tests).
    pub fn with(config: Config) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(Arc::new(config));
        ServiceConfig {
            config: Arc::new(cell),
        }
    }

    /// The whole configuration (empty before the service is set up).
    pub fn config(&self) -> Arc<Config> {
        self.config.get().cloned().unwrap_or_default()
    }

    /// A key's value; see [`Config::get`].
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.config().get(key)
    }

    /// A key's value, or `default` when it is absent or of the wrong type.
    pub fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> T {
        self.config().get_or(key, default)
    }
}

impl Dependency for ServiceConfig {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        let _ = self.config.set(ctx.config().clone());
        Box::pin(async { Ok(()) })
    }
}
