//! Configuration injected into a service: its dependencies that read the
//! runner's [`Config`].
//!
//! [`ServiceConfig`] reads any key at run time (Nameko's `Config`
//! dependency provider); [`Settings<T>`] decodes one key into a typed
//! struct when the service starts, so a bad value fails the start, not a
//! call. The keys themselves, their defaults and the file format are in
//! [`config`](crate::config).

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use std::sync::{Arc, OnceLock};

use crate::config::{Config, ConfigError};
use crate::dependency::{Dependency, DependencyError, SetupContext};

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

/// A service's own settings, typed: the config key `key` decoded as `T`
/// when the service starts. A missing or bad value fails the start with the
/// key named.
///
/// ```
/// use shimeji::prelude::*;
/// use shimeji::inject::Settings;
///
/// #[derive(serde::Deserialize)]
/// struct ShopSettings {
///     currency: String,
///     max_items: u32,
/// }
///
/// struct Shop {
///     settings: Settings<ShopSettings>,
/// }
///
/// impl shimeji::Dependencies for Shop {
///     fn dependencies(&self) -> Vec<&dyn shimeji::Dependency> { vec![&self.settings] }
/// }
///
/// #[service(name = "shop")]
/// impl Shop {
///     #[rpc]
///     async fn currency(&self) -> String {
///         self.settings.get().currency.clone()
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let config = Config::from_yaml("shop:\n  currency: EUR\n").unwrap();
/// let err = ServiceRunner::with_config(config)
///     .service(Shop { settings: Settings::key("shop") })
///     .start()
///     .await
///     .err()
///     .unwrap();
/// assert!(err.to_string().contains("config key `shop`"), "{err}");
/// assert!(err.to_string().contains("max_items"), "{err}");
/// # }
/// ```
pub struct Settings<T> {
    key: &'static str,
    value: OnceLock<T>,
}

impl<T> Settings<T> {
    /// Settings read from config key `key`.
    pub fn key(key: &'static str) -> Self {
        Settings {
            key,
            value: OnceLock::new(),
        }
    }

    /// Settings that already hold `value` (for tests).
    pub fn with(value: T) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(value);
        Settings {
            key: "",
            value: cell,
        }
    }

    /// The settings. Panics only if read before the service started, which
    /// the container never lets an entrypoint do.
    pub fn get(&self) -> &T {
        match self.value.get() {
            Some(v) => v,
            None => panic!("settings `{}` read before the service started", self.key),
        }
    }
}

impl<T: DeserializeOwned + Send + Sync> Dependency for Settings<T> {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        Box::pin(async move {
            if self.value.get().is_some() {
                return Ok(());
            }
            let fail = |message: String| {
                DependencyError::new(format!("config key `{}`", self.key), message)
            };
            let value = match ctx.config().values.get(self.key) {
                Some(v) => v.clone(),
                None => return Err(fail("missing from the configuration".into())),
            };
            let value: T = serde_json::from_value(value).map_err(|e| fail(e.to_string()))?;
            let _ = self.value.set(value);
            Ok(())
        })
    }
}

impl Dependency for ServiceConfig {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        let _ = self.config.set(ctx.config().clone());
        Box::pin(async { Ok(()) })
    }
}
