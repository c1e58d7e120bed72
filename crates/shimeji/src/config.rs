//! Configuration: Nameko's keys with Nameko's names, plus a service's own.
//!
//! Known keys: `AMQP_URI`, `max_workers` (10), `parent_calls_tracked` (10),
//! `rpc_timeout` (seconds, 30), `drain_timeout` (seconds, 30),
//! `ready_timeout` (seconds, 10: how long the start waits for dependencies
//! to be [ready](crate::Dependency::ready)), `HEARTBEAT`,
//! `rpc_exchange`, `max_message_size`, `WEB_SERVER_ADDRESS`, `max_body_size`,
//! `METRICS_ADDRESS` (where `/metrics` and `/health/*` are served; unset,
//! no metrics are recorded), `LOGGING`, and the WebSocket hub's
//! `websocket_max_message_size`, `websocket_max_in_flight`,
//! `websocket_send_queue`, `websocket_allowed_origins` (see
//! [`WebSocketHub`](crate::http::WebSocketHub)), and the service registry's
//! `REGISTRY`, `registry_ttl`, `instance_id`, `SERVICE_VERSION`,
//! `registry_advertise_address`, `sticky_sessions`, `deregister_timeout`,
//! `deregister_delay` (see [`registry`](crate::registry) and
//! [`ServiceRunner`](crate::ServiceRunner)). Any other key is the service's own,
//! read with [`Config::get`] or the [`ServiceConfig`] dependency.
//!
//! A config file is YAML, as Nameko's: `${VAR}` and `${VAR:default}` in
//! values are replaced from the environment when the file is loaded, and a
//! known key set in the environment overrides the file.
//!
//! ```
//! use shimeji::Config;
//!
//! std::env::set_var("SHOP_DB_HOST", "db.internal");
//! let config = Config::from_yaml(r#"
//! max_workers: ${SHOP_WORKERS:4}
//! database: "postgres://${SHOP_DB_HOST}/shop"
//! "#).unwrap();
//! assert_eq!(config.max_workers(), 4);
//! assert_eq!(config.get::<String>("database").unwrap().as_deref(), Some("postgres://db.internal/shop"));
//!
//! let err = Config::from_yaml("AMQP_URI: ${SHOP_NO_SUCH_VAR}").unwrap_err();
//! assert_eq!(err.key, "AMQP_URI");
//! ```
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

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::time::Duration;

use crate::context::DEFAULT_PARENT_CALLS_TRACKED;

/// Default `max_workers`: concurrent workers per service instance.
pub const DEFAULT_MAX_WORKERS: usize = 10;
/// Default client call timeout.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a stopping service waits for its workers.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a start waits for the dependencies to be ready, by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `registry_ttl`: the lease of an instance's registration.
pub const DEFAULT_REGISTRY_TTL: Duration = Duration::from_secs(10);
/// Default `deregister_timeout`: how long a stopping instance waits for the
/// routers to apply its deregistration.
pub const DEFAULT_DEREGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `deregister_delay` on a registry other processes read, when no
/// router reports: the time routers get to notice the deregistration.
pub const DEFAULT_DEREGISTER_DELAY: Duration = Duration::from_secs(2);

/// Words that make a key's value a secret, wherever the key is nested.
const SECRET_WORDS: [&str; 7] = [
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "api_key",
    "apikey",
];

/// A key with a value of the wrong type.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}` has a bad value: {message}")]
pub struct ConfigError {
    /// The key.
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

crate::error::shimeji_exception! {
    ConfigError => "ConfigError",
}

/// The runner's configuration: a map of keys to JSON values.
///
/// Its `Debug` shows [`Config::redacted`]: no password reaches a log line
/// through `{:?}`.
#[derive(Clone, Default)]
pub struct Config {
    pub(crate) values: Map<String, Value>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("values", &self.redacted())
            .finish()
    }
}

/// Keys whose value is text whatever it looks like: `SERVICE_VERSION=1`
/// or `instance_id=42` from the environment are the strings `"1"` and
/// `"42"`, and `SERVICE_VERSION=1.10` is not the number 1.1.
const TEXT_KEYS: [&str; 8] = [
    "AMQP_URI",
    "rpc_exchange",
    "WEB_SERVER_ADDRESS",
    "METRICS_ADDRESS",
    "REGISTRY",
    "instance_id",
    "SERVICE_VERSION",
    "registry_advertise_address",
];

/// The value of environment variable `key` holding `raw`: text for the
/// keys that are text, else JSON when it parses (`max_workers=10`,
/// `websocket_allowed_origins=["https://a"]`), else text.
fn env_value(key: &str, raw: String) -> Value {
    if TEXT_KEYS.contains(&key) {
        return Value::String(raw);
    }
    serde_json::from_str(&raw).unwrap_or(Value::String(raw))
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
            "persistent_replies",
            "persistent_requests",
            "WEB_SERVER_ADDRESS",
            "METRICS_ADDRESS",
            "max_body_size",
            "websocket_max_message_size",
            "websocket_max_in_flight",
            "websocket_send_queue",
            "websocket_allowed_origins",
            "max_workers",
            "parent_calls_tracked",
            "rpc_timeout",
            "drain_timeout",
            "ready_timeout",
            "REGISTRY",
            "registry_ttl",
            "instance_id",
            "SERVICE_VERSION",
            "registry_advertise_address",
            "sticky_sessions",
            "deregister_timeout",
            "deregister_delay",
        ] {
            if let Ok(raw) = std::env::var(key) {
                config.values.insert(key.to_string(), env_value(key, raw));
            }
        }
        config
    }

    /// Loads a YAML config file (see the [module docs](self)), then applies
    /// environment overrides.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            key: path.display().to_string(),
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::from_yaml(&text)
    }

    /// Parses YAML config text, replacing `${VAR}` and `${VAR:default}` from
    /// the environment, then applies environment overrides.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError {
                key: e
                    .location()
                    .map(|l| format!("line {}", l.line()))
                    .unwrap_or_else(|| "config".into()),
                message: format!("not valid YAML: {e}"),
            })?;
        let json: Value = match yaml {
            serde_yaml_ng::Value::Null => Value::Object(Map::new()),
            other => serde_json::to_value(other).map_err(|e| ConfigError {
                key: "config".into(),
                message: e.to_string(),
            })?,
        };
        let Value::Object(mut values) = json else {
            return Err(ConfigError {
                key: "config".into(),
                message: "the config file must be a mapping of keys to values".into(),
            });
        };
        for (key, value) in values.iter_mut() {
            substitute(key, value)?;
        }
        let mut config = Config { values };
        for (key, value) in Self::from_env().values {
            config.values.insert(key, value);
        }
        Ok(config)
    }

    /// Every key and value, secrets hidden: the password in `AMQP_URI` and
    /// in any other URI (see [`redact_uri`]), and the value of any key whose
    /// name says password, passwd, secret, token, credential or api key.
    pub fn redacted(&self) -> Map<String, Value> {
        fn hide(key: &str, value: &Value) -> Value {
            let lower = key.to_ascii_lowercase();
            match value {
                _ if SECRET_WORDS.iter().any(|w| lower.contains(w)) => Value::String("***".into()),
                Value::String(s) if s.contains("://") => Value::String(redact_uri(s)),
                Value::Array(items) => Value::Array(items.iter().map(|v| hide(key, v)).collect()),
                Value::Object(map) => {
                    Value::Object(map.iter().map(|(k, v)| (k.clone(), hide(k, v))).collect())
                }
                other => other.clone(),
            }
        }
        self.values
            .iter()
            .map(|(k, v)| (k.clone(), hide(k, v)))
            .collect()
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
        for key in ["rpc_timeout", "drain_timeout", "ready_timeout"] {
            if let Some(s) = self.get::<f64>(key)? {
                if !(s.is_finite() && s > 0.0) {
                    return Err(ConfigError {
                        key: key.into(),
                        message: "must be a positive number of seconds".into(),
                    });
                }
            }
        }
        if let Some(s) = self.get::<f64>("registry_ttl")? {
            if !(s.is_finite() && s >= 1.0) {
                return Err(ConfigError {
                    key: "registry_ttl".into(),
                    message: "must be at least 1 (seconds)".into(),
                });
            }
        }
        for key in ["deregister_timeout", "deregister_delay"] {
            if let Some(s) = self.get::<f64>(key)? {
                if !(s.is_finite() && s >= 0.0) {
                    return Err(ConfigError {
                        key: key.into(),
                        message: "must be zero or a positive number of seconds".into(),
                    });
                }
            }
        }
        self.get::<String>("AMQP_URI")?;
        self.get::<String>("METRICS_ADDRESS")?;
        for key in [
            "REGISTRY",
            "registry",
            "instance_id",
            "SERVICE_VERSION",
            "registry_advertise_address",
        ] {
            self.get::<String>(key)?;
        }
        self.get::<bool>("sticky_sessions")?;
        Ok(())
    }

    pub(crate) fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> T {
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

    /// `METRICS_ADDRESS`: where `/metrics`, `/health/live` and
    /// `/health/ready` are served (e.g. `0.0.0.0:9102`). Unset: none, and
    /// no metrics are recorded.
    pub fn metrics_address(&self) -> Option<String> {
        self.get("METRICS_ADDRESS").ok().flatten()
    }

    /// `rpc_timeout`: default client call timeout (default 30 s).
    pub fn rpc_timeout(&self) -> Duration {
        seconds(self.get("rpc_timeout").ok().flatten()).unwrap_or(DEFAULT_RPC_TIMEOUT)
    }

    /// `drain_timeout`: how long a stopping service waits for its workers (default 30 s).
    pub fn drain_timeout(&self) -> Duration {
        seconds(self.get("drain_timeout").ok().flatten()).unwrap_or(DEFAULT_DRAIN_TIMEOUT)
    }

    /// `ready_timeout`: how long a start waits for every dependency to be
    /// [ready](crate::Dependency::ready) before it serves anyway (default 10 s).
    pub fn ready_timeout(&self) -> Duration {
        seconds(self.get("ready_timeout").ok().flatten()).unwrap_or(DEFAULT_READY_TIMEOUT)
    }

    /// `registry_ttl`: the lease of an instance's registration, in whole
    /// seconds (default 10); renewed every third of it.
    pub fn registry_ttl(&self) -> Duration {
        self.get::<f64>("registry_ttl")
            .ok()
            .flatten()
            .filter(|s| s.is_finite() && *s >= 1.0)
            .map(|s| Duration::from_secs(s.round() as u64))
            .unwrap_or(DEFAULT_REGISTRY_TTL)
    }

    /// `deregister_timeout`: how long a stopping instance waits for every
    /// router to apply its deregistration (default 5 s).
    pub fn deregister_timeout(&self) -> Duration {
        non_negative_seconds(self.get("deregister_timeout").ok().flatten())
            .unwrap_or(DEFAULT_DEREGISTER_TIMEOUT)
    }

    /// `deregister_delay`, when set: how long a stopping instance waits
    /// after deregistering when no router reports (default: 2 s on a
    /// registry other processes read, 0 on an in-process one).
    pub fn deregister_delay(&self) -> Option<Duration> {
        non_negative_seconds(self.get("deregister_delay").ok().flatten())
    }

    /// `AMQP_URI`, when set.
    pub fn amqp_uri(&self) -> Option<String> {
        self.get("AMQP_URI").ok().flatten()
    }
}

/// Replaces `${VAR}` and `${VAR:default}` in every string under `value`. A
/// string that is one expression alone takes the YAML type of what replaced
/// it (`${PORT:8000}` is a number).
fn substitute(key: &str, value: &mut Value) -> Result<(), ConfigError> {
    match value {
        Value::String(s) if s.contains("${") => {
            // One expression alone: `${` first, and its closing `}` last.
            let whole = s.starts_with("${") && s.find('}') == Some(s.len() - 1);
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let Some(end) = rest[start..].find('}') else {
                    return Err(ConfigError {
                        key: key.to_string(),
                        message: format!("unclosed `${{` in {s:?}"),
                    });
                };
                let expr = &rest[start + 2..start + end];
                let (var, default) = match expr.split_once(':') {
                    Some((var, default)) => (var, Some(default)),
                    None => (expr, None),
                };
                match (std::env::var(var), default) {
                    (Ok(v), _) => out.push_str(&v),
                    (Err(_), Some(d)) => out.push_str(d),
                    (Err(_), None) => {
                        return Err(ConfigError {
                            key: key.to_string(),
                            message: format!(
                                "environment variable `{var}` is not set and has no default (write `${{{var}:default}}`)"
                            ),
                        })
                    }
                }
                rest = &rest[start + end + 1..];
            }
            out.push_str(rest);
            *value = if whole {
                serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&out)
                    .ok()
                    .and_then(|v| serde_json::to_value(v).ok())
                    .filter(|v| !v.is_object() && !v.is_array())
                    .unwrap_or(Value::String(out))
            } else {
                Value::String(out)
            };
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| substitute(key, v)),
        Value::Object(map) => map
            .iter_mut()
            .try_for_each(|(k, v)| substitute(&format!("{key}.{k}"), v)),
        _ => Ok(()),
    }
}

/// A broker address with its password hidden, fit for a log line.
///
/// Everything before the last `@` of the address is taken as userinfo,
/// whatever characters it holds: a password with `/`, `@`, `:` or `%2F` in
/// it (generated passwords often do) is hidden whole, even where a URI
/// parser would read part of it as a host or a path. The user name (up to
/// the first `:`) stays; an address with an `@` in its path or query loses
/// more than its password rather than risk showing one.
///
/// ```
/// use shimeji::config::redact_uri;
/// assert_eq!(redact_uri("amqp://guest:s3cret@rabbit:5672/"), "amqp://guest:***@rabbit:5672/");
/// assert_eq!(redact_uri("amqp://u:p/a@ss@host/vhost"), "amqp://u:***@host/vhost");
/// assert_eq!(redact_uri("amqp://rabbit"), "amqp://rabbit");
/// ```
pub fn redact_uri(uri: &str) -> String {
    let (scheme, rest) = match uri.find("://") {
        Some(i) => uri.split_at(i + 3),
        None => ("", uri),
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return uri.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}{user}:***@{host}"),
        None => format!("{scheme}{userinfo}@{host}"),
    }
}

fn non_negative_seconds(value: Option<f64>) -> Option<Duration> {
    value
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

fn seconds(value: Option<f64>) -> Option<Duration> {
    value
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keys_from_the_environment_stay_text() {
        assert_eq!(
            env_value("SERVICE_VERSION", "1.10".into()),
            Value::String("1.10".into())
        );
        assert_eq!(
            env_value("instance_id", "42".into()),
            Value::String("42".into())
        );
        assert_eq!(env_value("max_workers", "10".into()), serde_json::json!(10));
        assert_eq!(
            env_value("rpc_timeout", "soon".into()),
            Value::String("soon".into())
        );
        let mut config = Config::new();
        config.values.insert(
            "SERVICE_VERSION".into(),
            env_value("SERVICE_VERSION", "2".into()),
        );
        assert_eq!(
            config.get::<String>("SERVICE_VERSION").unwrap().as_deref(),
            Some("2")
        );
    }

    #[test]
    fn substitution_types_and_nesting() {
        std::env::set_var("SHIMEJI_CFG_TEST_PORT", "8123");
        let config = Config::from_yaml(
            "port: ${SHIMEJI_CFG_TEST_PORT}\nflag: ${SHIMEJI_CFG_TEST_UNSET:true}\nnested:\n  url: http://h:${SHIMEJI_CFG_TEST_PORT}/x\n",
        )
        .unwrap();
        assert_eq!(config.get::<u16>("port").unwrap(), Some(8123));
        assert_eq!(config.get::<bool>("flag").unwrap(), Some(true));
        assert_eq!(
            config.get::<Value>("nested").unwrap().unwrap()["url"],
            "http://h:8123/x"
        );
    }

    #[test]
    fn text_after_an_expression_is_kept_as_written() {
        std::env::set_var("SHIMEJI_CFG_TEST_WORD", "true");
        // Starts with an expression and ends with `}`, but is not one
        // expression alone: it stays a string, byte for byte (read as YAML
        // it would fold the blank line, or read `1 #}` as the number 1).
        let config = Config::from_yaml(
            "a: \"${SHIMEJI_CFG_TEST_WORD}o\\n\\n}}\"\nb: \"${SHIMEJI_CFG_TEST_UNSET:1 #}}\"\nc: ${SHIMEJI_CFG_TEST_WORD}\n",
        )
        .unwrap();
        assert_eq!(
            config.get::<Value>("a").unwrap(),
            Some(Value::String("trueo\n\n}}".into()))
        );
        assert_eq!(
            config.get::<Value>("b").unwrap(),
            Some(Value::String("1 #}".into()))
        );
        assert_eq!(config.get::<Value>("c").unwrap(), Some(Value::Bool(true)));
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_yaml("db:\n  host: ${SHIMEJI_CFG_TEST_MISSING}\n").unwrap_err();
        assert_eq!(err.key, "db.host");
        assert!(err.message.contains("SHIMEJI_CFG_TEST_MISSING"));
        let err = Config::from_yaml("max_workers: lots\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(err.key, "max_workers");
        let err = Config::from_yaml("- a\n- b\n").unwrap_err();
        assert!(err.message.contains("mapping"));
        let err = Config::from_yaml("a: [\n").unwrap_err();
        assert!(err.message.contains("YAML"), "{err}");
    }

    /// A password with `/`, `@`, `:` and `%2F`, and each of its pieces.
    const PASSWORD: &str = "Sx1/Ty2@Uz3%2FVw4:Xq5";
    const PIECES: [&str; 5] = ["Sx1", "Ty2", "Uz3", "Vw4", "Xq5"];

    fn assert_hidden(shown: &str) {
        for piece in PIECES {
            assert!(!shown.contains(piece), "`{piece}` shown in {shown}");
        }
    }

    #[test]
    fn redact_uri_hides_any_password() {
        let cases = [
            (
                "amqp://guest:s3cret@rabbit:5672/",
                "amqp://guest:***@rabbit:5672/",
            ),
            ("amqp://u:p/a@ss@host/vhost", "amqp://u:***@host/vhost"),
            ("amqp://u:pa/ss@host", "amqp://u:***@host"),
            (
                "amqps://u:p%2Fss@host:5671/%2F",
                "amqps://u:***@host:5671/%2F",
            ),
            ("amqp://u:a:b:c@host/", "amqp://u:***@host/"),
            ("amqp://u:@host/", "amqp://u:***@host/"),
            ("amqp://user@host/v", "amqp://user@host/v"),
            ("amqp://host:5672/v", "amqp://host:5672/v"),
            ("amqp://rabbit", "amqp://rabbit"),
            ("u:secret@host", "u:***@host"),
            ("not a uri", "not a uri"),
        ];
        for (uri, shown) in cases {
            assert_eq!(redact_uri(uri), shown, "{uri}");
        }
        let uri = format!("amqp://app:{PASSWORD}@127.0.0.1:5672/vh?heartbeat=5");
        let shown = redact_uri(&uri);
        assert_hidden(&shown);
        assert_eq!(shown, "amqp://app:***@127.0.0.1:5672/vh?heartbeat=5");
        // An `@` in the query hides more than the password, never less.
        let shown = redact_uri(&format!("amqp://app:{PASSWORD}@host/v?x=a@b"));
        assert_hidden(&shown);
    }

    #[test]
    fn debug_hides_secrets() {
        let config = Config::new()
            .set("AMQP_URI", format!("amqp://app:{PASSWORD}@host/"))
            .set(
                "db",
                serde_json::json!({"urls": [format!("postgres://app:{PASSWORD}@db/x")]}),
            )
            .set("api_key", PASSWORD);
        assert_hidden(&format!("{config:?}"));
        assert_hidden(&format!("{config:#?}"));
        assert!(format!("{config:?}").contains("amqp://app:***@host/"));
    }

    #[test]
    fn secrets_are_redacted() {
        let config = Config::new()
            .set("AMQP_URI", "amqp://u:pw@host/")
            .set("api_token", "t0k")
            .set("db", serde_json::json!({"password": "p", "host": "h"}));
        let shown = Value::Object(config.redacted()).to_string();
        assert!(
            !shown.contains("pw@") && !shown.contains("t0k") && !shown.contains("\"p\""),
            "{shown}"
        );
        assert!(shown.contains("amqp://u:***@host/"), "{shown}");
    }
}
